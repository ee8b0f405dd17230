"""seqio metric functions of the T5 pretraining tasks: what ``t5x.eval`` reports for a checkpoint."""

from __future__ import annotations

from typing import Sequence


def residue_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of target residues that the decoded prediction has at the same position.

    ProtT5's decoder rebuilds the whole protein, so this is its recovery rate; a prediction shorter
    than its target misses the rest, and extra predicted residues are not counted.
    """
    total = sum(len(target) for target in targets)
    matches = sum(sum(a == b for a, b in zip(t, p)) for t, p in zip(targets, predictions))
    return {"residue_accuracy": 100.0 * matches / max(total, 1)}


def sequence_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of examples whose decoded prediction equals the target exactly."""
    exact = sum(t == p for t, p in zip(targets, predictions))
    return {"sequence_accuracy": 100.0 * exact / max(len(targets), 1)}


T5_METRICS = (residue_accuracy, sequence_accuracy)

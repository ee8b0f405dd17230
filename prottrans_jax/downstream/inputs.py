"""Which features feed a head: ``onehot``, ``blosum62``, ``h5:FILE`` (from ``embed``) or ``model:DIR`` (embedded now)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from prottrans_jax.downstream import encodings


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``'onehot'`` -> ('onehot', None); ``'h5:x.h5'`` / ``'x.h5'`` -> ('h5', 'x.h5'); a folder -> ('model', dir)."""
    if spec in encodings.BASELINES:
        return spec, None
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("h5", "model"):
        return kind, rest
    if spec.endswith((".h5", ".hdf5")):
        return "h5", spec
    if pathlib.Path(spec).is_dir():
        return "model", spec
    raise ValueError(f"--features {spec!r}: expected onehot, blosum62, h5:FILE (from prottrans-jax embed) or "
                     "model:DIR (a training directory or HF folder)")


def features_for(spec: str, ids: Sequence[str], sequences: Sequence[str], per_residue: bool, *, model=None,
                 layer: int | None = None) -> list[np.ndarray]:
    """Per-residue ``[L, D]`` or per-protein ``[D]`` features of each sequence, in order.

    Per-protein baselines are the mean of the per-residue encoding (amino-acid composition for one-hot).

    Args:
      model: for ``model:DIR``, the model already loaded from DIR (else it is loaded).
      layer: for ``model:DIR``, the hidden state to use (default the final output).
    """
    kind, where = parse_spec(spec)
    if kind in encodings.BASELINES:
        feats = encodings.baseline_features(kind, sequences)
    elif kind == "h5":
        feats = encodings.h5_features(where, ids, [len(s) for s in sequences])
        if per_residue and feats[0].ndim != 2:
            raise ValueError(f"{where}: holds per-protein embeddings; this head needs per-residue ones "
                             "(prottrans-jax embed --per-residue)")
    else:
        return encodings.model_features(where if model is None else model, sequences, per_residue=per_residue,
                                        layer=layer)
    if not per_residue:
        feats = [f.mean(axis=0) if f.ndim == 2 else f for f in feats]
    return feats

"""The paper's metrics: Q3/Q8 over scored residues, per-protein Q10/Q2, MCC, per-class precision/recall, bootstrap SEs."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction correct (Q3, Q8, Q10, Q2 are this, over their own items)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def classification_summary(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, multi-class MCC, per-class precision/recall/support and the confusion matrix (rows: truth)."""
    from sklearn.metrics import confusion_matrix, matthews_corrcoef, precision_recall_fscore_support

    classes = list(range(len(labels)))
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class": {name: {"precision": float(p), "recall": float(r), "support": int(s)}
                      for name, p, r, s in zip(labels, precision, recall, support)},
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "labels": list(labels),
    }


def bootstrap_se(correct: np.ndarray, total: np.ndarray, n: int = 1000, seed: int = 0) -> float:
    """Standard error of an accuracy over ``n`` resamples of the items (proteins), with replacement.

    Args:
      correct: per protein, how many of its scored items are right (residues, or 0/1 for a protein).
      total: per protein, how many items are scored.
    """
    correct, total = np.asarray(correct, np.float64), np.asarray(total, np.float64)
    pick = np.random.default_rng(seed).integers(0, len(correct), (n, len(correct)))  # [n, proteins]
    values = correct[pick].sum(axis=1) / np.maximum(total[pick].sum(axis=1), 1)
    return float(np.std(values, ddof=1))


def residue_scores(per_chain: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], labels: Sequence[str],
                   n_boot: int = 1000, seed: int = 0) -> dict:
    """Q over the scored residues of all chains (``(y_true, y_pred, evaluate_mask)`` per chain), with SE."""
    items = [(t[m], p[m]) for t, p, m in per_chain]
    y_true = np.concatenate([t for t, _ in items])
    y_pred = np.concatenate([p for _, p in items])
    out = classification_summary(y_true, y_pred, labels)
    out["se"] = bootstrap_se([np.sum(t == p) for t, p in items], [t.size for t, _ in items], n_boot, seed)
    out["residues"] = int(y_true.size)
    out["chains"] = len(items)
    return out


def protein_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], n_boot: int = 1000,
                   seed: int = 0) -> dict:
    """Per-protein accuracy (Q10, Q2), MCC, per-class figures, with a bootstrap SE of the accuracy."""
    out = classification_summary(y_true, y_pred, labels)
    right = (np.asarray(y_true) == np.asarray(y_pred)).astype(np.float64)
    out["se"] = bootstrap_se(right, np.ones_like(right), n_boot, seed)
    out["proteins"] = int(len(y_true))
    return out

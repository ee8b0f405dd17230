"""Evaluation reports: Markdown tables with PNG plots (confusion matrices, learning curves, 2-D embedding map)."""

from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(summary: dict, path: pathlib.Path, title: str) -> pathlib.Path:
    """Row-normalised confusion matrix (rows: truth) with counts."""
    plt = _pyplot()
    cm = np.asarray(summary["confusion"], float)
    labels = summary["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(history: Sequence[dict], path: pathlib.Path) -> pathlib.Path:
    """Training loss and validation accuracies per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if "val_loss" in history[0]:
        a.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    a.set_xlabel("epoch")
    a.legend()
    for key in [k for k in history[0] if k.startswith("val_q")]:
        b.plot(epochs, [h[key] for h in history], label=key.replace("val_", "validation ").replace("q", "Q"))
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_projection(pooled: np.ndarray, labels: Sequence[int], names: Sequence[str], path: pathlib.Path,
                    title: str) -> pathlib.Path:
    """Per-protein embeddings projected to 2-D (PCA), coloured by class."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    xy = PCA(n_components=2, random_state=0).fit_transform(np.asarray(pooled, np.float64))
    fig, ax = plt.subplots(figsize=(6.5, 5))
    cmap = plt.get_cmap("tab10")
    labels = np.asarray(labels)
    for k, name in enumerate(names):
        pick = labels == k
        if pick.any():
            ax.scatter(xy[pick, 0], xy[pick, 1], s=6, color=cmap(k % 10), label=f"{name} ({pick.sum()})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _table(summary: dict) -> list[str]:
    lines = ["| class | precision | recall | support |", "|---|---:|---:|---:|"]
    for name, v in summary["per_class"].items():
        lines.append(f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |")
    return lines


def write_report(out_dir: str | pathlib.Path, title: str, scores: dict[str, Optional[dict]],
                 history: Optional[Sequence[dict]] = None, projection: Optional[tuple] = None) -> pathlib.Path:
    """Writes ``report.md`` and its PNGs into ``out_dir``.

    Args:
      scores: ``{metric name (e.g. 'Q3'): summary from metrics.*_scores or None}``.
      history: training history (learning curves), if known.
      projection: ``(pooled [n, D], labels [n], class names)`` for the 2-D map.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", "| metric | value | bootstrap SE | MCC | scored items |", "|---|---:|---:|---:|---:|"]
    for name, s in scores.items():
        if s is None:
            lines.append(f"| {name} | n/a (no labels) | | | |")
            continue
        n = s.get("residues", s.get("proteins"))
        lines.append(f"| {name} | {100 * s['accuracy']:.2f}% | {100 * s['se']:.2f} | {s['mcc']:.3f} | {n} |")
    for name, s in scores.items():
        if s is None:
            continue
        png = plot_confusion(s, out / f"confusion_{name}.png", f"{name} confusion (rows: truth)")
        lines += ["", f"## {name}", "", *_table(s), "", f"![{name} confusion matrix]({png.name})"]
    if history:
        png = plot_learning_curves(history, out / "learning_curves.png")
        lines += ["", "## Learning curves", "", f"![learning curves]({png.name})"]
    if projection is not None:
        png = plot_projection(*projection, out / "projection.png", "per-protein inputs, PCA")
        lines += ["", "## Per-protein inputs in 2-D", "", f"![projection]({png.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"

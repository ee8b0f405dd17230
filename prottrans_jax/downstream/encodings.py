"""Per-residue input features for the heads: the paper's baselines (one-hot, BLOSUM62) and language-model embeddings."""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import numpy as np

RESIDUES = "ACDEFGHIKLMNPQRSTVWYX"  # the 21 letters every normalised sequence uses
BASELINES = ("onehot", "blosum62")


def one_hot(sequence: str) -> np.ndarray:
    """``[L, 21]`` float32: one column per letter of :data:`RESIDUES` (X is its own letter)."""
    codes = _codes(sequence)
    out = np.zeros((len(sequence), len(RESIDUES)), np.float32)
    out[np.arange(len(sequence)), codes] = 1.0
    return out


@functools.lru_cache(maxsize=None)
def _blosum_table() -> np.ndarray:
    from Bio.Align import substitution_matrices

    matrix = substitution_matrices.load("BLOSUM62")
    return np.array([[matrix[a][b] for b in RESIDUES] for a in RESIDUES], np.float32)


def blosum62(sequence: str) -> np.ndarray:
    """``[L, 21]`` float32: each residue's BLOSUM62 row over :data:`RESIDUES`, divided by 4 (scores -4..11)."""
    return _blosum_table()[_codes(sequence)] / 4.0


def _codes(sequence: str) -> np.ndarray:
    lookup = np.full(256, -1, np.int64)
    for i, c in enumerate(RESIDUES):
        lookup[ord(c)] = i
    codes = lookup[np.frombuffer(sequence.encode("ascii"), np.uint8)]
    if (codes < 0).any():
        raise ValueError(f"residue {sequence[int(np.argmax(codes < 0))]!r} is not one of {RESIDUES} (normalise first)")
    return codes


def baseline_features(kind: str, sequences: Sequence[str]) -> list[np.ndarray]:
    """One-hot or BLOSUM62 features of each sequence."""
    if kind not in BASELINES:
        raise ValueError(f"unknown encoding {kind!r}; expected one of {BASELINES} or an embedding source")
    fn = one_hot if kind == "onehot" else blosum62
    return [fn(s) for s in sequences]


def h5_features(path: str | pathlib.Path, ids: Sequence[str], lengths: Sequence[int] | None = None) -> list[np.ndarray]:
    """Embeddings of ``ids`` from an ``embed`` HDF5 file (dataset names as ``embed`` writes them).

    Raises:
      ValueError: an id is missing (naming it and the file), or a per-residue embedding whose length is
        not the sequence's.
    """
    import h5py

    from prottrans_jax.embedding.h5_store import dataset_name

    out = []
    with h5py.File(path, "r") as f:
        for i, rid in enumerate(ids):
            name = dataset_name(rid)
            if name not in f:
                raise ValueError(f"{path}: no embedding for {rid!r} (dataset {name!r}); embed the same FASTA first")
            array = np.asarray(f[name][()], np.float32)
            if lengths is not None and array.ndim == 2 and array.shape[0] != lengths[i]:
                raise ValueError(f"{path}: {name!r} has {array.shape[0]} residues, the data set's sequence {lengths[i]}")
            out.append(array)
    return out


def model_features(model, sequences: Sequence[str], per_residue: bool = True, layer=None, dtype: str = "float32",
                   max_tokens: int = 4000) -> list[np.ndarray]:
    """Embeddings computed on the fly with a model (path or ``LoadedModel``), in input order."""
    from prottrans_jax import model_io
    from prottrans_jax.embedding import batching
    from prottrans_jax.embedding.encoder import Embedder

    loaded = model if isinstance(model, model_io.LoadedModel) else model_io.load_model(model)
    embedder = Embedder(loaded, layer=layer, dtype=dtype)
    lengths = [len(s) + embedder.special_tokens for s in sequences]
    plan = batching.plan_batches(lengths, max_tokens=max_tokens, row_multiple=embedder.num_devices,
                                 edges=batching.bucket_edges(max(lengths), limit=embedder.max_positions))
    out: list = [None] * len(sequences)
    for batch in plan:
        seqs = [sequences[i] for i in batch.indices]
        per_res, pooled = embedder.embed(seqs, batch.rows, batch.padded_length, per_residue=per_residue)
        for j, i in enumerate(batch.indices):
            out[i] = per_res[j] if per_residue else pooled[j]
    return out

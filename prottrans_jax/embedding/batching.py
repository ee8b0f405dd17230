"""Length-bucketed batching: bounded padding and a bounded number of compiled shapes."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence


def bucket_edges(max_length: int, step: int = 32, linear_until: int = 512, growth: float = 1.125,
                 limit: int | None = None) -> list[int]:
    """Padded lengths: multiples of ``step`` up to ``linear_until``, then ~``growth`` times apart.

    Padding stays under ``step`` tokens for short proteins and under ``step`` plus ``growth - 1`` of the
    length for long ones; the number of shapes grows with ``log(max_length)``. ``limit`` (a model's
    positions) caps the edges.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    edges = list(range(step, min(linear_until, max_length) + step, step))
    while edges[-1] < max_length:
        edges.append(int(math.ceil(edges[-1] * growth / step) * step))
    if limit is not None:  # a model with absolute positions takes no longer input
        if max_length > limit:
            raise ValueError(f"length {max_length} exceeds the model's {limit} positions")
        edges = sorted({min(e, limit) for e in edges})
    return edges


def segment_bucket_edges(max_length: int, segment: int) -> list[int]:
    """Padded lengths for a model that runs long rows as segments (XLNet, Transformer-XL).

    Up to ``segment``: :func:`bucket_edges`. Beyond: whole numbers of segments, every count up to 8, then
    ~12.5% apart (padding stays under one segment plus 12.5%; the shapes grow with ``log(max_length)``).
    """
    edges = bucket_edges(min(max_length, segment), limit=segment)
    if max_length > segment:
        counts = bucket_edges(-(-max_length // segment), step=1, linear_until=8)
        edges += [segment * n for n in counts if n > 1]
    return edges


def bucket_of(length: int, edges: Sequence[int]) -> int:
    """The smallest edge >= ``length``."""
    for edge in edges:
        if edge >= length:
            return edge
    raise ValueError(f"length {length} exceeds the largest bucket {edges[-1]}")


@dataclasses.dataclass(frozen=True)
class Batch:
    """One device call: ``rows`` x ``padded_length`` tokens; ``indices`` into the sequence list (<= rows)."""

    indices: tuple[int, ...]
    padded_length: int
    rows: int


def rows_for(padded_length: int, max_tokens: int, max_rows: int, row_multiple: int,
             row_cap: Optional[Callable[[int], int]] = None) -> int:
    """Rows of a batch of ``padded_length``: a multiple of ``row_multiple``, at least one per device.

    Within ``max_tokens``, ``max_rows`` and ``row_cap(padded_length)`` (the memory bound) where those allow.
    """
    rows = max(1, min(max_rows, max_tokens // padded_length, row_cap(padded_length) if row_cap else max_rows))
    return max(row_multiple, rows // row_multiple * row_multiple)


def plan_batches(token_lengths: Sequence[int], *, max_tokens: int, max_rows: int = 100, row_multiple: int = 1,
                 edges: Sequence[int] | None = None, row_cap: Optional[Callable[[int], int]] = None) -> list[Batch]:
    """Groups sequences into batches, longest first (as ProtTrans' embedder sorts).

    A batch starts with the longest sequence left, is padded to that sequence's bucket, and takes the
    next sequences in length order; its row count depends only on the padded length, so there is one
    compiled shape per bucket. Only the very last batch has empty rows.

    Args:
      token_lengths: tokens per sequence (residues plus special tokens).
      max_tokens: padded tokens per batch (the memory bound).
      max_rows: sequences per batch at most.
      row_multiple: rows must divide evenly over this many devices.
      edges: bucket lengths (default :func:`bucket_edges` up to the longest sequence).
      row_cap: most rows a batch of a given padded length may have (memory), if any.
    """
    if not token_lengths:
        return []
    edges = list(edges or bucket_edges(max(token_lengths)))
    order = sorted(range(len(token_lengths)), key=lambda i: (-token_lengths[i], i))
    batches, start = [], 0
    while start < len(order):
        padded = bucket_of(token_lengths[order[start]], edges)
        rows = rows_for(padded, max_tokens, max_rows, row_multiple, row_cap)
        batches.append(Batch(tuple(order[start:start + rows]), padded, rows))
        start += rows
    return batches

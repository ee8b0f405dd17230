"""How long a sequence the encoder can take in the memory at hand, and how to cut longer ones into windows."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import jax

AVAILABLE_MEMORY_ENV = "PROTTRANS_JAX_AVAILABLE_MEMORY_BYTES"  # overrides the free-memory figure (tests, shared hosts)

# Peak memory of one row (sequence) of L tokens, measured with scripts/check_long_sequence.py on CPU (VmHWM
# minus the RSS before the call, compilation included; BENCHMARKS.md, 2026-12-03): XLA keeps ~4.0-4.1 float32
# [L, L] score tensors per head live for T5 (the stack's position bias joined with the mask, then logits,
# exponentials and probabilities) and ~5.0-5.1 for the BERT family (its mask bias is broadcast to every head
# in every layer), whatever the width, rows or dtype (bfloat16 peaks no higher). The bound takes 4.5 / 5.5 per
# head (10% over) plus 2 head-independent ones (mask, position index). ProtT5-XL's encoder (32 heads) on 5,000
# residues peaked at 18.0 GiB with its 4.8 GB of weights: ~14.5 GB of activations, under this bound (15.5 GB).
# XLNet and Transformer-XL, one segment of queries over memory + segment keys (16 heads, 2,048-token segments,
# memory 1,024 or 2,048; scores, probabilities and position terms, measured the same way on 2026-12-03): ~6.4 /
# ~5.7 such tensors per head for XLNet (its position scores span keys + queries before the relative shift) and
# ~3.0-3.1 for Transformer-XL; the bound takes 7.0 and 3.5.
_SCORES_PER_HEAD = {"t5": 4.5, "bert": 5.5, "xlnet": 7.0, "transfo_xl": 3.5}
_RECURRENT = {"XLNetConfig": "xlnet", "TransfoXLConfig": "transfo_xl"}
_SCORES_SHARED = 2
_ACTIVATION_COPIES = 8  # per token: residual, normed input, q/k/v/out and the feed-forward's two
_MEMORY_COPIES = 3  # per memory position: its keys and values, and the memory joined with the segment
_FIXED_BYTES = 64 << 20  # XLA's runtime, compilation, output and HDF5 buffers (~20 MB measured)


def available_memory_bytes(device: Optional[Any] = None) -> int:
    """Free memory in bytes: ``$PROTTRANS_JAX_AVAILABLE_MEMORY_BYTES`` if set, else measured.

    Measured: an accelerator's allocator limit minus its use, or the host's available RAM.

    Raises:
      ValueError: when the environment variable is not a positive integer.
    """
    if os.environ.get(AVAILABLE_MEMORY_ENV):
        value = os.environ[AVAILABLE_MEMORY_ENV]
        try:
            parsed = int(float(value))
        except ValueError:
            parsed = 0
        if parsed <= 0:
            raise ValueError(f"${AVAILABLE_MEMORY_ENV}={value!r}: give the free memory in bytes, e.g. 2000000000")
        return parsed
    device = device or jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # unknown platform: assume a modest 8 GiB


def _family(config: Any) -> str:
    return _RECURRENT.get(type(config).__name__) or ("t5" if hasattr(config, "d_model") else "bert")


def _segment_bytes(config: Any, tokens: int, dtype_bytes: int, memory: int = 0) -> int:
    """Peak activation bytes of ``tokens`` queries over ``memory + tokens`` keys (scores are float32 whatever
    the compute dtype)."""
    width = getattr(config, "d_model", None) or config.hidden_size
    ff = getattr(config, "d_ff", None) or getattr(config, "d_inner", None) or config.intermediate_size
    heads = getattr(config, "num_heads", None) or config.n_head
    scores = _SCORES_PER_HEAD[_family(config)] * heads + _SCORES_SHARED
    activations = tokens * (_ACTIVATION_COPIES * width + 2 * ff) + memory * _MEMORY_COPIES * width
    return int(4 * scores * tokens * (tokens + memory)) + activations * max(dtype_bytes, 4)


def _row_bytes(config: Any, tokens: int, dtype_bytes: int, segment: Optional[int] = None, memory: int = 0) -> int:
    """Peak bytes of one row of ``tokens``: whole, or (``segment`` set and shorter) as segments with memory."""
    if not segment or tokens <= segment:
        return _segment_bytes(config, tokens, dtype_bytes)
    width = config.d_model
    carried = 2 * config.num_layers * memory * width * max(dtype_bytes, 4)  # memory into and out of a segment
    states = 2 * tokens * width * 4  # every segment's states, stacked, then joined into the row
    return _segment_bytes(config, segment, dtype_bytes, memory) + carried + states


def peak_bytes(config: Any, tokens: int, dtype_bytes: int = 4, rows: int = 1, segment: Optional[int] = None,
               memory: int = 0) -> int:
    """A bound on the memory one encoder call on ``rows`` x ``tokens`` adds to a process (weights excluded).

    ``rows`` counts the rows sharing one memory (all of them on CPU, those of one device on an accelerator).
    XLNet and Transformer-XL run rows longer than ``segment`` tokens as segments, each attending to
    ``memory`` positions before it: their bound is one segment's queries x (segment + memory) keys, plus
    the memory carried and the row's states.
    """
    return _FIXED_BYTES + rows * _row_bytes(config, tokens, dtype_bytes, segment, memory)


def max_tokens_for_memory(config: Any, available: int, dtype_bytes: int = 4, fraction: float = 0.8,
                          rows: int = 1) -> int:
    """The longest sequence (tokens, at least 1) whose :func:`peak_bytes` fits in ``fraction`` of ``available``."""
    budget = fraction * available
    fits = lambda n: peak_bytes(config, n, dtype_bytes, rows) <= budget  # noqa: E731
    # peak_bytes = fixed + rows * (a n^2 + b n): solve, then step to the exact edge (float rounding).
    a = (peak_bytes(config, 2, dtype_bytes, rows) - 2 * peak_bytes(config, 1, dtype_bytes, rows)
         + _FIXED_BYTES) / 2
    b = peak_bytes(config, 1, dtype_bytes, rows) - _FIXED_BYTES - a
    room = max(budget - _FIXED_BYTES, 0)
    n = max(1, int((-b + math.sqrt(b * b + 4 * a * room)) / (2 * a)))
    while fits(n + 1):
        n += 1
    while n > 1 and not fits(n):
        n -= 1
    return n


def max_rows_for_memory(config: Any, tokens: int, budget: int, dtype_bytes: int = 4, segment: Optional[int] = None,
                        memory: int = 0) -> int:
    """Rows of ``tokens`` sharing one memory whose :func:`peak_bytes` stays within ``budget`` (at least 1)."""
    return max(1, (budget - _FIXED_BYTES) // _row_bytes(config, tokens, dtype_bytes, segment, memory))


def windows(length: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows covering ``[0, length)``: ``(start, end, keep_start, keep_end)`` each.

    Windows are ``window`` residues long and advance by ``window - overlap``; the last one ends at
    ``length``. Each residue is taken from exactly one window: the one whose ``[keep_start, keep_end)``
    holds it, split at the middle of each overlap so every kept residue has context on both sides.
    """
    if length <= window:
        return [(0, length, 0, length)]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be in [0, window={window})")
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    spans = [(s, s + window) for s in starts]
    cuts = [0] + [(spans[i + 1][0] + spans[i][1]) // 2 for i in range(len(spans) - 1)] + [length]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(spans)]

"""How long a sequence the encoder can take in the memory at hand, and how to cut longer ones into windows."""

from __future__ import annotations

import math
from typing import Any, Optional

import jax

# Per head and token pair: f32 scores, the biased scores, probabilities and a spare. ProtT5-XL's encoder on
# 5,000 residues peaked at 18.0 GiB on CPU with its 4.8 GB of weights (scripts/check_long_sequence.py):
# ~13 GB of activations, which this estimate (13.6 GB) covers.
_ATTENTION_COPIES = 4
_ACTIVATION_COPIES = 8  # per token: residual, normed input, q/k/v/out and the feed-forward's two


def available_memory_bytes(device: Optional[Any] = None) -> int:
    """Free memory of an accelerator (its allocator's limit minus use), or the host's available RAM."""
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


def peak_bytes(config: Any, tokens: int, dtype_bytes: int = 4) -> int:
    """A deliberately generous estimate of one sequence's activation memory in the encoder."""
    heads = getattr(config, "num_heads")
    width = getattr(config, "d_model", None) or config.hidden_size
    ff = getattr(config, "d_ff", None) or config.intermediate_size
    quadratic = _ATTENTION_COPIES * heads * tokens * tokens * 4
    linear = tokens * (_ACTIVATION_COPIES * width + 2 * ff) * max(dtype_bytes, 4)
    return quadratic + linear


def max_tokens_for_memory(config: Any, available: int, dtype_bytes: int = 4, fraction: float = 0.8) -> int:
    """The longest sequence (tokens) whose :func:`peak_bytes` fits in ``fraction`` of ``available``."""
    budget = fraction * available
    heads = config.num_heads
    width = getattr(config, "d_model", None) or config.hidden_size
    ff = getattr(config, "d_ff", None) or config.intermediate_size
    a = _ATTENTION_COPIES * heads * 4
    b = (_ACTIVATION_COPIES * width + 2 * ff) * max(dtype_bytes, 4)
    return max(1, int((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a)))


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

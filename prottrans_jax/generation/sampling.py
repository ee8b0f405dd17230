"""Sampling one token from next-token logits: allowed ids, repetition penalty, temperature, top-k, top-p.

Pure functions of arrays (jit-friendly); the order is HF ``generate``'s: repetition penalty, temperature,
top-k, then top-p, each over the ids still allowed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array
NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn (hashable: it is a static argument of the jitted decoding step).

    Attributes:
      temperature: divides the logits (> 0; 1 samples the model's distribution).
      top_k: keep the ``top_k`` most likely allowed ids (0: all). Ties with the k-th are kept.
      top_p: keep the smallest set of most likely ids whose probability reaches ``top_p`` (1: all).
      repetition_penalty: CTRL's penalty on ids already in the sequence (prompt included): positive
        logits are divided by it, negative ones multiplied (1: none; > 1 discourages repeats).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"--temperature {self.temperature}: must be > 0")
        if self.top_k < 0:
            raise ValueError(f"--top-k {self.top_k}: must be >= 0 (0 keeps every allowed token)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p}: must be in (0, 1] (1 keeps every allowed token)")
        if not self.repetition_penalty > 0:
            raise ValueError(f"--repetition-penalty {self.repetition_penalty}: must be > 0 (1: no penalty)")


def penalize_repeats(logits: Array, seen: Array, penalty: float) -> Array:
    """``[batch, vocab]`` logits with CTRL's penalty where ``seen [batch, vocab]`` (bool) is True."""
    if penalty == 1.0:
        return logits
    return jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


def keep_top_k(logits: Array, k: int) -> Array:
    """``[batch, vocab]``: ids below the k-th largest logit set to -inf (``k`` 0: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][:, -1:]  # [batch, 1]
    return jnp.where(logits < kth, NEG_INF, logits)


def keep_top_p(logits: Array, p: float) -> Array:
    """``[batch, vocab]``: only the smallest most-likely set whose probability reaches ``p`` stays finite."""
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)  # [batch, vocab], most likely first
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the ids ranked above each one
    keep_sorted = before < p  # the top id always stays (0 < p)
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, NEG_INF)


def sampling_logits(logits: Array, allowed: Array, seen: Array, settings: SamplingSettings) -> Array:
    """The logits tokens are drawn from: ``[batch, vocab]`` float32, -inf where an id may not be drawn.

    Args:
      logits: ``[batch, vocab]`` the model's next-token logits.
      allowed: ``[batch or 1, vocab]`` bool, the ids that may be drawn at this step.
      seen: ``[batch, vocab]`` bool, ids already in each sequence (for the repetition penalty).
      settings: the sampling settings.
    """
    x = jnp.where(allowed, logits.astype(jnp.float32), NEG_INF)
    x = penalize_repeats(x, seen, settings.repetition_penalty) / settings.temperature
    return keep_top_p(keep_top_k(x, settings.top_k), settings.top_p)


def draw(key: Array, logits: Array, allowed: Array, seen: Array, settings: SamplingSettings) -> tuple[Array, Array]:
    """One token per row and the model's log-probability of it.

    Returns:
      ``(tokens [batch] int32, log_probs [batch])``: the log-probability is the model's own (temperature 1,
      no filtering, full vocabulary), so it adds up to the likelihood ``score`` reports.
    """
    tokens = jax.random.categorical(key, sampling_logits(logits, allowed, seen, settings), axis=-1)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return tokens.astype(jnp.int32), jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]

"""The sampling loop shared by every family: one jit-compiled step of fixed shapes per token.

A family supplies an :class:`IncrementalDecoder`: ``start`` reads the prefix (context and prompt) once and
returns the logits of the first new token; ``step`` feeds one token per sequence through the cache or
memory and returns the next logits. Neither ever recomputes what came before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax.generation import sampling
from prottrans_jax.generation.tokens import Framing

Array = jax.Array


class IncrementalDecoder(Protocol):
    """A family's cached decoding (shapes fixed when it is built: batch, prefix length, capacity)."""

    def start(self, params: Any, prefix: Array) -> tuple[Any, Array]:
        """``prefix [batch, P]`` ids -> ``(state, logits [batch, vocab])`` for the token after it."""

    def step(self, params: Any, state: Any, tokens: Array) -> tuple[Any, Array]:
        """``tokens [batch]`` -> ``(state, logits [batch, vocab])`` for the token after them."""


@flax.struct.dataclass
class Carry:
    """What one sampling step reads and writes.

    Attributes:
      state: the decoder's cache or memory.
      logits: ``[batch, vocab]`` the model's logits for the next token.
      seen: ``[batch, vocab]`` bool, ids already in each sequence (prompt included).
      done: ``[batch]`` bool, the sequence has drawn its end token.
      residues: ``[batch]`` int32, residues so far (prompt included).
      log_likelihood: ``[batch]`` float32, the model's log-probability of the drawn tokens.
    """

    state: Any
    logits: Array
    seen: Array
    done: Array
    residues: Array
    log_likelihood: Array


@dataclasses.dataclass
class SampledBatch:
    """Host arrays of one finished batch: ``tokens [batch, steps]`` (pad after the end), and per row
    ``log_likelihood``, ``ended`` (drew the end token) and ``residues`` (prompt included)."""

    tokens: np.ndarray
    log_likelihood: np.ndarray
    ended: np.ndarray
    residues: np.ndarray


class SamplingLoop:
    """Draws ``steps`` tokens at most for a batch, one jitted call per token.

    Attributes:
      traces: how many times the per-token step was traced (1 after any number of tokens: fixed shapes).
    """

    def __init__(self, decoder: IncrementalDecoder, frame: Framing, settings: sampling.SamplingSettings):
        self.decoder, self.frame, self.settings = decoder, frame, settings
        self.traces = 0
        self.start = jax.jit(decoder.start)
        self._advance = jax.jit(self._advance_impl)

    def _advance_impl(self, params, carry: Carry, key: Array) -> tuple[Carry, Array]:
        """Draws one token per row, adds it to the bookkeeping and feeds it to the model."""
        self.traces += 1  # runs only while tracing
        frame = self.frame
        ids = jnp.arange(carry.logits.shape[-1])
        # The end token only once the protein has a residue.
        may_end = (ids != frame.end_id)[None] | (carry.residues > 0)[:, None]
        allowed = jnp.asarray(frame.allowed_mask())[None] & may_end
        tokens, log_probs = sampling.draw(key, carry.logits, allowed, carry.seen, self.settings)
        live = ~carry.done
        ended = live & (tokens == frame.end_id)
        grown = live & ~ended
        tokens = jnp.where(live, tokens, frame.pad_id)
        rows = jnp.arange(tokens.shape[0])
        seen = carry.seen.at[rows, tokens].set(carry.seen[rows, tokens] | grown)
        state, logits = self.decoder.step(params, carry.state, tokens)
        return Carry(state, logits, seen, carry.done | ended, carry.residues + grown.astype(jnp.int32),
                     carry.log_likelihood + jnp.where(live, log_probs, 0.0)), tokens

    def run(self, params: Any, prefix: np.ndarray, prompt_ids: np.ndarray, steps: int, key: Array,
            on_step=None) -> SampledBatch:
        """Samples one batch.

        Args:
          params: the model's weights.
          prefix: ``[batch, P]`` ids (context, then the prompt's residues).
          prompt_ids: the prompt's residue ids (they count as seen and as residues).
          steps: most tokens to draw (the residues still allowed by the maximum length).
          key: PRNG key of this batch.
          on_step: called with the number of steps done at each step (progress).
        """
        batch = prefix.shape[0]
        state, logits = self.start(params, jnp.asarray(prefix, jnp.int32))
        seen = np.zeros(logits.shape, bool)
        seen[:, prompt_ids] = True
        carry = Carry(state, logits, jnp.asarray(seen), jnp.zeros(batch, bool),
                      jnp.full(batch, len(prompt_ids), jnp.int32), jnp.zeros(batch, jnp.float32))
        drawn = np.full((batch, steps), self.frame.pad_id, np.int32)
        for t in range(steps):
            carry, tokens = self._advance(params, carry, jax.random.fold_in(key, t))
            drawn[:, t] = np.asarray(tokens)
            done = np.asarray(carry.done)
            if on_step is not None:
                on_step(steps - t if done.all() else 1)
            if done.all():
                break
        return SampledBatch(drawn, np.asarray(carry.log_likelihood), np.asarray(carry.done),
                            np.asarray(carry.residues))

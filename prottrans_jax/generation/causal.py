"""ProtTXL (Transformer-XL): incremental decoding through its memory, and causal log-likelihoods.

Decoding keeps one memory of fixed size (the prefix plus every token still to come) per layer, filled
from the right: the relative distances of the filled slots are then the true ones, and the empty slots
on the left are masked out. Each step feeds only the new token; the memory holds all earlier hidden
states, so step ``t`` gives exactly the logits of a full forward pass over the first ``t`` tokens
(``same_length`` is off while decoding: every token sees all the tokens before it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax.generation.tokens import Framing, padded_length
from prottrans_jax.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel

Array = jax.Array


def memory_keys(filled: Array, capacity: int, batch: int, new: int) -> Array:
    """``[batch, capacity + new]`` attention mask: the right-most ``filled`` memory slots and the new tokens."""
    slots = jnp.arange(capacity) >= capacity - filled
    return jnp.broadcast_to(jnp.concatenate([slots, jnp.ones(new, bool)]), (batch, capacity + new)).astype(jnp.int32)


class MemoryDecoder:
    """Decoding with a per-layer memory of fixed size filled from the right (Transformer-XL, XLNet).

    State: ``(mems [batch, layers, capacity, embed], filled)``. Subclasses read tokens into memory
    (:meth:`absorb`) and step one token (:meth:`step`).

    Attributes:
      config: the model config.
      capacity: memory slots (the prefix plus the most tokens decoded).
    """

    def __init__(self, config, capacity: int):
        self.config, self.capacity = config, capacity

    def absorb(self, params, state, ids: Array):
        """Reads ``ids [batch, q]`` into memory; returns the new state."""
        raise NotImplementedError

    def step(self, params, state, tokens: Array):
        """``tokens [batch]`` -> ``(state, logits [batch, vocab])`` of the position after them."""
        raise NotImplementedError

    def start(self, params, prefix: Array):
        """Reads ``prefix [batch, P]`` into memory (all but its last token at once), then steps the last one."""
        cfg = self.config
        batch, length = prefix.shape
        state = (jnp.zeros((batch, cfg.num_layers, self.capacity, cfg.hidden_size), cfg.dtype), jnp.int32(0))
        if length > 1:
            state = self.absorb(params, state, prefix[:, :-1])
        return self.step(params, state, prefix[:, -1])


class TransfoXLDecoder(MemoryDecoder):
    """:class:`~prottrans_jax.generation.decoding.IncrementalDecoder` for Transformer-XL."""

    def __init__(self, config: TransfoXLConfig, capacity: int):
        super().__init__(config, capacity)
        self.module = TransfoXLLMHeadModel(config.replace(mem_len=capacity, same_length=False))

    def _feed(self, params, state, ids: Array):
        mems, filled = state
        keys = memory_keys(filled, self.capacity, ids.shape[0], ids.shape[1])
        out = self.module.apply({"params": params}, ids, mems=mems, attention_mask=keys)
        return (out.mems, filled + ids.shape[1]), out.logits[:, -1]

    def absorb(self, params, state, ids: Array):
        return self._feed(params, state, ids)[0]

    def step(self, params, state, tokens: Array):
        return self._feed(params, state, tokens[:, None])


class CausalScorer:
    """Log-likelihood of proteins under Transformer-XL: every residue and the end token given those before.

    Proteins longer than one segment are read segment after segment, each attending to the memory the
    previous ones left (the model's ``mem_len`` positions), as Transformer-XL evaluates long texts. The
    memory has a fixed size from the first segment on (empty slots masked), so one compilation serves all.

    Attributes:
      segment: tokens per forward pass (None: the whole protein at once).
    """

    def __init__(self, module: TransfoXLLMHeadModel, frame: Framing, segment: int | None = None):
        cfg = module.config
        self.module, self.frame = module, frame
        self.segment = (segment or cfg.mem_len) if cfg.mem_len > 0 else None
        self._segment_jit = jax.jit(self._segment_log_likelihood)

    def _segment_log_likelihood(self, params, ids: Array, targets: Array, weights: Array, state):
        """``ids/targets/weights [batch, S]``, state ``(mems, filled)`` or None (no memory) -> summed
        log-probs of the targets ``[batch]`` and the next state."""
        if state is None:
            out = self.module.apply({"params": params}, ids)
        else:
            mems, filled = state
            keys = memory_keys(filled, mems.shape[2], ids.shape[0], ids.shape[1])
            out = self.module.apply({"params": params}, ids, mems=mems, attention_mask=keys)
            state = (out.mems, filled + ids.shape[1])
        log_probs = jax.nn.log_softmax(out.logits, axis=-1)  # [batch, S, vocab]
        picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [batch, S]
        return jnp.sum(picked * weights, axis=1), state

    def __call__(self, params, residue_ids: list[np.ndarray], rows: int) -> np.ndarray:
        """``[len(residue_ids)]`` log-likelihoods of one batch (padded to ``rows`` sequences)."""
        cfg = self.module.config
        longest = max(len(ids) for ids in residue_ids) + len(self.frame.context)  # inputs: all but the end
        width = padded_length(longest, self.segment)
        tokens = self.frame.framed(residue_ids, width + 1, rows)  # [rows, width + 1]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        counts = np.asarray([len(ids) + 1 for ids in residue_ids] + [0] * (rows - len(residue_ids)))
        start = len(self.frame.context) - 1  # the first input whose next token is scored
        pos = np.arange(width)[None, :]
        weights = ((pos >= start) & (pos < start + counts[:, None])).astype(np.float32)
        seg = min(self.segment or width, width)
        state = None
        if seg < width:  # [rows, layers, mem_len, embed], all slots empty
            state = (jnp.zeros((rows, cfg.n_layer, cfg.mem_len, cfg.d_model), cfg.dtype), jnp.int32(0))
        total = np.zeros(rows)
        for s in range(0, width, seg):
            part, state = self._segment_jit(params, inputs[:, s:s + seg], targets[:, s:s + seg],
                                            weights[:, s:s + seg], state)
            total += np.asarray(part)
        return total[:len(residue_ids)]

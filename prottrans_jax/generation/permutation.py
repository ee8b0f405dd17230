"""ProtXLNet: left-to-right decoding through the query stream with memory, and exact permutation likelihoods.

XLNet's likelihood of a protein depends on a factorisation order; both commands use the left-to-right
one: ``perm_mask`` lets token ``i`` see only tokens ``j < i`` (its content stream also itself), and the
query stream predicts each token at its own position (``target_mapping``). That is an exact
autoregressive likelihood, and it makes every content state depend on earlier tokens only, so decoding
can keep them as memory and never recompute them.

transformers' ``XLNetLMHeadModel.prepare_inputs_for_generation`` differs: it appends a dummy token that
nothing attends to and predicts it through the query stream (as here), but lets the prefix attend to itself
in both directions and recomputes the last two tokens each step (its memory is an approximation). Here each
step feeds ``[new token, dummy]``: the new token's content stream sees the memory and itself, the dummy's
query stream (the next position) sees the memory and the new token, and only the new token's layer
inputs join the memory (``reuse_len=1``). The memory has a fixed size and fills from the right, with
the empty slots masked (``attention_mask`` over memory and segment).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax.generation.causal import MemoryDecoder, memory_keys
from prottrans_jax.generation.tokens import Framing, padded_length
from prottrans_jax.models.xlnet import XLNetConfig, XLNetLMHeadModel

Array = jax.Array


def left_to_right_perm_mask(batch: int, length: int) -> Array:
    """``[batch, length, length]`` float: 1 where token ``i`` may not see token ``j`` (``j >= i``)."""
    return jnp.broadcast_to(jnp.triu(jnp.ones((length, length), jnp.float32)), (batch, length, length))


class XLNetDecoder(MemoryDecoder):
    """:class:`~prottrans_jax.generation.decoding.IncrementalDecoder` for XLNet."""

    def __init__(self, config: XLNetConfig, capacity: int):
        super().__init__(config, capacity)
        self.prefix_module = XLNetLMHeadModel(config.replace(mem_len=capacity, reuse_len=None))
        self.step_module = XLNetLMHeadModel(config.replace(mem_len=capacity, reuse_len=1))

    def absorb(self, params, state, ids: Array):
        """Content streams only, each token seeing the memory, the tokens before it and itself."""
        mems, filled = state
        batch, length = ids.shape
        out = self.prefix_module.apply({"params": params}, ids, mems=mems,
                                       attention_mask=memory_keys(filled, self.capacity, batch, length),
                                       perm_mask=left_to_right_perm_mask(batch, length))
        return out.mems, filled + length

    def step(self, params, state, tokens: Array):
        mems, filled = state
        batch = tokens.shape[0]
        ids = jnp.stack([tokens, jnp.zeros_like(tokens)], axis=1)  # [batch, 2]: the token, then the dummy
        perm = jnp.broadcast_to(jnp.asarray([[0.0, 1.0], [0.0, 1.0]]), (batch, 2, 2))  # nobody sees the dummy
        target = jnp.broadcast_to(jnp.asarray([[0.0, 1.0]]), (batch, 1, 2))  # predict at the dummy's position
        out = self.step_module.apply({"params": params}, ids, mems=mems, perm_mask=perm, target_mapping=target,
                                     attention_mask=memory_keys(filled, self.capacity, batch, 2))
        return (out.mems, filled + 1), out.logits[:, 0]


class PermutationScorer:
    """Exact left-to-right log-likelihood of proteins under XLNet (residues and end token given the context).

    One forward pass per batch over whole proteins (no segments: attention memory grows with the square
    of the length).
    """

    def __init__(self, module: XLNetLMHeadModel, frame: Framing):
        self.module, self.frame = module, frame
        self._jit = jax.jit(self._log_likelihood)

    def _log_likelihood(self, params, tokens: Array, weights: Array) -> Array:
        """``tokens [batch, T]``, ``weights [batch, T - C]`` -> summed log-probs of tokens ``C..`` ``[batch]``."""
        batch, length = tokens.shape
        first = len(self.frame.context)
        # [T - C, T] one-hot rows: the query stream predicts every token after the context
        target = jnp.broadcast_to(jnp.eye(length, dtype=jnp.float32)[first:], (batch, length - first, length))
        out = self.module.apply({"params": params}, tokens, perm_mask=left_to_right_perm_mask(batch, length),
                                target_mapping=target, use_mems=False)
        log_probs = jax.nn.log_softmax(out.logits, axis=-1)  # [batch, T - C, vocab]
        picked = jnp.take_along_axis(log_probs, tokens[:, first:, None], axis=-1)[..., 0]
        return jnp.sum(picked * weights, axis=1)

    def __call__(self, params, residue_ids: list[np.ndarray], rows: int) -> np.ndarray:
        """``[len(residue_ids)]`` log-likelihoods of one batch (padded to ``rows`` sequences)."""
        first = len(self.frame.context)
        width = padded_length(max(len(ids) for ids in residue_ids) + first + 1)
        tokens = self.frame.framed(residue_ids, width, rows)
        counts = np.asarray([len(ids) + 1 for ids in residue_ids] + [0] * (rows - len(residue_ids)))
        weights = (np.arange(width - first)[None, :] < counts[:, None]).astype(np.float32)
        return np.asarray(self._jit(params, tokens, weights))[:len(residue_ids)]

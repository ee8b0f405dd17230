"""Embedding with the autoregressive pair (ProtXLNet, ProtTXL): long proteins run segment by segment with memory.

A row of ``T`` tokens no longer than the segment runs in one call, as ProtTrans' code runs it. A longer
row (``T`` a multiple of the segment length ``S``) runs as ``T / S`` consecutive segments in order, each
attending to its own tokens and to a memory of the ``M`` positions before it (every layer's input,
Transformer-XL's segment-level recurrence; no gradient is ever needed). So a residue sees its own
segment and the ``M`` tokens before that segment, never further back. Padding is masked out of both the
segment and the memory, so a protein's embedding does not depend on its batch. Where padding goes keeps
each protein's segmentation independent of the padded length too: Transformer-XL pads on the right
(segments start at the protein's first token), XLNet on the left (segments end at its ``<cls>``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

DEFAULT_SEGMENT_LENGTH = 512  # tokens per segment (ProtTrans' notebooks: 512-token inputs, mem_len=512)
DEFAULT_MEMORY_LENGTH = 512  # when the model's config names none (ProtXLNet's released config: mem_len null)


def memory_length(config: Any, requested: int | None) -> int:
    """Memory positions kept between segments: ``requested``, else the model's ``mem_len``, else 512.

    Raises:
      ValueError: for a requested length below 1.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"--mem-len {requested}: the memory must hold at least 1 token")
    return requested or config.mem_len or DEFAULT_MEMORY_LENGTH


def embedding_config(config: Any, memory: int) -> Any:
    """The config to embed with: memory of ``memory`` positions, every position of a segment kept in it."""
    changes = {"mem_len": memory}
    if hasattr(config, "reuse_len"):  # XLNet pretraining keeps only a segment's first reuse_len tokens
        changes["reuse_len"] = None
    return config.replace(**changes)


def runner(module: Any, scheme: Any, layer: int, n_layers: int, segment: int, memory: int) -> Callable:
    """``run(params, ids [rows, T]) -> (states [rows, T, hidden], pooled [rows, hidden])`` for ``module``.

    Args:
      module: an ``XLNetModel`` or ``TransfoXLModel`` built from :func:`embedding_config`.
      scheme: the family's token scheme (padding id and side, special tokens).
      layer: hidden-state index returned (``n_layers``: the final output).
      n_layers: the model's layers.
      segment: tokens per segment ``S``; longer rows must be a multiple of it.
      memory: memory positions ``M`` (the config's ``mem_len``).
    """
    hidden = layer != n_layers

    def call(params, ids, keys, mems=None):
        out = module.apply({"params": params}, input_ids=ids, mems=mems, attention_mask=keys.astype(jnp.int32),
                           output_hidden_states=hidden)
        return out, (out.hidden_states[layer] if hidden else out.last_hidden_state)

    def run(params, ids):
        rows, length = ids.shape
        keys = ids != scheme.pad_id  # [rows, T]: padding is never attended to
        if length <= segment:
            states = call(params, ids, keys)[1]  # [rows, T, hidden]
        else:
            states = _segments(params, ids, keys, call, segment, memory, rows, length, module.config)
        lengths, residue = scheme.residue_mask(ids)  # [rows], [rows, T]
        total = jnp.sum(jnp.where(residue[..., None], states.astype(jnp.float32), 0.0), axis=1)
        return states, total / jnp.maximum(lengths, 1)[:, None].astype(jnp.float32)  # [rows, hidden]

    return run


def _segments(params, ids, keys, call, segment, memory, rows, length, config):
    """``T / S`` segments in order under ``lax.scan``, carrying ``(mems, which memory positions are tokens)``."""
    if length % segment:
        raise ValueError(f"a row of {length} tokens is not a whole number of {segment}-token segments")
    count = length // segment
    # [rows, T] -> [segments, rows, S]
    split = lambda x: jnp.swapaxes(x.reshape(rows, count, segment), 0, 1)  # noqa: E731
    # The memory starts full of masked zeros, so every segment has the same shapes (one compiled step).
    mems = jnp.zeros((rows, config.n_layer, memory, config.d_model), config.dtype)  # [rows, layers, M, embed]
    mem_keys = jnp.zeros((rows, memory), bool)  # [rows, M]

    def step(carry, xs):
        mems, mem_keys = carry
        seg_ids, seg_keys = xs  # [rows, S] each
        visible = jnp.concatenate([mem_keys, seg_keys], axis=1)  # [rows, M + S]
        out, states = call(params, seg_ids, visible, mems)
        # the model keeps the last M positions of [memory; segment] per layer: the same for the key mask
        return (lax.stop_gradient(out.mems).astype(mems.dtype), visible[:, -memory:]), states

    _, states = lax.scan(step, (mems, mem_keys), (split(ids), split(keys)))  # [segments, rows, S, hidden]
    return jnp.swapaxes(states, 0, 1).reshape(rows, length, -1)  # [rows, T, hidden]

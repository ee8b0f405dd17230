"""Causal LM for Transformer-XL (ProtTXL): each window is scanned in segments that carry memory.

Where memory comes from. The pipeline (``causal_lm_data``) emits one window per protein: up to
``segments x segment_length`` tokens of ``[CLS] residues [SEP]`` (cropped at a random offset when
longer), as next-token pairs ``decoder_input_tokens``/``decoder_target_tokens``. The train step
splits each window into its consecutive segments and ``jax.lax.scan`` s over them, carrying
Transformer-XL's memory (``mems``, no gradient, ``config.mem_len`` long) from one segment to the
next and summing the next-token loss. So the segments of a long protein reach the model in order,
with real memory, in one step.

Why not the pipeline emitting segments in order across steps (the original Transformer-XL's
stream, with memory carried from step to step)? That ties every batch row to one stream for the
whole run: seqio could no longer shuffle examples, pack them or split them over hosts, and the
memory would become training state that a checkpoint must hold for an exact resume. Here
shuffling, packing and multi-host sharding stay seqio's, and nothing is carried across steps:
each step starts from empty memory, so a checkpoint holds no memory and resuming is exact.

A fixed-shape scan: memory is always ``mem_len`` positions, with a validity mask instead of a
growing length (the first segment sees ``mem_len`` masked-out zeros). Masked keys get exactly zero
attention and relative distances count from the true positions, so this equals running the
segments one by one with growing memory (tested), at the cost of attending over ``mem_len``
keys from the first segment on.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gin
import jax
import jax.numpy as jnp

from prottrans_jax.models.transfo_xl import TransfoXLConfig

Array = jax.Array
OBJECTIVE = "txl_causal_lm"


def num_segments(window: int, segment_length: int) -> int:
    """How many segments a window holds.

    Raises:
      ValueError: when ``segment_length`` does not divide the window (naming both and the fix).
    """
    if segment_length <= 0 or window % segment_length:
        raise ValueError(
            f"the causal LM window of {window} tokens (TASK_FEATURE_LENGTHS) is not a whole number of segments of "
            f"{segment_length} (SEGMENT_LENGTH in the run gins, CausalLMObjective.segment_length); make the window a "
            "multiple of the segment length")
    return window // segment_length


def split_segments(x: Array, segment_length: int) -> Array:
    """``[batch, window, ...]`` -> ``[segments, batch, segment_length, ...]`` (consecutive pieces, in order)."""
    batch, window = x.shape[:2]
    n = num_segments(window, segment_length)
    return x.reshape((batch, n, segment_length) + x.shape[2:]).swapaxes(0, 1)


@gin.configurable
class CausalLMObjective:
    """Next-token loss summed over a window's segments, scanned in order with memory carried.

    ``logits_fn(params, batch, rng)`` takes ``{"decoder_input_tokens": [batch, segment], "memory":
    M or None}`` and returns ``(logits [batch, segment, vocab], next memory)``; ``None`` means empty
    memory, and a memory of zeros must mean the same (how the scan starts). See :func:`txl_logits_fn`.

    Attributes:
      segment_length: tokens per segment (Transformer-XL's target length); divides the window.
      z_loss: coefficient of the ``log(Z)**2`` penalty (0: plain cross entropy, as Transformer-XL).
    """

    name = "causal_lm"

    def __init__(self, segment_length: int = 128, z_loss: float = 0.0):
        self.segment_length = segment_length
        self.z_loss = z_loss

    def normalizers(self, batch: Mapping[str, Array]) -> dict[str, Array]:
        return {"lm": jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)}

    def loss(self, logits_fn: Callable, params, batch, rng, normalizers) -> tuple[Array, dict[str, Array]]:
        from prottrans_jax.objectives import cross_entropy_sums  # objectives.py imports this module

        keys = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
        inputs, targets, weights = (split_segments(batch[k], self.segment_length) for k in keys)  # [n, b, seg]
        first = {"decoder_input_tokens": inputs[0], "memory": None}
        memory_shape = jax.eval_shape(lambda: logits_fn(params, first, rng)[1])
        memory = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), memory_shape)  # empty memory

        def body(memory, xs):
            i, seg_inputs, seg_targets, seg_weights = xs
            logits, memory = logits_fn(params, {"decoder_input_tokens": seg_inputs, "memory": memory},
                                       jax.random.fold_in(rng, i))  # [b, seg, vocab]
            return memory, cross_entropy_sums(logits, seg_targets, seg_weights, self.z_loss)

        _, sums = jax.lax.scan(body, memory, (jnp.arange(inputs.shape[0]), inputs, targets, weights))
        loss_sum, z_sum, correct = (jnp.sum(s) for s in sums)  # over segments
        metrics = {"lm_loss_sum": loss_sum, "lm_z_loss_sum": z_sum, "lm_correct_sum": correct,
                   "lm_weight_sum": jnp.sum(weights.astype(jnp.float32))}
        return loss_sum / normalizers["lm"], metrics


# ---------------------------------------------------------------------------------------
# Trainer adapter for TransfoXLLMHeadModel (registered in model_adapters.py).
# ---------------------------------------------------------------------------------------
def empty_memory(config: TransfoXLConfig, batch: int) -> tuple[Array, Array]:
    """``(mems [batch, layers, mem_len, embed] zeros, valid [batch, mem_len] all False)``."""
    mems = jnp.zeros((batch, config.n_layer, config.mem_len, config.d_model), config.dtype)
    return mems, jnp.zeros((batch, config.mem_len), bool)


def txl_logits_fn(module) -> Callable:
    """``logits_fn(params, batch, rng, train) -> (logits, memory)`` for one segment, as :class:`CausalLMObjective` asks.

    The memory is ``(mems, valid)``: every layer's last ``mem_len`` hidden inputs and which of those
    positions hold real earlier tokens (None without memory, ``mem_len`` 0).
    """
    config: TransfoXLConfig = module.config

    def logits_fn(params, batch: Mapping[str, Any], rng, train: bool):
        tokens = batch["decoder_input_tokens"]  # [batch, segment]
        rows, length = tokens.shape
        call = dict(enable_dropout=train, rngs={"dropout": rng} if train else None)
        if config.mem_len == 0:
            return module.apply({"params": params}, tokens, **call).logits, None
        mems, valid = batch.get("memory") or empty_memory(config, rows)
        keys = jnp.concatenate([valid, jnp.ones((rows, length), bool)], axis=1)  # [batch, mem_len + segment]
        out = module.apply({"params": params}, tokens, mems=mems, attention_mask=keys, **call)
        return out.logits, (out.mems, keys[:, -config.mem_len:])  # logits [batch, segment, vocab]

    return logits_fn


def txl_init_inputs(feature_lengths: Mapping[str, int]) -> dict:
    """Inputs for ``module.init`` (parameter shapes do not depend on the length)."""
    return {"input_ids": jnp.ones((1, feature_lengths["targets"]), jnp.int32)}


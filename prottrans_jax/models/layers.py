"""Shared Linen primitives: dense with logical axes, norms, attention, relative position bias, embedding."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
from jax import lax

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# The only logical axis names model code may use (t5x's vocabulary).
LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "joined_kv", "vocab", "relpos_buckets", "layers")

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
default_embed_init = nn.initializers.normal(stddev=1.0)
default_relpos_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
# Additive bias for masked attention logits (t5x's value; finite so fully masked rows stay finite).
MASK_BIAS = -1e10


# Names accepted by a config's ``remat_policy`` (what ``jax.checkpoint`` saves in the backward pass).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


def remat_policy(name: str):
    """``jax.checkpoint`` policy for a ``remat_policy`` name (None: save nothing, recompute all)."""
    return {
        "full": None,
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[name]


def with_logical_constraint(x: Array, axes: Sequence[str | None]) -> Array:
    """Constrains ``x``'s sharding by one logical name (or None) per dimension; no-op without rules/mesh."""
    return nn_partitioning.with_sharding_constraint(x, tuple(axes))


_TANH_GELU = functools.partial(jax.nn.gelu, approximate=True)
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact (erf): BERT
    "gelu_new": _TANH_GELU,  # tanh approximation: T5 v1.1's gated-gelu
    "gelu_tanh": _TANH_GELU,
    "gelu_pytorch_tanh": _TANH_GELU,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
}


def get_activation(name: str | Callable) -> Callable[[Array], Array]:
    """Maps an activation name as HF/t5x spell it (see ``ACTIVATIONS``), or a callable, to a function."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _canonicalize_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, Sequence) else (x,)


class DenseGeneral(nn.Module):
    """A linear map over one or more trailing axes, kernel stored 2-D with logical axis names (as t5x).

    The kernel is stored as ``[prod(in_dims), prod(features)]`` so that e.g. a query projection's kernel
    is ``[embed, heads * kv]`` with axes ``('embed', 'joined_kv')``: exactly the transpose of a torch
    ``Linear.weight``.

    Attributes:
      features: output feature size(s); a tuple produces several trailing output axes.
      axis: input axes contracted (negative indices allowed).
      kernel_axes: two logical names for the stored 2-D kernel.
      use_bias: add a bias (BERT) or not (T5).
      bias_axes: one logical name for the stored 1-D bias (defaults to the kernel's output name).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
      kernel_init: kernel initializer.
      bias_init: bias initializer.
    """

    features: int | Sequence[int]
    axis: int | Sequence[int] = -1
    kernel_axes: tuple[str, str] = ("embed", "mlp")
    use_bias: bool = False
    bias_axes: tuple[str] | None = None
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """Applies the map: ``[..., *in_dims] -> [..., *features]``."""
        features = _canonicalize_tuple(self.features)
        axis = tuple(a % inputs.ndim for a in _canonicalize_tuple(self.axis))
        in_dims = tuple(inputs.shape[a] for a in axis)
        kernel = nn_partitioning.param_with_axes(
            "kernel",
            self.kernel_init,
            (int(np.prod(in_dims)), int(np.prod(features))),
            self.param_dtype,
            axes=tuple(self.kernel_axes),
        )
        kernel = jnp.reshape(jnp.asarray(kernel, self.dtype), in_dims + features)
        inputs = jnp.asarray(inputs, self.dtype)
        # [..., *in_dims] x [*in_dims, *features] -> [..., *features]
        out = lax.dot_general(inputs, kernel, ((axis, tuple(range(len(axis)))), ((), ())))
        if self.use_bias:
            bias_axes = self.bias_axes or (self.kernel_axes[-1],)
            bias = nn_partitioning.param_with_axes(
                "bias", self.bias_init, (int(np.prod(features)),), self.param_dtype, axes=tuple(bias_axes)
            )
            out = out + jnp.reshape(jnp.asarray(bias, self.dtype), features)
        return out


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction and no bias; statistics in float32.

    Attributes:
      epsilon: added to the mean square.
      dtype: output dtype.
      param_dtype: scale storage dtype.
    """

    epsilon: float = 1e-6
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Normalizes the last axis: ``[..., embed] -> [..., embed]``."""
        x = jnp.asarray(x, jnp.float32)
        mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * lax.rsqrt(mean2 + self.epsilon)
        scale = nn_partitioning.param_with_axes(
            "scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype, axes=("embed",)
        )
        return jnp.asarray(y * jnp.asarray(scale, jnp.float32), self.dtype)


class LayerNorm(nn.Module):
    """Standard layer norm with scale and bias (BERT family); statistics in float32.

    Attributes:
      epsilon: added to the variance (BERT uses 1e-12).
      dtype: output dtype.
      param_dtype: parameter storage dtype.
    """

    epsilon: float = 1e-12
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Normalizes the last axis: ``[..., embed] -> [..., embed]``."""
        x = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * lax.rsqrt(var + self.epsilon)
        param = functools.partial(nn_partitioning.param_with_axes, shape=(x.shape[-1],), dtype=self.param_dtype,
                                  axes=("embed",))
        scale = param("scale", nn.initializers.ones)
        bias = param("bias", nn.initializers.zeros)
        return jnp.asarray(y * jnp.asarray(scale, jnp.float32) + jnp.asarray(bias, jnp.float32), self.dtype)


# ---------------------------------------------------------------------------------------
# Masks.
# ---------------------------------------------------------------------------------------
def make_attention_mask(
    query_input: Array, key_input: Array, pairwise_fn: Callable = jnp.multiply, dtype: DType = jnp.float32
) -> Array:
    """Pairwise mask ``[batch, 1, q_length, kv_length]`` from ``[batch, q_length]`` and ``[batch, kv_length]``."""
    # [batch, q_length, 1] x [batch, 1, kv_length] -> [batch, q_length, kv_length]
    mask = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
    return jnp.expand_dims(mask, -3).astype(dtype)


def make_causal_mask(x: Array, dtype: DType = jnp.float32) -> Array:
    """Causal mask ``[batch, 1, length, length]`` for ``x`` of shape ``[batch, length]``."""
    idxs = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
    return make_attention_mask(idxs, idxs, jnp.greater_equal, dtype=dtype)


def combine_masks(*masks: Array | None, dtype: DType = jnp.float32) -> Array | None:
    """Logical AND of the given masks (None entries skipped); None when none is given."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    return functools.reduce(jnp.logical_and, masks).astype(dtype)


def mask_to_bias(mask: Array, dtype: DType = jnp.float32) -> Array:
    """A 1/0 attention mask -> an additive bias: 0 where attention is allowed, ``MASK_BIAS`` elsewhere."""
    return jnp.where(mask > 0, 0.0, MASK_BIAS).astype(dtype)


def combine_biases(*biases: Array | None) -> Array | None:
    """Sum of the given additive attention biases (None entries skipped)."""
    biases = [b for b in biases if b is not None]
    return functools.reduce(operator.add, biases) if biases else None


def make_decoder_mask(
    decoder_target_tokens: Array,
    dtype: DType = jnp.float32,
    decoder_causal_attention: Array | None = None,
    decoder_segment_ids: Array | None = None,
) -> Array:
    """Decoder self-attention mask: causal AND target padding AND packing (t5x semantics).

    Args:
      decoder_target_tokens: ``[batch, length]``; 0 is padding.
      dtype: mask dtype.
      decoder_causal_attention: optional ``[batch, length]``, 1 on a prefix-LM's input part (bidirectional).
      decoder_segment_ids: optional ``[batch, length]`` packing ids.

    Returns:
      ``[batch, 1, length, length]`` mask.
    """
    causal = make_causal_mask(decoder_target_tokens, dtype=dtype)
    if decoder_causal_attention is not None:
        inputs_mask = make_attention_mask(decoder_causal_attention, decoder_causal_attention, jnp.logical_and, dtype)
        causal = jnp.logical_or(causal, inputs_mask).astype(dtype)
    masks = [causal, make_attention_mask(decoder_target_tokens > 0, decoder_target_tokens > 0, dtype=dtype)]
    if decoder_segment_ids is not None:
        masks.append(make_attention_mask(decoder_segment_ids, decoder_segment_ids, jnp.equal, dtype=dtype))
    return combine_masks(*masks, dtype=dtype)


# ---------------------------------------------------------------------------------------
# Attention.
# ---------------------------------------------------------------------------------------
def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None = None,
    *,
    scale_logits: bool = False,
    dropout_rng: Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = True,
    dtype: DType = jnp.float32,
    float32_logits: bool = False,
) -> Array:
    """Softmax attention over ``kv_length``; softmax always in float32.

    Args:
      query: ``[batch, q_length, heads, kv]``.
      key: ``[batch, kv_length, heads, kv]``.
      value: ``[batch, kv_length, heads, kv]``.
      bias: additive bias broadcastable to ``[batch, heads, q_length, kv_length]`` (masks, positions).
      scale_logits: divide logits by sqrt(kv) (BERT); T5 folds the scale into its query init instead.
      dropout_rng: key for attention-probability dropout.
      dropout_rate: dropout probability.
      deterministic: disables dropout.
      dtype: dtype of the returned values.
      float32_logits: compute q.k in float32.

    Returns:
      ``[batch, q_length, heads, kv]``.
    """
    logits_dtype = jnp.float32 if float32_logits else query.dtype
    if bias is not None:  # -1e10 masks would be -inf in float16 (NaN rows): clip to the finite range
        bias = jnp.maximum(bias, jnp.finfo(logits_dtype).min).astype(logits_dtype)
    if (deterministic or dropout_rate == 0.0) and not float32_logits and query.dtype != jnp.float16:
        # jax's fused attention: the bias add, softmax (float32 statistics) and both products in one
        # op (cuDNN on GPUs); 1.5x faster than the einsum chain below on CPU (BENCHMARKS.md). Not for
        # float16, whose float32-accumulating products XLA's CPU backend lacks.
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale_logits else 1.0
        return jax.nn.dot_product_attention(query, key, value, bias=bias, scale=scale).astype(dtype)
    if scale_logits:
        query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    if float32_logits:
        query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    # [batch, q_length, heads, kv] x [batch, kv_length, heads, kv] -> [batch, heads, q_length, kv_length]
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    if bias is not None:
        logits = logits + bias.astype(logits.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(dtype)
    if not deterministic and dropout_rate > 0.0:
        keep_prob = 1.0 - dropout_rate
        # Broadcast the dropout mask along the query axis, as T5 does.
        shape = list(weights.shape)
        shape[-2] = 1
        keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    # [batch, heads, q_length, kv_length] x [batch, kv_length, heads, kv] -> [batch, q_length, heads, kv]
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(dtype))


class MultiHeadDotProductAttention(nn.Module):
    """Multi-head attention with optional biases/scaling, masks, additive position bias and a decode cache.

    T5: ``use_bias=False, scale_logits=False`` (1/sqrt(kv) folded into the query initializer).
    BERT: ``use_bias=True, scale_logits=True``.

    Attributes:
      num_heads: number of heads.
      head_dim: per-head size ``kv``.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
      dropout_rate: attention-probability dropout.
      kernel_init: projection initializer.
      use_bias: biases on q/k/v/out projections.
      scale_logits: divide logits by sqrt(head_dim).
      float32_logits: compute logits in float32.
    """

    num_heads: int
    head_dim: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    dropout_rate: float = 0.0
    kernel_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    use_bias: bool = False
    scale_logits: bool = False
    float32_logits: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        mask: Array | None = None,
        bias: Array | None = None,
        *,
        decode: bool = False,
        deterministic: bool = True,
    ) -> Array:
        """Attends ``inputs_q`` to ``inputs_kv``.

        Args:
          inputs_q: ``[batch, q_length, embed]``.
          inputs_kv: ``[batch, kv_length, embed]``.
          mask: ``[batch, 1, q_length, kv_length]``, nonzero where attention is allowed.
          bias: additive ``[1 or batch, heads, q_length, kv_length]`` (e.g. relative positions). In
            incremental decoding it spans the whole cache, ``[1, heads, max_length, max_length]``.
          decode: use/fill the ``'cache'`` collection (first call creates it, later calls take one token).
          deterministic: disables dropout.

        Returns:
          ``[batch, q_length, embed]``.
        """
        proj = functools.partial(
            DenseGeneral,
            features=(self.num_heads, self.head_dim),
            kernel_axes=("embed", "joined_kv"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        depth_scaling = 1.0 if self.scale_logits else math.sqrt(self.head_dim)
        query_init = lambda *args: self.kernel_init(*args) / depth_scaling  # noqa: E731
        # [batch, q_length, embed] -> [batch, q_length, heads, kv]
        query = proj(kernel_init=query_init, name="query")(inputs_q)
        # [batch, kv_length, embed] -> [batch, kv_length, heads, kv]
        key = proj(kernel_init=self.kernel_init, name="key")(inputs_kv)
        value = proj(kernel_init=self.kernel_init, name="value")(inputs_kv)
        query = with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = with_logical_constraint(value, ("batch", "length", "heads", "kv"))

        if decode:
            key, value, mask, bias = self._update_cache(query, key, value, mask, bias)

        attention_bias = None
        if mask is not None:
            attention_bias = mask_to_bias(mask, self.dtype)
        attention_bias = combine_biases(attention_bias, bias)

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        # -> [batch, q_length, heads, kv]
        x = dot_product_attention(
            query,
            key,
            value,
            attention_bias,
            scale_logits=self.scale_logits,
            dropout_rng=dropout_rng,
            dropout_rate=self.dropout_rate,
            deterministic=deterministic,
            dtype=self.dtype,
            float32_logits=self.float32_logits,
        )
        # [batch, q_length, heads, kv] -> [batch, q_length, embed]
        return DenseGeneral(
            features=inputs_q.shape[-1],
            axis=(-2, -1),
            kernel_axes=("joined_kv", "embed"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            name="out",
        )(x)

    def _update_cache(self, query, key, value, mask, bias):
        """Creates the cache (first call) or writes one step into it and returns the full-length k/v."""
        is_initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        if not is_initialized:
            return key, value, mask, bias
        batch, length, num_heads, head_dim = cached_key.value.shape
        if query.shape != (batch, 1, num_heads, head_dim):
            raise ValueError(
                f"incremental decoding feeds one token at a time: expected query shape "
                f"{(batch, 1, num_heads, head_dim)}, got {query.shape}"
            )
        cur_index = cache_index.value
        # Write the step's [batch, 1, heads, kv] into [batch, length, heads, kv] at cur_index.
        key = lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype), (0, cur_index, 0, 0))
        value = lax.dynamic_update_slice(
            cached_value.value, value.astype(cached_value.value.dtype), (0, cur_index, 0, 0)
        )
        cached_key.value, cached_value.value = key, value
        cache_index.value = cur_index + 1
        # The single query may attend only to positions already written.
        step_mask = jnp.broadcast_to(jnp.arange(length) <= cur_index, (batch, 1, 1, length))
        mask = combine_masks(mask, step_mask)
        if bias is not None:
            if bias.shape[-1] != length or bias.shape[-2] != length:
                raise ValueError(
                    f"decode=True: the position bias covers {bias.shape[-2:]} positions but the cache holds "
                    f"{length}; pass max_decode_length={length}"
                )
            # [1, heads, length, length] -> [1, heads, 1, length]: the row of the current position.
            bias = lax.dynamic_slice_in_dim(bias, cur_index, 1, axis=-2)
        return key, value, mask, bias


# ---------------------------------------------------------------------------------------
# Feed-forward, positions, embeddings.
# ---------------------------------------------------------------------------------------
class MlpBlock(nn.Module):
    """Feed-forward block: one ('wi') or several gated ('wi_0', 'wi_1', ...) inputs, then 'wo'.

    Attributes:
      intermediate_dim: ``mlp`` size.
      activations: one per input projection, multiplied together (('gelu_new', 'linear') = gated GELU).
      intermediate_dropout_rate: dropout after the activation.
      use_bias: biases on the projections (BERT).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
      kernel_init: initializer.
    """

    intermediate_dim: int
    activations: Sequence[str] = ("relu",)
    intermediate_dropout_rate: float = 0.0
    use_bias: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = default_kernel_init

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool = True) -> Array:
        """``[batch, length, embed] -> [batch, length, embed]``."""
        dense = functools.partial(
            DenseGeneral, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
        )
        hidden = []
        for idx, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{idx}"
            # [batch, length, embed] -> [batch, length, mlp]
            h = dense(self.intermediate_dim, kernel_axes=("embed", "mlp"), name=name)(inputs)
            hidden.append(get_activation(act)(h))
        x = functools.reduce(operator.mul, hidden)
        x = nn.Dropout(rate=self.intermediate_dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        x = with_logical_constraint(x, ("batch", "length", "mlp"))
        # [batch, length, mlp] -> [batch, length, embed]
        return dense(inputs.shape[-1], kernel_axes=("mlp", "embed"), name="wo")(x)


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """T5's bucketing of ``memory_position - query_position``, bit-for-bit as HF/Mesh-TF (float32 log).

    Half of the buckets (per direction when bidirectional) are exact small distances, the rest
    logarithmic up to ``max_distance``; everything further shares the last bucket. Causal
    (``bidirectional=False``) maps future positions to bucket 0.

    Args:
      relative_position: integer array (host numpy: shapes are static).
      bidirectional: encoder (True) or decoder self-attention (False).
      num_buckets: total buckets.
      max_distance: distance at which the last bucket starts.

    Returns:
      int32 array of bucket ids in ``[0, num_buckets)``.
    """
    relative_position = np.asarray(relative_position, dtype=np.int64)
    ret = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        ret += (relative_position > 0).astype(np.int64) * num_buckets
        n = np.abs(relative_position)
    else:
        n = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # float32 arithmetic, truncation toward zero: the same rounding as torch's .float()/.to(long).
    scaled = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
    scaled = scaled / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    val_if_large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return (ret + np.where(is_small, n, val_if_large)).astype(np.int32)


class RelativePositionBiases(nn.Module):
    """T5 relative position bias ``[1, heads, q_length, kv_length]`` from a ``[heads, buckets]`` table.

    Attributes:
      num_buckets: number of buckets (32 in T5/ProtT5).
      max_distance: distance of the last bucket (128).
      num_heads: heads.
      dtype: output dtype.
      param_dtype: table storage dtype.
      embedding_init: table initializer.
    """

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    embedding_init: Initializer = default_relpos_init

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool = True) -> Array:
        """Bias for query positions ``0..qlen-1`` against key positions ``0..klen-1``."""
        # Buckets depend on the distance only: one per memory_position - query_position in
        # [-(qlen - 1), klen - 1] (a small host constant, where a [qlen, klen] one would be folded by
        # XLA at compile time: seconds and ~100 MB of HLO for a 5,000-residue protein).
        buckets = relative_position_bucket(np.arange(-(qlen - 1), klen), bidirectional, self.num_buckets,
                                           self.max_distance)  # [qlen + klen - 1]
        table = nn_partitioning.param_with_axes(
            "rel_embedding",
            self.embedding_init,
            (self.num_heads, self.num_buckets),
            self.param_dtype,
            axes=("heads", "relpos_buckets"),
        )
        # [heads, buckets] -> [heads, qlen + klen - 1]: the bias of each distance
        per_distance = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)
        # Runtime positions (the barrier keeps XLA from folding the [qlen, klen] index into a constant).
        query = jax.lax.optimization_barrier(jnp.arange(qlen, dtype=jnp.int32))
        index = jnp.arange(klen, dtype=jnp.int32)[None, :] - query[:, None] + (qlen - 1)  # [qlen, klen]
        # [heads, qlen + klen - 1] gathered at [qlen, klen] -> [heads, qlen, klen] -> [1, heads, qlen, klen]
        return jnp.take(per_distance, index, axis=1)[jnp.newaxis]


class Embed(nn.Module):
    """Token embedding ``[vocab, embed]`` (axes ('vocab', 'embed')), with ``attend`` for tied logits.

    Attributes:
      num_embeddings: vocabulary size.
      features: embedding size.
      dtype: output dtype of lookups.
      param_dtype: table storage dtype.
      attend_dtype: dtype of ``attend`` (float32 for stable logits).
      embedding_init: initializer.
      one_hot: look up by a one-hot matmul instead of a gather (partitions cleanly when the table is
        sharded over both axes, as t5x does; cheap for protein vocabularies).
    """

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    attend_dtype: DType = jnp.float32
    embedding_init: Initializer = default_embed_init
    one_hot: bool = False

    def setup(self):
        self.embedding = nn_partitioning.param_with_axes(
            "embedding", self.embedding_init, (self.num_embeddings, self.features), self.param_dtype,
            axes=("vocab", "embed"),
        )

    def __call__(self, inputs: Array) -> Array:
        """``[batch, length]`` int ids -> ``[batch, length, embed]``."""
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers, got {inputs.dtype}")
        table = jnp.asarray(self.embedding, self.dtype)
        if self.one_hot:
            one_hot = jax.nn.one_hot(inputs, self.num_embeddings, dtype=self.dtype)
            # [batch, length, vocab] x [vocab, embed] -> [batch, length, embed]; exact selection.
            output = jnp.einsum("blv,ve->ble", one_hot, table, precision=lax.Precision.HIGHEST)
        else:
            output = jnp.take(table, inputs, axis=0)
        return with_logical_constraint(output, ("batch", "length", "embed"))

    def attend(self, query: Array) -> Array:
        """``[batch, length, embed] -> [batch, length, vocab]``: inner products with every embedding."""
        table = jnp.asarray(self.embedding, self.attend_dtype)
        # [batch, length, embed] x [vocab, embed] -> [batch, length, vocab]
        return jnp.einsum("ble,ve->blv", jnp.asarray(query, self.attend_dtype), table)


# ---------------------------------------------------------------------------------------
# Layer stacking helpers (scanned <-> per-layer parameter trees).
# ---------------------------------------------------------------------------------------
def stack_layer_params(tree: dict, prefix: str = "layers_", scanned_name: str = "layers") -> dict:
    """Turns sibling subtrees ``layers_0 .. layers_{n-1}`` into one ``layers`` subtree stacked on axis 0.

    Applied recursively, so ``{'encoder': {'layers_0': ...}}`` becomes ``{'encoder': {'layers': ...}}``.
    """
    if not isinstance(tree, Mapping):
        return tree
    layer_keys = {k for k in tree if k.startswith(prefix) and k[len(prefix):].isdigit()}
    out = {k: stack_layer_params(v, prefix, scanned_name) for k, v in tree.items() if k not in layer_keys}
    if layer_keys:
        idx = sorted(int(k[len(prefix):]) for k in layer_keys)
        if idx != list(range(len(idx))):
            raise ValueError(f"layer indices are not contiguous from 0: {idx}")
        layers = [tree[f"{prefix}{i}"] for i in idx]
        out[scanned_name] = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
    return out


def unstack_layer_params(tree: dict, prefix: str = "layers_", scanned_name: str = "layers") -> dict:
    """Inverse of :func:`stack_layer_params`: a stacked ``layers`` subtree becomes ``layers_{i}``."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for k, v in tree.items():
        if k == scanned_name and isinstance(v, Mapping):
            n = jax.tree_util.tree_leaves(v)[0].shape[0]
            for i in range(n):
                out[f"{prefix}{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], v)
        else:
            out[k] = unstack_layer_params(v, prefix, scanned_name)
    return out

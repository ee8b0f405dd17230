"""Transformer-XL (ProtTXL): relative positional attention with segment-level recurrence, plain softmax.

The network is HF's ``TransfoXLLMHeadModel`` (transformers <= 4.35) with ``cutoffs=[]``, ``div_val=1``,
``tie_weight=True`` and ``attn_type=0``: the protein vocabulary has a few dozen tokens, so the adaptive
embedding and adaptive softmax collapse to one table (scaled by sqrt(d_model) on input) and one plain
softmax over it (tied weights plus an output bias). Also holds what XLNet shares with it: sinusoidal
relative embeddings, memory updates, the post-LN feed-forward block and the output structure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
from jax import lax

from prottrans_jax.models import layers
from prottrans_jax.models.layers import with_logical_constraint

Array = jax.Array

HIDDEN_AXES = ("batch", "length", "embed")
MEM_AXES = ("batch", "layers", "length", "embed")
# Masked attention scores, as in the reference code (float32 scores; a fully masked row becomes uniform).
NEG_INF = -1e30


@flax.struct.dataclass
class LMOutput:
    """What the autoregressive models return (a pytree, so it passes through ``jit``).

    Attributes:
      logits: ``[batch, length, vocab]`` float32 (XLNet with ``target_mapping``: ``[batch, num_predict,
        vocab]``); None for a model without LM head.
      last_hidden_state: the final hidden state the logits are computed from (same leading shape).
      mems: ``[batch, layers, mem_length, embed]``, the next segment's memory (no gradient), or None.
      hidden_states: with ``output_hidden_states``: ``num_layers + 1`` content-stream states
        ``[batch, length, embed]`` (embedding output, then every layer's output); else ``()``.
      query_hidden_states: XLNet with ``target_mapping`` and ``output_hidden_states``: the query
        stream's ``num_layers + 1`` states ``[batch, num_predict, embed]``; else ``()``.
    """

    logits: Array | None
    last_hidden_state: Array
    mems: Array | None = None
    hidden_states: tuple = ()
    query_hidden_states: tuple = ()


@dataclasses.dataclass(frozen=True)
class TransfoXLConfig:
    """Hyperparameters of a Transformer-XL LM (HF ``TransfoXLConfig`` names where they exist).

    Attributes:
      vocab_size: token ids (30: ProtBert's vocabulary, see ``autoregressive_configs``).
      d_model: width ``embed`` (embedding width too: no adaptive projection).
      n_layer: layers.
      n_head: attention heads.
      d_head: per-head size ``kv`` (need not be ``d_model / n_head``).
      d_inner: feed-forward size ``mlp``.
      dropout: dropout on embeddings, positions, sub-layer outputs and the final output.
      dropatt: dropout on attention probabilities.
      mem_len: positions of memory kept per layer for the next segment (0: no memory).
      clamp_len: relative distances beyond this share one embedding (<= 0: no clamping).
      same_length: every query attends to the same number of keys (``mem_len`` back), not all before it.
      untie_r: one ``r_w_bias``/``r_r_bias`` pair per layer (True) or one pair shared by all layers
        (False: the original PyTorch Transformer-XL code, which ProtTXL was trained with).
      layer_norm_epsilon: LayerNorm epsilon.
      initializer_range: std of the normal initializers.
      pad_token_id: padding id.
      dtype: compute dtype (bf16 on accelerators).
      param_dtype: parameter storage dtype.
      scan_layers: ``nn.scan`` over layers (parameters gain a leading 'layers' axis).
      remat_policy: 'none', 'full', 'dots' or 'dots_no_batch'.
    """

    vocab_size: int = 30
    d_model: int = 1024
    n_layer: int = 32
    n_head: int = 14
    d_head: int = 128
    d_inner: int = 4096
    dropout: float = 0.15
    dropatt: float = 0.0
    mem_len: int = 512
    clamp_len: int = -1
    same_length: bool = False
    untie_r: bool = False
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        if self.d_model % 2:
            raise ValueError(f"d_model {self.d_model} must be even (sinusoidal position embeddings)")
        if self.mem_len < 0:
            raise ValueError(f"mem_len {self.mem_len} must be >= 0")
        if self.remat_policy not in layers.REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in {layers.REMAT_POLICIES}")

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states (``d_model``)."""
        return self.d_model

    @property
    def num_layers(self) -> int:
        """Number of layers (``n_layer``)."""
        return self.n_layer

    def replace(self, **changes) -> TransfoXLConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------
# Pieces shared with XLNet.
# ---------------------------------------------------------------------------------------
def normal_init(std: float) -> layers.Initializer:
    """Normal initializer with standard deviation ``std``."""
    return nn.initializers.normal(stddev=std)


def sinusoid_embedding(pos_seq: Array, d_model: int, dtype: Any = jnp.float32) -> Array:
    """``[positions]`` float32 distances -> ``[positions, d_model]``: sines then cosines, in float32 as torch."""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model))  # [d_model / 2]
    # [positions, 1] x [1, d_model / 2] -> [positions, d_model / 2]
    sinusoid = pos_seq.astype(jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(sinusoid), jnp.cos(sinusoid)], axis=-1).astype(dtype)


def relative_positions(start: int, stop: int, clamp_len: int) -> Array:
    """Distances ``start, start - 1, ..., stop + 1`` (float32), clamped to ``[-clamp_len, clamp_len]`` if > 0."""
    # A runtime value: XLA would otherwise fold the whole [positions, d_model] table into a constant.
    pos = lax.optimization_barrier(jnp.arange(start, stop, -1, dtype=jnp.int32)).astype(jnp.float32)
    return jnp.clip(pos, -clamp_len, clamp_len) if clamp_len > 0 else pos


def update_mems(prev: Array, current: Array, mem_len: int | None) -> Array:
    """The next memory of one layer: ``[prev; current]`` along length, the last ``mem_len`` (all if 0/None).

    ``prev``/``current``: ``[batch, m, embed]`` / ``[batch, length, embed]``. No gradient flows through
    memory (Transformer-XL's stop-gradient).
    """
    cat = jnp.concatenate([prev.astype(current.dtype), current], axis=1)
    if mem_len:
        cat = cat[:, -mem_len:]
    return lax.stop_gradient(cat)


def empty_mems(batch: int, n_layer: int, d_model: int, dtype: Any) -> Array:
    """A zero-length memory ``[batch, layers, 0, embed]`` (a first segment)."""
    return jnp.zeros((batch, n_layer, 0, d_model), dtype)


def check_mems(mems: Array, batch: int, n_layer: int, d_model: int) -> None:
    """Raises one clear error when ``mems`` is not ``[batch, layers, m, embed]`` for this model."""
    if mems.ndim != 4 or mems.shape[0] != batch or mems.shape[1] != n_layer or mems.shape[3] != d_model:
        raise ValueError(f"mems must be [batch={batch}, layers={n_layer}, mem_length, embed={d_model}], "
                         f"got shape {tuple(mems.shape)}")


def remat_layer(layer_cls: type[nn.Module], config: Any, deterministic_argnum: int) -> type[nn.Module]:
    """``nn.remat`` of a layer class per ``config.remat_policy`` (Flax counts ``self`` as argument 0)."""
    if config.remat_policy == "none":
        return layer_cls
    return nn.remat(layer_cls, policy=layers.remat_policy(config.remat_policy),
                    prevent_cse=not config.scan_layers, static_argnums=(deterministic_argnum,))


def split_layer_outputs(ys: Any, n_layer: int) -> tuple:
    """Scanned per-layer outputs ``[layers, ...]`` -> a tuple of ``n_layer`` arrays."""
    return tuple(ys[i] for i in range(n_layer))


class PositionwiseFF(nn.Module):
    """Post-LN feed-forward block: ``LN(x + drop(wo(drop(act(wi(x))))))`` (Transformer-XL and XLNet).

    Parameters: ``wi/{kernel [embed, mlp], bias}``, ``wo/{kernel [mlp, embed], bias}``, ``layer_norm/{scale,bias}``.

    Attributes:
      d_inner: ``mlp`` size.
      activation: activation name ('relu' for Transformer-XL, 'gelu' for XLNet).
      dropout: dropout rate (after the activation and after ``wo``).
      epsilon: LayerNorm epsilon.
      init_std: std of the kernel initializer.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    d_inner: int
    activation: str
    dropout: float
    epsilon: float
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        """``[batch, length, embed] -> [batch, length, embed]``."""
        dense = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=normal_init(self.init_std))
        drop = nn.Dropout(rate=self.dropout)
        # [batch, length, embed] -> [batch, length, mlp]
        y = layers.DenseGeneral(self.d_inner, kernel_axes=("embed", "mlp"), name="wi", **dense)(x)
        y = drop(layers.get_activation(self.activation)(y), deterministic=deterministic)
        y = with_logical_constraint(y, ("batch", "length", "mlp"))
        # [batch, length, mlp] -> [batch, length, embed]
        y = layers.DenseGeneral(x.shape[-1], kernel_axes=("mlp", "embed"), name="wo", **dense)(y)
        y = drop(y, deterministic=deterministic)
        out = layers.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
                               name="layer_norm")(x + y)
        return with_logical_constraint(out, HIDDEN_AXES)


# ---------------------------------------------------------------------------------------
# Transformer-XL.
# ---------------------------------------------------------------------------------------
def rel_shift(x: Array) -> Array:
    """Transformer-XL's relative shift of ``[b, n, q, k]`` scores against distances ``k-1 .. 0``.

    Afterwards entry ``(i, j)`` holds the score for distance ``mlen + i - j`` (query ``i`` at absolute
    position ``mlen + i``, key ``j``); entries with ``j > mlen + i`` are junk that the causal mask hides.
    """
    b, n, q, k = x.shape
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (1, 0)))  # [b, n, q, k + 1]: a zero column in front
    x = x.reshape(b, n, k + 1, q)[:, :, 1:, :]  # reinterpret, drop the first q entries
    return x.reshape(b, n, q, k)


def causal_mask(qlen: int, mlen: int, mem_len: int, same_length: bool) -> np.ndarray:
    """``[qlen, mlen + qlen]`` bool, True where attention is masked (HF TransfoXL's ``dec_attn_mask``).

    Query ``i`` (absolute position ``mlen + i``) sees keys ``j <= mlen + i``; with ``same_length`` also
    only keys ``j > i - shift`` so that every query sees the same number of keys.
    """
    klen = mlen + qlen
    ones = np.ones((qlen, klen), dtype=bool)
    mask = np.triu(ones, 1 + mlen)
    if same_length:
        mask_len = klen - mem_len
        shift = qlen - mask_len if mask_len > 0 else qlen
        mask = mask | np.tril(ones, -shift)
    return mask


class RelPartialLearnableAttention(nn.Module):
    """Transformer-XL attention: content term ``(q + r_w_bias).k``, position term ``(q + r_r_bias).r``.

    Parameters: ``qkv/kernel [embed, 3 * heads * kv]`` (HF ``qkv_net``: q, k, v in that order),
    ``pos/kernel [embed, heads * kv]`` (``r_net``), ``out/kernel [heads * kv, embed]`` (``o_net``),
    ``layer_norm/{scale,bias}`` and, when ``config.untie_r``, ``r_w_bias, r_r_bias [heads, kv]``.

    Attributes:
      config: model config.
    """

    config: TransfoXLConfig

    @nn.compact
    def __call__(self, h: Array, mems: Array, pos_emb: Array, mask: Array, biases: tuple[Array, Array] | None,
                 deterministic: bool) -> Array:
        """``h [batch, q, embed]``, ``mems [batch, m, embed]``, ``pos_emb [m + q, embed]`` -> ``[batch, q, embed]``.

        ``mask``: bool ``[batch or 1, 1, q, m + q]``, True where masked. ``biases``: the shared
        ``(r_w_bias, r_r_bias)`` when ``config.untie_r`` is False.
        """
        cfg = self.config
        init = normal_init(cfg.initializer_range)
        dense = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=init)
        qlen = h.shape[1]
        if biases is None:
            bias_param = lambda name: nn_partitioning.param_with_axes(  # noqa: E731
                name, init, (cfg.n_head, cfg.d_head), cfg.param_dtype, axes=("heads", "kv"))
            biases = (bias_param("r_w_bias"), bias_param("r_r_bias"))
        r_w_bias, r_r_bias = (jnp.asarray(b, cfg.dtype) for b in biases)
        cat = jnp.concatenate([mems.astype(h.dtype), h], axis=1)  # [batch, k, embed]
        # [batch, k, embed] -> [batch, k, 3, heads, kv]
        qkv = layers.DenseGeneral((3, cfg.n_head, cfg.d_head), kernel_axes=("embed", "joined_kv"), name="qkv",
                                  **dense)(cat)
        q, k, v = qkv[:, -qlen:, 0], qkv[:, :, 1], qkv[:, :, 2]  # [batch, q or k, heads, kv]
        # [k, embed] -> [k, heads, kv]
        r_k = layers.DenseGeneral((cfg.n_head, cfg.d_head), kernel_axes=("embed", "joined_kv"), name="pos",
                                  **dense)(pos_emb)
        f32 = lambda x: x.astype(jnp.float32)  # noqa: E731  (scores and softmax in float32)
        # [batch, q, heads, kv] x [batch, k, heads, kv] -> [batch, heads, q, k]
        ac = jnp.einsum("bqnd,bknd->bnqk", f32(q + r_w_bias), f32(k))
        # [batch, q, heads, kv] x [k, heads, kv] -> [batch, heads, q, k], then aligned to keys
        bd = rel_shift(jnp.einsum("bqnd,knd->bnqk", f32(q + r_r_bias), f32(r_k)))
        scores = jnp.where(mask, NEG_INF, (ac + bd) * (1.0 / math.sqrt(cfg.d_head)))
        probs = nn.Dropout(rate=cfg.dropatt)(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
        # [batch, heads, q, k] x [batch, k, heads, kv] -> [batch, q, heads, kv]
        vec = jnp.einsum("bnqk,bknd->bqnd", probs.astype(cfg.dtype), v)
        # [batch, q, heads, kv] -> [batch, q, embed]
        out = layers.DenseGeneral(h.shape[-1], axis=(-2, -1), kernel_axes=("joined_kv", "embed"), name="out",
                                  **dense)(vec)
        out = nn.Dropout(rate=cfg.dropout)(out, deterministic=deterministic)
        out = layers.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                               name="layer_norm")(h + out)
        return with_logical_constraint(out, HIDDEN_AXES)


class TransfoXLLayer(nn.Module):
    """One decoder layer (attention then feed-forward, post-LN); also emits its next memory.

    Attributes:
      config: model config.
      emit_hidden: also return the layer output (collected as hidden states).
    """

    config: TransfoXLConfig
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, x: Array, mems: Array, pos_emb: Array, mask: Array, biases, deterministic: bool):
        """``[batch, q, embed]`` -> ``(out, (next memory or None, out or None))``."""
        cfg = self.config
        new_mem = update_mems(mems, x, cfg.mem_len) if cfg.mem_len > 0 else None
        y = RelPartialLearnableAttention(cfg, name="attention")(x, mems, pos_emb, mask, biases, deterministic)
        y = PositionwiseFF(cfg.d_inner, "relu", cfg.dropout, cfg.layer_norm_epsilon, cfg.initializer_range,
                           cfg.dtype, cfg.param_dtype, name="ff")(y, deterministic)
        return y, (new_mem, y if self.emit_hidden else None)


class TransfoXLStack(nn.Module):
    """``n_layer`` layers ``layers_{i}`` (or one scanned ``layers`` subtree) threading per-layer memory.

    Attributes:
      config: model config.
    """

    config: TransfoXLConfig

    @nn.compact
    def __call__(self, x, mems, pos_emb, mask, biases, deterministic: bool, output_hidden_states: bool):
        """``x [batch, q, embed]``, ``mems [batch, layers, m, embed]`` -> ``(out, new mems or None, hidden)``."""
        cfg = self.config
        layer_cls = remat_layer(TransfoXLLayer, cfg, deterministic_argnum=6)
        if cfg.scan_layers:
            scanned = nn_partitioning.scan_with_axes(
                layer_cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layer,
                axis_name="layers",
            )
            # memory scanned over its layers axis: [batch, layers, m, embed] -> [layers, batch, m, embed]
            x, (new_mems, hidden) = scanned(config=cfg, emit_hidden=output_hidden_states, name="layers")(
                x, jnp.swapaxes(mems, 0, 1), pos_emb, mask, biases, deterministic)
            new_mems = None if new_mems is None else jnp.swapaxes(new_mems, 0, 1)
            hidden = split_layer_outputs(hidden, cfg.n_layer) if output_hidden_states else ()
        else:
            per_layer, hidden = [], []
            for i in range(cfg.n_layer):
                x, (mem, y) = layer_cls(cfg, output_hidden_states, name=f"layers_{i}")(
                    x, mems[:, i], pos_emb, mask, biases, deterministic)
                per_layer.append(mem)
                hidden.append(y)
            new_mems = None if per_layer[0] is None else jnp.stack(per_layer, axis=1)
            hidden = tuple(hidden) if output_hidden_states else ()
        if new_mems is not None:
            new_mems = with_logical_constraint(new_mems, MEM_AXES)
        return x, new_mems, hidden


class TransfoXLModel(nn.Module):
    """Transformer-XL without LM head: token embedding (x sqrt(d_model)), relative positions, layers.

    Parameters: ``word_embeddings/embedding [vocab, embed]``, ``r_w_bias, r_r_bias [heads, kv]`` (when
    ``untie_r`` is False), ``stack/layers_{i}/{attention/{qkv,pos,out}/kernel, attention/layer_norm/...,
    attention/r_w_bias..., ff/{wi,wo}/{kernel,bias}, ff/layer_norm/...}`` (scanned: ``stack/layers/...``).

    Attributes:
      config: model config.
    """

    config: TransfoXLConfig

    def setup(self):
        cfg = self.config
        init = normal_init(cfg.initializer_range)
        self.word_embeddings = layers.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                            embedding_init=init, one_hot=True)
        if not cfg.untie_r:  # one pair for all layers
            bias = dict(init_fn=init, shape=(cfg.n_head, cfg.d_head), dtype=cfg.param_dtype, axes=("heads", "kv"))
            self.r_w_bias = nn_partitioning.param_with_axes("r_w_bias", **bias)
            self.r_r_bias = nn_partitioning.param_with_axes("r_r_bias", **bias)
        self.stack = TransfoXLStack(cfg)
        self.drop = nn.Dropout(rate=cfg.dropout)

    def encode(self, input_ids: Array | None = None, mems: Array | None = None, attention_mask: Array | None = None,
               inputs_embeds: Array | None = None, *, enable_dropout: bool = False,
               output_hidden_states: bool = False) -> LMOutput:
        """One segment through the network.

        Args:
          input_ids: ``[batch, length]`` ids (or give ``inputs_embeds``).
          mems: ``[batch, layers, m, embed]`` from the previous segment (None: the first segment).
          attention_mask: optional ``[batch, length]`` (this segment's keys) or ``[batch, m + length]``,
            1 where a key may be attended to; the causal mask always applies.
          inputs_embeds: ``[batch, length, embed]`` used as they are (not scaled), instead of ``input_ids``.
          enable_dropout: training mode.
          output_hidden_states: also return every layer's output.

        Returns:
          An :class:`LMOutput` without logits; ``mems`` is None when ``config.mem_len`` is 0.
        """
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
            # [batch, length] -> [batch, length, embed], scaled as the adaptive embedding does
            x = self.word_embeddings(input_ids.astype(jnp.int32)) * jnp.asarray(math.sqrt(cfg.d_model), cfg.dtype)
        else:
            x = inputs_embeds.astype(cfg.dtype)
        batch, qlen = x.shape[:2]
        if mems is None:
            mems = empty_mems(batch, cfg.n_layer, cfg.d_model, cfg.dtype)
        check_mems(mems, batch, cfg.n_layer, cfg.d_model)
        mems = lax.stop_gradient(mems)
        mlen = mems.shape[2]
        deterministic = not enable_dropout
        mask = jnp.asarray(causal_mask(qlen, mlen, cfg.mem_len, cfg.same_length))[None, None]  # [1, 1, q, k]
        if attention_mask is not None:
            keys = attention_mask > 0
            if keys.shape[1] == qlen and mlen:
                keys = jnp.concatenate([jnp.ones((batch, mlen), bool), keys], axis=1)
            mask = mask | ~keys[:, None, None, :]  # [batch, 1, q, k]
        pos_emb = sinusoid_embedding(relative_positions(mlen + qlen - 1, -1, cfg.clamp_len), cfg.d_model, cfg.dtype)
        x = with_logical_constraint(self.drop(x, deterministic=deterministic), HIDDEN_AXES)
        pos_emb = self.drop(pos_emb, deterministic=deterministic)  # [k, embed]
        biases = None if cfg.untie_r else (self.r_w_bias, self.r_r_bias)
        first = x
        x, new_mems, hidden = self.stack(x, mems, pos_emb, mask, biases, deterministic, output_hidden_states)
        out = self.drop(x, deterministic=deterministic)
        return LMOutput(logits=None, last_hidden_state=out, mems=new_mems,
                        hidden_states=((first,) + hidden) if output_hidden_states else ())

    def __call__(self, input_ids=None, mems=None, attention_mask=None, inputs_embeds=None, *, enable_dropout=False,
                 output_hidden_states=False) -> LMOutput:
        """Same as :meth:`encode`."""
        return self.encode(input_ids, mems, attention_mask, inputs_embeds, enable_dropout=enable_dropout,
                           output_hidden_states=output_hidden_states)

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init`` (abstract parameter counting, sharding set-up)."""
        return {"input_ids": jnp.ones((batch, length), jnp.int32)}


class TransfoXLLMHeadModel(TransfoXLModel):
    """Transformer-XL LM: :class:`TransfoXLModel` plus a plain softmax tied to the embedding (``lm_bias``).

    Attributes:
      config: model config.
    """

    def setup(self):
        super().setup()
        cfg = self.config
        self.lm_bias = nn_partitioning.param_with_axes("lm_bias", nn.initializers.zeros, (cfg.vocab_size,),
                                                       cfg.param_dtype, axes=("vocab",))

    def __call__(self, input_ids=None, mems=None, attention_mask=None, inputs_embeds=None, *, enable_dropout=False,
                 output_hidden_states=False) -> LMOutput:
        """Next-token logits ``[batch, length, vocab]`` (float32) for one segment; arguments as :meth:`encode`."""
        out = self.encode(input_ids, mems, attention_mask, inputs_embeds, enable_dropout=enable_dropout,
                          output_hidden_states=output_hidden_states)
        # [batch, length, embed] x [vocab, embed] -> [batch, length, vocab]
        logits = self.word_embeddings.attend(out.last_hidden_state) + jnp.asarray(self.lm_bias, jnp.float32)
        return out.replace(logits=with_logical_constraint(logits, ("batch", "length", "vocab")))

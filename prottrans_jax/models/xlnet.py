"""XLNet (ProtXLNet): two-stream relative attention with permutation masks, memory and a tied LM head.

The math follows transformers' ``XLNetModel`` / ``XLNetLMHeadModel`` exactly (batch-first here):
content stream ``h`` and query stream ``g`` share every weight; relative attention adds a content
term ``(q + r_w_bias).k``, a position term ``(q + r_r_bias).r`` (relative shift over distances
``klen .. -qlen + 1``) and a segment term ``(q + r_s_bias).seg_embed``; scores are scaled by
``1/sqrt(d_head)`` and masked by subtracting ``1e30``. Attention weights are stored in HF's layout
``[embed, heads, kv]`` so the weight map is the identity for them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
from jax import lax

from prottrans_jax.models import layers
from prottrans_jax.models.layers import with_logical_constraint
from prottrans_jax.models.transfo_xl import (
    HIDDEN_AXES,
    MEM_AXES,
    LMOutput,
    PositionwiseFF,
    check_mems,
    empty_mems,
    normal_init,
    relative_positions,
    remat_layer,
    sinusoid_embedding,
    split_layer_outputs,
    update_mems,
)

Array = jax.Array
ATTN_TYPES = ("bi", "uni")


@dataclasses.dataclass(frozen=True)
class XLNetConfig:
    """Hyperparameters of an XLNet model (HF ``XLNetConfig`` names); defaults are ProtXLNet's.

    Attributes:
      vocab_size: token ids (37 in ProtXLNet's SentencePiece vocabulary).
      d_model: width ``embed``.
      n_layer: layers.
      n_head: attention heads (``d_head = d_model / n_head``).
      d_inner: feed-forward size ``mlp``.
      ff_activation: feed-forward activation ('gelu' is exact GELU, as in HF).
      attn_type: 'bi' (XLNet's pretraining and HF's default) or 'uni' (causal, Transformer-XL style).
      bi_data: not supported (must be False).
      initializer_range: std of the normal initializers.
      layer_norm_eps: LayerNorm epsilon.
      dropout: dropout on embeddings, positions, attention probabilities, sub-layer outputs and output.
      mem_len: memory positions kept per layer for the next segment (None or 0: all of them).
      reuse_len: only the first ``reuse_len`` positions of a segment enter memory (None or 0: all).
      clamp_len: relative distances beyond this share one embedding (<= 0: no clamping).
      same_length: with ``attn_type='uni'``: every query sees the same number of keys.
      pad_token_id: padding id (5 in XLNet vocabularies).
      dtype: compute dtype (bf16 on accelerators).
      param_dtype: parameter storage dtype.
      scan_layers: ``nn.scan`` over layers (parameters gain a leading 'layers' axis).
      remat_policy: 'none', 'full', 'dots' or 'dots_no_batch'.
    """

    vocab_size: int = 37
    d_model: int = 1024
    n_layer: int = 30
    n_head: int = 16
    d_inner: int = 4096
    ff_activation: str = "gelu"
    attn_type: str = "bi"
    bi_data: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    mem_len: int | None = None
    reuse_len: int | None = None
    clamp_len: int = -1
    same_length: bool = False
    pad_token_id: int = 5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        if self.d_model % self.n_head or self.d_model % 2:
            raise ValueError(f"d_model {self.d_model} must be even and a multiple of n_head {self.n_head}")
        if self.attn_type not in ATTN_TYPES:
            raise ValueError(f"attn_type {self.attn_type!r} not in {ATTN_TYPES}")
        if self.bi_data:
            raise ValueError("bi_data=True (XLNet's bidirectional data pipeline) is not supported; use bi_data=False")
        if self.remat_policy not in layers.REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in {layers.REMAT_POLICIES}")
        layers.get_activation(self.ff_activation)

    @property
    def d_head(self) -> int:
        """Per-head size ``kv``."""
        return self.d_model // self.n_head

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states (``d_model``)."""
        return self.d_model

    @property
    def num_layers(self) -> int:
        """Number of layers (``n_layer``)."""
        return self.n_layer

    def replace(self, **changes) -> XLNetConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------
# Masks, segments, positions (HF XLNetModel.forward, batch-first).
# ---------------------------------------------------------------------------------------
def uni_mask(qlen: int, mlen: int, same_length: bool) -> np.ndarray:
    """HF ``create_mask``: ``[qlen, mlen + qlen]`` float, 1 where masked (causal, optional same length)."""
    mask = np.triu(np.ones((qlen, qlen + mlen), np.float32), mlen + 1)
    if same_length:
        mask[:, :qlen] += np.tril(np.ones((qlen, qlen), np.float32), -1)
    return mask


def attention_masks(config: XLNetConfig, qlen: int, mlen: int, attention_mask: Array | None,
                    perm_mask: Array | None) -> tuple[Array | None, Array | None]:
    """The content-stream and query-stream masks ``[batch or 1, 1, q or 1, m + q]`` (1 = masked), or Nones.

    Args:
      config: model config (``attn_type``, ``same_length``).
      qlen: segment length.
      mlen: memory length.
      attention_mask: optional ``[batch, q]``, 1 for tokens, 0 for padding (memory is always visible), or
        ``[batch, m + q]`` to mask memory positions too (a fixed-size, partly filled memory in decoding).
      perm_mask: optional ``[batch, q, q]``, 1 where query ``i`` may not attend to ``j``.

    Returns:
      ``(mask_h, mask_g)``: the content stream may also attend to its own position, the query stream not.
    """
    mask = jnp.asarray(uni_mask(qlen, mlen, config.same_length))[None, None] if config.attn_type == "uni" else None
    data, mem_data = None, None
    if attention_mask is not None and mlen and attention_mask.shape[1] == mlen + qlen:
        mem_data = (1.0 - attention_mask[:, :mlen].astype(jnp.float32))[:, None, :]  # [batch, 1, m]
        attention_mask = attention_mask[:, mlen:]
    if attention_mask is not None:
        data = (1.0 - attention_mask.astype(jnp.float32))[:, None, :]  # [batch, 1, q]: keys only
    if perm_mask is not None:
        perm = perm_mask.astype(jnp.float32)  # [batch, q, q]
        data = perm if data is None else data + perm
    if data is not None:
        if mlen:
            mem = jnp.zeros((1, 1, mlen), data.dtype) if mem_data is None else mem_data
            data = jnp.concatenate([jnp.broadcast_to(mem, data.shape[:2] + (mlen,)), data], axis=-1)
        data = data[:, None]  # [batch, 1, q or 1, k]
        mask = data if mask is None else mask + data
    if mask is None:
        return None, None
    mask_g = (mask > 0).astype(jnp.float32)
    self_pos = np.concatenate([np.zeros((qlen, mlen), np.float32), np.eye(qlen, dtype=np.float32)], axis=1)
    mask_h = ((mask_g - jnp.asarray(self_pos)) > 0).astype(jnp.float32)  # [batch or 1, 1, q, k]
    return mask_h, mask_g


def segment_matrix(token_type_ids: Array, mlen: int) -> Array:
    """``[batch, q]`` token types -> one-hot ``[batch, q, m + q, 2]``: index 1 where the segments differ.

    Memory positions count as segment 0 (as in HF).
    """
    cat = jnp.concatenate([jnp.zeros(token_type_ids.shape[:1] + (mlen,), token_type_ids.dtype), token_type_ids], 1)
    differ = (token_type_ids[:, :, None] != cat[:, None, :]).astype(jnp.int32)
    return jax.nn.one_hot(differ, 2, dtype=jnp.float32)


def rel_shift_bnij(x: Array, klen: int) -> Array:
    """XLNet's relative shift: ``[b, n, q, p]`` scores against distances ``klen, klen-1, ...`` -> ``[b, n, q, klen]``.

    Afterwards entry ``(i, j)`` holds the score for distance ``mlen + i - j``.
    """
    b, n, q, p = x.shape
    x = x.reshape(b, n, p, q)[:, :, 1:, :].reshape(b, n, q, p - 1)  # reinterpret, drop the first q entries
    return x[..., :klen]


# ---------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------
class XLNetRelativeAttention(nn.Module):
    """Two-stream relative attention with a shared post-attention LayerNorm.

    Parameters: ``q, k, v, o, r [embed, heads, kv]``, ``r_w_bias, r_r_bias, r_s_bias [heads, kv]``,
    ``seg_embed [2, heads, kv]``, ``layer_norm/{scale,bias}`` (HF's names and layouts).

    Attributes:
      config: model config.
    """

    config: XLNetConfig

    def setup(self):
        cfg = self.config
        param = functools.partial(nn_partitioning.param_with_axes, init_fn=normal_init(cfg.initializer_range),
                                  dtype=cfg.param_dtype)
        proj = dict(shape=(cfg.d_model, cfg.n_head, cfg.d_head), axes=("embed", "heads", "kv"))
        bias = dict(shape=(cfg.n_head, cfg.d_head), axes=("heads", "kv"))
        self.q, self.k, self.v, self.o, self.r = (param(name, **proj) for name in "qkvor")
        self.r_w_bias, self.r_r_bias, self.r_s_bias = (param(n, **bias) for n in ("r_w_bias", "r_r_bias", "r_s_bias"))
        self.seg_embed = param("seg_embed", shape=(2, cfg.n_head, cfg.d_head), axes=(None, "heads", "kv"))
        self.layer_norm = layers.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        self.drop = nn.Dropout(rate=cfg.dropout)

    def _w(self, name: str) -> Array:
        return jnp.asarray(getattr(self, name), self.config.dtype)

    def core(self, q_head, k_head_h, v_head_h, k_head_r, seg_mat, mask, deterministic):
        """Attention of ``q_head [b, q, n, d]`` over ``k/v_head_h [b, k, n, d]`` -> ``[b, q, n, d]``."""
        f32 = lambda x: x.astype(jnp.float32)  # noqa: E731  (scores and softmax in float32)
        klen = k_head_h.shape[1]
        # [b, q, n, d] x [b, k, n, d] -> [b, n, q, k]: content term
        ac = jnp.einsum("bqnd,bknd->bnqk", f32(q_head + self._w("r_w_bias")), f32(k_head_h))
        # [b, q, n, d] x [p, n, d] -> [b, n, q, p] -> [b, n, q, k]: position term
        bd = rel_shift_bnij(jnp.einsum("bqnd,pnd->bnqp", f32(q_head + self._w("r_r_bias")), f32(k_head_r)), klen)
        scores = ac + bd
        if seg_mat is not None:
            # [b, q, n, d] x [2, n, d] -> [b, q, n, 2]; with [b, q, k, 2] -> [b, n, q, k]: segment term
            ef = jnp.einsum("bqnd,snd->bqns", f32(q_head + self._w("r_s_bias")), f32(self._w("seg_embed")))
            scores = scores + jnp.einsum("bqks,bqns->bnqk", seg_mat, ef)
        scores = scores * (1.0 / math.sqrt(self.config.d_head))
        if mask is not None:
            scores = scores - 1e30 * mask
        probs = self.drop(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
        # [b, n, q, k] x [b, k, n, d] -> [b, q, n, d]
        return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v_head_h.dtype), v_head_h)

    def post(self, residual: Array, vec: Array, deterministic: bool) -> Array:
        """``[b, q, n, d]`` -> ``[b, q, embed]``: output projection, dropout, residual, LayerNorm."""
        out = jnp.einsum("bqnd,end->bqe", vec, self._w("o"))  # [b, q, n, d] x [embed, n, d] -> [b, q, embed]
        out = self.layer_norm(self.drop(out, deterministic=deterministic) + residual)
        return with_logical_constraint(out, HIDDEN_AXES)

    def __call__(self, h, g, mems, pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic):
        """Content stream ``h [b, q, embed]`` (and query stream ``g [b, m_pred, embed]`` or None) -> ``(h, g)``."""
        cat = jnp.concatenate([mems.astype(h.dtype), h], axis=1)  # [b, k, embed]
        k_head_h = jnp.einsum("bke,end->bknd", cat, self._w("k"))  # [b, k, embed] -> [b, k, n, d]
        v_head_h = jnp.einsum("bke,end->bknd", cat, self._w("v"))
        k_head_r = jnp.einsum("pe,end->pnd", pos_emb, self._w("r"))  # [p, embed] -> [p, n, d]
        attend = functools.partial(self.core, k_head_h=k_head_h, v_head_h=v_head_h, k_head_r=k_head_r,
                                   seg_mat=seg_mat, deterministic=deterministic)
        q_head_h = jnp.einsum("bqe,end->bqnd", h, self._w("q"))  # [b, q, embed] -> [b, q, n, d]
        out_h = self.post(h, attend(q_head_h, mask=mask_h), deterministic)
        if g is None:
            return out_h, None
        q_head_g = jnp.einsum("bme,end->bmnd", g, self._w("q"))  # [b, m_pred, embed] -> [b, m_pred, n, d]
        if target_mapping is not None:
            tm = target_mapping.astype(q_head_g.dtype)
            q_head_g = jnp.einsum("bmnd,bml->blnd", q_head_g, tm)  # placed at the target positions [b, q, n, d]
            vec_g = jnp.einsum("blnd,bml->bmnd", attend(q_head_g, mask=mask_g), tm)  # gathered back
        else:
            vec_g = attend(q_head_g, mask=mask_g)
        return out_h, self.post(g, vec_g, deterministic)


class XLNetLayer(nn.Module):
    """Relative attention then the shared feed-forward block, for both streams; emits the next memory.

    Attributes:
      config: model config.
      emit_hidden: also return both streams' outputs (collected as hidden states).
    """

    config: XLNetConfig
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, streams, mems, pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic):
        """``streams = (h, g or None)`` -> ``((h, g), (next memory or None, h or None, g or None))``."""
        cfg = self.config
        h, g = streams
        # The next memory: this layer's content-stream input (dropped by XLA when the caller ignores it).
        new_mem = update_mems(mems, h[:, : cfg.reuse_len] if cfg.reuse_len else h, cfg.mem_len)
        h, g = XLNetRelativeAttention(cfg, name="rel_attn")(h, g, mems, pos_emb, seg_mat, mask_h, mask_g,
                                                            target_mapping, deterministic)
        ff = PositionwiseFF(cfg.d_inner, cfg.ff_activation, cfg.dropout, cfg.layer_norm_eps, cfg.initializer_range,
                            cfg.dtype, cfg.param_dtype, name="ff")
        h = ff(h, deterministic)
        g = None if g is None else ff(g, deterministic)
        emit = self.emit_hidden
        return (h, g), (new_mem, h if emit else None, g if emit else None)


class XLNetStack(nn.Module):
    """``n_layer`` layers ``layers_{i}`` (or one scanned ``layers`` subtree) threading per-layer memory.

    Attributes:
      config: model config.
    """

    config: XLNetConfig

    @nn.compact
    def __call__(self, h, g, mems, pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic: bool,
                 output_hidden_states: bool):
        """-> ``(h, g, new mems, h-stream hidden, g-stream hidden)``; hidden tuples per layer (or ())."""
        cfg = self.config
        layer_cls = remat_layer(XLNetLayer, cfg, deterministic_argnum=8)
        make = functools.partial(layer_cls, config=cfg, emit_hidden=output_hidden_states)
        broadcast = (nn.broadcast,) * 6
        if cfg.scan_layers:
            scanned = nn_partitioning.scan_with_axes(
                layer_cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                in_axes=(0,) + broadcast, length=cfg.n_layer, axis_name="layers",
            )
            # memory scanned over its layers axis: [batch, layers, m, embed] -> [layers, batch, m, embed]
            (h, g), (new_mems, hs, gs) = scanned(config=cfg, emit_hidden=output_hidden_states, name="layers")(
                (h, g), jnp.swapaxes(mems, 0, 1), pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic)
            new_mems = jnp.swapaxes(new_mems, 0, 1)
            hs = split_layer_outputs(hs, cfg.n_layer) if output_hidden_states else ()
            gs = split_layer_outputs(gs, cfg.n_layer) if output_hidden_states and g is not None else ()
        else:
            per_layer, hs, gs = [], [], []
            for i in range(cfg.n_layer):
                (h, g), (mem, h_i, g_i) = make(name=f"layers_{i}")(
                    (h, g), mems[:, i], pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic)
                per_layer.append(mem)
                hs.append(h_i)
                gs.append(g_i)
            new_mems = jnp.stack(per_layer, axis=1)
            hs = tuple(hs) if output_hidden_states else ()
            gs = tuple(gs) if output_hidden_states and g is not None else ()
        return h, g, with_logical_constraint(new_mems, MEM_AXES), hs, gs


# ---------------------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------------------
class XLNetModel(nn.Module):
    """XLNet without LM head (HF ``XLNetModel``).

    Parameters: ``word_embedding/embedding [vocab, embed]``, ``mask_emb [1, 1, embed]``,
    ``stack/layers_{i}/{rel_attn/..., ff/{wi,wo}/{kernel,bias}, ff/layer_norm/{scale,bias}}``
    (scanned: ``stack/layers/...`` with a leading 'layers' axis).

    Attributes:
      config: model config.
    """

    config: XLNetConfig

    def setup(self):
        cfg = self.config
        init = normal_init(cfg.initializer_range)
        self.word_embedding = layers.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                           embedding_init=init, one_hot=True)
        self.mask_emb = nn_partitioning.param_with_axes("mask_emb", init, (1, 1, cfg.d_model), cfg.param_dtype,
                                                        axes=(None, None, "embed"))
        self.stack = XLNetStack(cfg)
        self.drop = nn.Dropout(rate=cfg.dropout)

    def encode(self, input_ids: Array | None = None, attention_mask: Array | None = None, mems: Array | None = None,
               perm_mask: Array | None = None, target_mapping: Array | None = None,
               token_type_ids: Array | None = None, inputs_embeds: Array | None = None, *, use_mems: bool = True,
               enable_dropout: bool = False, output_hidden_states: bool = False) -> LMOutput:
        """One segment through the network (arguments as in HF's ``XLNetModel.forward``).

        Args:
          input_ids: ``[batch, q]`` ids (or give ``inputs_embeds [batch, q, embed]``).
          attention_mask: optional ``[batch, q]``, 1 for tokens, 0 for padding (ProtXLNet pads on the left);
            ``[batch, m + q]`` also masks memory positions.
          mems: ``[batch, layers, m, embed]`` from the previous segment (None: no memory).
          perm_mask: optional ``[batch, q, q]``, 1 where token ``i`` may not attend to token ``j``.
          target_mapping: optional ``[batch, num_predict, q]`` one-hot rows: the positions the query
            stream predicts; with it the outputs are the query stream's.
          token_type_ids: optional ``[batch, q]`` segment ids (enables the segment term).
          inputs_embeds: embeddings instead of ``input_ids``.
          use_mems: return the next memory (each layer's content-stream input appended to ``mems``).
          enable_dropout: training mode.
          output_hidden_states: also return every layer's outputs (both streams).

        Returns:
          An :class:`LMOutput` without logits.
        """
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
            word_emb = self.word_embedding(input_ids.astype(jnp.int32))  # [batch, q] -> [batch, q, embed]
        else:
            word_emb = inputs_embeds.astype(cfg.dtype)
        batch, qlen = word_emb.shape[:2]
        if mems is None:
            mems = empty_mems(batch, cfg.n_layer, cfg.d_model, cfg.dtype)
        check_mems(mems, batch, cfg.n_layer, cfg.d_model)
        mems = lax.stop_gradient(mems)
        mlen = mems.shape[2]
        deterministic = not enable_dropout
        mask_h, mask_g = attention_masks(cfg, qlen, mlen, attention_mask, perm_mask)
        h = with_logical_constraint(self.drop(word_emb, deterministic=deterministic), HIDDEN_AXES)
        g = None
        if target_mapping is not None:
            # [1, 1, embed] -> [batch, num_predict, embed]: the query stream starts from the mask embedding
            g = jnp.broadcast_to(jnp.asarray(self.mask_emb, cfg.dtype), (batch, target_mapping.shape[1], cfg.d_model))
            g = self.drop(g, deterministic=deterministic)
        seg_mat = None if token_type_ids is None else segment_matrix(token_type_ids, mlen)
        klen = mlen + qlen
        end = -qlen if cfg.attn_type == "bi" else -1  # distances klen .. end + 1
        pos_emb = sinusoid_embedding(relative_positions(klen, end, cfg.clamp_len), cfg.d_model, cfg.dtype)
        pos_emb = self.drop(pos_emb, deterministic=deterministic)
        first_h, first_g = h, g
        h, g, new_mems, hs, gs = self.stack(
            h, g, mems, pos_emb, seg_mat, mask_h, mask_g, target_mapping, deterministic, output_hidden_states)
        out = self.drop(h if g is None else g, deterministic=deterministic)
        return LMOutput(
            logits=None, last_hidden_state=out, mems=new_mems if use_mems else None,
            hidden_states=((first_h,) + hs) if output_hidden_states else (),
            query_hidden_states=((first_g,) + gs) if output_hidden_states and g is not None else (),
        )

    def __call__(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                 token_type_ids=None, inputs_embeds=None, *, use_mems=True, enable_dropout=False,
                 output_hidden_states=False) -> LMOutput:
        """Same as :meth:`encode`."""
        return self.encode(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, inputs_embeds,
                           use_mems=use_mems, enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init`` (abstract parameter counting, sharding set-up)."""
        return {"input_ids": jnp.ones((batch, length), jnp.int32)}


class XLNetLMHeadModel(XLNetModel):
    """XLNet with HF's LM head: logits through the word embedding plus ``lm_bias`` (HF ``lm_loss.bias``).

    Attributes:
      config: model config.
    """

    def setup(self):
        super().setup()
        cfg = self.config
        self.lm_bias = nn_partitioning.param_with_axes("lm_bias", nn.initializers.zeros, (cfg.vocab_size,),
                                                       cfg.param_dtype, axes=("vocab",))

    def __call__(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                 token_type_ids=None, inputs_embeds=None, *, use_mems=True, enable_dropout=False,
                 output_hidden_states=False) -> LMOutput:
        """Logits ``[batch, q or num_predict, vocab]`` (float32); arguments as :meth:`XLNetModel.encode`."""
        out = self.encode(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, inputs_embeds,
                          use_mems=use_mems, enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)
        # [batch, length, embed] x [vocab, embed] -> [batch, length, vocab]
        logits = self.word_embedding.attend(out.last_hidden_state) + jnp.asarray(self.lm_bias, jnp.float32)
        return out.replace(logits=with_logical_constraint(logits, ("batch", "length", "vocab")))

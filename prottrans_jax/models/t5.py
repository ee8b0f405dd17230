"""T5 (ProtT5) encoder, decoder and encoder-decoder with t5x's network interface."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

from prottrans_jax.models import layers
from prottrans_jax.models.layers import with_logical_constraint

Array = jax.Array

REMAT_POLICIES = layers.REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 model (names as in HF's ``T5Config``).

    Attributes:
      vocab_size: 128 for ProtT5 (28 SentencePiece pieces + 100 sentinels).
      d_model: width ``embed``.
      d_kv: per-head size ``kv``.
      d_ff: feed-forward size ``mlp``.
      num_heads: attention heads.
      num_encoder_layers: encoder blocks.
      num_decoder_layers: decoder blocks.
      feed_forward_proj: 'relu' (T5 v1.0, ProtT5) or 'gated-gelu' (v1.1); generally 'act' or 'gated-act'.
      relative_attention_num_buckets: relative position buckets.
      relative_attention_max_distance: distance of the last bucket.
      dropout_rate: dropout everywhere (only when ``enable_dropout``).
      layer_norm_epsilon: RMS norm epsilon.
      tie_word_embeddings: logits through the token embedding (no separate ``logits_dense``).
      scale_decoder_outputs: multiply decoder outputs by d_model**-0.5 before the vocabulary projection;
        None means "same as tie_word_embeddings" (HF's rule for configs that state it).
      pad_token_id: padding id (masks use ``ids > 0``, so this must stay 0 for t5x semantics).
      eos_token_id: end-of-sequence id.
      decoder_start_token_id: first decoder input.
      dtype: compute dtype (bf16 on accelerators).
      param_dtype: parameter dtype (float32).
      float32_attention_logits: q.k in float32 even for bf16 compute.
      scan_layers: ``nn.scan`` over blocks (parameters gain a leading 'layers' axis).
      remat_policy: one of 'none', 'full', 'dots', 'dots_no_batch'.
    """

    vocab_size: int = 128
    d_model: int = 1024
    d_kv: int = 128
    d_ff: int = 16384
    num_heads: int = 32
    num_encoder_layers: int = 24
    num_decoder_layers: int = 24
    feed_forward_proj: str = "relu"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    tie_word_embeddings: bool = False
    scale_decoder_outputs: bool | None = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    float32_attention_logits: bool = False
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r}: expected 'act' or 'gated-act'")
        layers.get_activation(self._activation_name)

    @property
    def _activation_name(self) -> str:
        act = self.feed_forward_proj.split("-")[-1]
        # HF maps 'gated-gelu' to the tanh approximation ('gelu_new'), as T5 v1.1 was trained.
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

    @property
    def mlp_activations(self) -> tuple[str, ...]:
        """('relu',) or e.g. ('gelu_new', 'linear') for a gated feed-forward."""
        if self.feed_forward_proj.startswith("gated-"):
            return (self._activation_name, "linear")
        return (self._activation_name,)

    @property
    def scales_decoder_outputs(self) -> bool:
        """Whether the logits see decoder outputs times d_model**-0.5."""
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs

    def replace(self, **changes) -> T5Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


class T5EncoderLayer(nn.Module):
    """Pre-norm encoder block: self-attention with the stack's relative bias, then the MLP.

    Attributes:
      config: model config.
      emit_hidden: also return the output as the second element (collected as per-layer hidden states).
    """

    config: T5Config
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, inputs, encoder_mask, position_bias, deterministic):
        """``[batch, length, embed] -> ([batch, length, embed], same or None)``."""
        cfg = self.config
        dropout = functools.partial(nn.Dropout, rate=cfg.dropout_rate, broadcast_dims=(-2,))
        norm = functools.partial(layers.RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype,
                                 param_dtype=cfg.param_dtype)
        x = norm(name="pre_attention_layer_norm")(inputs)
        # [batch, length, embed] -> [batch, length, embed]
        x = _attention(cfg, "attention")(x, x, encoder_mask, position_bias, deterministic=deterministic)
        x = dropout()(x, deterministic=deterministic) + inputs
        y = norm(name="pre_mlp_layer_norm")(x)
        # [batch, length, embed] -> [batch, length, embed]
        y = _mlp(cfg)(y, deterministic=deterministic)
        y = dropout()(y, deterministic=deterministic) + x
        y = with_logical_constraint(y, ("batch", "length", "embed"))
        return y, (y if self.emit_hidden else None)


class T5DecoderLayer(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the encoder, MLP.

    Attributes:
      config: model config.
      emit_hidden: also return the output as the second element.
    """

    config: T5Config
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, inputs, encoded, decoder_mask, encoder_decoder_mask, position_bias, deterministic, decode):
        """``[batch, length, embed] -> ([batch, length, embed], same or None)``."""
        cfg = self.config
        dropout = functools.partial(nn.Dropout, rate=cfg.dropout_rate, broadcast_dims=(-2,))
        norm = functools.partial(layers.RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype,
                                 param_dtype=cfg.param_dtype)
        x = norm(name="pre_self_attention_layer_norm")(inputs)
        # [batch, length, embed] -> [batch, length, embed]
        x = _attention(cfg, "self_attention")(
            x, x, decoder_mask, position_bias, decode=decode, deterministic=deterministic
        )
        x = dropout()(x, deterministic=deterministic) + inputs
        y = norm(name="pre_cross_attention_layer_norm")(x)
        # [batch, length, embed] x [batch, enc_length, embed] -> [batch, length, embed]
        y = _attention(cfg, "encoder_decoder_attention")(y, encoded, encoder_decoder_mask, deterministic=deterministic)
        y = dropout()(y, deterministic=deterministic) + x
        z = norm(name="pre_mlp_layer_norm")(y)
        # [batch, length, embed] -> [batch, length, embed]
        z = _mlp(cfg)(z, deterministic=deterministic)
        z = dropout()(z, deterministic=deterministic) + y
        z = with_logical_constraint(z, ("batch", "length", "embed"))
        return z, (z if self.emit_hidden else None)


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadDotProductAttention:
    return layers.MultiHeadDotProductAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.d_kv,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits,
        name=name,
    )


def _mlp(cfg: T5Config) -> layers.MlpBlock:
    return layers.MlpBlock(
        intermediate_dim=cfg.d_ff,
        activations=cfg.mlp_activations,
        intermediate_dropout_rate=cfg.dropout_rate,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        name="mlp",
    )


def _run_layers(parent: nn.Module, layer_cls, num_layers: int, x, args: tuple, static_args: tuple, emit: bool):
    """Applies ``num_layers`` blocks (a python loop or ``nn.scan``), with optional remat.

    Args:
      parent: the stack module (blocks become its children 'layers_{i}' or the scanned 'layers').
      layer_cls: block class called as ``block(x, *args) -> (x, hidden or None)``.
      num_layers: number of blocks.
      x: ``[batch, length, embed]`` input of the first block.
      args: the blocks' other positional arguments (broadcast to every block).
      static_args: indices into ``args`` of python-valued arguments (bools), static under remat.
      emit: collect every block's output.

    Returns:
      ``(x, hidden)``: the last block's output and a tuple of every block's output (empty unless emit).
    """
    cfg = parent.config
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(
            layer_cls, policy=layers.remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers,
            # Flax counts `self` as argument 0 and `x` is argument 1.
            static_argnums=tuple(2 + i for i in static_args),
        )
    if cfg.scan_layers:
        scanned = nn_partitioning.scan_with_axes(
            layer_cls,
            variable_axes={"params": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(args),
            length=num_layers,
            axis_name="layers",
        )
        x, ys = scanned(config=cfg, emit_hidden=emit, name="layers")(x, *args)
        return x, (tuple(ys[i] for i in range(num_layers)) if emit else ())
    hidden = []
    for i in range(num_layers):
        x, y = layer_cls(config=cfg, emit_hidden=emit, name=f"layers_{i}")(x, *args)
        if emit:
            hidden.append(y)
    return x, tuple(hidden)


class T5Encoder(nn.Module):
    """Embedding, encoder blocks sharing one relative position bias, final RMS norm.

    Attributes:
      config: model config.
      shared_embedding: the token embedder (owned by the parent, shared with the decoder).
    """

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoder_input_tokens, encoder_mask=None, deterministic=False, output_hidden_states=False):
        """Encodes tokens.

        Args:
          encoder_input_tokens: ``[batch, length]`` ids.
          encoder_mask: ``[batch, 1, length, length]`` attention mask.
          deterministic: disables dropout.
          output_hidden_states: also return the embeddings and every block's (un-normed) output.

        Returns:
          ``[batch, length, embed]`` normed final states, or ``(states, hidden_states)`` where
          ``hidden_states`` has ``num_encoder_layers + 1`` entries. HF's ``hidden_states[i]`` equals
          ours for ``i < num_layers``; HF's last entry is our normed output.
        """
        cfg = self.config
        assert encoder_input_tokens.ndim == 2, "encoder_input_tokens must be [batch, length]"
        length = encoder_input_tokens.shape[-1]
        # Computed once per stack and shared by every block, as in HF (block 0 owns the table).
        position_bias = _relpos(cfg)(length, length, True)  # [1, heads, length, length]
        if encoder_mask is not None:
            # The padding mask joins the position bias once here, not once per block.
            # [batch, 1, length, length] + [1, heads, length, length] -> [batch, heads, length, length]
            position_bias = layers.mask_to_bias(encoder_mask, jnp.float32) + position_bias.astype(jnp.float32)
            encoder_mask = None
        # [batch, length] -> [batch, length, embed]
        x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
        x = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        x = with_logical_constraint(x.astype(cfg.dtype), ("batch", "length", "embed"))
        embedded = x
        x, hidden = _run_layers(
            self, T5EncoderLayer, cfg.num_encoder_layers, x, (encoder_mask, position_bias, deterministic),
            static_args=(2,), emit=output_hidden_states,
        )
        x = layers.RMSNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                           name="encoder_norm")(x)
        x = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        x = with_logical_constraint(x, ("batch", "length", "embed"))
        return (x, (embedded,) + hidden) if output_hidden_states else x


class T5Decoder(nn.Module):
    """Embedding, causal decoder blocks with cross-attention, final norm and vocabulary projection.

    Attributes:
      config: model config.
      shared_embedding: the token embedder shared with the encoder (and the logits when tied).
    """

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        decoder_input_tokens,
        decoder_positions=None,
        decoder_mask=None,
        encoder_decoder_mask=None,
        deterministic=False,
        decode=False,
        max_decode_length=None,
        output_hidden_states=False,
    ):
        """Decodes to logits.

        Args:
          encoded: ``[batch, enc_length, embed]`` encoder output.
          decoder_input_tokens: ``[batch, length]`` (``[batch, 1]`` per incremental step).
          decoder_positions: unused (positions are relative); kept for t5x's interface.
          decoder_mask: ``[batch, 1, length, length]`` self-attention mask.
          encoder_decoder_mask: ``[batch, 1, length, enc_length]``.
          deterministic: disables dropout.
          decode: incremental decoding with the ``'cache'`` collection.
          max_decode_length: cache length (needed for the relative bias when decoding step by step).
          output_hidden_states: also return the embeddings and every block's output.

        Returns:
          ``[batch, length, vocab]`` float32 logits, or ``(logits, hidden_states)``.
        """
        del decoder_positions
        cfg = self.config
        assert decoder_input_tokens.ndim == 2, "decoder_input_tokens must be [batch, length]"
        bias_len = max_decode_length if decode and max_decode_length else decoder_input_tokens.shape[-1]
        position_bias = _relpos(cfg)(bias_len, bias_len, False)  # [1, heads, bias_len, bias_len]
        # [batch, length] -> [batch, length, embed]
        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        y = with_logical_constraint(y.astype(cfg.dtype), ("batch", "length", "embed"))
        embedded = y
        args = (encoded, decoder_mask, encoder_decoder_mask, position_bias, deterministic, decode)
        y, hidden = _run_layers(
            self, T5DecoderLayer, cfg.num_decoder_layers, y, args, static_args=(4, 5),
            emit=output_hidden_states,
        )
        y = layers.RMSNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                           name="decoder_norm")(y)
        y = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        if cfg.scales_decoder_outputs:
            # HF: sequence_output * d_model**-0.5 before the (tied) projection.
            y = y * (cfg.d_model**-0.5)
        if cfg.tie_word_embeddings:
            # [batch, length, embed] -> [batch, length, vocab]
            logits = self.shared_embedding.attend(y)
        else:
            # [batch, length, embed] -> [batch, length, vocab]
            logits = layers.DenseGeneral(
                cfg.vocab_size, kernel_axes=("embed", "vocab"), dtype=jnp.float32, param_dtype=cfg.param_dtype,
                name="logits_dense",
            )(y)
        logits = with_logical_constraint(logits, ("batch", "length", "vocab"))
        return (logits, (embedded,) + hidden) if output_hidden_states else logits


def _relpos(cfg: T5Config) -> layers.RelativePositionBiases:
    return layers.RelativePositionBiases(
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance,
        num_heads=cfg.num_heads,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        name="relpos_bias",
    )


def _embedder(cfg: T5Config) -> layers.Embed:
    return layers.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        one_hot=True, name="token_embedder",
    )


def encoder_mask_from_tokens(tokens, segment_ids=None, dtype=jnp.float32):
    """``[batch, length]`` ids (0 = pad) and optional packing ids -> ``[batch, 1, length, length]`` mask."""
    mask = layers.make_attention_mask(tokens > 0, tokens > 0, dtype=dtype)
    if segment_ids is not None:
        mask = layers.combine_masks(
            mask, layers.make_attention_mask(segment_ids, segment_ids, jnp.equal, dtype=dtype), dtype=dtype
        )
    return mask


class T5EncoderDecoder(nn.Module):
    """Encoder-decoder T5 with t5x's network interface (drivable by t5x's ``EncoderDecoderModel``).

    Parameters: ``token_embedder/embedding``, ``encoder/relpos_bias/rel_embedding``,
    ``encoder/layers_{i}/...`` (or scanned ``encoder/layers/...``), ``encoder/encoder_norm/scale``,
    the same under ``decoder/`` with ``decoder_norm`` and, untied, ``decoder/logits_dense/kernel``.
    With ``'intermediates'`` mutable, ``encode``/``decode`` sow ``encoder_hidden_states`` /
    ``decoder_hidden_states`` (embeddings + every block's output).

    Attributes:
      config: model config.
    """

    config: T5Config

    def setup(self):
        self.token_embedder = _embedder(self.config)
        self.encoder = T5Encoder(config=self.config, shared_embedding=self.token_embedder)
        self.decoder = T5Decoder(config=self.config, shared_embedding=self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout=True):
        """``[batch, length]`` ids -> ``[batch, length, embed]`` encoder output."""
        cfg = self.config
        mask = encoder_mask_from_tokens(encoder_input_tokens, encoder_segment_ids, cfg.dtype)
        collect = self.is_mutable_collection("intermediates")
        out = self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout, output_hidden_states=collect)
        if collect:
            out, hidden = out
            self.sow("intermediates", "encoder_hidden_states", hidden)
        return out

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=True,
        decode=False,
        max_decode_length=None,
    ):
        """Decoder logits ``[batch, length, vocab]`` given the encoder output (t5x semantics for masks)."""
        cfg = self.config
        if decode:
            # At inference the targets are unknown: no self-attention padding mask (the cache masks).
            decoder_mask = None
            encoder_decoder_mask = layers.make_attention_mask(
                jnp.ones_like(decoder_target_tokens), encoder_input_tokens > 0, dtype=cfg.dtype
            )
        else:
            decoder_mask = layers.make_decoder_mask(
                decoder_target_tokens, dtype=cfg.dtype, decoder_segment_ids=decoder_segment_ids
            )
            encoder_decoder_mask = layers.make_attention_mask(
                decoder_target_tokens > 0, encoder_input_tokens > 0, dtype=cfg.dtype
            )
        if encoder_segment_ids is not None:
            if decode:
                raise ValueError("packing (encoder_segment_ids) cannot be used with decode=True")
            encoder_decoder_mask = layers.combine_masks(
                encoder_decoder_mask,
                layers.make_attention_mask(decoder_segment_ids, encoder_segment_ids, jnp.equal, dtype=cfg.dtype),
                dtype=cfg.dtype,
            )
        collect = self.is_mutable_collection("intermediates")
        out = self.decoder(
            encoded, decoder_input_tokens, decoder_positions, decoder_mask, encoder_decoder_mask,
            deterministic=not enable_dropout, decode=decode, max_decode_length=max_decode_length,
            output_hidden_states=collect,
        )
        if collect:
            out, hidden = out
            self.sow("intermediates", "decoder_hidden_states", hidden)
        return out

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout=True,
        decode=False,
    ):
        """Logits ``[batch, dec_length, vocab]``; ``decoder_input_tokens`` is the right-shifted target."""
        del encoder_positions  # relative positions: absolute positions are not needed
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout=enable_dropout)
        return self.decode(
            encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids, decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions, enable_dropout=enable_dropout, decode=decode,
        )

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init`` (abstract parameter counting, sharding set-up)."""
        ones = jnp.ones((batch, length), jnp.int32)
        return {"encoder_input_tokens": ones, "decoder_input_tokens": ones, "decoder_target_tokens": ones,
                "enable_dropout": False}


class T5EncoderModel(nn.Module):
    """Encoder only (ProtT5 embeddings): parameters are the ``token_embedder``/``encoder`` subtree.

    Attributes:
      config: model config (decoder fields are ignored).
    """

    config: T5Config

    def setup(self):
        self.token_embedder = _embedder(self.config)
        self.encoder = T5Encoder(config=self.config, shared_embedding=self.token_embedder)

    def __call__(self, input_ids, attention_mask=None, encoder_segment_ids=None, *, enable_dropout=False,
                 output_hidden_states=False):
        """Per-residue embeddings.

        Args:
          input_ids: ``[batch, length]`` ids (0 = pad).
          attention_mask: optional ``[batch, length]`` 1/0 (defaults to ``input_ids > 0``).
          encoder_segment_ids: optional packing ids.
          enable_dropout: training mode.
          output_hidden_states: also return embeddings + every block's output.

        Returns:
          ``[batch, length, embed]`` last hidden state, or ``(last_hidden_state, hidden_states)``.
        """
        valid = input_ids > 0 if attention_mask is None else attention_mask > 0
        mask = layers.make_attention_mask(valid, valid, dtype=self.config.dtype)
        if encoder_segment_ids is not None:
            mask = layers.combine_masks(
                mask, layers.make_attention_mask(encoder_segment_ids, encoder_segment_ids, jnp.equal),
                dtype=self.config.dtype,
            )
        return self.encoder(input_ids, mask, deterministic=not enable_dropout,
                            output_hidden_states=output_hidden_states)

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init``."""
        return {"input_ids": jnp.ones((batch, length), jnp.int32)}

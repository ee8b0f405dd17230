"""BERT (ProtBert) encoder and masked-LM head, with the embedding/encoder pieces ALBERT and ELECTRA reuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning
from jax import lax

from prottrans_jax.models import layers
from prottrans_jax.models.layers import with_logical_constraint

Array = jax.Array

REMAT_POLICIES = layers.REMAT_POLICIES
HIDDEN_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of a BERT-style encoder (HF ``BertConfig`` names in parentheses).

    Defaults are ProtBert's (and ProtBert-BFD's) released sizes.

    Attributes:
      vocab_size: token ids (30 for ProtBert's vocab.txt).
      hidden_size: width ``embed`` of the transformer.
      num_layers: transformer layers (``num_hidden_layers``).
      num_heads: attention heads (``num_attention_heads``); ``hidden_size`` must divide evenly.
      intermediate_size: feed-forward size ``mlp``.
      hidden_act: feed-forward (and MLM transform) activation: 'gelu' is exact GELU, as in HF.
      max_position_embeddings: rows of the absolute position table.
      type_vocab_size: rows of the token-type table.
      layer_norm_eps: epsilon of every LayerNorm.
      hidden_dropout_rate: dropout on embeddings and sub-layer outputs (``hidden_dropout_prob``).
      attention_dropout_rate: dropout on attention probabilities (``attention_probs_dropout_prob``).
      embedding_size: width of the embedding tables when it differs from ``hidden_size`` (ALBERT,
        ELECTRA: then a dense ``embeddings_project`` maps it to ``hidden_size``); None means equal.
      pad_token_id: padding id (the default attention mask is ``input_ids != pad_token_id``).
      initializer_range: std of the normal initializers (HF: 0.02).
      dtype: compute dtype (bf16 on accelerators).
      param_dtype: parameter storage dtype (float32).
      float32_attention_logits: compute q.k in float32 under bf16 compute.
      scan_layers: ``nn.scan`` over layers (parameters gain a leading 'layers' axis).
      remat_policy: 'none', 'full', 'dots' or 'dots_no_batch' (``nn.remat`` of each layer).
    """

    vocab_size: int = 30
    hidden_size: int = 1024
    num_layers: int = 30
    num_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    max_position_embeddings: int = 40000
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    embedding_size: int | None = None
    pad_token_id: int = 0
    initializer_range: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    float32_attention_logits: bool = False
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        layers.get_activation(self.hidden_act)

    @property
    def head_dim(self) -> int:
        """Per-head size ``kv``."""
        return self.hidden_size // self.num_heads

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding tables."""
        return self.embedding_size or self.hidden_size

    def replace(self, **changes) -> BertConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def normal_init(config: BertConfig) -> layers.Initializer:
    """HF's initializer: normal with std ``initializer_range``."""
    return nn.initializers.normal(stddev=config.initializer_range)


def positions_from_segments(segment_ids: Array) -> Array:
    """Positions restarting at 0 where the packing id changes: ``[batch, length] -> [batch, length]``."""
    length = segment_ids.shape[-1]
    idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    # Index of the latest segment start at or before each position.
    start_idx = lax.cummax(jnp.where(starts, idx, 0), axis=1)
    return idx - start_idx


def encoder_attention_mask(
    input_ids: Array,
    attention_mask: Array | None = None,
    segment_ids: Array | None = None,
    pad_token_id: int = 0,
    dtype: Any = jnp.float32,
) -> Array:
    """Bidirectional mask ``[batch, 1, length, length]`` as HF builds it, plus packing.

    Only keys are masked (as in HF): a padding query still attends to the real tokens, so hidden
    states match HF at every position. With ``segment_ids`` a token attends only within its segment.

    Args:
      input_ids: ``[batch, length]`` ids.
      attention_mask: optional ``[batch, length]`` 1 = token, 0 = padding (default ``ids != pad``).
      segment_ids: optional ``[batch, length]`` packing ids.
      pad_token_id: padding id for the default mask.
      dtype: mask dtype.

    Returns:
      The mask, nonzero where attention is allowed.
    """
    valid = input_ids != pad_token_id if attention_mask is None else attention_mask > 0
    mask = layers.make_attention_mask(jnp.ones_like(valid), valid, jnp.logical_and, dtype=dtype)
    if segment_ids is not None:
        same = layers.make_attention_mask(segment_ids, segment_ids, jnp.equal, dtype=dtype)
        mask = layers.combine_masks(mask, same, dtype=dtype)
    return mask


class PositionTable(nn.Module):
    """An absolute embedding table ``[rows, embed]`` looked up by integer ids (positions, token types).

    Attributes:
      num_embeddings: rows.
      features: embedding width.
      dtype: output dtype.
      param_dtype: storage dtype.
      embedding_init: initializer.
    """

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    embedding_init: layers.Initializer = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, ids: Array) -> Array:
        """``[batch, length]`` ids -> ``[batch, length, embed]``."""
        # Rows are not one of the logical dimensions: left unsharded (None).
        table = nn_partitioning.param_with_axes(
            "embedding", self.embedding_init, (self.num_embeddings, self.features), self.param_dtype,
            axes=(None, "embed"),
        )
        return jnp.take(jnp.asarray(table, self.dtype), ids, axis=0)


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (width ``config.embedding_dim``).

    Parameters: ``word_embeddings/embedding [vocab, E]``, ``position_embeddings/embedding [P, E]``,
    ``token_type_embeddings/embedding [T, E]``, ``layer_norm/{scale,bias} [E]``.

    Attributes:
      config: model config.
    """

    config: BertConfig

    def setup(self):
        cfg = self.config
        init = normal_init(cfg)
        self.word_embeddings = layers.Embed(
            num_embeddings=cfg.vocab_size, features=cfg.embedding_dim, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype, embedding_init=init, one_hot=True,
        )
        self.position_embeddings = PositionTable(
            cfg.max_position_embeddings, cfg.embedding_dim, cfg.dtype, cfg.param_dtype, init
        )
        self.token_type_embeddings = PositionTable(cfg.type_vocab_size, cfg.embedding_dim, cfg.dtype,
                                                   cfg.param_dtype, init)
        self.layer_norm = layers.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        self.dropout = nn.Dropout(rate=cfg.hidden_dropout_rate)

    def __call__(self, input_ids: Array, token_type_ids: Array, position_ids: Array, deterministic: bool) -> Array:
        """``[batch, length]`` ids, token types and positions -> ``[batch, length, E]``."""
        x = self.word_embeddings(input_ids.astype(jnp.int32))
        x = x + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        x = self.dropout(self.layer_norm(x), deterministic=deterministic)
        return with_logical_constraint(x, HIDDEN_AXES)

    def attend(self, x: Array) -> Array:
        """Tied output projection ``[batch, length, E] -> [batch, length, vocab]`` (float32)."""
        return self.word_embeddings.attend(x)


class BertLayer(nn.Module):
    """Post-LN transformer layer: LN(x + attn(x)), then LN(y + mlp(y)) (also ALBERT's shared layer).

    Attributes:
      config: model config.
      emit_hidden: also return the output as the second element (collected as hidden states).
    """

    config: BertConfig
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, inputs: Array, mask: Array | None, deterministic: bool):
        """``[batch, length, embed] -> ([batch, length, embed], same or None)``."""
        cfg = self.config
        init = normal_init(cfg)
        norm = dict(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        dropout = nn.Dropout(rate=cfg.hidden_dropout_rate)
        # [batch, length, embed] -> [batch, length, embed] (q/k/v: -> [batch, length, heads, kv])
        x = layers.MultiHeadDotProductAttention(
            num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            dropout_rate=cfg.attention_dropout_rate, kernel_init=init, use_bias=True, scale_logits=True,
            float32_logits=cfg.float32_attention_logits, name="attention",
        )(inputs, inputs, mask, deterministic=deterministic)
        x = dropout(x, deterministic=deterministic)
        x = layers.LayerNorm(name="attention_layer_norm", **norm)(inputs + x)
        x = with_logical_constraint(x, HIDDEN_AXES)
        # [batch, length, embed] -> [batch, length, mlp] -> [batch, length, embed]
        y = layers.MlpBlock(
            intermediate_dim=cfg.intermediate_size, activations=(cfg.hidden_act,), use_bias=True,
            dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=init, name="mlp",
        )(x, deterministic=deterministic)
        y = dropout(y, deterministic=deterministic)
        y = layers.LayerNorm(name="mlp_layer_norm", **norm)(x + y)
        y = with_logical_constraint(y, HIDDEN_AXES)
        return y, (y if self.emit_hidden else None)


def maybe_remat(layer_cls: type[nn.Module], config: BertConfig) -> type[nn.Module]:
    """``nn.remat`` of a layer class per ``config.remat_policy`` (``deterministic`` static)."""
    if config.remat_policy == "none":
        return layer_cls
    # Flax counts `self` as argument 0: (self, inputs, mask, deterministic) -> deterministic is 3.
    return nn.remat(layer_cls, policy=layers.remat_policy(config.remat_policy), prevent_cse=not config.scan_layers,
                    static_argnums=(3,))


class BertEncoder(nn.Module):
    """``num_layers`` independent :class:`BertLayer` s: ``layers_{i}``, or one scanned ``layers`` subtree.

    Attributes:
      config: model config.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, deterministic: bool, output_hidden_states: bool = False):
        """``[batch, length, embed]`` -> ``(last, hidden)``; ``hidden`` is every layer's output (or ())."""
        cfg = self.config
        layer_cls = maybe_remat(BertLayer, cfg)
        emit = output_hidden_states
        if cfg.scan_layers:
            scanned = nn_partitioning.scan_with_axes(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                axis_name="layers",
            )
            x, ys = scanned(config=cfg, emit_hidden=emit, name="layers")(x, mask, deterministic)
            return x, (tuple(ys[i] for i in range(cfg.num_layers)) if emit else ())
        hidden = []
        for i in range(cfg.num_layers):
            x, y = layer_cls(config=cfg, emit_hidden=emit, name=f"layers_{i}")(x, mask, deterministic)
            hidden.append(y)
        return x, (tuple(hidden) if emit else ())


class BertModel(nn.Module):
    """Embeddings (+ ``embeddings_project`` when ``embedding_size != hidden_size``) and the encoder.

    Parameters: ``embeddings/...`` (see :class:`BertEmbeddings`; absent when ``shared_embeddings`` is
    given), ``embeddings_project/{kernel [E, H], bias [H]}`` (only when E != H),
    ``encoder/layers_{i}/{attention/{query,key,value,out}/{kernel,bias}, attention_layer_norm/{scale,bias},
    mlp/{wi,wo}/{kernel,bias}, mlp_layer_norm/{scale,bias}}`` (scanned: ``encoder/layers/...`` with a
    leading ``layers`` axis). Subclasses add heads beside these, so a head model's params minus its head
    are this model's params.

    Attributes:
      config: model config.
      shared_embeddings: an embeddings module owned elsewhere (ELECTRA's generator/discriminator share one).
    """

    config: BertConfig
    shared_embeddings: nn.Module | None = None

    def setup(self):
        cfg = self.config
        if self.shared_embeddings is None:
            self.embeddings = BertEmbeddings(cfg)
        if cfg.embedding_dim != cfg.hidden_size:
            # [batch, length, E] -> [batch, length, H]
            self.embeddings_project = layers.DenseGeneral(
                cfg.hidden_size, kernel_axes=("mlp", "embed"), use_bias=True, dtype=cfg.dtype,
                param_dtype=cfg.param_dtype, kernel_init=normal_init(cfg),
            )
        self.encoder = self.make_encoder()

    def make_encoder(self) -> nn.Module:
        """The layer stack (ALBERT overrides this with its shared layer)."""
        return BertEncoder(self.config)

    @property
    def embedder(self) -> nn.Module:
        """The embeddings module in use (own or shared)."""
        return self.shared_embeddings if self.shared_embeddings is not None else self.embeddings

    def encode(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        segment_ids: Array | None = None,
        *,
        enable_dropout: bool = False,
        output_hidden_states: bool = False,
    ):
        """Token ids -> per-token hidden states.

        Args:
          input_ids: ``[batch, length]`` ids.
          attention_mask: optional ``[batch, length]`` 1/0 (default ``input_ids != pad_token_id``).
          token_type_ids: optional ``[batch, length]`` (default zeros).
          position_ids: optional ``[batch, length]`` (default 0..length-1, restarting per segment if packed).
          segment_ids: optional ``[batch, length]`` packing ids: tokens attend within their segment only.
          enable_dropout: training mode.
          output_hidden_states: also return HF's ``hidden_states``.

        Returns:
          ``[batch, length, hidden]`` last hidden state, or ``(last, hidden_states)`` with ``num_layers + 1``
          entries: the input of the first layer (after any projection), then every layer's output.
        """
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids, jnp.int32)
        if position_ids is None:
            if segment_ids is None:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
            else:
                position_ids = positions_from_segments(segment_ids)
        deterministic = not enable_dropout
        mask = encoder_attention_mask(input_ids, attention_mask, segment_ids, cfg.pad_token_id, cfg.dtype)
        # [batch, length] -> [batch, length, E]
        x = self.embedder(input_ids, token_type_ids, position_ids, deterministic)
        if cfg.embedding_dim != cfg.hidden_size:
            # [batch, length, E] -> [batch, length, H]
            x = with_logical_constraint(self.embeddings_project(x), HIDDEN_AXES)
        first = x
        x, hidden = self.encoder(x, mask, deterministic, output_hidden_states)
        return (x, (first,) + hidden) if output_hidden_states else x

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
                 *, enable_dropout=False, output_hidden_states=False):
        """Same as :meth:`encode`."""
        return self.encode(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                           enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init`` (abstract parameter counting, sharding set-up)."""
        return {"input_ids": jnp.ones((batch, length), jnp.int32)}


class TiedLMHead(nn.Module):
    """MLM head: dense -> activation -> LayerNorm, then the tied word embeddings plus an output bias.

    Parameters: ``dense/{kernel [H, F], bias [F]}``, ``layer_norm/{scale,bias} [F]``, ``output_bias [vocab]``.
    BERT: F = hidden, act = hidden_act; ALBERT: F = embedding_size; ELECTRA generator: F = embedding_size,
    act = exact GELU.

    Attributes:
      config: model config.
      features: F, the width of the transform (must equal the embedding width).
      activation: activation name.
      embedder: the :class:`BertEmbeddings` whose word table gives the logits.
    """

    config: BertConfig
    features: int
    activation: str
    embedder: nn.Module

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``[batch, length, hidden] -> [batch, length, vocab]`` float32 logits."""
        cfg = self.config
        # [batch, length, hidden] -> [batch, length, F]
        x = layers.DenseGeneral(self.features, kernel_axes=("embed", "mlp"), use_bias=True, dtype=cfg.dtype,
                                param_dtype=cfg.param_dtype, kernel_init=normal_init(cfg), name="dense")(x)
        x = layers.get_activation(self.activation)(x)
        x = layers.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                             name="layer_norm")(x)
        # [batch, length, F] x [vocab, F] -> [batch, length, vocab]
        logits = self.embedder.attend(x)
        bias = nn_partitioning.param_with_axes("output_bias", nn.initializers.zeros, (cfg.vocab_size,),
                                               cfg.param_dtype, axes=("vocab",))
        logits = logits + jnp.asarray(bias, logits.dtype)
        return with_logical_constraint(logits, ("batch", "length", "vocab"))


def apply_head(head: Callable[[Array], Array], out):
    """Applies ``head`` to the last hidden state of an ``encode`` result (keeping hidden states)."""
    if isinstance(out, tuple):
        return head(out[0]), out[1]
    return head(out)


class BertForMaskedLM(BertModel):
    """BERT with HF's MLM head (``cls.predictions``): parameters of :class:`BertModel` plus ``predictions/``.

    Attributes:
      config: model config.
      shared_embeddings: see :class:`BertModel`.
    """

    def setup(self):
        super().setup()
        cfg = self.config
        self.predictions = TiedLMHead(cfg, cfg.embedding_dim, cfg.hidden_act, self.embedder)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
                 *, enable_dropout=False, output_hidden_states=False):
        """MLM logits ``[batch, length, vocab]`` (float32), or ``(logits, hidden_states)``; args as :meth:`encode`."""
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                          enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)
        return apply_head(self.predictions, out)

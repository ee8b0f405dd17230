"""ALBERT (ProtAlbert): factorised embeddings and one transformer layer shared across all layers."""

from __future__ import annotations

import dataclasses

import jax
from flax import linen as nn

from prottrans_jax.models.bert import BertConfig, BertForMaskedLM, BertLayer, BertModel, maybe_remat

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AlbertConfig(BertConfig):
    """ALBERT hyperparameters; defaults are ProtAlbert's (approximate, from the ProtTrans paper's table).

    Only HF's default grouping is supported: ``num_hidden_groups = inner_group_num = 1``, i.e. ONE layer
    whose parameters are applied ``num_layers`` times.

    Attributes:
      embedding_size: width E of the embedding tables (projected to ``hidden_size`` by ``embeddings_project``).
      num_hidden_groups: must be 1.
      inner_group_num: must be 1.
      (others: see :class:`~prottrans_jax.models.bert.BertConfig`)
    """

    vocab_size: int = 30
    hidden_size: int = 4096
    num_layers: int = 12
    num_heads: int = 64
    intermediate_size: int = 16384
    max_position_embeddings: int = 40000
    embedding_size: int | None = 128
    num_hidden_groups: int = 1
    inner_group_num: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.num_hidden_groups != 1 or self.inner_group_num != 1:
            raise ValueError(
                f"ALBERT with num_hidden_groups={self.num_hidden_groups}, inner_group_num={self.inner_group_num} "
                "is not supported: only one shared layer (both 1), as ALBERT and ProtAlbert use"
            )


class AlbertEncoder(nn.Module):
    """One :class:`BertLayer` (``shared_layer``) applied ``num_layers`` times.

    With ``scan_layers`` the loop is an ``nn.scan`` whose parameters are broadcast (not stacked): the
    parameter tree is the same either way.

    Attributes:
      config: model config.
    """

    config: AlbertConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, deterministic: bool, output_hidden_states: bool = False):
        """``[batch, length, hidden]`` -> ``(last, hidden)``; ``hidden`` is every application's output (or ())."""
        cfg = self.config
        layer_cls = maybe_remat(BertLayer, cfg)
        emit = output_hidden_states
        if cfg.scan_layers:
            scanned = nn.scan(
                layer_cls,
                variable_broadcast=("params", "params_axes"),
                split_rngs={"params": False, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
            )
            x, ys = scanned(config=cfg, emit_hidden=emit, name="shared_layer")(x, mask, deterministic)
            return x, (tuple(ys[i] for i in range(cfg.num_layers)) if emit else ())
        layer = layer_cls(config=cfg, emit_hidden=emit, name="shared_layer")
        hidden = []
        for _ in range(cfg.num_layers):
            x, y = layer(x, mask, deterministic)
            hidden.append(y)
        return x, (tuple(hidden) if emit else ())


class AlbertModel(BertModel):
    """ALBERT encoder: ``embeddings/`` (width E), ``embeddings_project/`` (E -> H), ``encoder/shared_layer/``.

    ``encoder/shared_layer`` has :class:`~prottrans_jax.models.bert.BertLayer`'s parameters
    (``attention``, ``attention_layer_norm``, ``mlp``, ``mlp_layer_norm``). Call signature as
    :meth:`BertModel.encode`.

    Attributes:
      config: model config.
      shared_embeddings: see :class:`BertModel`.
    """

    config: AlbertConfig

    def make_encoder(self) -> nn.Module:
        """The shared-layer stack."""
        return AlbertEncoder(self.config)


class AlbertForMaskedLM(AlbertModel, BertForMaskedLM):
    """ALBERT with HF's MLM head: ``predictions/{dense [H, E], layer_norm [E], output_bias [vocab]}``, tied decoder.

    The head and ``__call__`` are :class:`BertForMaskedLM`'s; the encoder is :class:`AlbertModel`'s.

    Attributes:
      config: model config.
      shared_embeddings: see :class:`BertModel`.
    """

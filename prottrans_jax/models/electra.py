"""ELECTRA (ProtElectra): generator, discriminator, and the pair sharing one embedding block."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from prottrans_jax.models import layers
from prottrans_jax.models.bert import BertConfig, BertEmbeddings, BertModel, TiedLMHead, apply_head, normal_init
from prottrans_jax.models.layers import with_logical_constraint

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ElectraConfig(BertConfig):
    """One ELECTRA network (generator or discriminator); fields as :class:`~prottrans_jax.models.bert.BertConfig`.

    ``embedding_size`` (None = ``hidden_size``) is the embedding width; when it differs from
    ``hidden_size`` an ``embeddings_project`` dense maps it (HF ``electra.embeddings_project``).
    """


class ElectraModel(BertModel):
    """ELECTRA encoder (HF ``ElectraModel``): :class:`~prottrans_jax.models.bert.BertModel` with an ElectraConfig.

    Attributes:
      config: model config.
      shared_embeddings: embeddings owned elsewhere.
    """

    config: ElectraConfig


class DiscriminatorHead(nn.Module):
    """``dense [H, H]`` -> ``hidden_act`` -> ``dense_prediction [H, 1]``: one replaced-token logit per token.

    Attributes:
      config: model config.
    """

    config: ElectraConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``[batch, length, hidden] -> [batch, length]`` float32 logits."""
        cfg = self.config
        dense = dict(use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=normal_init(cfg))
        # [batch, length, hidden] -> [batch, length, hidden]
        x = layers.DenseGeneral(cfg.hidden_size, kernel_axes=("embed", "mlp"), name="dense", **dense)(x)
        x = layers.get_activation(cfg.hidden_act)(x)
        # [batch, length, hidden] -> [batch, length, 1]
        x = layers.DenseGeneral(1, kernel_axes=("mlp", None), name="dense_prediction", **dense)(x)
        return with_logical_constraint(x[..., 0].astype(jnp.float32), ("batch", "length"))


class ElectraForPreTraining(BertModel):
    """Discriminator (HF ``ElectraForPreTraining``): :class:`BertModel` params + ``discriminator_predictions/``.

    Attributes:
      config: model config.
      shared_embeddings: embeddings owned elsewhere (see :class:`ElectraPretrainingModel`).
    """

    config: ElectraConfig

    def setup(self):
        super().setup()
        self.discriminator_predictions = DiscriminatorHead(self.config)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
                 *, enable_dropout=False, output_hidden_states=False):
        """Replaced-token logits ``[batch, length]`` (float32), or ``(logits, hidden_states)``.

        Arguments as :meth:`~prottrans_jax.models.bert.BertModel.encode`.
        """
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                          enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)
        return apply_head(self.discriminator_predictions, out)


class ElectraForMaskedLM(BertModel):
    """Generator (HF ``ElectraForMaskedLM``): :class:`BertModel` params + ``generator_predictions/``.

    ``generator_predictions/{dense [H, E], layer_norm [E], output_bias [vocab]}``: dense, exact GELU
    (HF hard-codes it), LayerNorm, then the tied word embeddings (HF ``generator_lm_head``) plus bias.

    Attributes:
      config: model config.
      shared_embeddings: embeddings owned elsewhere (see :class:`ElectraPretrainingModel`).
    """

    config: ElectraConfig

    def setup(self):
        super().setup()
        cfg = self.config
        self.generator_predictions = TiedLMHead(cfg, cfg.embedding_dim, "gelu", self.embedder)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
                 *, enable_dropout=False, output_hidden_states=False):
        """MLM logits ``[batch, length, vocab]`` (float32), or ``(logits, hidden_states)``; args as ``encode``."""
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                          enable_dropout=enable_dropout, output_hidden_states=output_hidden_states)
        return apply_head(self.generator_predictions, out)


@dataclasses.dataclass(frozen=True)
class ElectraPretrainingConfig:
    """A generator and a discriminator that share one embedding block (ELECTRA paper, Sec. 3.2).

    The shared block (word, position and token-type tables and their LayerNorm) is built from the
    discriminator's config; both must agree on vocabulary, embedding width, positions and token types.

    Attributes:
      generator: the (smaller) generator.
      discriminator: the discriminator.
    """

    generator: ElectraConfig
    discriminator: ElectraConfig

    def __post_init__(self):
        for field in ("vocab_size", "embedding_dim", "max_position_embeddings", "type_vocab_size"):
            g, d = getattr(self.generator, field), getattr(self.discriminator, field)
            if g != d:
                raise ValueError(
                    f"ELECTRA generator and discriminator share embeddings, so their {field} must match: "
                    f"generator {g}, discriminator {d}; set the generator's embedding_size to the discriminator's"
                )

    def replace(self, **changes: Any) -> ElectraPretrainingConfig:
        """A copy with ``generator``/``discriminator`` replaced, or fields of both changed (e.g. ``scan_layers``)."""
        pair = {k: changes.pop(k) for k in ("generator", "discriminator") if k in changes}
        gen = pair.get("generator", self.generator).replace(**changes)
        disc = pair.get("discriminator", self.discriminator).replace(**changes)
        return ElectraPretrainingConfig(generator=gen, discriminator=disc)


class ElectraPretrainingModel(nn.Module):
    """Generator + discriminator over ONE shared ``embeddings/`` block.

    Parameters: ``embeddings/...`` (shared), ``generator/...`` and ``discriminator/...`` (each an
    :class:`ElectraForMaskedLM` / :class:`ElectraForPreTraining` tree without ``embeddings``). Use
    :func:`split_pretraining_params` to get the two standalone trees (e.g. for HF export). Sampling the
    replacement tokens from the generator belongs to the objective, not to this network.

    Attributes:
      config: the pair's config.
    """

    config: ElectraPretrainingConfig

    def setup(self):
        self.embeddings = BertEmbeddings(self.config.discriminator)
        self.generator = ElectraForMaskedLM(self.config.generator, shared_embeddings=self.embeddings)
        self.discriminator = ElectraForPreTraining(self.config.discriminator, shared_embeddings=self.embeddings)

    def generator_logits(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                         segment_ids=None, *, enable_dropout=False):
        """Generator MLM logits ``[batch, length, vocab]`` on the masked input."""
        return self.generator(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                              enable_dropout=enable_dropout)

    def discriminator_logits(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                             segment_ids=None, *, enable_dropout=False):
        """Discriminator logits ``[batch, length]`` on the corrupted input."""
        return self.discriminator(input_ids, attention_mask, token_type_ids, position_ids, segment_ids,
                                  enable_dropout=enable_dropout)

    def __call__(self, masked_input_ids, corrupted_input_ids=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, segment_ids=None, *, enable_dropout=False):
        """Both networks' logits.

        Args:
          masked_input_ids: ``[batch, length]`` generator input (with [MASK] tokens).
          corrupted_input_ids: ``[batch, length]`` discriminator input (masks replaced by generator
            samples); defaults to ``masked_input_ids``.
          attention_mask, token_type_ids, position_ids, segment_ids: as ``BertModel.encode``, shared.
          enable_dropout: training mode.

        Returns:
          ``(generator_logits [batch, length, vocab], discriminator_logits [batch, length])``.
        """
        if corrupted_input_ids is None:
            corrupted_input_ids = masked_input_ids
        args = (attention_mask, token_type_ids, position_ids, segment_ids)
        gen = self.generator_logits(masked_input_ids, *args, enable_dropout=enable_dropout)
        disc = self.discriminator_logits(corrupted_input_ids, *args, enable_dropout=enable_dropout)
        return gen, disc

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict[str, Array]:
        """Keyword inputs for ``init``."""
        return {"masked_input_ids": jnp.ones((batch, length), jnp.int32)}


def split_pretraining_params(params: dict) -> tuple[dict, dict]:
    """``ElectraPretrainingModel`` params -> (generator, discriminator) standalone trees.

    Each gets the shared ``embeddings`` subtree (the same arrays), so it loads into
    :class:`ElectraForMaskedLM` / :class:`ElectraForPreTraining` and exports to HF as such.
    """
    shared = params["embeddings"]
    return {"embeddings": shared, **params["generator"]}, {"embeddings": shared, **params["discriminator"]}


def merge_pretraining_params(generator: dict, discriminator: dict) -> dict:
    """Inverse of :func:`split_pretraining_params`; the discriminator's embeddings become the shared ones."""
    return {
        "embeddings": discriminator["embeddings"],
        "generator": {k: v for k, v in generator.items() if k != "embeddings"},
        "discriminator": {k: v for k, v in discriminator.items() if k != "embeddings"},
    }

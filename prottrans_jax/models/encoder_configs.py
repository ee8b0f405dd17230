"""Named configs of the BERT-family encoders (ProtBert, ProtAlbert, ProtElectra) and tiny test sizes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import linen as nn

from prottrans_jax.models.albert import AlbertConfig, AlbertForMaskedLM, AlbertModel
from prottrans_jax.models.bert import BertConfig, BertForMaskedLM, BertModel
from prottrans_jax.models.electra import (
    ElectraConfig,
    ElectraForPreTraining,
    ElectraModel,
    ElectraPretrainingConfig,
    ElectraPretrainingModel,
)

# ProtBert / ProtBert-BFD: released config.json (Rostlab/prot_bert, prot_bert_bfd).
_PROT_BERT = dict(
    vocab_size=30, hidden_size=1024, num_layers=30, num_heads=16, intermediate_size=4096, hidden_act="gelu",
    max_position_embeddings=40000, type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
# Tiny sizes for tests: 2 layers, width 32, 4 heads of 8, feed-forward 64, 128 positions.
_TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=128)


def prot_bert() -> BertConfig:
    """ProtBert (UniRef100): BERT, 30 layers, hidden 1024, 16 heads, intermediate 4096 (~420 M parameters)."""
    return BertConfig(**_PROT_BERT)


def prot_bert_bfd() -> BertConfig:
    """ProtBert-BFD: the same architecture trained on BFD."""
    return BertConfig(**_PROT_BERT)


def prot_bert_tiny() -> BertConfig:
    """Tests: ProtBert's vocabulary and activations at tiny width."""
    return BertConfig(**{**_PROT_BERT, **_TINY})


def prot_albert() -> AlbertConfig:
    """ProtAlbert: 12 (shared) layers, hidden 4096, 64 heads, embedding 128, intermediate 16384.

    Approximate: from the ProtTrans paper's table; the released checkpoint's vocab_size (30 here,
    ProtBert's vocabulary), positions and dropout are not confirmed. Import the released config.json
    with :func:`prottrans_jax.hf.encoder_maps.import_hf` for the exact values.
    """
    return AlbertConfig(**{**_PROT_BERT, "hidden_size": 4096, "num_layers": 12, "num_heads": 64,
                           "intermediate_size": 16384, "embedding_size": 128})


def prot_albert_tiny() -> AlbertConfig:
    """Tests: 3 applications of one shared layer, width 32, embedding 16."""
    return AlbertConfig(**{**_PROT_BERT, **_TINY, "num_layers": 3, "embedding_size": 16})


def prot_electra_discriminator() -> ElectraConfig:
    """ProtElectra discriminator: ProtBert-sized (approximate: ProtTrans paper; not checked against release)."""
    return ElectraConfig(**{**_PROT_BERT, "embedding_size": 1024})


def prot_electra_generator() -> ElectraConfig:
    """ProtElectra generator: ~1/4 of the discriminator's width (256, 4 heads, intermediate 1024), same depth.

    Approximate (ELECTRA's recipe applied to ProtBert's size). Its embedding width is the
    discriminator's (1024), projected to 256, so the two can share embeddings.
    """
    return ElectraConfig(**{**_PROT_BERT, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024,
                            "embedding_size": 1024})


def prot_electra() -> ElectraPretrainingConfig:
    """ProtElectra generator + discriminator with shared embeddings (approximate sizes)."""
    return ElectraPretrainingConfig(generator=prot_electra_generator(), discriminator=prot_electra_discriminator())


def prot_electra_discriminator_tiny() -> ElectraConfig:
    """Tests: tiny discriminator (width 32, embedding 32)."""
    return ElectraConfig(**{**_PROT_BERT, **_TINY, "embedding_size": 32})


def prot_electra_generator_tiny() -> ElectraConfig:
    """Tests: tiny generator (width 16, 2 heads, embedding 32 projected to 16)."""
    return ElectraConfig(**{**_PROT_BERT, **_TINY, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32,
                            "embedding_size": 32})


def prot_electra_tiny() -> ElectraPretrainingConfig:
    """Tests: tiny generator + discriminator with shared embeddings."""
    return ElectraPretrainingConfig(generator=prot_electra_generator_tiny(),
                                    discriminator=prot_electra_discriminator_tiny())


# name -> zero-argument factory (the lead merges this into models/configs.py's registry).
ENCODER_CONFIGS: dict[str, Callable[[], Any]] = {
    "prot_bert": prot_bert,
    "prot_bert_bfd": prot_bert_bfd,
    "prot_bert_tiny": prot_bert_tiny,
    "prot_albert": prot_albert,
    "prot_albert_tiny": prot_albert_tiny,
    "prot_electra": prot_electra,
    "prot_electra_discriminator": prot_electra_discriminator,
    "prot_electra_generator": prot_electra_generator,
    "prot_electra_tiny": prot_electra_tiny,
    "prot_electra_discriminator_tiny": prot_electra_discriminator_tiny,
    "prot_electra_generator_tiny": prot_electra_generator_tiny,
}


def get_encoder_config(name: str, **overrides: Any) -> Any:
    """The named config, with fields overridden (e.g. ``dtype=jnp.bfloat16, scan_layers=True``).

    Raises:
      KeyError: for an unknown name, listing the known ones.
    """
    if name not in ENCODER_CONFIGS:
        raise KeyError(f"unknown encoder config {name!r}; known: {', '.join(sorted(ENCODER_CONFIGS))}")
    config = ENCODER_CONFIGS[name]()
    return config.replace(**overrides) if overrides else config


def build_encoder_model(config: Any, encoder_only: bool = False) -> nn.Module:
    """The Linen module for one of these configs (``encoder_only``: the bare encoder, for embeddings).

    BertConfig -> BertForMaskedLM / BertModel; AlbertConfig -> AlbertForMaskedLM / AlbertModel;
    ElectraConfig -> ElectraForPreTraining (discriminator) / ElectraModel;
    ElectraPretrainingConfig -> ElectraPretrainingModel / the discriminator's ElectraModel.

    Raises:
      TypeError: for another config class.
    """
    if isinstance(config, ElectraPretrainingConfig):
        return ElectraModel(config.discriminator) if encoder_only else ElectraPretrainingModel(config)
    table = {
        BertConfig: (BertModel, BertForMaskedLM),
        AlbertConfig: (AlbertModel, AlbertForMaskedLM),
        ElectraConfig: (ElectraModel, ElectraForPreTraining),
    }
    if type(config) not in table:
        raise TypeError(f"no BERT-family model for {type(config).__name__}")
    encoder_cls, full_cls = table[type(config)]
    return encoder_cls(config) if encoder_only else full_cls(config)

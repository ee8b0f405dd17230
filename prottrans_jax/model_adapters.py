"""How each model family consumes the feature converters' batches: init inputs and ``logits_fn`` for the trainer."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from prottrans_jax import causal_lm, permutation_lm
from prottrans_jax.models.albert import AlbertConfig, AlbertForMaskedLM
from prottrans_jax.models.bert import BertConfig, BertForMaskedLM
from prottrans_jax.models.configs import build_model
from prottrans_jax.models.electra import ElectraPretrainingConfig, ElectraPretrainingModel
from prottrans_jax.models.t5 import T5Config
from prottrans_jax.models.transfo_xl import TransfoXLConfig
from prottrans_jax.models.xlnet import XLNetConfig


def _t5_logits_fn(module) -> Callable:
    def logits_fn(params, batch: Mapping[str, Any], rng, train: bool):
        return module.apply(
            {"params": params},
            batch["encoder_input_tokens"],  # [batch, in_length]
            batch["decoder_input_tokens"],  # [batch, out_length]
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            enable_dropout=train,
            rngs={"dropout": rng} if train else None,
        )  # -> [batch, out_length, vocab]

    return logits_fn


def _t5_init_inputs(feature_lengths: Mapping[str, int]) -> dict:
    enc = jnp.ones((1, feature_lengths["inputs"]), jnp.int32)
    dec = jnp.ones((1, feature_lengths["targets"]), jnp.int32)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": dec, "enable_dropout": False}


def _mlm_logits_fn(module) -> Callable:
    def logits_fn(params, batch: Mapping[str, Any], rng, train: bool):
        return module.apply(
            {"params": params},
            batch["encoder_input_tokens"],  # [batch, length]
            segment_ids=batch.get("encoder_segment_ids"),
            enable_dropout=train,
            rngs={"dropout": rng} if train else None,
        )  # -> [batch, length, vocab]

    return logits_fn


def _electra_logits_fn(module) -> Callable:
    """-> ``(generator_logits, discriminate)`` as :class:`objectives.ElectraObjective` expects."""

    def logits_fn(params, batch: Mapping[str, Any], rng, train: bool):
        gen_rng, disc_rng = jax.random.split(rng)
        common = dict(segment_ids=batch.get("encoder_segment_ids"), enable_dropout=train)
        gen = module.apply({"params": params}, batch["encoder_input_tokens"], **common,
                           method=module.generator_logits, rngs={"dropout": gen_rng} if train else None)

        def discriminate(tokens):  # [batch, length] -> [batch, length] logits
            return module.apply({"params": params}, tokens, **common, method=module.discriminator_logits,
                                rngs={"dropout": disc_rng} if train else None)

        return gen, discriminate

    return logits_fn


def _encoder_init_inputs(feature_lengths: Mapping[str, int]) -> dict:
    return {"input_ids": jnp.ones((1, feature_lengths["inputs"]), jnp.int32)}


def _electra_init_inputs(feature_lengths: Mapping[str, int]) -> dict:
    return {"masked_input_ids": jnp.ones((1, feature_lengths["inputs"]), jnp.int32)}


_MLM = ("bert_mlm",)
_ADAPTERS: dict[type, tuple[Callable, Callable, tuple[str, ...]]] = {
    # config class -> (logits_fn builder, init-inputs builder, objectives it can train)
    T5Config: (_t5_logits_fn, _t5_init_inputs, ("prot_t5_denoise", "span_corruption")),
    BertConfig: (_mlm_logits_fn, _encoder_init_inputs, _MLM),
    AlbertConfig: (_mlm_logits_fn, _encoder_init_inputs, _MLM),
    ElectraPretrainingConfig: (_electra_logits_fn, _electra_init_inputs, ("electra",)),
    # one segment per call, memory in and out: causal_lm.CausalLMObjective scans a window's segments
    TransfoXLConfig: (causal_lm.txl_logits_fn, causal_lm.txl_init_inputs, (causal_lm.OBJECTIVE,)),
}
_MODULES = {BertConfig: BertForMaskedLM, AlbertConfig: AlbertForMaskedLM, ElectraPretrainingConfig: ElectraPretrainingModel}


def register_adapter(config_cls: type, logits_fn_builder: Callable, init_inputs: Callable, objectives: tuple[str, ...]):
    """Adds a model family to the trainer (used by the encoder families' modules)."""
    _ADAPTERS[config_cls] = (logits_fn_builder, init_inputs, objectives)


def adapt(config: Any, objective: str, feature_lengths: Mapping[str, int]):
    """Returns ``(module, logits_fn, init_inputs)`` for training ``config`` on ``objective``.

    Raises:
      ValueError: if the model family cannot train that objective (e.g. BERT on span corruption).
    """
    if type(config) not in _ADAPTERS:
        raise ValueError(f"no trainer adapter for {type(config).__name__}; known: {[c.__name__ for c in _ADAPTERS]}")
    build_logits, build_inputs, objectives = _ADAPTERS[type(config)]
    if objective not in objectives:
        raise ValueError(
            f"a {type(config).__name__} model cannot train the {objective!r} objective; it trains {objectives}"
        )
    module = _MODULES[type(config)](config) if type(config) in _MODULES else build_model(config)
    return module, build_logits(module), build_inputs(feature_lengths)


# XLNet's permutation LM: both streams once per window, no memory carried across steps.
register_adapter(XLNetConfig, permutation_lm.xlnet_logits_fn, permutation_lm.xlnet_init_inputs, (permutation_lm.OBJECTIVE,))

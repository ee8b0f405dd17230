"""How each model family consumes the feature converters' batches: init inputs and ``logits_fn`` for the trainer."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp

from prottrans_jax.models.configs import build_model
from prottrans_jax.models.t5 import T5Config


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


_ADAPTERS: dict[type, tuple[Callable, Callable, tuple[str, ...]]] = {
    # config class -> (logits_fn builder, init-inputs builder, objectives it can train)
    T5Config: (_t5_logits_fn, _t5_init_inputs, ("prot_t5_denoise", "span_corruption")),
}


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
    module = build_model(config)
    return module, build_logits(module), build_inputs(feature_lengths)

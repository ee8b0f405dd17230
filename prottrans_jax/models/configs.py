"""Named model configs (released ProtTrans sizes, small and tiny test sizes) and abstract parameter counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from prottrans_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderModel

# name -> zero-argument factory of a frozen config. Other families (bert, albert, electra) register here too.
CONFIGS: dict[str, Callable[[], Any]] = {}
# config class -> builder(config, encoder_only) -> Linen module with a `dummy_inputs()` method.
MODEL_BUILDERS: dict[type, Callable[[Any, bool], nn.Module]] = {}


def register_config(name: str, factory: Callable[[], Any] | None = None):
    """Registers a named config factory; usable as ``@register_config('name')`` or directly.

    Raises:
      ValueError: if the name is taken.
    """

    def add(fn):
        if name in CONFIGS:
            raise ValueError(f"config name {name!r} is already registered")
        CONFIGS[name] = fn
        return fn

    return add(factory) if factory is not None else add


def register_model_builder(config_cls: type, builder: Callable[[Any, bool], nn.Module]) -> None:
    """Tells :func:`count_params` (and callers) how to build a module from a config of ``config_cls``."""
    MODEL_BUILDERS[config_cls] = builder


def get_config(name: str, **overrides) -> Any:
    """Returns the named config, with fields overridden (e.g. ``dtype=jnp.bfloat16, scan_layers=True``).

    Raises:
      KeyError: for an unknown name, listing the known ones.
    """
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(sorted(CONFIGS))}")
    config = CONFIGS[name]()
    return config.replace(**overrides) if overrides else config


def list_configs() -> list[str]:
    """Sorted names of the registered configs."""
    return sorted(CONFIGS)


def build_model(config: Any, encoder_only: bool = False) -> nn.Module:
    """The Linen module for a config (``encoder_only``: the embedding model, where the family has one).

    Raises:
      TypeError: if no builder is registered for the config's class.
    """
    builder = MODEL_BUILDERS.get(type(config))
    if builder is None:
        raise TypeError(f"no model builder registered for {type(config).__name__}")
    return builder(config, encoder_only)


def count_params(module_or_config: Any, *init_args, encoder_only: bool = False, **init_kwargs) -> int:
    """Number of parameters, computed abstractly with ``jax.eval_shape`` (nothing is allocated).

    Args:
      module_or_config: a Linen module, or a config registered with :func:`register_model_builder`.
      *init_args: positional inputs for ``module.init``; default: the module's ``dummy_inputs()``.
      encoder_only: with a config, count the encoder-only model.
      **init_kwargs: keyword inputs for ``module.init``.

    Returns:
      The total number of scalars in the ``'params'`` collection.
    """
    if isinstance(module_or_config, nn.Module):
        module = module_or_config
    else:
        module = build_model(module_or_config, encoder_only)
    if not init_args and not init_kwargs:
        if not hasattr(module, "dummy_inputs"):
            raise TypeError(f"{type(module).__name__} has no dummy_inputs(); pass init inputs to count_params")
        init_kwargs = module.dummy_inputs()
    shapes = jax.eval_shape(lambda rng: module.init(rng, *init_args, **init_kwargs), jax.random.key(0))
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes["params"])))


register_model_builder(
    T5Config, lambda cfg, encoder_only: T5EncoderModel(cfg) if encoder_only else T5EncoderDecoder(cfg)
)

# ---------------------------------------------------------------------------------------
# ProtT5. The released config.json has no `tie_word_embeddings`, so transformers applies its default
# (True): decoder outputs are scaled by d_model**-0.5; the checkpoint carries its own lm_head.weight,
# which transformers 5 keeps untied. Hence: untied logits, scaled outputs.
# ---------------------------------------------------------------------------------------
_PROT_T5_XL = dict(
    vocab_size=128, d_model=1024, d_kv=128, d_ff=16384, num_heads=32, num_encoder_layers=24,
    num_decoder_layers=24, feed_forward_proj="relu", relative_attention_num_buckets=32,
    relative_attention_max_distance=128, dropout_rate=0.1, layer_norm_epsilon=1e-6,
    tie_word_embeddings=False, scale_decoder_outputs=True,
)


@register_config("prot_t5_xl_u50")
def prot_t5_xl_u50() -> T5Config:
    """ProtT5-XL-UniRef50: 24+24 layers, d_model 1024, d_ff 16384, 32 heads of 128, ReLU (~1.2 B encoder)."""
    return T5Config(**_PROT_T5_XL)


@register_config("prot_t5_xl_bfd")
def prot_t5_xl_bfd() -> T5Config:
    """ProtT5-XL-BFD: the same architecture as XL-U50 (trained on BFD)."""
    return T5Config(**_PROT_T5_XL)


@register_config("prot_t5_xxl_u50")
def prot_t5_xxl_u50() -> T5Config:
    """ProtT5-XXL-UniRef50: as XL but d_ff 65536 and 128 heads (of 128)."""
    return T5Config(**{**_PROT_T5_XL, "d_ff": 65536, "num_heads": 128})


@register_config("prot_t5_xxl_bfd")
def prot_t5_xxl_bfd() -> T5Config:
    """ProtT5-XXL-BFD: the XXL architecture (trained on BFD)."""
    return prot_t5_xxl_u50()


@register_config("prot_t5_small")
def prot_t5_small() -> T5Config:
    """T5-small sized ProtT5 (6+6 layers, d_model 512, 8 heads of 64, d_ff 2048): for quick experiments."""
    return T5Config(**{**_PROT_T5_XL, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_heads": 8,
                       "num_encoder_layers": 6, "num_decoder_layers": 6})


@register_config("prot_t5_tiny")
def prot_t5_tiny() -> T5Config:
    """Tests: 2+2 layers, d_model 32, 4 heads of 8, d_ff 64, no dropout."""
    return T5Config(**{**_PROT_T5_XL, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4,
                       "num_encoder_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.0})


register_config("prot_t5_xl_uniref50", prot_t5_xl_u50)

# ---------------------------------------------------------------------------------------
# The encoder families (ProtBert, ProtAlbert, ProtElectra) join the same registry, so one
# `get_config(name)` (and one gin binding) serves every model.
# ---------------------------------------------------------------------------------------
from prottrans_jax.models import encoder_configs  # noqa: E402  (after the T5 registrations above)
from prottrans_jax.models.albert import AlbertConfig  # noqa: E402
from prottrans_jax.models.bert import BertConfig  # noqa: E402
from prottrans_jax.models.electra import ElectraConfig, ElectraPretrainingConfig  # noqa: E402

for _name, _factory in encoder_configs.ENCODER_CONFIGS.items():
    register_config(_name, _factory)
for _cls in (BertConfig, AlbertConfig, ElectraConfig, ElectraPretrainingConfig):
    register_model_builder(_cls, encoder_configs.build_encoder_model)

# The autoregressive pair (ProtXLNet, ProtTXL) joins the same registry.
from prottrans_jax.models import autoregressive_configs  # noqa: E402

for _name, _factory in autoregressive_configs.AUTOREGRESSIVE_CONFIGS.items():
    register_config(_name, _factory)
for _cls in autoregressive_configs.MODEL_CONFIG_CLASSES:
    register_model_builder(_cls, autoregressive_configs.build_autoregressive_model)

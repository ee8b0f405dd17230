"""A language model ready for generation or scoring: its family, Linen module, weights and token framing."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from prottrans_jax import model_io
from prottrans_jax.generation import tokens

# What each command can do with a family.
GENERATING_FAMILIES = ("transfo_xl", "xlnet", "t5")
METHOD_OF_FAMILY = {"transfo_xl": "causal", "xlnet": "permutation", "t5": "t5_denoising",
                    "bert": "mlm_pseudo", "albert": "mlm_pseudo", "electra": "mlm_pseudo"}


@dataclasses.dataclass
class LanguageModel:
    """One model with its language-model head.

    Attributes:
      family: 'transfo_xl', 'xlnet', 't5', 'bert', 'albert' or 'electra'.
      architecture: HF class name of what was loaded (or 'ElectraPretrainingModel').
      config: the model config (for ELECTRA's pair, the pair's).
      module: the Linen module of ``architecture``.
      params: weights as device arrays.
      framing: how the family frames a protein.
      source: where the model was read from (for headers and messages).
    """

    family: str
    architecture: str
    config: Any
    module: Any
    params: dict
    framing: tokens.Framing
    source: str

    @property
    def method(self) -> str:
        """The scoring method: 'causal', 'permutation', 't5_denoising' or 'mlm_pseudo'."""
        return METHOD_OF_FAMILY[self.family]


def _vocab_size(config: Any) -> int:
    return config.generator.vocab_size if hasattr(config, "generator") else config.vocab_size


def load_language_model(path: str, step: Optional[int] = None, *, for_generation: bool = False) -> LanguageModel:
    """Reads a model (training directory, checkpoint folder or HF folder) that has a language-model head.

    Raises:
      ValueError: an encoder-only model, an ELECTRA discriminator without its generator, or (for
        generation) a family that does not generate left to right.
    """
    loaded = model_io.load_model(path, step=step)
    where = f"{loaded.source}: holds a {loaded.architecture}"
    if loaded.encoder_only:
        raise ValueError(f"{where} (an encoder without its language-model head); point to the full model "
                         "(a training directory, or a HF folder exported without --encoder-only)")
    if loaded.architecture == "ElectraForPreTraining":
        raise ValueError(f"{where} (the discriminator only): scoring needs the generator's MLM head; point to "
                         "the training directory or to an export with its generator/ folder")
    if for_generation and loaded.family not in GENERATING_FAMILIES:
        raise ValueError(f"{where} ({loaded.family} family): generate samples from ProtTXL (transfo_xl), "
                         "ProtXLNet (xlnet) or ProtT5's decoder (t5); use score for masked language models")
    config = loaded.config
    module = model_io.module_for(config, loaded.architecture)
    params = jax.tree_util.tree_map(jnp.asarray, loaded.params)
    frame = tokens.framing(loaded.family, _vocab_size(config))
    return LanguageModel(loaded.family, loaded.architecture, config, module, params, frame, loaded.source)

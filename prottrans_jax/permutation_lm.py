"""Permutation LM for XLNet (ProtXLNet): the trainer's adapter over the pipeline's features.

The pipeline (``permutation_lm_data``) emits, per window, ``encoder_input_tokens`` and
``attention_mask`` [batch, L], ``perm_mask`` [batch, L, L], ``target_mapping`` [batch, P, L],
``target_tokens`` and ``target_weights`` [batch, P]. The model runs both streams once; its logits
are the query stream's at the ``P`` target rows, and the loss (``objectives.PermutationLMObjective``)
is their cross entropy (padded rows weigh 0), summed and divided by the global batch's number of targets.

No memory is carried across steps: each window is one example, ``mems`` starts empty and the
next memory is not returned (``use_mems=False``), so a checkpoint needs no memory to resume exactly.
XLNet pretrains fixed windows this way; memory serves inference over proteins longer than a window.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp

OBJECTIVE = "xlnet_plm"


def xlnet_logits_fn(module) -> Callable:
    """``logits_fn(params, batch, rng, train) -> [batch, P, vocab]``: the query stream at the target rows."""

    def logits_fn(params, batch: Mapping[str, Any], rng, train: bool):
        out = module.apply(
            {"params": params},
            batch["encoder_input_tokens"],  # [batch, L]
            attention_mask=batch["attention_mask"],  # [batch, L]
            perm_mask=batch["perm_mask"],  # [batch, L, L]
            target_mapping=batch["target_mapping"],  # [batch, P, L]
            use_mems=False,
            enable_dropout=train,
            rngs={"dropout": rng} if train else None,
        )
        return out.logits  # [batch, P, vocab]

    return logits_fn


def xlnet_init_inputs(feature_lengths: Mapping[str, int]) -> dict:
    """Inputs for ``module.init``: ids of one window (the streams' other inputs add no parameters)."""
    return {"input_ids": jnp.ones((1, feature_lengths["inputs"]), jnp.int32)}


"""Losses and metrics for the pretraining objectives, as pure functions of logits, targets and weights.

Every loss is a *sum* over weighted tokens divided by a normaliser computed from the whole
global batch (``normalizers``), so that gradients of microbatches add up exactly to the gradient
of the full batch. Metric values are returned as sums (``*_sum``) and turned into means by
:func:`summarize`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

Array = jax.Array
Metrics = dict[str, Array]


def cross_entropy_sums(
    logits: Array, targets: Array, weights: Array, z_loss: float = 0.0, label_smoothing: float = 0.0
) -> tuple[Array, Array, Array]:
    """Weighted token cross entropy and z-loss, summed (computed in float32).

    Args:
      logits: [batch, length, vocab].
      targets: int [batch, length].
      weights: [batch, length], 0 where no loss is taken.
      z_loss: coefficient of ``log(Z)**2`` (t5x/PaLM's auxiliary loss keeping logits normalised).
      label_smoothing: mass spread uniformly over the vocabulary.

    Returns:
      (cross-entropy sum including z-loss, z-loss sum, number of correct argmax predictions).
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
    log_probs = logits - log_z[..., None]  # [batch, length, vocab]
    on_target = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [batch, length]
    nll = -on_target
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(log_probs, axis=-1)
    z = z_loss * jnp.square(log_z)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum((nll + z) * weights), jnp.sum(z * weights), jnp.sum(correct * weights)


def binary_cross_entropy_sums(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """Weighted sigmoid cross entropy and correct-prediction count, summed.

    Args:
      logits: [batch, length] one logit per token.
      labels: [batch, length] 0/1.
      weights: [batch, length].
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    loss = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))  # [batch, length]
    correct = ((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(correct * weights)


def summarize(metric_sums: Mapping[str, Array]) -> dict[str, float]:
    """Sums -> reported metrics: loss, accuracy and perplexity per weighted token, and the rest as is.

    Keys ``{name}_loss_sum``, ``{name}_correct_sum`` and ``{name}_weight_sum`` become
    ``{name}/loss``, ``{name}/accuracy`` and ``{name}/perplexity``.
    """
    out: dict[str, float] = {}
    names = {k[: -len("_weight_sum")] for k in metric_sums if k.endswith("_weight_sum")}
    for name in sorted(names):
        weight = max(float(metric_sums[f"{name}_weight_sum"]), 1e-9)
        loss = float(metric_sums[f"{name}_loss_sum"]) / weight
        out[f"{name}/loss"] = loss
        out[f"{name}/accuracy"] = float(metric_sums[f"{name}_correct_sum"]) / weight
        if f"{name}_z_loss_sum" in metric_sums:
            out[f"{name}/z_loss"] = float(metric_sums[f"{name}_z_loss_sum"]) / weight
        if name != "discriminator":
            out[f"{name}/perplexity"] = float(jnp.exp(jnp.minimum(loss, 50.0)))
    for k, v in metric_sums.items():
        if not k.endswith("_sum"):
            out[k] = float(v)
    return out


# ---------------------------------------------------------------------------------------
# Objectives: how a batch of model features becomes a loss. `apply_fn(params, batch, rng, train)`
# is the model, closed over by the trainer; objectives never see a module.
# ---------------------------------------------------------------------------------------


class WeightedTokenObjective:
    """Cross entropy of ``logits_fn``'s logits against ``batch[targets_key]`` where ``batch[weights_key]`` is
    non-zero, summed and divided by the global batch's weight; metrics ``<prefix>_{loss,z_loss,correct,weight}_sum``.
    Subclasses name the features."""

    name = prefix = targets_key = weights_key = ""

    def __init__(self, z_loss: float = 0.0, label_smoothing: float = 0.0):
        self.z_loss = z_loss
        self.label_smoothing = label_smoothing

    def normalizers(self, batch: Mapping[str, Array]) -> dict[str, Array]:
        return {self.prefix: jnp.maximum(jnp.sum(batch[self.weights_key].astype(jnp.float32)), 1.0)}

    def loss(self, logits_fn: Callable, params, batch, rng, normalizers) -> tuple[Array, Metrics]:
        logits = logits_fn(params, batch, rng)  # [batch, length (or targets), vocab]
        weights = batch[self.weights_key]
        loss_sum, z_sum, correct = cross_entropy_sums(
            logits, batch[self.targets_key], weights, self.z_loss, self.label_smoothing
        )
        p = self.prefix
        metrics = {
            f"{p}_loss_sum": loss_sum, f"{p}_z_loss_sum": z_sum, f"{p}_correct_sum": correct,
            f"{p}_weight_sum": jnp.sum(weights.astype(jnp.float32)),
        }
        return loss_sum / normalizers[p], metrics


class EncoderDecoderObjective(WeightedTokenObjective):
    """Teacher-forced seq2seq loss (ProtT5 denoising, span corruption), as t5x's EncoderDecoderModel."""

    name, prefix = "encoder_decoder", "targets"
    targets_key, weights_key = "decoder_target_tokens", "decoder_loss_weights"

    def __init__(self, z_loss: float = 1e-4, label_smoothing: float = 0.0):
        super().__init__(z_loss, label_smoothing)


class MaskedLMObjective(WeightedTokenObjective):
    """BERT/ALBERT masked-token loss over every selected position (``encoder_loss_weights``)."""

    name = prefix = "mlm"
    targets_key, weights_key = "encoder_target_tokens", "encoder_loss_weights"


class PermutationLMObjective(WeightedTokenObjective):
    """XLNet's partial prediction: the query stream's logits at the ``P`` target rows
    (``permutation_lm.xlnet_logits_fn``) against ``target_tokens`` where ``target_weights`` (padded rows 0)."""

    name = prefix = "plm"
    targets_key, weights_key = "target_tokens", "target_weights"


class ElectraObjective:
    """ELECTRA: generator MLM + ``discriminator_weight`` x replaced-token detection (Clark et al. 2020).

    ``logits_fn(params, batch, rng)`` must return ``(generator_logits [b, l, vocab], discriminate)``
    where ``discriminate(tokens) -> [b, l]`` logits runs the discriminator on given tokens. The
    generator's samples (Gumbel-max on its logits, no gradient) replace the selected positions.
    """

    name = "electra"

    def __init__(self, discriminator_weight: float = 50.0, pad_id: int = 0):
        self.discriminator_weight = discriminator_weight
        self.pad_id = pad_id

    def normalizers(self, batch) -> dict[str, Array]:
        tokens = batch["encoder_target_tokens"]
        return {
            "generator": jnp.maximum(jnp.sum(batch["encoder_loss_weights"].astype(jnp.float32)), 1.0),
            "discriminator": jnp.maximum(jnp.sum((tokens != self.pad_id).astype(jnp.float32)), 1.0),
        }

    def loss(self, logits_fn: Callable, params, batch, rng, normalizers) -> tuple[Array, Metrics]:
        rng_model, rng_sample = jax.random.split(rng)
        gen_logits, discriminate = logits_fn(params, batch, rng_model)
        selected = batch["encoder_loss_weights"] > 0  # [b, l]
        targets = batch["encoder_target_tokens"]
        gen_sum, _, gen_correct = cross_entropy_sums(gen_logits, targets, selected)
        gumbel = jax.random.gumbel(rng_sample, gen_logits.shape, jnp.float32)
        sampled = jnp.argmax(jax.lax.stop_gradient(gen_logits.astype(jnp.float32)) + gumbel, axis=-1)  # [b, l]
        corrupted = jnp.where(selected, sampled, batch["encoder_input_tokens"]).astype(targets.dtype)
        replaced = (corrupted != targets).astype(jnp.float32)  # [b, l]
        real = (targets != self.pad_id).astype(jnp.float32)
        disc_sum, disc_correct = binary_cross_entropy_sums(discriminate(corrupted), replaced, real)
        loss = gen_sum / normalizers["generator"] + self.discriminator_weight * disc_sum / normalizers["discriminator"]
        metrics = {
            "generator_loss_sum": gen_sum, "generator_correct_sum": gen_correct,
            "generator_weight_sum": jnp.sum(selected.astype(jnp.float32)),
            "discriminator_loss_sum": disc_sum, "discriminator_correct_sum": disc_correct,
            "discriminator_weight_sum": jnp.sum(real),
        }
        return loss, metrics


OBJECTIVE_FOR_TASK = {
    "prot_t5_denoise": EncoderDecoderObjective,
    "span_corruption": EncoderDecoderObjective,
    "bert_mlm": MaskedLMObjective,
    "electra": ElectraObjective,
}

# Transformer-XL's causal LM scans a window's segments with memory; its module uses cross_entropy_sums above.
from prottrans_jax.causal_lm import CausalLMObjective  # noqa: E402

OBJECTIVE_FOR_TASK["txl_causal_lm"] = CausalLMObjective

# XLNet's permutation LM: the query stream's cross entropy at the targets (adapter in permutation_lm).
OBJECTIVE_FOR_TASK["xlnet_plm"] = PermutationLMObjective

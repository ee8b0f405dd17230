"""seqio feature converters for our encoder-only objectives (the encoder-decoder ones use seqio's EncDecFeatureConverter)."""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from prottrans_jax import alphabet, causal_lm_data, permutation_lm_data

FeatureSpec = seqio.FeatureConverter.FeatureSpec


class MLMFeatureConverter(seqio.EncoderFeatureConverter):
    """Encoder-only converter that keeps the task's ``loss_weights`` (BERT MLM, ELECTRA).

    seqio's EncoderFeatureConverter derives loss weights from ``inputs == mask_id``, which misses
    the selected positions that were replaced by a random residue or left unchanged; this one
    takes them from the task. Packing gives ``encoder_segment_ids`` and ``encoder_positions``.

    Output features: ``encoder_input_tokens``, ``encoder_target_tokens``, ``encoder_loss_weights``
    (int32 [batch?, length]), plus the packing features when ``pack=True``.
    """

    TASK_FEATURES = {
        "inputs": FeatureSpec(dtype=tf.int32),
        "targets": FeatureSpec(dtype=tf.int32),
        "loss_weights": FeatureSpec(dtype=tf.int32),
    }

    def __init__(self, mask_id: int = alphabet.PROT_BERT_MASK_ID, **kwargs):
        super().__init__(mask_id=mask_id, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        lengths = dict(task_feature_lengths)
        lengths.setdefault("loss_weights", lengths["inputs"])

        @seqio.map_over_dataset
        def convert(features):
            out = {
                "encoder_input_tokens": features["inputs"],
                "encoder_target_tokens": features["targets"],
                "encoder_loss_weights": features["loss_weights"],
            }
            if self.pack:
                out["encoder_segment_ids"] = features["inputs_segment_ids"]
                out["encoder_positions"] = features["inputs_positions"]
            return out

        return convert(self._pack_or_pad(ds, lengths))


def get_feature_converter(objective: str, pack: bool = False) -> seqio.FeatureConverter:
    """The converter for an objective name: encoder-decoder for T5 objectives, MLM otherwise."""
    if objective in ("prot_t5_denoise", "span_corruption"):
        return seqio.EncDecFeatureConverter(pack=pack)
    if objective in ("bert_mlm", "electra"):
        return MLMFeatureConverter(pack=pack)
    if objective == "txl_causal_lm":
        return causal_lm_data.CausalLMFeatureConverter(pack=pack)
    if objective == "xlnet_plm":
        return permutation_lm_data.PermutationLMFeatureConverter(pack=pack)
    raise ValueError(
        f"unknown objective {objective!r}; expected prot_t5_denoise, span_corruption, bert_mlm, electra, txl_causal_lm or xlnet_plm"
    )

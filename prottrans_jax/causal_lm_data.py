"""SeqIO side of the Transformer-XL causal LM: windows of ``[CLS] residues [SEP]`` as next-token pairs, and their converter.

A window of ``W`` model positions takes ``W + 1`` consecutive tokens of the protein wrapped as
``[CLS] residues [SEP]`` (ProtBert's vocabulary): ``inputs`` are the first ``W``, ``targets`` the
last ``W`` (the same tokens shifted by one). A protein that does not fit is cropped at a random
offset of the *wrapped* sequence (stateless, from seqio's seed), so [CLS] appears only when the
window really starts at the protein's start and [SEP] only where it really ends: the model is
never told that a fragment is a whole protein. Why the window is then scanned in segments with
memory, rather than streamed across steps, is in ``causal_lm``'s docstring.
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from prottrans_jax import preprocessors

FeatureSpec = seqio.FeatureConverter.FeatureSpec


def txl_causal_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features,
    batch_size: int = preprocessors.BATCH,
) -> tf.data.Dataset:
    """{"targets": residue ids} -> {"inputs", "targets"}: a window of ``[CLS] residues [SEP]`` shifted by one.

    ``sequence_length['targets']`` is the window (model positions); longer proteins are cropped to
    ``window + 1`` tokens at a uniformly random offset of the wrapped sequence.
    """
    vocabulary = output_features["targets"].vocabulary
    window = sequence_length["targets"]

    def fn(batch, seed):
        wrapped = preprocessors._append(  # [batch, (n + 2)]
            preprocessors._append(batch["targets"], vocabulary.cls_id, prepend=True), vocabulary.sep_id)
        tokens = preprocessors.ragged_random_crop(wrapped, window + 1, seed)  # [batch, (<= window + 1)]
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    return preprocessors._batched(dataset, fn, batch_size)


class CausalLMFeatureConverter(seqio.FeatureConverter):
    """``inputs``/``targets`` -> ``decoder_input_tokens``/``decoder_target_tokens``/``decoder_loss_weights``.

    Loss weights are 1 on every real target token (residues and [SEP]) and 0 on padding. With
    ``pack=True`` several proteins share a row, one after another as in Transformer-XL's original
    token stream (``decoder_segment_ids``/``decoder_positions`` are given; the model's attention
    does not separate them).
    """

    TASK_FEATURES = {"inputs": FeatureSpec(dtype=tf.int32), "targets": FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {
        "decoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_target_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_loss_weights": FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        @seqio.map_over_dataset
        def convert(features):
            out = {
                "decoder_input_tokens": features["inputs"],
                "decoder_target_tokens": features["targets"],
                "decoder_loss_weights": seqio.non_padding_position(features["targets"]),
            }
            if self.pack:
                out["decoder_segment_ids"] = features["targets_segment_ids"]
                out["decoder_positions"] = features["targets_positions"]
            return out

        return convert(self._pack_or_pad(ds, task_feature_lengths))

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        """Every model feature is one window long.

        Raises:
          ValueError: when ``inputs`` and ``targets`` are given different lengths.
        """
        window = task_feature_lengths["targets"]
        if task_feature_lengths["inputs"] != window:
            raise ValueError(f"causal LM TASK_FEATURE_LENGTHS must give inputs and targets the same window, "
                             f"got {dict(task_feature_lengths)}")
        names = list(self.MODEL_FEATURES) + (list(self.PACKING_FEATURE_DTYPES) if self.pack else [])
        return {name: window for name in names}

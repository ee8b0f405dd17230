"""XLNet's permutation language modelling (ProtXLNet) as a seqio preprocessor and feature converter.

Per protein (one example; every random choice a stateless TF op keyed by seqio's per-example
map seed, so a task read with the same ``seed`` repeats its examples):

1. the residues are cropped at a random offset to ``length - 2`` and ``<sep> <cls>`` appended
   (XLNet's layout: the special tokens at the END);
2. a factorisation order over the ``n`` residues is sampled uniformly (a random permutation);
3. partial prediction: the last ``round(n / k)`` positions of that order (at least one) are the
   targets (XLNet's ``K``; ``k=6`` as in XLNet, i.e. ``plm_probability`` 1/6);
4. ``perm_mask [length, length]`` (1: token ``i`` may not attend to ``j``): a target may not see
   itself or any target later in the order; every other token (residues that are not predicted,
   ``<sep>``, ``<cls>``, padding) is context, visible to all and seeing no target. The model's
   content stream adds each token's own position back, so a target's content sees itself while its
   query stream does not. This is XLNet's ``_local_perm`` with the non-targets given rank -1;
   ``<sep>``/``<cls>`` are context here rather than members of the order;
5. ``target_mapping [num_predict, length]``: one one-hot row per target, targets in position order,
   rows padded with zeros up to the task's ``targets`` length.

Choices (kept deliberately simple; each differs from a reference somewhere):

* Single-residue targets, not spans: the paper defines partial prediction on a uniformly sampled
  order, residues are not words, and ProtT5 masks single residues too; the count per protein is
  exact, so rates are checked exactly. XLNet's released code and transformers'
  ``DataCollatorForPermutationLanguageModeling`` predict spans of 1..5 tokens (``max_span_length``
  5) in contexts of ``span / plm_probability``: not implemented.
* Inputs are not replaced by ``<mask>`` (transformers' collator does so): as in XLNet, the content
  stream carries the real tokens and ``perm_mask`` alone hides each target from itself and from
  targets earlier in the order; the query stream starts from the mask embedding.
* ``target_mapping`` has ``round((length - 2) / k)`` rows (XLNet's ``num_predict``, 85 at 512),
  not the collator's ``eye(length)``: the query stream costs ~k times less.
* Padding is on the RIGHT with ``<pad>`` and an ``attention_mask`` (1 = token). ProtXLNet pads on
  the left for inference, but XLNet's attention is relative (only ``i - j`` enters), so with padding
  masked the outputs at real tokens do not depend on which side the padding is (tested). Padding is
  never a target and never attended.
* No memory: each window is one training example and ``mems`` is not carried across steps (XLNet
  pretrains fixed windows; memory is for inference over long proteins).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import gin
import numpy as np
import seqio
import tensorflow as tf

from prottrans_jax import xlnet_vocab
from prottrans_jax.preprocessors import _seeds, random_crop

FeatureSpec = seqio.FeatureConverter.FeatureSpec
DEFAULT_K = 6.0  # XLNet's partial prediction: the last 1/6 of the order is predicted
MASK_DTYPE = tf.int8  # perm_mask and target_mapping: 0/1 values, a quarter of int32's bytes in the pipeline


def max_targets(length: int, k: float) -> int:
    """Targets of the longest window (``length - 2`` residues): the ``targets`` feature length to use."""
    return max(1, round((length - 2) / k))


def feature_lengths(length: int, k: float | None = None) -> dict[str, int]:
    """Task feature lengths for windows of ``length`` tokens: ``{"inputs": length, "targets": max_targets}``.

    ``k`` defaults to the one :func:`permutation_lm` runs with (its gin binding, else 6).
    """
    k = configured_k() if k is None else k
    return {"inputs": length, "targets": max_targets(length, k)}


def configured_k() -> float:
    """The ``k`` :func:`permutation_lm` uses: its gin binding ``permutation_lm.k``, else its default 6."""
    return float(gin.get_bindings(permutation_lm).get("k", DEFAULT_K))


def num_targets(n: tf.Tensor, k: float) -> tf.Tensor:
    """``round(n / k)`` (half to even, as Python's ``round``), at least 1 and at most ``n``: int32 scalar."""
    num = tf.cast(tf.round(tf.cast(n, tf.float64) / k), tf.int32)
    return tf.minimum(tf.maximum(num, 1), n)


def sample_order(n: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniformly random factorisation order: int32 [n], the position predicted at each step."""
    return tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed)


def permutation_features(residues: tf.Tensor, order: tf.Tensor, length: int, k: float, sep_id: int, cls_id: int,
                         pad_id: int) -> dict:
    """One example's features from its residues and factorisation order (see the module docstring).

    Args:
      residues: int32 [n] ids, ``n <= length - 2``.
      order: int32 [n], a permutation of ``0..n-1`` (position predicted at each step).
      length: window length (``<sep> <cls>`` included).
      k: partial prediction: the last ``round(n / k)`` positions of the order are predicted.
      sep_id, cls_id, pad_id: XLNet's special ids.

    Returns:
      ``inputs`` int32 [length] (right-padded with ``pad_id``), ``attention_mask`` int32 [length],
      ``perm_mask`` int8 [length, length], ``target_mapping`` int8 [num_predict, length],
      ``targets`` int32 [num_predict] and ``loss_weights`` int32 [num_predict].
    """
    n = tf.shape(residues)[0]
    num_predict = num_targets(n, k)
    rank = tf.math.invert_permutation(order)  # [n]: the step at which each position is predicted
    first_target = n - num_predict
    # Rank among the targets (0 = predicted first), -1 for context; padding is context too.
    target_rank = tf.where(rank >= first_target, rank - first_target, -1)  # [n]
    target_rank = tf.pad(target_rank, [[0, length - n]], constant_values=-1)  # [length]
    is_target = target_rank >= 0  # [length]
    # [length, 1] <= [1, length] -> [length, length]: i may not see target j unless j comes earlier.
    perm_mask = is_target[None, :] & (target_rank[:, None] <= target_rank[None, :])
    positions = tf.cast(tf.where(is_target)[:, 0], tf.int32)  # [num_predict], ascending
    tokens = tf.concat([residues, tf.constant([sep_id, cls_id], residues.dtype)], axis=0)  # [n + 2]
    real = tf.shape(tokens)[0]
    return {
        "inputs": tf.pad(tokens, [[0, length - real]], constant_values=pad_id),
        "attention_mask": tf.pad(tf.ones([real], tf.int32), [[0, length - real]]),
        "perm_mask": tf.cast(perm_mask, MASK_DTYPE),
        "target_mapping": tf.one_hot(positions, length, dtype=MASK_DTYPE),
        "targets": tf.gather(residues, positions),
        "loss_weights": tf.ones_like(positions),
    }


@gin.configurable(denylist=["dataset", "sequence_length", "output_features"])
def permutation_lm(dataset: tf.data.Dataset, sequence_length: Mapping[str, int], output_features,
                   k: float = DEFAULT_K) -> tf.data.Dataset:
    """seqio preprocessor: ``{"targets": residue ids}`` -> XLNet permutation-LM features of one window.

    ``sequence_length['inputs']`` is the window (``<sep> <cls>`` included), ``sequence_length['targets']``
    the number of target rows (at least :func:`max_targets`). Gin: ``permutation_lm.k = 6.0``.

    Raises:
      ValueError: when the lengths cannot hold a window or its targets, naming the fix.
    """
    vocabulary = output_features["inputs"].vocabulary
    length = sequence_length["inputs"]
    if k < 1:
        raise ValueError(f"permutation_lm.k must be >= 1 (the last 1/k of the order is predicted), got {k}")
    if length < 3:
        raise ValueError(f"TASK_FEATURE_LENGTHS['inputs'] = {length} leaves no room for residues and <sep> <cls>")
    needed = max_targets(length, k)
    if sequence_length.get("targets", 0) < needed:
        raise ValueError(
            f"TASK_FEATURE_LENGTHS['targets'] = {sequence_length.get('targets')} is too small: a window of {length} "
            f"tokens predicts up to {needed} residues with k={k}; set it to {needed}")
    special = dict(sep_id=vocabulary.sep_id, cls_id=vocabulary.cls_id, pad_id=vocabulary.pad_id)

    @seqio.map_over_dataset(num_seeds=1)
    def fn(x, seed):
        s = _seeds(seed, 2)
        residues = random_crop(x["targets"], length - 2, s[0])  # [n]
        order = sample_order(tf.shape(residues)[0], s[1])  # [n]
        return permutation_features(residues, order, length, k, **special)

    return fn(dataset)


class PermutationLMFeatureConverter(seqio.FeatureConverter):
    """Passes the permutation-LM features through, padded to fixed shapes (no packing).

    Task features ``inputs`` (the window) and ``targets`` (the target rows) set the lengths ``L`` and
    ``P``. Model features: ``encoder_input_tokens`` and ``attention_mask`` int32 [L], ``perm_mask``
    int8 [L, L], ``target_mapping`` int8 [P, L], ``target_tokens`` and ``target_weights`` int32 [P]
    (weights 0 on padded rows).
    """

    TASK_FEATURES = {"inputs": FeatureSpec(dtype=tf.int32), "targets": FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {
        "encoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "attention_mask": FeatureSpec(dtype=tf.int32),
        "perm_mask": FeatureSpec(dtype=MASK_DTYPE, rank=2),
        "target_mapping": FeatureSpec(dtype=MASK_DTYPE, rank=2),
        "target_tokens": FeatureSpec(dtype=tf.int32),
        "target_weights": FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPES = {}
    _RENAME = {"inputs": "encoder_input_tokens", "attention_mask": "attention_mask", "perm_mask": "perm_mask",
               "target_mapping": "target_mapping", "targets": "target_tokens", "loss_weights": "target_weights"}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("permutation LM examples cannot be packed (perm_mask is per window); use pack=False")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        lengths = self.get_model_feature_lengths(task_feature_lengths)
        ds = seqio.utils.trim_and_pad_dataset(ds, {k: lengths[v] for k, v in self._RENAME.items()})
        return ds.map(lambda x: {v: x[k] for k, v in self._RENAME.items()}, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        window, rows = task_feature_lengths["inputs"], task_feature_lengths["targets"]
        return {"encoder_input_tokens": window, "attention_mask": window, "perm_mask": window,
                "target_mapping": rows, "target_tokens": rows, "target_weights": rows}


def preview(index: int, ex: Mapping[str, np.ndarray], vocabulary=None) -> Iterator[str]:
    """Human-readable lines for one example: the window and, beneath it, the predicted residues in place.

    ``$`` is ``<sep>``, ``^`` ``<cls>``; padding is left out, ``.`` marks residues that are not predicted.
    """
    vocabulary = vocabulary or xlnet_vocab.get_xlnet_vocabulary()

    def letter(i: int) -> str:
        names = {vocabulary.sep_id: "$", vocabulary.cls_id: "^", vocabulary.pad_id: ""}
        return names[i] if i in names else (vocabulary.decode([i]).strip() or "?")

    tokens = [int(i) for i in ex["encoder_input_tokens"]]
    rows = ex["target_mapping"][ex["target_weights"] > 0]  # [num_predict, L]
    predicted = dict(zip(np.argmax(rows, axis=1).tolist(), ex["target_tokens"][ex["target_weights"] > 0].tolist()))
    yield f"[{index}] inputs : {''.join(letter(t) for t in tokens)}"
    yield f"[{index}] targets: {''.join(letter(predicted[p]) if p in predicted else '.' for p, t in enumerate(tokens) if letter(t))}"

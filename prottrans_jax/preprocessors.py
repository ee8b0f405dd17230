"""SeqIO/tf.data preprocessors for protein pretraining: crop, ProtT5 denoising, span corruption, MLM, ELECTRA.

Every random choice is a stateless TF op keyed by a seed from seqio's ``map_over_dataset(num_seeds=...)``
mechanism, so a task read with the same ``seed`` yields the same examples and no Python runs per
example. Tokenization and the ProtT5/MLM objectives work on ragged batches (``BATCH`` examples
per step) because tf.data's per-example overhead, not the arithmetic, dominates at protein lengths.

Feature conventions (before seqio's feature converters):

* encoder-decoder objectives (ProtT5 denoising, span corruption): ``inputs`` and ``targets``
  int32 token ids ending with EOS.
* encoder-only objectives (BERT MLM, ELECTRA): ``inputs`` (corrupted, with [CLS] ... [SEP]),
  ``targets`` (original) and ``loss_weights`` (int32, 1 at every selected position, including
  the ones replaced by a random residue or left unchanged).
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

# ---------------------------------------------------------------------------------------
# Pure TF helpers (one example at a time; tokens are rank-1 int32 tensors).
# ---------------------------------------------------------------------------------------


def _seeds(seed, n: int) -> tf.Tensor:
    """Splits one stateless seed (a pair of scalars) into ``n`` independent seeds: [n, 2]."""
    seed = tf.cast(tf.stack(seed) if isinstance(seed, (tuple, list)) else seed, tf.int64)
    return tf.random.experimental.stateless_split(seed, n)


def random_crop(tokens: tf.Tensor, max_length: int, seed: tf.Tensor) -> tf.Tensor:
    """Crops ``tokens`` to ``max_length`` at a uniformly random offset (no-op if shorter)."""
    length = tf.shape(tokens)[0]
    max_offset = tf.maximum(length - max_length, 0)
    offset = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=max_offset + 1, dtype=tf.int32)
    return tokens[offset : offset + max_length]


def ragged_random_crop(tokens: tf.RaggedTensor, max_length: int, seed: tf.Tensor) -> tf.RaggedTensor:
    """Crops every row of ``tokens`` [batch, (length)] to ``max_length`` at its own random offset."""
    lengths = tokens.row_lengths()  # [batch]
    new_lengths = tf.minimum(lengths, max_length)
    u = tf.random.stateless_uniform(tf.shape(lengths), seed=seed, dtype=tf.float64)  # [batch]
    offsets = tf.cast(tf.floor(u * tf.cast(lengths - new_lengths + 1, tf.float64)), tf.int64)
    starts = tokens.row_splits[:-1] + offsets  # [batch], into flat_values
    index = tf.ragged.range(starts, starts + new_lengths)  # [batch, (new_length)]
    return tf.gather(tokens.flat_values, index)


def ragged_select_exact_fraction(tokens: tf.RaggedTensor, rate: float, seed: tf.Tensor) -> tf.RaggedTensor:
    """Chooses exactly ``round(rate * length)`` (at least 1) distinct positions of each row, uniformly.

    Returns:
      bool [batch, (length)], True at the selected positions.
    """
    lengths = tokens.row_lengths()  # [batch]
    row_ids = tokens.value_rowids()  # [total]
    scores = tf.random.stateless_uniform(tf.shape(row_ids), seed=seed, dtype=tf.float64)  # [total], in [0, 1)
    # Sorting row + score keeps rows contiguous and in order, with a random order inside each row.
    order = tf.argsort(tf.cast(row_ids, tf.float64) + scores)  # [total]
    rank = tf.cast(tf.math.invert_permutation(tf.cast(order, tf.int64)), tf.int64)
    rank -= tf.gather(tokens.row_splits, row_ids)  # [total], 0..length-1 within each row
    num = tf.cast(tf.round(tf.cast(lengths, tf.float64) * rate), tf.int64)
    num = tf.minimum(tf.maximum(num, 1), lengths)  # [batch]
    return tokens.with_flat_values(rank < tf.gather(num, row_ids))


def _ragged_cumsum(values: tf.Tensor, like: tf.RaggedTensor) -> tf.Tensor:
    """Inclusive cumulative sum of flat ``values`` restarting at each row of ``like``."""
    total = tf.cumsum(values)
    before_row = tf.gather(tf.concat([[0], total], 0), like.row_splits[:-1])  # [batch]
    return total - tf.gather(before_row, like.value_rowids())


def _append(tokens: tf.RaggedTensor, token_id: int, prepend: bool = False) -> tf.RaggedTensor:
    """Adds ``token_id`` at the end (or start) of every row."""
    column = tf.fill([tokens.nrows(), 1], tf.cast(token_id, tokens.dtype))
    return tf.concat([column, tokens] if prepend else [tokens, column], axis=1)


def _random_tokens(shape, seed, candidate_ids: tf.Tensor) -> tf.Tensor:
    """Samples ids uniformly from ``candidate_ids`` (the 20 standard residues)."""
    idx = tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=tf.shape(candidate_ids)[0], dtype=tf.int32)
    return tf.gather(candidate_ids, idx)


def bert_style_corruption(
    tokens: tf.Tensor,
    selected: tf.Tensor,
    seed: tf.Tensor,
    mask_id: int,
    random_ids: tf.Tensor,
    mask_rate: float,
    random_rate: float,
) -> tf.Tensor:
    """Replaces selected tokens by ``mask_id`` (``mask_rate``), a random residue (``random_rate``) or keeps them.

    Args:
      tokens: int32 [length].
      selected: bool [length], positions chosen for corruption.
      seed: stateless seed [2].
      mask_id: the id written at masked positions ([MASK], or a T5 sentinel).
      random_ids: int32 [n], candidate ids for random replacement.
      mask_rate, random_rate: fractions of the selected positions; the rest are left unchanged.

    Returns:
      int32 [length], the corrupted tokens.
    """
    s = _seeds(seed, 2)
    u = tf.random.stateless_uniform(tf.shape(tokens), seed=s[0])  # [length]
    to_mask = selected & (u < mask_rate)
    to_random = selected & (u >= mask_rate) & (u < mask_rate + random_rate)
    rand = _random_tokens(tf.shape(tokens), s[1], random_ids)  # [length]
    out = tf.where(to_mask, tf.cast(mask_id, tokens.dtype), tokens)
    return tf.where(to_random, tf.cast(rand, tokens.dtype), out)


# ---------------------------------------------------------------------------------------
# T5 span corruption (Raffel et al. 2020), written for stateless per-example seeds.
# ---------------------------------------------------------------------------------------


def _random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Splits ``num_items`` into ``num_segments`` non-empty segments at random: int32 [num_segments] lengths."""
    # One "segment starts here" mark for num_segments - 1 of the num_items - 1 gaps, shuffled.
    marks = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)  # [num_items - 1]
    marks = tf.random.experimental.stateless_shuffle(marks, seed=seed)
    first_in_segment = tf.concat([[0], marks], axis=0)  # [num_items]
    segment_id = tf.cumsum(first_in_segment)  # [num_items]
    return tf.math.unsorted_segment_sum(tf.ones_like(segment_id), segment_id, num_segments)


def random_spans_noise_mask(
    length: tf.Tensor, noise_density: float, mean_noise_span_length: float, seed: tf.Tensor
) -> tf.Tensor:
    """T5's noise mask: about ``noise_density * length`` noise tokens in spans of mean length ``mean_noise_span_length``.

    Spans of noise and non-noise alternate, the sequence starting with non-noise.

    Returns:
      bool [length], True at noise tokens.
    """
    orig_length = tf.cast(length, tf.int32)
    length = tf.maximum(orig_length, 2)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    s = _seeds(seed, 2)
    noise_lengths = _random_segmentation(num_noise, num_spans, s[0])  # [num_spans]
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, s[1])  # [num_spans]
    interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])  # [2 * num_spans]
    span_starts = tf.cumsum(interleaved)[:-1]
    start_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)  # [length]
    is_noise = tf.equal(tf.math.floormod(tf.cumsum(start_indicator), 2), 1)
    return is_noise[:orig_length]


def spans_to_sentinels(tokens: tf.Tensor, span_mask: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """Replaces each run of masked tokens by one sentinel, numbered from the top of the vocabulary.

    The k-th masked run (k = 0, 1, ...) becomes ``<extra_id_k>`` = ``vocab_size - 1 - k``.

    Args:
      tokens: int32 [length].
      span_mask: bool [length].
      vocab_size: full vocabulary size (sentinels occupy its top ids).

    Returns:
      int32 [new_length].
    """
    prev_masked = tf.pad(span_mask[:-1], [[1, 0]])
    first_of_span = span_mask & ~prev_masked
    sentinel = tf.cast(vocab_size, tokens.dtype) - tf.cumsum(tf.cast(first_of_span, tokens.dtype))
    out = tf.where(first_of_span, sentinel, tokens)
    return tf.boolean_mask(out, ~(span_mask & prev_masked))


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """Raw token length that corrupts into at most ``inputs_length`` inputs (EOS included), and the targets length.

    Same arithmetic as T5's ``random_spans_helper`` with one sentinel per span and EOS on both sides.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


# ---------------------------------------------------------------------------------------
# seqio preprocessors (dataset -> dataset).
# ---------------------------------------------------------------------------------------


def _vocab(output_features, key: str = "targets"):
    return output_features[key].vocabulary


def _residue_candidates(vocabulary) -> tf.Tensor:
    return tf.constant(list(vocabulary.residue_ids), dtype=tf.int32)


# Examples per vectorised step: per-example tf.data overhead, not the arithmetic, dominates at
# protein lengths, so the tokenizer and the ProtT5/MLM objectives work on ragged batches.
BATCH = 256


def tokenize(dataset: tf.data.Dataset, output_features, batch_size: int = BATCH) -> tf.data.Dataset:
    """{"sequence": string} -> {"targets": int32 [length]}, tokenized a batch at a time."""
    vocabulary = _vocab(output_features)

    def encode(batch):
        return {"targets": vocabulary.encode_tf(batch["sequence"])}  # [batch, (length)]

    return dataset.batch(batch_size).map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _batched(dataset: tf.data.Dataset, fn, batch_size: int) -> tf.data.Dataset:
    """Applies a seeded ``fn(ragged_batch, seed)`` to ragged batches and unbatches again.

    The seed comes from seqio's map-seed mechanism (one per batch), so a task read with the same
    ``seed`` repeats its examples exactly.
    """
    mapped = seqio.map_over_dataset(fn, num_seeds=1)(dataset.ragged_batch(batch_size))
    return mapped.unbatch()


def prot_t5_denoise(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features,
    noise_density: float = 0.15,
    sentinel_rate: float = 0.9,
    random_rate: float = 0.1,
    distinct_sentinels: bool = False,
    batch_size: int = BATCH,
) -> tf.data.Dataset:
    """ProtT5's objective: single residues are corrupted; the target is the whole original sequence.

    Each sequence is cropped at a random offset to ``sequence_length['targets'] - 1`` residues;
    exactly ``round(noise_density * length)`` of them are chosen one at a time (not spans); of
    those, ``sentinel_rate`` become ``<extra_id_0>`` (or ``<extra_id_k>`` for the k-th one when
    ``distinct_sentinels``) and ``random_rate`` a random standard residue. EOS ends both features.
    """
    vocabulary = _vocab(output_features)
    max_length = sequence_length["targets"] - 1
    sentinel = vocabulary.sentinel_id(0)
    last_sentinel = vocabulary.sentinel_id(vocabulary.num_sentinels - 1)

    def fn(batch, seed):
        s = _seeds(seed, 3)
        targets = ragged_random_crop(batch["targets"], max_length, s[0])  # [batch, (length)]
        selected = ragged_select_exact_fraction(targets, noise_density, s[1])
        values = bert_style_corruption(
            targets.flat_values, selected.flat_values, s[2], sentinel, _residue_candidates(vocabulary),
            sentinel_rate, random_rate,
        )  # [total]
        if distinct_sentinels:
            is_sentinel = tf.equal(values, sentinel)
            numbered = sentinel + 1 - _ragged_cumsum(tf.cast(is_sentinel, tf.int32), targets)
            values = tf.where(is_sentinel, tf.maximum(numbered, last_sentinel), values)
        eos = vocabulary.eos_id
        return {"inputs": _append(targets.with_flat_values(values), eos), "targets": _append(targets, eos)}

    return _batched(dataset, fn, batch_size)


def masked_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features,
    noise_density: float = 0.15,
    mask_rate: float = 0.8,
    random_rate: float = 0.1,
    batch_size: int = BATCH,
) -> tf.data.Dataset:
    """BERT MLM on [CLS] residues [SEP]: ``noise_density`` of residues selected, then mask/random/keep.

    Sequences are cropped at a random offset to ``sequence_length['inputs'] - 2`` residues.
    ``loss_weights`` is 1 at every selected position (masked, randomised or kept), 0 elsewhere,
    so the loss covers all three kinds as in BERT (unlike seqio's EncoderFeatureConverter, which
    only weights positions equal to the mask id).
    """
    vocabulary = _vocab(output_features, "inputs")
    max_length = sequence_length["inputs"] - 2

    def fn(batch, seed):
        s = _seeds(seed, 3)
        residues = ragged_random_crop(batch["targets"], max_length, s[0])  # [batch, (n)]
        selected = ragged_select_exact_fraction(residues, noise_density, s[1])
        values = bert_style_corruption(
            residues.flat_values, selected.flat_values, s[2], vocabulary.mask_id, _residue_candidates(vocabulary),
            mask_rate, random_rate,
        )

        def wrap(rt):  # [batch, (n)] -> [batch, (n + 2)]
            return _append(_append(rt, vocabulary.cls_id, prepend=True), vocabulary.sep_id)

        weights = tf.cast(selected, tf.int32)
        return {
            "inputs": wrap(residues.with_flat_values(values)),
            "targets": wrap(residues),
            "loss_weights": _append(_append(weights, 0, prepend=True), 0),
        }

    return _batched(dataset, fn, batch_size)


def electra_inputs(dataset, sequence_length, output_features, noise_density: float = 0.15, mask_rate: float = 0.85):
    """ELECTRA's generator inputs: MLM with ``mask_rate`` [MASK] and the rest kept (no random tokens).

    The discriminator needs the original tokens (``targets``) and the selected positions
    (``loss_weights``): during training the generator's samples are written at the selected
    positions of ``inputs`` and the discriminator predicts, for every non-padding token, whether it
    differs from ``targets``.
    """
    return masked_lm(dataset, sequence_length, output_features, noise_density, mask_rate=mask_rate, random_rate=0.0)


@seqio.map_over_dataset(num_seeds=1)
def span_corruption(
    x: Mapping[str, tf.Tensor],
    seed,
    sequence_length: Mapping[str, int],
    output_features,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> dict:
    """T5 span corruption: noise spans become distinct sentinels in ``inputs``; ``targets`` lists the spans.

    The raw sequence is first cropped at a random offset to the length whose corruption fits
    ``sequence_length['inputs']`` (EOS included, added afterwards by seqio's append_eos_after_trim).
    """
    vocabulary = _vocab(output_features)
    tokens_length, _ = span_corruption_lengths(sequence_length["inputs"], noise_density, mean_noise_span_length)
    s = _seeds(seed, 2)
    tokens = random_crop(x["targets"], tokens_length, s[0])
    noise = random_spans_noise_mask(tf.shape(tokens)[0], noise_density, mean_noise_span_length, s[1])
    return {
        "inputs": spans_to_sentinels(tokens, noise, vocabulary.vocab_size),
        "targets": spans_to_sentinels(tokens, ~noise, vocabulary.vocab_size),
    }

"""Hand-checked cases for the TF preprocessing primitives (masking, spans, sentinels, crops)."""

import numpy as np
import pytest
import tensorflow as tf

from binomial import assert_binomial_rate
from prottrans_jax import preprocessors as pp

SEED = tf.constant([3, 7], tf.int64)


LENGTHS = [1, 5, 7, 100, 511]


def _ragged(lengths):
    return tf.RaggedTensor.from_row_lengths(tf.range(sum(lengths), dtype=tf.int32), lengths)


def test_ragged_select_exact_fraction_count_per_row():
    mask = pp.ragged_select_exact_fraction(_ragged(LENGTHS), 0.15, SEED)
    for n, row in zip(LENGTHS, mask.to_list()):
        assert len(row) == n
        assert sum(row) == min(max(int(np.round(n * 0.15)), 1), n)


def test_ragged_select_exact_fraction_is_uniform_and_seeded():
    rows = _ragged([50] * 2000)
    mask = pp.ragged_select_exact_fraction(rows, 0.2, SEED).to_tensor().numpy()
    # Every position is chosen with probability 0.2 (binomial sd ~0.009 per position over 2000 rows).
    assert np.abs(mask.mean(0) - 0.2).max() < 0.05
    again = pp.ragged_select_exact_fraction(rows, 0.2, SEED).to_tensor().numpy()
    other = pp.ragged_select_exact_fraction(rows, 0.2, tf.constant([3, 8], tf.int64)).to_tensor().numpy()
    np.testing.assert_array_equal(mask, again)
    assert (mask != other).any()


def test_ragged_random_crop_windows():
    rows = _ragged([1000, 30, 1000])
    flat_start = [0, 1000, 1030]
    starts = set()
    for s in range(10):
        out = pp.ragged_random_crop(rows, 100, tf.constant([s, 1], tf.int64)).to_list()
        assert [len(r) for r in out] == [100, 30, 100]
        for r, base in zip(out, flat_start):
            assert r == list(range(r[0], r[0] + len(r))) and r[0] >= base
        assert out[1][0] == 1000, "rows shorter than the crop are kept whole"
        starts.add(out[0][0])
    assert len(starts) > 5


def test_random_crop_is_a_contiguous_window_at_varying_offsets():
    tokens = tf.range(1000, dtype=tf.int32)
    starts = set()
    for s in range(20):
        out = pp.random_crop(tokens, 100, tf.constant([s, 1], tf.int64)).numpy()
        assert len(out) == 100
        np.testing.assert_array_equal(out, np.arange(out[0], out[0] + 100))
        starts.add(int(out[0]))
    assert len(starts) > 10
    short = pp.random_crop(tokens[:50], 100, SEED).numpy()
    np.testing.assert_array_equal(short, np.arange(50))


def test_spans_to_sentinels_hand_checked():
    tokens = tf.constant([10, 11, 12, 13, 14, 15], tf.int32)
    noise = tf.constant([False, True, True, False, True, False])
    # Each noise run -> one sentinel, numbered from the top of a 128-id vocabulary.
    assert pp.spans_to_sentinels(tokens, noise, 128).numpy().tolist() == [10, 127, 13, 126, 15]
    assert pp.spans_to_sentinels(tokens, ~noise, 128).numpy().tolist() == [127, 11, 12, 126, 14, 125]


@pytest.mark.parametrize("length", [10, 57, 300, 568])
def test_random_spans_noise_mask_counts(length):
    mask = pp.random_spans_noise_mask(length, 0.15, 3.0, SEED).numpy()
    num_noise = min(max(int(np.round(length * 0.15)), 1), length - 1)
    num_spans = max(int(np.round(num_noise / 3.0)), 1)
    assert mask.sum() == num_noise
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    assert len(starts) == num_spans
    assert not mask[0], "T5 noise masks start with a non-noise span"


def test_span_corruption_lengths_match_t5():
    # T5's random_spans_helper: 568 raw tokens -> 512 inputs, 114 targets (both with EOS).
    assert pp.span_corruption_lengths(512) == (568, 114)


def test_bert_style_corruption_proportions():
    n = 200_000
    tokens = tf.fill([n], 9)
    selected = tf.ones([n], tf.bool)
    out = pp.bert_style_corruption(tokens, selected, SEED, 4, tf.constant([5, 6, 7, 8], tf.int32), 0.8, 0.1).numpy()
    assert_binomial_rate((out == 4).sum(), n, 0.8, "mask")
    assert_binomial_rate(np.isin(out, [5, 6, 7, 8]).sum(), n, 0.1, "random")
    assert_binomial_rate((out == 9).sum(), n, 0.1, "kept")
    np.testing.assert_allclose(np.bincount(out, minlength=10)[5:9] / (0.1 * n), 0.25, rtol=0.05)  # uniform picks
    none = pp.bert_style_corruption(tokens, ~selected, SEED, 4, tf.constant([5, 6, 7, 8], tf.int32), 0.8, 0.1)
    assert (none.numpy() == 9).all(), "unselected tokens are never touched"

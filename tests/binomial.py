"""Test helper: rates checked against their binomial spread (relative to the rate, not a fixed absolute margin)."""

import math

import numpy as np


def assert_binomial_rate(count, n, p, what, sigmas=5.0, max_relative=0.1):
    """``count`` of ``n`` independent trials is within ``sigmas`` binomial standard deviations of ``n * p``.

    Fails as well when ``n`` is too small for the bound to be within ``max_relative`` of ``p``, so the
    check can always tell, say, a 7% rate from a 10% one.
    """
    bound = sigmas * math.sqrt(p * (1 - p) / n)
    assert bound <= max_relative * p, f"{what}: {n} trials are too few to check a rate of {p}"
    rate = count / n
    assert abs(rate - p) <= bound, f"{what}: {rate:.5f} observed, {p:.5f} expected (+-{bound:.5f} over {n} trials)"


def exact_fraction_count(lengths, rate, dtype=np.float64, keep_one_out=False):
    """How many positions ``round(rate * length)`` picks over rows of these lengths (at least 1, half to even).

    ``dtype`` is the float type the preprocessor multiplies in; ``keep_one_out`` caps at ``length - 1``.
    """
    lengths = np.asarray(lengths)
    picked = np.round(lengths.astype(dtype) * dtype(rate))
    return int(np.clip(picked, 1, lengths - 1 if keep_one_out else lengths).sum())

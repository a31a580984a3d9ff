"""The matcher's sorting helpers against numpy's own stable sorts."""

import numpy as np
import pytest

from jobs.evaluate.match import radix_argsort, stable_order


# 5,000 values take 13 bits of index: spans up to 2**50 are sorted packed, wider ones by 16-bit digits.
@pytest.mark.parametrize("span", [1, 2, 2**16, 2**16 + 1, 3 * 2**20, 2**40 + 7, 2**50, 2**50 + 1, 2**62 - 1])
def test_radix_argsort_is_numpys_stable_argsort(span):
    rng = np.random.default_rng(span % 1000)
    values = rng.integers(0, span, 5000, dtype=np.int64)
    values[::7] = values[0]  # ties: input order decides
    np.testing.assert_array_equal(radix_argsort(values, span), np.argsort(values, kind="stable"))


def test_stable_order_is_lexsort():
    rng = np.random.default_rng(1)
    a, b, c = rng.integers(0, 80, 3000), rng.integers(0, 70000, 3000), rng.integers(0, 5, 3000)
    np.testing.assert_array_equal(stable_order((a, 80), (b, 70000), (c, 5)), np.lexsort((c, b, a)))

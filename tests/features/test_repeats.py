"""The event-id check's repeat finder agrees with numpy's unique counts."""

from __future__ import annotations

import numpy as np
import pytest

from sendtime.features.repeats import repeated_values


@pytest.mark.parametrize("kind", ["hashes", "small", "one value", "empty"])
def test_repeated_values_are_the_values_counted_more_than_once(kind):
    rng = np.random.default_rng(7)
    if kind == "hashes":  # spread over all 64 bits, a few repeated two and three times
        v = rng.integers(0, 2**64 - 1, 300_000, dtype=np.uint64)
        v[rng.integers(0, v.size, 40)] = v[rng.integers(0, v.size, 40)]
        v[[3, 4, 5]] = v[6]
    elif kind == "small":  # every value in one partition: still exact
        v = rng.integers(0, 5_000, 50_000).astype(np.uint64)
    elif kind == "one value":
        v = np.full(1_000, 2**63 + 5, dtype=np.uint64)
    else:
        v = np.zeros(0, dtype=np.uint64)
    u, c = np.unique(v, return_counts=True)
    expected = u[c > 1]
    got = repeated_values(v)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, expected)
    if kind == "hashes":
        assert 30 <= len(got) <= 41

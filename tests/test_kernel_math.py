"""The row helpers every sampler kernel builds on (``kernels.sampling.exp_shifted``,
``row_max``), against NumPy: the float32 exponential within 2 ulps of float64 ``exp`` (its
measured error is 0.93 ulp; the polynomial it replaced was 4.5 ulps off near -87), its exact
zeros and ones, and the running maximum equal to ``np.max`` for every length and -inf layout.
"""

import numpy as np
import pytest

from simans_fast.kernels import sampling as K


def _ulps(got, x, m):
    """Error of ``got`` in units in the last place of the float32 nearest to the true value,
    the true value being float64 ``exp`` of the float32 difference the kernel forms."""
    y = (x - np.float32(m)).astype(np.float64)  # x - m rounded to float32, as in the kernel
    ref = np.exp(y)
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / ulp


@pytest.mark.parametrize("m", [0.0, 3.25, -40.0])
def test_exp_shifted_within_two_ulps_over_its_range(m):
    rng = np.random.default_rng(7)
    y = np.concatenate([rng.uniform(-87.0, 0.0, 200_000), rng.uniform(-1.0, 0.0, 50_000),
                        -np.logspace(-8, np.log10(87.0), 20_000)]).astype(np.float32)
    x = (y + np.float32(m)).astype(np.float32)
    x = x[(x - np.float32(m)) >= np.float32(-87.0)]
    x = x[(x - np.float32(m)) <= np.float32(0.0)]
    out = np.empty(x.size, np.float32)
    K.exp_shifted(x, np.float32(m), x.size, out)
    err = _ulps(out, x, m)
    assert err.max() <= 2.0, (float(err.max()), x[np.argmax(err)])
    assert np.all(out > 0) and np.all(out <= 1)


def test_exp_shifted_zeros_ones_and_untouched_tail():
    x = np.array([0.0, -np.inf, -87.0, -87.01, -100.0, -1e30, -0.0, 5.0 - 5.0],
                 np.float32)
    out = np.full(x.size + 3, 7.0, np.float32)
    K.exp_shifted(x, np.float32(0.0), x.size, out)
    np.testing.assert_array_equal(out[[0, 6, 7]], 1.0)  # the row's maximum weighs exactly 1
    np.testing.assert_array_equal(out[[1, 3, 4, 5]], 0.0)  # below e**-87 or -inf: weight 0
    assert 0 < out[2] < 1e-37 and np.isfinite(out[2])  # e**-87 is still a normal float32
    np.testing.assert_array_equal(out[x.size:], 7.0)  # only the first k entries are written
    # shifted by the row's maximum, as build_cdf and build_row call it
    row = np.array([2.5, 1.0, -np.inf, 2.5 - 90.0], np.float32)
    K.exp_shifted(row, np.float32(2.5), 4, out)
    np.testing.assert_allclose(out[:4], [1.0, np.exp(-1.5), 0.0, 0.0], rtol=2e-7)


@pytest.mark.parametrize("k", list(range(0, 20)) + [31, 64, 199, 200, 257])
def test_row_max_equals_numpy_for_every_length(k):
    rng = np.random.default_rng(k)
    for case in range(6):
        x = rng.standard_normal(k + 5).astype(np.float32)
        if case == 1:
            x[:] = -np.inf
        elif case == 2:
            x[rng.random(x.size) < 0.7] = -np.inf
        elif case == 3 and k:
            x[:k] = -5.0
            x[k - 1] = 4.0  # the maximum in the scalar tail (or the last vector lane)
        elif case == 4 and k:
            x[k:] = 100.0  # beyond k: must not be read
        elif case == 5:
            x = np.abs(x) * -1.0  # includes -0.0 / 0.0 mixes after the abs
            x[::3] = 0.0
        got = K.row_max(x, k)
        want = np.max(x[:k]) if k else -np.inf
        assert got == want and np.float32(got) == np.float32(want), (k, case, got, want)

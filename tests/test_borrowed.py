"""kernels.borrowed: row views and arrays without reference counts read and write the same
memory as NumPy's views, for every layout the kernels receive."""

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from simans_fast.kernels.borrowed import borrow, row


@njit
def _row_sums(x):
    x = borrow(x)
    out = np.zeros(x.shape[0])
    for i in range(x.shape[0]):
        r = row(x, i)
        for j in range(r.shape[0]):
            out[i] += r[j] * (j + 1)
    return out


@njit
def _row_fill(x, v):
    x = borrow(x)
    for i in range(x.shape[0]):
        r = row(x, i)
        for j in range(r.shape[0]):
            r[j] = v * i + j


@njit
def _plane_sum(x, i):
    p = row(x, i)  # 3-d -> 2-d
    s = 0.0
    for a in range(p.shape[0]):
        for b in range(p.shape[1]):
            s += p[a, b] * (a + 2 * b + 1)
    return s, p.shape[0], p.shape[1]


def _weights(x):
    return (x * np.arange(1, x.shape[1] + 1)).sum(axis=1)


@pytest.mark.parametrize("make", [
    lambda a: a,                                  # C-contiguous
    lambda a: np.asfortranarray(a),               # F: rows are strided
    lambda a: a[:, ::2],                          # non-contiguous columns
    lambda a: a[::3],                             # non-contiguous rows
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_row_reads_the_rows_numpy_reads(make, dtype):
    base = np.random.default_rng(0).integers(-50, 50, (9, 12)).astype(dtype)
    x = make(base)
    np.testing.assert_array_equal(_row_sums(x), _weights(x.astype(np.float64)))


def test_row_of_a_read_only_array_reads_it():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    x.flags.writeable = False
    np.testing.assert_array_equal(_row_sums(x), _weights(x.astype(np.float64)))


@pytest.mark.parametrize("make", [lambda a: a, lambda a: np.asfortranarray(a),
                                  lambda a: a[:, 1::2]])
def test_writes_through_a_borrowed_row_land_in_the_array(make):
    x = make(np.zeros((5, 8)))
    _row_fill(x, 100.0)
    want = 100.0 * np.arange(x.shape[0])[:, None] + np.arange(x.shape[1])[None, :]
    np.testing.assert_array_equal(x, want)


def test_row_of_a_3d_array_is_its_plane():
    x = np.random.default_rng(1).standard_normal((4, 5, 2))
    for i in range(4):
        s, n0, n1 = _plane_sum(x, i)
        a = np.arange(5)[:, None]
        b = np.arange(2)[None, :]
        assert (n0, n1) == (5, 2)
        assert s == pytest.approx(float((x[i] * (a + 2 * b + 1)).sum()), rel=1e-12)


def test_row_refuses_a_one_dimensional_array():
    @njit
    def f(x):
        return row(x, 0)

    with pytest.raises(TypingError):
        f(np.zeros(3))

"""Counter-based random numbers for Numba kernels.

Every random number is a pure function of ``(seed, epoch, key, j)``: no state is carried between
calls, so a row's draws do not depend on the thread that computes it, on the thread count, on
which other rows are computed, or on the process.

Construction (all arithmetic modulo 2**64, ``G = 0x9E3779B97F4A7C15``, ``mix64`` the SplitMix64
finaliser of Steele, Lea and Flood, 2014)::

    state(seed, epoch, key) = mix64(mix64(mix64(seed + G) + epoch + G) + key + G)
    u64(state, j)           = mix64(state + (j + 1) * G)        # output j of SplitMix64(state)
    uniform(state, j)       = (u64(state, j) >> 11) * 2**-53     # in [0, 1)

``u64(s, j)`` for ``j = 0, 1, ...`` is exactly the SplitMix64 sequence seeded with ``s``; the
tests check it against the published reference outputs of SplitMix64.
Negative integers (e.g. int64 keys) are taken modulo 2**64.
"""

import numpy as np

from .._numba import jit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@jit(inline="always")
def mix64(z):
    """SplitMix64 finaliser (a bijection of uint64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit(inline="always")
def stream_state(seed, epoch, key):
    """Stream state for ``(seed, epoch, key)``; all three are uint64."""
    s = mix64(seed + GAMMA)
    s = mix64(s + epoch + GAMMA)
    return mix64(s + key + GAMMA)


@jit(inline="always")
def draw_u64(state, j):
    """The ``j``-th 64-bit output (``j`` uint64) of the stream ``state``."""
    return mix64(state + (j + _ONE) * GAMMA)


@jit(inline="always")
def draw_uniform(state, j):
    """The ``j``-th uniform double in [0, 1) of the stream ``state``."""
    return np.float64(draw_u64(state, j) >> _S11) * _INV53


@jit
def splitmix64_sequence(seed, n):
    """The first ``n`` outputs of SplitMix64 seeded with ``seed`` (uint64), as uint64."""
    out = np.empty(n, dtype=np.uint64)
    for j in range(n):
        out[j] = draw_u64(seed, np.uint64(j))
    return out


@jit
def uniforms(seed, epoch, keys, n_draws):
    """``out[r, j] = uniform(state(seed, epoch, keys[r]), j)`` (reference helper for tests)."""
    out = np.empty((keys.shape[0], n_draws), dtype=np.float64)
    for r in range(keys.shape[0]):
        st = stream_state(seed, epoch, np.uint64(keys[r]))
        for j in range(n_draws):
            out[r, j] = draw_uniform(st, np.uint64(j))
    return out

"""Public view of the counter-based generator used by every sampling kernel.

See :mod:`simans_fast.kernels.rng` for the construction. These helpers exist for tests,
debugging and for users who want to reproduce a draw outside the kernels.
"""

from __future__ import annotations

import numpy as np

from .kernels import rng as _k

__all__ = ["to_u64", "splitmix64", "uniforms"]

_MASK = (1 << 64) - 1


def to_u64(x, name: str = "seed") -> np.uint64:
    """Map a Python/NumPy integer to uint64 (negative values modulo 2**64)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {type(x).__name__}")
    return np.uint64(int(x) & _MASK)


def splitmix64(seed: int, n: int) -> np.ndarray:
    """First ``n`` outputs of SplitMix64 seeded with ``seed`` (uint64 array)."""
    return _k.splitmix64_sequence(to_u64(seed), int(n))


def uniforms(seed: int, epoch: int, keys, n_draws: int) -> np.ndarray:
    """Uniforms ``u[r, j]`` of the streams ``(seed, epoch, keys[r])``; shape ``(len(keys), n_draws)``."""
    keys = np.ascontiguousarray(keys, dtype=np.int64).view(np.uint64)
    return _k.uniforms(to_u64(seed), to_u64(epoch, "epoch"), keys, int(n_draws))

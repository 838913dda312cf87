"""Public view of the counter-based generator used by every sampling kernel.

See :mod:`simans_fast.kernels.rng` for the construction. These helpers exist for tests,
debugging and for users who want to reproduce a draw outside the kernels.
"""

from __future__ import annotations

import numpy as np

from ._validate import ParameterTypeError, check_epoch, check_seed, is_int
from .kernels import rng as _k

__all__ = ["to_u64", "seed_u64", "epoch_u64", "splitmix64", "uniforms"]

_MASK = (1 << 64) - 1


def to_u64(x, name: str = "seed") -> np.uint64:
    """Map a Python/NumPy integer to the uint64 word the kernels use (negative values modulo
    2**64). A low-level helper for reproducing stream words (and the domain XOR); the public
    sampling functions check their ``seed`` and ``epoch`` first with :func:`seed_u64` /
    :func:`epoch_u64` (0..2**64-1, negative refused)."""
    if not is_int(x):
        raise ParameterTypeError(name, f"{name} must be an integer, got {type(x).__name__}")
    return np.uint64(int(x) & _MASK)


def seed_u64(seed, name: str = "seed") -> np.uint64:
    """A public ``seed`` (checked: an integer in 0..2**64-1) as the kernels' uint64 word."""
    return np.uint64(check_seed(seed, name))


def epoch_u64(epoch, name: str = "epoch") -> np.uint64:
    """A public ``epoch`` (checked: a non-negative integer below 2**64) as a uint64 word."""
    return np.uint64(check_epoch(epoch, name))


def splitmix64(seed: int, n: int) -> np.ndarray:
    """First ``n`` outputs of SplitMix64 seeded with ``seed`` (uint64 array)."""
    return _k.splitmix64_sequence(to_u64(seed), int(n))


def uniforms(seed: int, epoch: int, keys, n_draws: int) -> np.ndarray:
    """Uniforms ``u[r, j]`` of the streams ``(seed, epoch, keys[r])``; shape ``(len(keys), n_draws)``."""
    keys = np.ascontiguousarray(keys, dtype=np.int64).view(np.uint64)
    return _k.uniforms(to_u64(seed), to_u64(epoch, "epoch"), keys, int(n_draws))

"""The package's counter-based generator written in torch integer ops.

Bit-for-bit the construction of :mod:`simans_fast.kernels.rng` (SplitMix64 streams keyed on
``(seed, epoch, key)``), evaluated with int64 tensors on any device: torch has no general
uint64 arithmetic, but int64 addition and multiplication wrap modulo 2**64 exactly like uint64
and a logical right shift is an arithmetic shift followed by a mask. The tests check the output
against :func:`simans_fast.rng.uniforms`.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


def _signed(x: int) -> int:
    """uint64 value (Python int) -> the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


def _mix64_int(z: int) -> int:
    """SplitMix64 finaliser on Python ints (mod 2**64)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _signed(_M1)
    z = (z ^ _srl(z, 27)) * _signed(_M2)
    return z ^ _srl(z, 31)


def stream_states(seed: int, epoch: int, keys: torch.Tensor) -> torch.Tensor:
    """int64 tensor of stream states ``state(seed, epoch, keys[r])`` (same bits as the kernels)."""
    s = _mix64_int(int(seed) + _GAMMA)
    s = _mix64_int(s + (int(epoch) & _MASK64) + _GAMMA)
    return _mix64(keys.to(torch.int64) + _signed(s + _GAMMA))


def uniforms(states: torch.Tensor, n_draws: int, *, first: int = 0,
             dtype=torch.float64) -> torch.Tensor:
    """``out[r, j] = uniform(states[r], first + j)`` in [0, 1), shape ``(len(states), n_draws)``."""
    j = torch.arange(first + 1, first + n_draws + 1, dtype=torch.int64, device=states.device)
    incr = j * _signed(_GAMMA)  # wraps modulo 2**64
    u = _mix64(states[:, None] + incr[None, :])
    return _srl(u, 11).to(dtype) * _INV53

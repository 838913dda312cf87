"""SimANS negatives from torch tensors, on the tensors' own device.

CPU tensors are handed to :func:`simans_fast.simans_negatives` without a copy (``Tensor.numpy()``
shares memory). Tensors on any other device are sampled with torch ops on that device
(exponential keys + ``topk``), keyed by the package's counter-based generator, with no host
round trip: the same distribution as the core, not the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _config
from .. import core as _core
from .._validate import ParameterError, check_choice, check_epoch, \
    check_seed, validate
from . import _rng

__all__ = ["simans_negatives_torch", "in_worker", "tensor_to_numpy", "resolve_parallel"]

_IMPLS = ("auto", "core", "torch")
_FLT_MAX = float(np.finfo(np.float32).max)
# draws of the torch path use their own domain of the stream so that they are never the very
# numbers the core kernels use for the same (seed, epoch, key)
_TORCH_DOMAIN = _config.TORCH_DOMAIN  # "TORCHKEY" (simans_fast._config.RNG_DOMAINS)
_CHUNK_ELEMS = 1 << 21  # rows x k elements processed at once on the torch path


def in_worker() -> bool:
    """True inside a ``torch.utils.data.DataLoader`` worker process.

    Numba's OpenMP threading layer aborts a forked child that enters a parallel region after the
    parent used one, so the adapters call the serial kernels inside workers (the workers are the
    parallelism there).
    """
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


#: below this many rows the serial kernels are used by default (simans_fast._config)
PARALLEL_MIN_ROWS = _config.PARALLEL_MIN_ROWS


def resolve_parallel(parallel, n_rows=None):
    """Resolve ``parallel=None`` with the package's one policy
    (:func:`simans_fast._config.resolve_parallel`): multi-threaded only outside DataLoader
    workers and for at least :data:`PARALLEL_MIN_ROWS` rows."""
    if parallel is None and n_rows is not None and n_rows < _config.PARALLEL_MIN_ROWS:
        return False  # decided without asking torch whether this is a worker
    return _config.resolve_parallel(parallel, n_rows,
                                    in_worker=parallel is None and in_worker())


_parallel = resolve_parallel  # old private name


def tensor_to_numpy(t, name: str, *, floating: bool = False):
    """A CPU tensor as a NumPy array sharing its memory (half/bfloat16 floats: a float32 copy).

    Other devices are copied to the host. Non-tensors are returned as ``np.asarray``.
    """
    if not isinstance(t, torch.Tensor):
        return np.asarray(t)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if floating and t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()  # bfloat16 has no NumPy dtype; float16 has no Numba kernel
    if t.is_complex():
        raise ParameterError(name, f"{name} must be real, got dtype {t.dtype}")
    if t.dtype == torch.bool:
        raise ParameterError(name, f"{name} must be numeric, got dtype {t.dtype}")
    return t.resolve_conj().resolve_neg().numpy()


def _device_of(*tensors):
    devs = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devs) > 1:
        raise ParameterError("candidate_ids",
                             f"candidate_ids, candidate_scores, positive_scores and row_keys must "
                             f"be on one device, got {sorted(str(d) for d in devs)}")
    return devs.pop() if devs else torch.device("cpu")


def simans_negatives_torch(candidate_ids, candidate_scores, positive_scores, n: int, *,
                           a: float = 0.5, b: float = 0.0, kernel: str = "gaussian",
                           seed: int = 0, epoch: int = 0, fallback: str = "lowest",
                           row_keys=None, impl: str = "auto", parallel: bool | None = None):
    """SimANS negatives for tensors on any device; the result is on the same device.

    Same semantics as :func:`simans_fast.simans_negatives`: exact successive sampling (without
    replacement) with weights ``exp(-a * (s - s_pos - b)**2)`` (``laplace``:
    ``exp(-a * |s - s_pos - b|)``) over the valid candidates of each row.

    Parameters
    ----------
    candidate_ids : integer tensor of shape (n_q, k)
        Candidate document ids, ``-1`` for padding.
    candidate_scores : floating tensor of shape (n_q, k)
        Candidate scores (float16/bfloat16/float32/float64). NaN or +-inf marks an invalid
        candidate.
    positive_scores : floating tensor of shape (n_q,)
        Score of each query's positive; non-finite means unknown and ``fallback`` applies.
        (Several positives per row: use :class:`simans_fast.SimANSSampler`; ``impl="core"``
        accepts a NaN-padded ``(n_q, m)`` matrix too.)
    n : int
        Negatives per row.
    a, b, kernel
        See :func:`simans_fast.ambiguity_log_weights` (``b`` with the paper's sign).
    seed, epoch : int
        Key the counter-based generator; results are a pure function of
        ``(seed, epoch, row key)``.
    fallback : {"lowest", "uniform", "raise"}
        Rows with an unknown positive: the ``n`` last valid columns in column order, uniform
        draws over the valid candidates, or a ``ValueError``.
    row_keys : integer tensor or array of shape (n_q,), optional
        Global query key of each row (default: the row index).
    impl : {"auto", "core", "torch"}
        ``"core"``: the Numba kernels of :func:`simans_fast.simans_negatives` (CPU tensors are
        shared without a copy; other devices are copied to the host and back). ``"torch"``:
        torch ops on the tensors' device (exponential keys, ``topk``). ``"auto"``: ``"core"``
        for CPU tensors, ``"torch"`` otherwise. The two implementations draw from the same
        distribution but do not give the same ids for the same seed.
    parallel : bool, optional
        Multi-threaded Numba kernels for ``impl="core"``; default: True for at least
        8192 rows outside DataLoader workers (serial inside workers, where a forked process
        must not enter Numba's OpenMP pool, and for small batches).

    Returns
    -------
    torch.LongTensor of shape (n_q, n)
        Document ids in draw order, ``-1`` padded, on the device of ``candidate_scores``.
    """
    impl = check_choice(impl, "impl", _IMPLS)
    device = _device_of(candidate_ids, candidate_scores, positive_scores, row_keys)
    if impl == "auto":
        impl = "core" if device.type == "cpu" else "torch"
    if impl == "core":
        ids = tensor_to_numpy(candidate_ids, "candidate_ids")
        scores = tensor_to_numpy(candidate_scores, "candidate_scores", floating=True)
        pos = tensor_to_numpy(positive_scores, "positive_scores", floating=True)
        keys = None if row_keys is None else tensor_to_numpy(row_keys, "row_keys")
        out = _core.simans_negatives(ids, scores, pos, n, a=a, b=b, kernel=kernel, seed=seed,
                                     epoch=epoch, fallback=fallback, row_keys=keys,
                                     parallel=resolve_parallel(parallel, np.shape(scores)[0]))
        res = torch.from_numpy(out)
        return res if device.type == "cpu" else res.to(device)
    return _negatives_torch(candidate_ids, candidate_scores, positive_scores, n, a=a, b=b,
                            kernel=kernel, seed=seed, epoch=epoch, fallback=fallback,
                            row_keys=row_keys, device=device)


# ------------------------------------------------------------------------------------------
# torch-native path
# ------------------------------------------------------------------------------------------
def _as_tensor(x, name, device):
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ParameterError(name, f"{name} must be numeric, got an object array")
    return torch.as_tensor(arr, device=device)


def _check_values_torch(ids, scores, pos):
    """The core's value rules (:func:`simans_fast.core.check_candidate_values`) on the device."""
    below = ids < -1
    if bool(below.any()):
        r, c = (int(v) for v in torch.nonzero(below)[0])
        raise _core.candidate_error(_core.CAND_ID_BELOW, r, c, int(ids[r, c]),
                                    "candidate_ids", "candidate_scores")
    plus = (scores == math.inf) & (ids != -1)
    if bool(plus.any()):
        r, c = (int(v) for v in torch.nonzero(plus)[0])
        raise _core.candidate_error(_core.CAND_SCORE_POSINF, r, c, int(ids[r, c]),
                                    "candidate_ids", "candidate_scores")
    inf = torch.isinf(pos)
    if bool(inf.any()):
        r = int(torch.nonzero(inf)[0, 0])
        raise ParameterError("positive_scores",
                             f"positive_scores is {float(pos[r])} at index ({r},): a positive's "
                             f"score must be finite (NaN marks an unknown positive)")


def _float_dtype(device):
    # MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def _negatives_torch(candidate_ids, candidate_scores, positive_scores, n, *, a, b, kernel, seed,
                     epoch, fallback, row_keys, device):
    scores = _as_tensor(candidate_scores, "candidate_scores", device)
    if not scores.is_floating_point():
        raise ParameterError("candidate_scores",
                             f"candidate_scores must be a floating tensor, got dtype {scores.dtype}")
    if scores.ndim != 2:
        raise ParameterError("candidate_scores",
                             f"candidate_scores must be 2-dimensional, got shape {tuple(scores.shape)}")
    n_q, k = scores.shape
    ids = _as_tensor(candidate_ids, "candidate_ids", device)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ParameterError("candidate_ids",
                             f"candidate_ids must be an integer tensor (document ids, -1 for "
                             f"padding), got dtype {ids.dtype}")
    if tuple(ids.shape) != (n_q, k):
        raise ParameterError("candidate_ids",
                             f"candidate_ids must have shape {(n_q, k)} like candidate_scores, "
                             f"got {tuple(ids.shape)}")
    pos = _as_tensor(positive_scores, "positive_scores", device)
    if pos.is_complex() or pos.dtype == torch.bool:
        raise ParameterError("positive_scores",
                             f"positive_scores must be numeric, got dtype {pos.dtype}")
    if pos.ndim == 2:
        raise ParameterError("positive_scores",
                             "positive_scores with several positives per row (n_q, m) is supported "
                             "by impl='core' and SimANSSampler, not by impl='torch'; pick one "
                             "positive per row")
    if tuple(pos.shape) != (n_q,):
        raise ParameterError("positive_scores",
                             f"positive_scores must have shape ({n_q},) (one score per query row), "
                             f"got {tuple(pos.shape)}")
    n = validate("n", n)
    a = validate("a", a)
    b = validate("b", b)
    kernel = validate("kernel", kernel)
    fallback = validate("fallback", fallback)
    seed_u = check_seed(seed)
    epoch_u = check_epoch(epoch)
    if row_keys is None:
        keys = torch.arange(n_q, dtype=torch.int64, device=device)
    else:
        keys = _as_tensor(row_keys, "row_keys", device)
        if keys.is_floating_point() or keys.is_complex() or keys.dtype == torch.bool:
            raise ParameterError("row_keys",
                                 f"row_keys must be integers (global query keys), got dtype "
                                 f"{keys.dtype}")
        if tuple(keys.shape) != (n_q,):
            raise ParameterError("row_keys",
                                 f"row_keys must have shape ({n_q},), got {tuple(keys.shape)}")
        keys = keys.to(torch.int64)
    _check_values_torch(ids, scores, pos)
    fdt = _float_dtype(device)
    pos = pos.to(fdt)
    unknown = ~torch.isfinite(pos)
    if fallback == "raise" and bool(unknown.any()):
        first = int(torch.nonzero(unknown)[0, 0])
        raise ParameterError("positive_scores",
                             f"positive_scores has {int(unknown.sum())} unknown (non-finite) "
                             f"value(s), first at row {first}, and fallback='raise'")
    out = torch.full((n_q, n), -1, dtype=torch.int64, device=device)
    if n_q == 0 or k == 0:
        return out
    take = min(n, k)
    step = max(1, _CHUNK_ELEMS // k)
    col = torch.arange(k, device=device)
    seed_t = seed_u ^ _TORCH_DOMAIN
    for lo in range(0, n_q, step):
        hi = min(n_q, lo + step)
        s = scores[lo:hi].to(fdt)
        idr = ids[lo:hi]
        p = pos[lo:hi]
        unk = unknown[lo:hi]
        valid = torch.isfinite(s) & (idr >= 0)
        # log-weights as the core computes them: float64 difference, clamped, stored as float32
        d = s - p[:, None] - b
        lw = -a * (d * d) if kernel == "gaussian" else -a * d.abs()
        lw = lw.clamp(min=-_FLT_MAX).to(torch.float32).to(fdt)
        lw = torch.where(unk[:, None], torch.zeros_like(lw), lw)  # "uniform" for unknown rows
        # exponential keys log(E) - logw; the smallest n, in order, are a successive sample
        u = _rng.uniforms(_rng.stream_states(seed_t, epoch_u, keys[lo:hi]), k, dtype=fdt)
        key = torch.log(-torch.log1p(-u)) - lw
        key = torch.where(valid, key, torch.full_like(key, math.inf))
        if fallback == "lowest" and bool(unk.any()):
            # the last n valid columns, in column order
            from_right = valid.flip(1).cumsum(1).flip(1)
            sel = valid & (from_right <= n)
            low_key = torch.where(sel, col.to(fdt).expand_as(key), torch.full_like(key, math.inf))
            key = torch.where(unk[:, None], low_key, key)
        kv, cols = torch.topk(key, take, dim=1, largest=False, sorted=True)
        got = torch.gather(idr.to(torch.int64), 1, cols)
        out[lo:hi, :take] = torch.where(kv < math.inf, got, torch.full_like(got, -1))
    return out

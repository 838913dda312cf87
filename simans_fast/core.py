"""Public sampling API: SimANS ambiguity weights, alias tables, exact sampling.

All functions validate their input, pick a kernel (parallel or serial) and return NumPy arrays
or small dataclasses. Nothing here imports torch or faiss.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .kernels import sampling as _k
from .rng import to_u64

__all__ = [
    "AliasTables",
    "ambiguity_log_weights",
    "build_alias",
    "sample",
    "simans_negatives",
]

_KERNELS = {"gaussian": _k.GAUSSIAN, "laplace": _k.LAPLACE}
_FALLBACKS = ("lowest", "uniform", "raise")
_CHUNK = 1024  # rows per scratch-buffer chunk (one thread owns one chunk at a time)


def default_max_reject(n: int) -> int:
    """Duplicates tolerated per row before the exact sum-tree finish takes over."""
    return 4 + int(n) // 2


# ------------------------------------------------------------------------------------------
# validation helpers (shared with sampler.py and the adapters)
# ------------------------------------------------------------------------------------------
def check_float_matrix(x, name: str, *, ndim: int = 2) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray without copying when it already is one."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        if x.dtype.kind == "f" and x.dtype.itemsize == 2:
            x = x.astype(np.float32)  # float16: no Numba path; compute in float32
        elif x.dtype.kind in "iu" and x.size == 0:
            x = x.astype(np.float32)
        else:
            raise ValueError(f"{name} must be a float32 or float64 array, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {x.shape}")
    return x


def check_ids(ids, name: str, shape) -> np.ndarray:
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array (document ids, -1 for padding), "
                         f"got dtype {ids.dtype}")
    if ids.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} like candidate_scores, "
                         f"got {ids.shape}")
    if ids.dtype != np.int64:
        if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds ids above the int64 range")
        ids = ids.astype(np.int64)
    return ids


def check_positive_scores(pos, n_rows: int, name: str = "positive_scores") -> np.ndarray:
    pos = np.asarray(pos)
    if pos.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {pos.dtype}")
    if pos.ndim != 1 or pos.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},) (one score per query row), "
                         f"got {pos.shape}")
    return pos.astype(np.float64, copy=False)


def check_param(x, name: str, *, nonneg: bool = False) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if nonneg and x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def check_n(n, name: str = "n") -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def check_kernel(kernel: str) -> int:
    try:
        return _KERNELS[kernel]
    except (KeyError, TypeError):
        raise ValueError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}") from None


def check_fallback(fallback: str) -> str:
    if fallback not in _FALLBACKS:
        raise ValueError(f"fallback must be one of {list(_FALLBACKS)}, got {fallback!r}")
    return fallback


def check_row_keys(row_keys, n_rows: int) -> np.ndarray:
    """Row keys as uint64 (int64 keys are taken modulo 2**64); default: the row index."""
    if row_keys is None:
        return np.arange(n_rows, dtype=np.uint64)
    keys = np.asarray(row_keys)
    if keys.dtype.kind not in "iu":
        raise ValueError(f"row_keys must be integers (global query keys), got dtype {keys.dtype}")
    if keys.shape != (n_rows,):
        raise ValueError(f"row_keys must have shape ({n_rows},), got {keys.shape}")
    if keys.dtype.kind == "i":
        return keys.astype(np.int64, copy=False).view(np.uint64)
    return keys.astype(np.uint64, copy=False)


def check_rows(rows, n_rows: int) -> np.ndarray:
    if rows is None:
        return np.arange(n_rows, dtype=np.int64)
    r = np.asarray(rows)
    if r.ndim == 0:
        r = r.reshape(1)
    if r.dtype.kind not in "iu" and not (r.size == 0):
        raise ValueError(f"rows must be integer row indices, got dtype {r.dtype}")
    r = r.astype(np.int64, copy=False).ravel()
    if r.size and (r.min() < -n_rows or r.max() >= n_rows):
        raise ValueError(f"rows must index rows 0..{n_rows - 1}, got values in "
                         f"[{r.min()}, {r.max()}]")
    return np.where(r < 0, r + n_rows, r)


def _as_2d_scores(scores, name="candidate_scores"):
    return check_float_matrix(scores, name, ndim=2)


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def ambiguity_log_weights(scores, positive_scores, *, a: float = 0.5, b: float = 0.0,
                          kernel: str = "gaussian", missing_positive: str = "raise",
                          candidate_ids=None, parallel: bool = True) -> np.ndarray:
    """SimANS log-weights of every candidate, in float32.

    ``gaussian``: ``-a * (s - s_pos - b)**2``; ``laplace``: ``-a * |s - s_pos - b|``. This is the
    paper's sign for ``b``; the paper's released code computes ``exp(-a * (s - s_pos + b)**2)``,
    i.e. pass ``b=-1.0`` here to reproduce its ``b = 1.0``. Computed in float64 and stored as
    float32 log-weights, so nothing underflows however large the scores are.

    Parameters
    ----------
    scores : array of shape (n_q, k), float32 or float64
        Candidate scores; NaN or -inf marks an invalid (padding) candidate. Any memory order,
        read-only arrays and memory maps are used without a copy.
    positive_scores : array of shape (n_q,)
        Score of each query's positive.
    a : float, default 0.5
        Sharpness (>= 0). ``a = 0`` gives uniform weights over the valid candidates.
    b : float, default 0.0
        Shift of the peak relative to the positive's score.
    kernel : {"gaussian", "laplace"}
        ``laplace`` with ``a = 3`` is the kernel of the paper's MS MARCO passage run.
    missing_positive : {"raise", "uniform"}
        What a non-finite positive score (positive unknown) means: an error, or uniform
        log-weights (0) over the row's valid candidates.
    candidate_ids : array of shape (n_q, k), optional
        When given, columns whose id is negative (-1 padding) are invalid too.
    parallel : bool, default True
        Use the multi-threaded kernel (set False inside forked worker processes).

    Returns
    -------
    ndarray of shape (n_q, k), float32
        Log-weights, ``-inf`` where a candidate is invalid.
    """
    scores = _as_2d_scores(scores, "scores")
    n_q, k = scores.shape
    pos = check_positive_scores(positive_scores, n_q)
    a = check_param(a, "a", nonneg=True)
    b = check_param(b, "b")
    kcode = check_kernel(kernel)
    if missing_positive not in ("raise", "uniform"):
        raise ValueError(f"missing_positive must be 'raise' or 'uniform', got {missing_positive!r}")
    bad = ~np.isfinite(pos)
    if missing_positive == "raise" and bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"positive_scores has {int(bad.sum())} non-finite value(s) (first at row "
                         f"{first}); pass missing_positive='uniform' or fix the scores")
    if candidate_ids is not None:
        ids = check_ids(candidate_ids, "candidate_ids", (n_q, k))
        has_ids = True
    else:
        ids = np.zeros((1, k), np.int64)
        has_ids = False
    out = np.empty((n_q, k), np.float32)
    nvalid = np.empty(n_q, np.int32)
    if n_q == 0:
        return out
    fn = _k.logw_par if parallel else _k.logw_ser
    fn(scores, pos, a, b, kcode, ids, has_ids, _k.MISSING_UNIFORM, out, nvalid, _CHUNK)
    return out


@dataclass(frozen=True)
class AliasTables:
    """Per-row Walker/Vose alias tables, built once and reused every epoch.

    The alias and keep-probability of a column are stored side by side in ``packed``
    ((n_q, k, 2) int32: alias, then the float32 bits of the probability), so one draw reads one
    cache line; ``prob`` and ``alias`` are strided views into it.

    Attributes
    ----------
    packed : ndarray (n_q, k, 2) int32
    n_valid : ndarray (n_q,) int32
        Number of valid (finite log-weight) candidates per row.
    logw : ndarray (n_q, k) float32
        The log-weights the tables were built from (kept by reference, not copied): the exact
        finish of peaked rows recomputes weights from them.
    peak : ndarray (n_q,) float32
        Share of each row's mass held by its largest candidate (rows above 0.3 skip the
        rejection phase and are drawn by the exact finish directly).
    prob : ndarray (n_q, k) float32 (view)
        Probability of keeping the column drawn (else take ``alias``).
    alias : ndarray (n_q, k) int32 (view)
    """

    packed: np.ndarray
    n_valid: np.ndarray
    logw: np.ndarray
    peak: np.ndarray

    @property
    def prob(self) -> np.ndarray:
        return self.packed.view(np.float32)[:, :, 1]

    @property
    def alias(self) -> np.ndarray:
        return self.packed[:, :, 0]

    @property
    def shape(self):
        return self.packed.shape[:2]

    @classmethod
    def from_arrays(cls, prob, alias, n_valid, logw) -> "AliasTables":
        """Tables from separate ``prob`` (float32) and ``alias`` (int32) arrays."""
        prob = np.asarray(prob, np.float32)
        alias = np.asarray(alias, np.int32)
        logw = np.asarray(logw, np.float32)
        packed = np.empty(prob.shape + (2,), np.int32)
        packed[:, :, 0] = alias
        packed.view(np.float32)[:, :, 1] = prob
        with np.errstate(invalid="ignore", over="ignore"):
            m = np.max(logw, axis=1, keepdims=True) if logw.size else logw[:, :1]
            w = np.exp(logw.astype(np.float64) - np.where(np.isfinite(m), m, 0.0))
            tot = w.sum(axis=1)
        peak = np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)
        return cls(packed, np.asarray(n_valid, np.int32), logw, peak)

    def weights(self) -> np.ndarray:
        """Normalised weights the tables encode, (n_q, k) float64 (for checks and debugging)."""
        return _k.reconstruct_weights(np.ascontiguousarray(self.packed))


def build_alias(logw, *, parallel: bool = True) -> AliasTables:
    """Build Walker/Vose alias tables from log-weights.

    Parameters
    ----------
    logw : array of shape (n_q, k)
        Log-weights (float32 or float64; float64 is rounded to float32), ``-inf`` for invalid
        candidates. Rows are shifted by their maximum before exponentiation, so any scale works.
    parallel : bool, default True
        Use the multi-threaded kernel.

    Returns
    -------
    AliasTables
    """
    logw = check_float_matrix(logw, "logw", ndim=2)
    if logw.dtype != np.float32:
        logw = logw.astype(np.float32)
    if _has_nan_chunked(logw):
        raise ValueError("logw contains NaN; use -inf to mark invalid candidates")
    if logw.size and np.max(logw) == np.inf:
        raise ValueError("logw contains +inf; log-weights must be finite or -inf")
    n_q, k = logw.shape
    packed = np.empty((n_q, k, 2), np.int32)
    nvalid = np.zeros(n_q, np.int32)
    peak = np.zeros(n_q, np.float32)
    if n_q and k:
        (_k.build_par if parallel else _k.build_ser)(logw, packed, nvalid, peak, _CHUNK)
    return AliasTables(packed, nvalid, logw, peak)


def _has_nan_chunked(x, step=1 << 16):
    for i in range(0, x.shape[0], step):
        if np.isnan(x[i:i + step]).any():
            return True
    return False


def sample(tables, n: int, *, replace: bool = False, seed: int = 0, epoch: int = 0, rows=None,
           row_keys=None, max_reject: int | None = None, parallel: bool = True) -> np.ndarray:
    """Draw ``n`` columns per row, exactly, from alias tables (or from log-weights).

    Without replacement this is successive sampling: the ordered sample has exactly the
    distribution of ``numpy.random.Generator.choice(k, n, replace=False, p=w / w.sum())``.
    Every draw is a pure function of ``(seed, epoch, row key, draw index)``, so results are
    identical for any thread count, process, or subset and order of ``rows``.

    Parameters
    ----------
    tables : AliasTables or array of shape (n_q, k)
        Tables from :func:`build_alias`, or log-weights (then ``build_alias`` is called first).
    n : int
        Draws per row.
    replace : bool, default False
        ``True`` draws independently from the alias tables.
    seed, epoch : int
        Non-negative integers (taken modulo 2**64) keying the counter-based generator.
    rows : array of int, optional
        Rows to draw for (default: all), in the order wanted.
    row_keys : array of shape (n_q,), optional
        Global key of every table row (default: the row index). A process that holds a shard of
        the queries passes their global keys to reproduce the single-process draws.
    max_reject : int, optional
        Duplicates tolerated per row before the exact finish (tuning only; results stay exact).
    parallel : bool, default True
        Use the multi-threaded kernel (set False inside forked worker processes).

    Returns
    -------
    ndarray of shape (len(rows), n), int64
        Column indices into each candidate row; ``-1`` pads rows with fewer than ``n`` valid
        candidates (without replacement) or with none (with replacement).
    """
    if not isinstance(tables, AliasTables):
        tables = build_alias(tables, parallel=parallel)
    n = check_n(n)
    n_q, k = tables.shape
    rows = check_rows(rows, n_q)
    keys = check_row_keys(row_keys, n_q)[rows]
    mr = default_max_reject(n) if max_reject is None else check_n(max_reject, "max_reject")
    return sample_table_rows(tables, n, rows, keys, bool(replace), to_u64(seed, "seed"),
                             to_u64(epoch, "epoch"), mr, parallel)


def sample_table_rows(tables: AliasTables, n, table_rows, keys, replace, seed_u, epoch_u,
                      max_reject, parallel) -> np.ndarray:
    """Kernel call without validation: output row r draws from ``table_rows[r]`` with ``keys[r]``."""
    out = np.empty((table_rows.shape[0], n), np.int64)
    if table_rows.shape[0] == 0:
        return out
    if tables.packed.shape[1] == 0:
        out[:] = -1
        return out
    fn = _k.sample_par if parallel else _k.sample_ser
    fn(tables.packed, tables.n_valid, tables.peak, tables.logw,
       np.ascontiguousarray(table_rows, np.int64), np.ascontiguousarray(keys, np.uint64), n,
       seed_u, epoch_u, replace, max_reject, out, _CHUNK)
    return out


def simans_negatives(candidate_ids, candidate_scores, positive_scores, n: int, *, a: float = 0.5,
                     b: float = 0.0, kernel: str = "gaussian", seed: int = 0, epoch: int = 0,
                     fallback: str = "lowest", replace: bool = False, row_keys=None,
                     max_reject: int | None = None, parallel: bool = True) -> np.ndarray:
    """SimANS negatives in one pass: weights, tables and draws fused per row.

    Nothing of size ``n_q × k`` is allocated besides the output. Draws use the inverse CDF of
    each row (no table is kept), so for the same seed the ids differ from
    ``SimANSSampler(...).sample(epoch)``, which draws from alias tables; both are exact
    successive sampling from the same distribution and both are pure functions of
    ``(seed, epoch, row key)``. Use :class:`SimANSSampler` when you re-draw every epoch.

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Document ids of the retrieved candidates (positives removed), ``-1`` for padding.
    candidate_scores : float array of shape (n_q, k)
        Their scores (float32 or float64; NaN or -inf also marks padding).
    positive_scores : array of shape (n_q,), or (n_q, m) NaN-padded
        Score of each query's positive. NaN means the positive's score is unknown (not
        retrieved). With several positives per query, one is chosen per query and epoch (see
        :class:`simans_fast.SimANSSampler`).
    n : int
        Negatives per query.
    a, b, kernel
        See :func:`ambiguity_log_weights`.
    seed, epoch : int
        Key the counter-based generator.
    fallback : {"lowest", "uniform", "raise"}
        Rows whose positive score is unknown: the ``n`` lowest-ranked valid candidates (the last
        valid columns, as the paper's code), uniform draws over the valid candidates, or an error.
    replace : bool, default False
    row_keys : array of shape (n_q,), optional
        Global query keys (see :func:`sample`).
    parallel : bool, default True

    Returns
    -------
    ndarray of shape (n_q, n), int64
        Document ids in draw order, ``-1`` padded.
    """
    scores = _as_2d_scores(candidate_scores)
    n_q, k = scores.shape
    pos_arr = np.asarray(positive_scores)
    if pos_arr.ndim == 2:
        from .sampler import SimANSSampler

        return SimANSSampler(candidate_ids, scores, pos_arr, n=n, a=a, b=b, kernel=kernel,
                             seed=seed, fallback=fallback, row_keys=row_keys,
                             parallel=parallel).sample(epoch=epoch, replace=replace)
    ids = check_ids(candidate_ids, "candidate_ids", (n_q, k))
    pos = check_positive_scores(pos_arr, n_q)
    n = check_n(n)
    a = check_param(a, "a", nonneg=True)
    b = check_param(b, "b")
    kcode = check_kernel(kernel)
    fallback = check_fallback(fallback)
    keys = check_row_keys(row_keys, n_q)
    seed_u = to_u64(seed, "seed")
    epoch_u = to_u64(epoch, "epoch")
    if fallback == "raise":
        bad = ~np.isfinite(pos)
        if bad.any():
            raise ValueError(f"positive_scores has {int(bad.sum())} unknown (non-finite) value(s), "
                             f"first at row {int(np.flatnonzero(bad)[0])}, and fallback='raise'")
    mr = default_max_reject(n) if max_reject is None else check_n(max_reject, "max_reject")
    out = np.empty((n_q, n), np.int64)
    if n_q == 0:
        return out
    if k == 0:
        out[:] = -1
        return out
    fn = _k.fused_par if parallel else _k.fused_ser
    fn(ids, scores, pos, a, b, kcode, _k.MISSING_UNIFORM, fallback == "lowest", keys, n, seed_u,
       epoch_u, bool(replace), mr, out, _CHUNK)
    return out

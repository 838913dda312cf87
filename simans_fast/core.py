"""Public sampling API: SimANS ambiguity weights, alias tables, exact sampling.

All functions validate their input, pick a kernel (parallel or serial) and return NumPy arrays
or small dataclasses. Nothing here imports torch or faiss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _config
from ._validate import (  # noqa: F401  (check_float_matrix, check_ids: re-exported here)
    ParameterError,
    check_epoch,
    check_float_matrix,
    check_ids,
    check_int,
    check_real,
    check_seed,
    check_choice,
    renamed_kwargs,
    validate,
)
from .kernels import sampling as _k
from .rng import epoch_u64, seed_u64, to_u64  # noqa: F401

__all__ = [
    "AliasTables",
    "ambiguity_log_weights",
    "build_alias",
    "check_alias_arrays",
    "check_candidate_values",
    "check_candidates",
    "check_positive_scores",
    "sample",
    "simans_negatives",
]

_KERNELS = dict(zip(_config.KERNELS, (_k.GAUSSIAN, _k.LAPLACE)))
_FALLBACKS = _config.FALLBACKS
_CHUNK = _config.CHUNK  # rows per scratch-buffer chunk (one thread owns one chunk at a time)


def default_max_reject(n: int) -> int:
    """Duplicates tolerated per row before the exact sum-tree finish takes over."""
    return 4 + int(n) // 2


# ------------------------------------------------------------------------------------------
# validation helpers (shared with sampler.py and the adapters)
# ------------------------------------------------------------------------------------------
# check_float_matrix and check_ids live in simans_fast._validate (imported above).


#: problem codes of :func:`candidate_error` (the kernels' codes)
CAND_ID_BELOW = int(_k.CAND_ID_BELOW)
CAND_SCORE_POSINF = -1


def candidate_error(code, row, col, id_value, ids_name="candidate_ids",
                    scores_name="candidate_scores") -> ParameterError:
    """The error for a rejected candidate (``id_value`` None when there are no ids):
    ``code == CAND_ID_BELOW`` an id below -1, anything else a ``+inf`` score. Shared by every
    backend that checks candidates (the torch path too), so the message is one."""
    if code == _k.CAND_ID_BELOW:
        return ParameterError(ids_name, f"{ids_name} must hold document ids >= 0, or -1 for "
                                        f"padding; found {id_value} at index ({row}, {col})")
    what = f" (id {id_value})" if id_value is not None else ""
    return ParameterError(scores_name, f"{scores_name} is +inf at index ({row}, {col}){what}: "
                                       f"a candidate's score must be finite (NaN or -inf marks "
                                       f"padding, as does id -1)")


_candidate_error = candidate_error  # old private name


def check_candidate_values(ids, scores, *, ids_name: str = "candidate_ids",
                           scores_name: str = "candidate_scores", parallel: bool = True) -> None:
    """Reject the values no sampler can take, naming the parameter, row and column.

    Rules (the same for every function of the package that takes candidates):

    * a candidate is **padding** when its id is ``-1`` (whatever its score) or its score is NaN
      or ``-inf`` (whatever its id); padding is never drawn;
    * an id below ``-1`` is an error (``ids_name``);
    * a score of ``+inf`` on a candidate that is not padding is an error (``scores_name``): it
      has no log-weight. Huge finite scores are valid (their log-weight is clamped to float32's
      range).

    ``ids`` may be ``None`` (scores only: then every ``+inf`` is an error). ``ids`` must already
    be int64 and ``scores`` float32/float64 of the same shape (:func:`check_ids`,
    :func:`check_float_matrix`). One multi-threaded pass, no temporary arrays.
    """
    n_q = scores.shape[0]
    if n_q == 0 or scores.shape[1] == 0:
        return
    has_ids = ids is not None
    kid = ids if has_ids else np.zeros((1, 1), np.int64)
    n_chunks = (n_q + _CHUNK - 1) // _CHUNK
    found = np.zeros((n_chunks, 3), np.int64)
    (_k.candidate_errors_par if parallel else _k.candidate_errors_ser)(kid, scores, has_ids,
                                                                         _CHUNK, found)
    hit = np.flatnonzero(found[:, 0])
    if hit.size:
        code, row, col = (int(x) for x in found[hit[0]])
        raise _candidate_error(code, row, col, int(ids[row, col]) if has_ids else None,
                               ids_name, scores_name)


def check_candidates(candidate_ids, candidate_scores, *, ids_name: str = "candidate_ids",
                     scores_name: str = "candidate_scores", parallel: bool = True):
    """Validate a pair of candidate matrices: dtypes, shapes and values.

    Returns ``(ids, scores)``: ids as int64 (n_q, k), scores float32/float64 (n_q, k) (float16 is
    computed in float32). See :func:`check_candidate_values` for the value rules.
    """
    scores = check_float_matrix(candidate_scores, scores_name)
    ids = check_ids(candidate_ids, ids_name, scores.shape)
    check_candidate_values(ids, scores, ids_name=ids_name, scores_name=scores_name,
                           parallel=parallel)
    return ids, scores


def _raise_bad_row(flagged, ids, scores, ids_name, scores_name, row_map=None):
    """A kernel flagged rows (``logw_row`` returned ``BAD_ROW``): find the first entry, raise.

    ``row_map`` maps a flagged row to the row the user knows (table pair -> query)."""
    r = int(np.flatnonzero(flagged)[0])
    has_ids = ids is not None
    kid = ids[r:r + 1] if has_ids else np.zeros((1, 1), np.int64)
    found = np.zeros((1, 3), np.int64)
    _k.candidate_errors_ser(kid, scores[r:r + 1], has_ids, _CHUNK, found)
    code, _, col = (int(x) for x in found[0])
    row = r if row_map is None else int(row_map[r])
    raise _candidate_error(code, row, col, int(ids[r, col]) if has_ids else None, ids_name,
                           scores_name)


def check_positive_scores(pos, n_rows: int, name: str = "positive_scores", *,
                          matrix: bool = False) -> np.ndarray:
    """Positive scores as float64: shape ``(n_rows,)``, or with ``matrix`` also ``(n_rows, m)``.

    NaN means "positive unknown" (the caller's fallback applies; in a matrix it also pads the
    rows with fewer than ``m`` positives). ``+inf`` and ``-inf`` are errors: no candidate can be
    "close to" an infinite score.
    """
    pos = np.asarray(pos)
    if pos.dtype.kind not in "fiu":
        raise ParameterError(name, f"{name} must be numeric, got dtype {pos.dtype}")
    ok = (pos.ndim == 1 and pos.shape[0] == n_rows) or (
        matrix and pos.ndim == 2 and pos.shape[0] == n_rows)
    if not ok:
        if matrix:
            raise ParameterError(name,
                                 f"{name} must have shape ({n_rows},) (one score per query row) or "
                                 f"({n_rows}, m) (several positives, NaN-padded), got {pos.shape}")
        raise ParameterError(name, f"{name} must have shape ({n_rows},) (one score per query row), "
                                   f"got {pos.shape}")
    pos = pos.astype(np.float64, copy=False)
    inf = np.isinf(pos)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise ParameterError(name,
                             f"{name} is {pos[where]} at index {where} ({int(inf.sum())} infinite "
                             f"value(s)): a positive's score must be finite, or NaN when unknown")
    return pos


def check_param(x, name: str, *, nonneg: bool = False) -> float:
    """A finite real number (``>= 0`` with ``nonneg``); see :func:`simans_fast._validate.check_real`."""
    return check_real(x, name, min=0 if nonneg else None)


def check_n(n, name: str = "n") -> int:
    """A positive integer (the ``"n"`` rule of :data:`simans_fast._validate.CONSTRAINTS`)."""
    return validate("n", n, parameter=name)


def check_kernel(kernel: str) -> int:
    """The kernel code of ``kernel`` (one of :data:`simans_fast._config.KERNELS`)."""
    return _KERNELS[validate("kernel", kernel)]


def check_fallback(fallback: str) -> str:
    return validate("fallback", fallback)


def check_row_keys(row_keys, n_rows: int) -> np.ndarray:
    """Row keys as uint64 (int64 keys are taken modulo 2**64); default: the row index."""
    if row_keys is None:
        return np.arange(n_rows, dtype=np.uint64)
    keys = np.asarray(row_keys)
    if keys.dtype.kind not in "iu":
        raise ParameterError("row_keys",
                             f"row_keys must be integers (global query keys), got dtype {keys.dtype}")
    if keys.shape != (n_rows,):
        raise ParameterError("row_keys", f"row_keys must have shape ({n_rows},), got {keys.shape}")
    if keys.dtype.kind == "i":
        return keys.astype(np.int64, copy=False).view(np.uint64)
    return keys.astype(np.uint64, copy=False)


_INT64 = np.dtype(np.int64)


def check_rows(rows, n_rows: int) -> np.ndarray:
    """Row indices (a scalar or a 1-D integer array; negative ones count from the end) as int64;
    ``None``: every row.

    A batch that already is a non-empty C-contiguous 1-D int64 ndarray of rows in
    ``0..n_rows-1`` is returned as it is (one bounds pass in a kernel, no copy; the callers only
    read it); anything else is converted, or refused, below."""
    if rows is None:
        return np.arange(n_rows, dtype=np.int64)
    if (type(rows) is np.ndarray and rows.dtype == _INT64 and rows.ndim == 1 and rows.shape[0]
            and rows.flags.c_contiguous):
        lo, hi = _k.row_range(rows)
        if lo >= 0 and hi < n_rows:
            return rows
    r = np.asarray(rows)
    if r.ndim == 0:
        r = r.reshape(1)
    if r.ndim != 1:
        raise ParameterError("rows",
                             f"rows must be a 1-D array of row indices, got shape {r.shape}")
    if r.size == 0:
        return np.empty(0, np.int64)
    if r.dtype.kind not in "iu":
        raise ParameterError("rows", f"rows must be integer row indices, got dtype {r.dtype}")
    lo, hi = int(r.min()), int(r.max())
    if lo < -n_rows or hi >= n_rows:
        raise ParameterError("rows",
                             f"rows must index rows 0..{n_rows - 1} (or -{n_rows}..-1), got values "
                             f"in [{lo}, {hi}]")
    r = r.astype(np.int64, copy=False)
    return np.where(r < 0, r + n_rows, r)


_POSITIVE_CHOICES = _config.POSITIVE_CHOICES


def check_positive_choice(positive_choice: str) -> str:
    return validate("positive_choice", positive_choice)


def positive_uniforms(seed_u, epoch_u, keys_u) -> np.ndarray:
    """The uniform that picks the positive of each query key at ``epoch`` (float64)."""
    out = np.empty(keys_u.shape[0], np.float64)
    _k.positive_uniforms(seed_u, epoch_u, np.ascontiguousarray(keys_u, np.uint64), out)
    return out


def choose_positive(positive_scores, positive_choice, seed_u, epoch_u, keys_u) -> np.ndarray:
    """Column of the positive used for every row of a NaN-padded ``(n_q, m)`` matrix, -1 if the
    row has no known (finite) positive.

    ``"random"``: the ``c``-th known positive (in column order) with
    ``c = floor(u * count)``, ``u`` the row's uniform from :func:`positive_uniforms`;
    ``"highest"`` / ``"lowest"``: by score, the first column on ties. This is the choice
    :meth:`SimANSSampler.positive_index` reports.
    """
    n_q, m = positive_scores.shape
    col = np.full(n_q, -1, np.int64)
    if m == 0 or n_q == 0:
        return col
    known = ~np.isnan(positive_scores)
    count = known.sum(axis=1)
    if positive_choice == "random":
        c = np.zeros(n_q, np.int64)
        multi = count > 1
        if multi.any():
            u = positive_uniforms(seed_u, epoch_u, keys_u[multi])
            c[multi] = np.minimum((u * count[multi]).astype(np.int64), count[multi] - 1)
        order = np.argsort(~known, axis=1, kind="stable")
        col = order[np.arange(n_q), c].astype(np.int64)
    else:
        fill = -np.inf if positive_choice == "highest" else np.inf
        filled = np.where(known, positive_scores, fill)
        col = (np.argmax(filled, axis=1) if positive_choice == "highest"
               else np.argmin(filled, axis=1)).astype(np.int64)
    col[count == 0] = -1
    return col


def _as_2d_scores(scores, name="candidate_scores"):
    return check_float_matrix(scores, name, ndim=2)


def _log_weights(scores, pos, a, b, kcode, ids, parallel, *, scores_name, ids_name,
                 row_map=None):
    """Log-weights (float32) and valid counts; raises for rows the kernel rejects."""
    n_q, k = scores.shape
    out = np.empty((n_q, k), np.float32)
    nvalid = np.empty(n_q, np.int32)
    if n_q == 0:
        return out, nvalid
    has_ids = ids is not None
    kid = ids if has_ids else np.zeros((1, k), np.int64)
    fn = _k.logw_par if parallel else _k.logw_ser
    fn(scores, pos, a, b, kcode, kid, has_ids, _k.MISSING_UNIFORM, out, nvalid, _CHUNK)
    if nvalid.min() < 0:
        _raise_bad_row(nvalid < 0, ids, scores, ids_name, scores_name, row_map)
    return out, nvalid


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
@renamed_kwargs(missing_positive="fallback")
def ambiguity_log_weights(scores, positive_scores, *, a: float = 0.5, b: float = 0.0,
                          kernel: str = "gaussian", fallback: str = "raise",
                          candidate_ids=None, parallel: bool = True) -> np.ndarray:
    """SimANS log-weights of every candidate, in float32.

    ``gaussian``: ``-a * (s - s_pos - b)**2``; ``laplace``: ``-a * |s - s_pos - b|``. This is the
    paper's sign for ``b``; the paper's released code computes ``exp(-a * (s - s_pos + b)**2)``,
    i.e. pass ``b=-1.0`` here to reproduce its ``b = 1.0``. Computed in float64 and stored as
    float32 log-weights, so nothing underflows however large the scores are.

    Parameters
    ----------
    scores : array of shape (n_q, k), float32 or float64
        Candidate scores; NaN or -inf marks an invalid (padding) candidate. ``+inf`` is an error
        (``ValueError`` naming ``scores``) unless ``candidate_ids`` marks that candidate as
        padding (-1). Huge finite scores are valid (log-weight clamped to float32's range).
        Any memory order, read-only arrays and memory maps are used without a copy.
    positive_scores : array of shape (n_q,)
        Score of each query's positive. NaN means unknown (see ``fallback``);
        ``+inf`` / ``-inf`` are errors (``ValueError`` naming ``positive_scores``).
    a : float, default 0.5
        Sharpness (>= 0). ``a = 0`` gives uniform weights over the valid candidates.
    b : float, default 0.0
        Shift of the peak relative to the positive's score.
    kernel : {"gaussian", "laplace"}
        ``laplace`` with ``a = 3`` is the kernel of the paper's MS MARCO passage run.
    fallback : {"raise", "uniform"}
        What a NaN positive score (positive unknown) means: an error, or uniform log-weights
        (0) over the row's valid candidates. (``"lowest"`` is a sampling rule, not a weight:
        it is refused here.) Old name ``missing_positive`` (deprecated, one release).
    candidate_ids : array of shape (n_q, k), optional
        When given, columns whose id is -1 (padding) are invalid too; ids below -1 are an error.
    parallel : bool, default True
        Use the multi-threaded kernel (set False inside forked worker processes).

    Returns
    -------
    ndarray of shape (n_q, k), float32
        Log-weights, ``-inf`` where a candidate is invalid. ``n_q = 0`` or ``k = 0`` give an
        empty array of that shape.
    """
    scores = _as_2d_scores(scores, "scores")
    n_q, k = scores.shape
    pos = check_positive_scores(positive_scores, n_q)
    a = check_param(a, "a", nonneg=True)
    b = check_param(b, "b")
    kcode = check_kernel(kernel)
    fallback = check_choice(fallback, "fallback", ("raise", "uniform"))
    bad = np.isnan(pos)
    if fallback == "raise" and bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ParameterError("positive_scores",
                             f"positive_scores has {int(bad.sum())} unknown (NaN) value(s) "
                             f"(first at row {first}); pass fallback='uniform' or fix the scores")
    ids = None
    if candidate_ids is not None:
        ids = check_ids(candidate_ids, "candidate_ids", (n_q, k))
    out, _ = _log_weights(scores, pos, a, b, kcode, ids, parallel, scores_name="scores",
                          ids_name="candidate_ids")
    return out


_TABLE_NAMES = {"packed": "packed", "n_valid": "n_valid", "logw": "logw", "peak": "peak"}
_TABLE_PROBLEMS = {
    _k.TAB_LOGW_NAN: ("logw", "is NaN (use -inf for an invalid candidate)"),
    _k.TAB_LOGW_POSINF: ("logw", "is +inf (log-weights must be finite or -inf)"),
    _k.TAB_NVALID: ("n_valid", "differs from the number of finite log-weights of the row"),
    _k.TAB_PEAK: ("peak", "is outside [0, 1]"),
    _k.TAB_ALIAS_RANGE: ("packed", "holds an alias outside 0..k-1"),
    _k.TAB_PROB: ("packed", "holds a keep-probability outside [0, 1]"),
    _k.TAB_INVALID_DRAWN: ("packed", "would draw an invalid (-inf log-weight) column"),
}


def check_alias_arrays(packed, n_valid, logw, peak, *, names=None, parallel: bool = True):
    """Check that alias-table arrays are safe to draw from: dtypes, shapes, memory order, and
    every value a draw relies on (aliases in range, probabilities in [0, 1], no invalid column
    drawable, ``n_valid`` and ``peak`` consistent with ``logw``). Raises ``ValueError`` naming
    the array (``names`` maps ``packed``/``n_valid``/``logw``/``peak`` to the names to use,
    e.g. file names). One multi-threaded pass over the tables."""
    nm = dict(_TABLE_NAMES, **(names or {}))
    want = {"packed": (packed, np.int32, 3), "n_valid": (n_valid, np.int32, 1),
            "logw": (logw, np.float32, 2), "peak": (peak, np.float32, 1)}
    for key, (arr, dt, nd) in want.items():
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{nm[key]} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != dt:
            raise ValueError(f"{nm[key]} must have dtype {np.dtype(dt)}, got {arr.dtype}")
        if arr.ndim != nd:
            raise ValueError(f"{nm[key]} must be {nd}-dimensional, got shape {arr.shape}")
    n_q, k = logw.shape
    for key, arr, shp in (("packed", packed, (n_q, k, 2)), ("n_valid", n_valid, (n_q,)),
                          ("peak", peak, (n_q,))):
        if arr.shape != shp:
            raise ValueError(f"{nm[key]} must have shape {shp} (from logw's {logw.shape}), got "
                             f"{arr.shape}")
    if not packed.flags.c_contiguous:
        raise ValueError(f"{nm['packed']} must be C-contiguous")
    if n_q == 0:
        return
    n_chunks = (n_q + _CHUNK - 1) // _CHUNK
    found = np.zeros((n_chunks, 3), np.int64)
    (_k.check_tables_par if parallel else _k.check_tables_ser)(packed, n_valid, peak, logw,
                                                                 _CHUNK, found)
    hit = np.flatnonzero(found[:, 0])
    if hit.size:
        code, row, col = (int(x) for x in found[hit[0]])
        key, what = _TABLE_PROBLEMS[code]
        at = f"row {row}" + (f", column {col}" if col >= 0 else "")
        raise ValueError(f"{nm[key]} at {at} {what}: these are not valid alias tables")


@dataclass(frozen=True)
class AliasTables:
    """Per-row Walker/Vose alias tables, built once and reused every epoch.

    The alias and keep-probability of a column are stored side by side in ``packed``
    ((n_q, k, 2) int32: alias, then the float32 bits of the probability), so one draw reads one
    cache line; ``prob`` and ``alias`` are strided views into it.

    Tables from :func:`build_alias` are valid by construction. Constructing ``AliasTables``
    directly (or through :meth:`from_arrays`) checks every array first
    (:func:`check_alias_arrays`): tables that could make a draw read out of bounds or return an
    invalid column are a ``ValueError``, never a crash.

    Attributes
    ----------
    packed : ndarray (n_q, k, 2) int32, C-contiguous
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

    def __post_init__(self):
        check_alias_arrays(self.packed, self.n_valid, self.logw, self.peak)

    @classmethod
    def _unchecked(cls, packed, n_valid, logw, peak) -> "AliasTables":
        """Tables this package built or has already checked (no second pass)."""
        obj = object.__new__(cls)
        for name, value in (("packed", packed), ("n_valid", n_valid), ("logw", logw),
                            ("peak", peak)):
            object.__setattr__(obj, name, value)
        return obj

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
        """Tables from separate ``prob`` (float32) and ``alias`` (int32) arrays (checked)."""
        logw = check_float_matrix(logw, "logw")
        shape = logw.shape
        prob = check_float_matrix(prob, "prob")
        alias = np.asarray(alias)
        n_valid = np.asarray(n_valid)
        if alias.dtype.kind not in "iu":
            raise ValueError(f"alias must be an integer array, got dtype {alias.dtype}")
        if n_valid.dtype.kind not in "iu":
            raise ValueError(f"n_valid must be an integer array, got dtype {n_valid.dtype}")
        for name, arr, shp in (("prob", prob, shape), ("alias", alias, shape),
                               ("n_valid", n_valid, shape[:1])):
            if arr.shape != shp:
                raise ValueError(f"{name} must have shape {shp} (from logw's {shape}), got "
                                 f"{arr.shape}")
        for name, arr in (("alias", alias), ("n_valid", n_valid)):
            if arr.size and (arr.min() < 0 or arr.max() > max(shape[1], 0)):
                raise ValueError(f"{name} holds values outside 0..{shape[1]}")
        prob = np.asarray(prob, np.float32)
        logw = np.asarray(logw, np.float32)
        packed = np.empty(prob.shape + (2,), np.int32)
        packed[:, :, 0] = alias
        packed.view(np.float32)[:, :, 1] = prob
        with np.errstate(invalid="ignore", over="ignore"):
            m = np.max(logw, axis=1, keepdims=True) if logw.size else logw[:, :1]
            w = np.exp(logw.astype(np.float64) - np.where(np.isfinite(m), m, 0.0))
            tot = w.sum(axis=1)
        peak = np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)
        return cls(packed, n_valid.astype(np.int32), logw, peak)

    def weights(self) -> np.ndarray:
        """Normalised weights the tables encode, (n_q, k) float64 (for checks and debugging)."""
        return _k.reconstruct_weights(np.ascontiguousarray(self.packed))


def build_alias(logw, *, parallel: bool = True) -> AliasTables:
    """Build Walker/Vose alias tables from log-weights.

    Parameters
    ----------
    logw : array of shape (n_q, k)
        Log-weights (float32 or float64; float64 is rounded to float32), ``-inf`` for invalid
        candidates; NaN and ``+inf`` are errors. Rows are shifted by their maximum before
        exponentiation, so any scale works. ``n_q = 0`` or ``k = 0`` give empty tables (every
        draw from them is -1).
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
    return AliasTables._unchecked(packed, nvalid, logw, peak)


def weights_and_tables(scores, qrow, pos, a, b, kcode, ids, parallel, *, scores_name,
                        ids_name) -> AliasTables:
    """Log-weights and alias tables in one kernel pass, for table rows taking the candidates of
    queries ``qrow`` (int64) and positive scores ``pos`` (float64, one per table row); NaN
    positives get uniform weights. The same arrays as :func:`_log_weights` on
    ``scores[qrow]`` then :func:`build_alias`, without the gathered copies and the second pass;
    raises like :func:`_log_weights` (naming the query row) for a rejected candidate."""
    n_t, k = qrow.shape[0], scores.shape[1]
    logw = np.empty((n_t, k), np.float32)
    packed = np.empty((n_t, k, 2), np.int32)
    nvalid = np.zeros(n_t, np.int32)
    peak = np.zeros(n_t, np.float32)
    if n_t and k:
        fn = _k.weights_tables_par if parallel else _k.weights_tables_ser
        fn(scores, np.ascontiguousarray(qrow, np.int64), pos, a, b, kcode, ids,
           _k.MISSING_UNIFORM, logw, packed, nvalid, peak, _CHUNK)
        if nvalid.min() < 0:
            first = qrow[np.flatnonzero(nvalid < 0)[:1]]
            _raise_bad_row(np.ones(1, bool), ids[first], scores[first], ids_name, scores_name,
                           first)
    return AliasTables._unchecked(packed, nvalid, logw, peak)


def _has_nan_chunked(x, step=1 << 16):
    for i in range(0, x.shape[0], step):
        if np.isnan(x[i:i + step]).any():
            return True
    return False


def sample(tables, n: int, *, replace: bool = False, seed: int = 0, epoch: int = 0, rows=None,
           row_keys=None, max_reject: int | None = None, parallel: bool = True) -> np.ndarray:
    """Draw ``n`` **column indices** per row, exactly, from alias tables (or from log-weights).

    This returns positions into each candidate row, not document ids: map them with
    ``candidate_ids[row, col]`` (``SimANSSampler.sample`` returns document ids,
    ``SimANSSampler.sample_columns`` columns).

    Without replacement this is successive sampling: the ordered sample has exactly the
    distribution of ``numpy.random.Generator.choice(k, n, replace=False, p=w / w.sum())``.
    Every draw is a pure function of ``(seed, epoch, row key, draw index)``, so results are
    identical for any thread count, process, or subset and order of ``rows``.

    Parameters
    ----------
    tables : AliasTables or array of shape (n_q, k)
        Tables from :func:`build_alias`, or log-weights (then ``build_alias`` is called first).
    n : int
        Draws per row (>= 1; ``n > k`` is fine: the row is padded).
    replace : bool, default False
        ``True`` draws independently from the alias tables.
    seed, epoch : int
        Integers in 0..2**64-1 keying the counter-based generator (negative ones are refused).
    rows : array of int, optional
        Rows to draw for (default: all), in the order wanted; an empty list gives ``(0, n)``.
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
        candidates (without replacement) or with none (with replacement); all ``-1`` when
        ``k = 0``.
    """
    if not isinstance(tables, AliasTables):
        tables = build_alias(tables, parallel=parallel)
    n = check_n(n)
    n_q, k = tables.shape
    rows = check_rows(rows, n_q)
    keys = check_row_keys(row_keys, n_q)[rows]
    mr = default_max_reject(n) if max_reject is None else check_n(max_reject, "max_reject")
    return sample_table_rows(tables, n, rows, keys, bool(replace), seed_u64(seed),
                             epoch_u64(epoch), mr, parallel)


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
                     max_reject: int | None = None, positive_choice: str = "random",
                     parallel: bool = True) -> np.ndarray:
    """SimANS negatives (document ids) in one pass: weights, cumulative weights, draws fused
    per row.

    Nothing of size ``n_q × k`` is allocated besides the output. Draws use the inverse CDF of
    each row (no table is kept), so for the same seed the ids differ from
    ``SimANSSampler(...).sample(epoch=e)``, which draws from alias tables; both are exact
    successive sampling from the same distribution and both are pure functions of
    ``(seed, epoch, row key)``. Use :class:`SimANSSampler` when you re-draw every epoch.

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Document ids of the retrieved candidates (positives removed), ``-1`` for padding. Ids
        below -1 are an error (``ValueError`` naming ``candidate_ids``).
    candidate_scores : float array of shape (n_q, k)
        Their scores (float32 or float64). NaN or -inf marks padding whatever the id (and id -1
        marks padding whatever the score). ``+inf`` on a candidate that is not padding is an
        error (``ValueError`` naming ``candidate_scores``).
    positive_scores : array of shape (n_q,), or (n_q, m) NaN-padded
        Score of each query's positive. NaN means the positive's score is unknown (not
        retrieved): ``fallback`` applies. ``+inf`` / ``-inf`` are errors (``ValueError`` naming
        ``positive_scores``). With several positives per query one is chosen per query and
        epoch by ``positive_choice``, exactly as :meth:`SimANSSampler.positive_index` reports,
        and the row is then drawn as if that score had been passed in a 1-D vector (same ids).
        A row of NaN, or ``m = 0``, is an unknown positive.
    n : int
        Negatives per query (>= 1; rows with fewer valid candidates are padded with -1).
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
    max_reject : int, optional
        Duplicates tolerated per row before the exact finish (tuning only; results stay exact).
    positive_choice : {"random", "highest", "lowest"}, default "random"
        With several positives: see :class:`SimANSSampler`.
    parallel : bool, default True

    Returns
    -------
    ndarray of shape (n_q, n), int64
        Document ids in draw order, ``-1`` padded (all ``-1`` when ``k = 0``; shape ``(0, n)``
        when ``n_q = 0``).
    """
    scores = _as_2d_scores(candidate_scores)
    n_q, k = scores.shape
    ids = check_ids(candidate_ids, "candidate_ids", (n_q, k))
    pos = check_positive_scores(positive_scores, n_q, matrix=True)
    n = check_n(n)
    a = check_param(a, "a", nonneg=True)
    b = check_param(b, "b")
    kcode = check_kernel(kernel)
    fallback = check_fallback(fallback)
    positive_choice = check_positive_choice(positive_choice)
    keys = check_row_keys(row_keys, n_q)
    seed_u = seed_u64(seed)
    epoch_u = epoch_u64(epoch)
    mr = default_max_reject(n) if max_reject is None else check_n(max_reject, "max_reject")
    if pos.ndim == 2:
        col = choose_positive(pos, positive_choice, seed_u, epoch_u, keys)
        chosen = np.full(n_q, np.nan)
        has = col >= 0
        chosen[has] = pos[np.flatnonzero(has), col[has]]
        pos = chosen
    if fallback == "raise":
        bad = np.isnan(pos)
        if bad.any():
            raise ValueError(f"positive_scores has {int(bad.sum())} unknown (NaN) value(s), "
                             f"first at row {int(np.flatnonzero(bad)[0])}, and fallback='raise'")
    out = np.empty((n_q, n), np.int64)
    if n_q == 0:
        return out
    if k == 0:
        out[:] = -1
        return out
    status = np.zeros(n_q, np.int8)
    fn = _k.fused_par if parallel else _k.fused_ser
    fn(ids, scores, pos, a, b, kcode, _k.MISSING_UNIFORM, fallback == "lowest", keys, n, seed_u,
       epoch_u, bool(replace), mr, out, status, _CHUNK)
    if status.any():
        _raise_bad_row(status, ids, scores, "candidate_ids", "candidate_scores")
    return out

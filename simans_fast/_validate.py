"""Floor 0: the one place for the rules every public function checks.

Errors name the *Python* parameter (never a command-line flag; ``simans_fast.cli`` maps a
parameter to its flag in one table). Message format: ``"<parameter>: <what is wrong>; <fix>"``
where a fix is known.

What lives here (everything a public function checks about an argument):

* the error classes (:class:`ParameterError`, :class:`ParameterTypeError`, :class:`InputError`);
* scalar checks: :func:`check_int`, :func:`check_real`, :func:`check_bool`,
  :func:`check_choice`, :func:`check_seed`, :func:`check_epoch`, :func:`check_k`;
* the constraint table :data:`CONSTRAINTS` of the public parameters and :func:`validate`,
  driven by it (in the spirit of scikit-learn's ``validate_params``);
* array checks: :func:`check_float_matrix`, :func:`check_ids`, :func:`check_embeddings`;
* the one CSR normaliser :func:`normalize_csr` (positives, exclusions);
* :func:`renamed_kwargs`, the one way an old parameter name keeps working for a release.

One message format: ``"<parameter> must be <rule>, got <value>"`` (plus ``"; <fix>"`` where a
fix is known). Booleans are never integers or reals here; NumPy integers and floats are.

This module imports only the standard library, NumPy and :mod:`simans_fast._config`.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np

from . import _config

__all__ = ["ParameterError", "ParameterTypeError", "InputError", "CONSTRAINTS", "Constraint",
           "validate", "check_int", "check_real", "check_bool", "check_choice", "check_seed",
           "check_epoch", "check_k", "check_pos_int", "check_offset", "check_float_matrix",
           "check_ids", "check_embeddings", "as_matrix", "normalize_csr", "renamed_kwargs",
           "is_int", "check_window"]


class ParameterError(ValueError):
    """A bad value of a public parameter. ``.parameter`` is the Python parameter's name."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(message)


class ParameterTypeError(ParameterError, TypeError):
    """A public parameter of the wrong type (also a ``TypeError``)."""


class InputError(ParameterError):
    """A problem with an input file (or a directory) given through ``parameter``.

    ``.path`` is the file; ``.line`` the 1-based line when the problem is on one line. The
    message names the file; it never names a command-line flag (the CLI adds that).
    """

    def __init__(self, message: str, *, parameter: str = "path", path=None, line=None):
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(parameter, message)


# ------------------------------------------------------------------------------------------
# scalars
# ------------------------------------------------------------------------------------------
_U64_MAX = (1 << 64) - 1


def is_int(x) -> bool:
    """A Python or NumPy integer that is not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _bound_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}"


def check_int(value, name: str, *, min=None, max=None, allow_none: bool = False,
              what: str | None = None):
    """``value`` as a Python ``int`` (``None`` passes when ``allow_none``).

    A bool, a float (even ``3.0``) or a string is a :class:`ParameterTypeError`
    (``"<name> must be <what>, got <value>"``); a value outside ``[min, max]`` a
    :class:`ParameterError` (``"<name> must be >= <min>, got <value>"``, or with ``what``
    given, ``"<name> must be <what>, got <value>"``).
    """
    if value is None and allow_none:
        return None
    given = what
    if what is None:
        what = ("a positive integer" if min == 1 else
                "a non-negative integer" if min == 0 else "an integer")
    if allow_none:
        what += " or None"
    if not is_int(value):
        raise ParameterTypeError(name, f"{name} must be {what}, got {value!r}")
    v = int(value)
    if (min is not None and v < min) or (max is not None and v > max):
        rule = given if given is not None else _bound_text(min, max)
        raise ParameterError(name, f"{name} must be {rule}, got {v}")
    return v


def check_window(value, name: str = "window", *, text: bool = False):
    """A rank window ``(lo, hi)``: 0-based ranks, ``hi`` exclusive or None (no bound),
    ``0 <= lo < hi``. Returns ``(lo, hi)`` as Python ints (``hi`` may be None), or None for None.

    A pair (tuple or list) of integers is always accepted; with ``text=True`` also the string
    forms ``"LO-HI"`` / ``"LO-"`` of saved parameter sets and FlagEmbedding's
    ``range_for_sampling`` (``"10-210"``).
    """
    if value is None:
        return None
    if text and isinstance(value, str):
        lo_s, sep, hi_s = value.partition("-")
        if not sep or not lo_s.isdigit() or not (hi_s == "" or hi_s.isdigit()) or not (
                lo_s.isascii() and hi_s.isascii()):
            raise ParameterError(name, f"{name} must be LO-HI or LO- with whole numbers "
                                       f"(0-based ranks, HI exclusive, e.g. 10-210), got "
                                       f"{value!r}")
        lo, hi = int(lo_s), (int(hi_s) if hi_s else None)
        if hi is not None and hi <= lo:
            raise ParameterError(name, f"{name} must satisfy LO < HI (0-based ranks, HI "
                                       f"exclusive), got {value!r}")
        return lo, hi
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ParameterError(name, f"{name} must be a pair (lo, hi) of ranks, hi exclusive (hi "
                                   f"may be None{', or LO-HI text' if text else ''}), got "
                                   f"{value!r}")
    wlo, whi = value
    for v, nm in ((wlo, "lo"), (whi, "hi")):
        if v is None and nm == "hi":
            continue
        if not is_int(v) or int(v) < 0:
            raise ParameterError(name, f"{name} {nm} must be a non-negative integer, got {v!r} "
                                       f"in {name}={value!r}")
    if whi is not None and int(whi) <= int(wlo):
        raise ParameterError(name, f"{name} must satisfy lo < hi, got {name}={value!r}")
    return int(wlo), (None if whi is None else int(whi))


def check_real(value, name: str, *, min=None, max=None, min_exclusive: bool = False,
               finite: bool = True, allow_none: bool = False) -> float | None:
    """``value`` as a Python ``float``: a real number (bools refused), finite unless
    ``finite=False``, within ``[min, max]`` (``(min, max]`` with ``min_exclusive``)."""
    if value is None and allow_none:
        return None
    if not _is_real(value):
        raise ParameterTypeError(name, f"{name} must be a real number"
                                       f"{' or None' if allow_none else ''}, got {value!r}")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ParameterError(name, f"{name} must be finite, got {v}")
    if min is not None and (v <= min if min_exclusive else v < min):
        raise ParameterError(name, f"{name} must be {'>' if min_exclusive else '>='} {min}, "
                                   f"got {v}")
    if max is not None and v > max:
        raise ParameterError(name, f"{name} must be <= {max}, got {v}")
    return v


def check_bool(value, name: str) -> bool:
    """``value`` as a Python ``bool``: ``True``/``False`` or a NumPy bool, nothing else (``0``,
    ``1`` and ``"yes"`` are refused, so a mistyped positional argument is not taken as a flag)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(name, f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices):
    """``value`` when it is one of ``choices`` (strings compared exactly)."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(name, f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**64 - 1]`` (Python or NumPy; bools refused)."""
    return check_int(value, name, min=0, max=_U64_MAX,
                     what="an integer in [0, 2**64 - 1]")


def check_epoch(value, name: str = "epoch") -> int:
    """An epoch: a non-negative integer below ``2**64``. The one rule for the core, the
    samplers, the torch adapters and the CLI (a negative epoch is refused everywhere; it used to
    wrap modulo ``2**64`` in the core)."""
    if type(value) is int and 0 <= value <= _U64_MAX:  # the per-batch case, without the checks
        return value
    return check_int(value, name, min=0, max=_U64_MAX,
                     what="an integer >= 0 (and below 2**64)")


def check_pos_int(value, name: str, allow_none: bool = True):
    """A positive integer (``None`` passes when ``allow_none``)."""
    return check_int(value, name, min=1, allow_none=allow_none)


def check_offset(value, name: str) -> int:
    """A non-negative integer (a row offset)."""
    return check_int(value, name, min=0, what="a non-negative int")


def check_k(k, n_docs=None, name: str = "k") -> int:
    """Candidates per query: a positive integer.

    The rule for ``k`` above the corpus size (docs/vocabulary.md): the retrieval primitives
    (``topk``, ``topk_torch``, the sharded top-k) pad such rows with ``-1`` / ``-inf``, as they
    pad rows whose exclusions leave fewer than ``k`` documents: they are run on corpus shards
    and query chunks, where a shard smaller than ``k`` is normal. Functions that see the whole
    corpus (``mine``, ``mine_candidates``, the CLI's ``mine``) pass ``n_docs``: there
    ``k > n_docs`` pads every row of every query, which nobody means, and is an error.
    """
    k = check_int(k, name, min=1)
    if n_docs is not None and k > n_docs:
        raise ParameterError(name, f"k={k} is larger than the corpus ({n_docs} documents): "
                                   f"lower k")
    return k


# ------------------------------------------------------------------------------------------
# the constraint table
# ------------------------------------------------------------------------------------------
class Constraint:
    """One rule of :data:`CONSTRAINTS`: ``kind`` is ``"int"``, ``"real"``, ``"choice"``,
    ``"seed"`` or ``"epoch"``; the other fields are the bounds or the choices."""

    __slots__ = ("kind", "min", "max", "choices", "allow_none", "description")

    def __init__(self, kind, *, min=None, max=None, choices=None, allow_none=False,
                 description=""):
        self.kind = kind
        self.min = min
        self.max = max
        self.choices = None if choices is None else tuple(choices)
        self.allow_none = allow_none
        self.description = description

    def __call__(self, value, name):
        if self.kind == "int":
            return check_int(value, name, min=self.min, max=self.max,
                             allow_none=self.allow_none)
        if self.kind == "real":
            return check_real(value, name, min=self.min, max=self.max,
                              allow_none=self.allow_none)
        if self.kind == "choice":
            if value is None and self.allow_none:
                return None
            return check_choice(value, name, self.choices)
        if self.kind == "seed":
            return check_seed(value, name)
        if self.kind == "epoch":
            return check_epoch(value, name)
        raise AssertionError(self.kind)  # pragma: no cover - programming error

    def __repr__(self):
        extra = {"min": self.min, "max": self.max, "choices": self.choices,
                 "allow_none": self.allow_none or None}
        inner = ", ".join(f"{k}={v!r}" for k, v in extra.items() if v is not None)
        return f"Constraint({self.kind!r}{', ' + inner if inner else ''})"


#: The public parameters that mean the same thing wherever they appear, with their one rule.
#: ``validate(name, value)`` applies it; the CLI reads the choices from here (through
#: :mod:`simans_fast._config`) instead of retyping them.
CONSTRAINTS = {
    "n": Constraint("int", min=1, description="negatives per query"),
    "k": Constraint("int", min=1, description="candidates per query"),
    "a": Constraint("real", min=0, description="sharpness of the SimANS weights"),
    "b": Constraint("real", description="shift of the weights' peak from the positive's score"),
    "kernel": Constraint("choice", choices=_config.KERNELS, description="weight kernel"),
    "fallback": Constraint("choice", choices=_config.FALLBACKS,
                           description="rows whose positive score is unknown"),
    "positive_choice": Constraint("choice", choices=_config.POSITIVE_CHOICES,
                                  description="which positive, with several per query"),
    "strategy": Constraint("choice", choices=_config.STRATEGIES,
                           description="negative-selection strategy"),
    "metric": Constraint("choice", choices=_config.METRICS, description="top-k similarity"),
    "backend": Constraint("choice", choices=_config.BACKENDS, description="top-k backend"),
    "prefilter": Constraint("choice", choices=_config.PREFILTERS, allow_none=True,
                            description="first pass of the exact top-k (None: none)"),
    "embedding_dtype": Constraint("choice", choices=_config.EMBEDDING_DTYPES,
                                  description="stored embeddings"),
    "epoch": Constraint("epoch", description="epoch keying the draws (>= 0)"),
    "seed": Constraint("seed", description="seed keying the draws (0..2**64-1)"),
    "query_block": Constraint("int", min=1, allow_none=True,
                              description="queries per block (None: the default)"),
    "n_threads": Constraint("int", min=1, allow_none=True,
                            description="threads for this call (None: unchanged)"),
}


def validate(name: str, value, *, parameter: str | None = None):
    """Check ``value`` against ``CONSTRAINTS[name]`` and return it normalised (Python ``int`` /
    ``float`` / ``str``). ``parameter`` is the name used in the message and in
    ``ParameterError.parameter`` when the caller's parameter is spelled differently (e.g.
    ``max_reject`` checked as an ``n``)."""
    try:
        rule = CONSTRAINTS[name]
    except KeyError:  # pragma: no cover - programming error
        raise KeyError(f"no constraint named {name!r}; known: {sorted(CONSTRAINTS)}") from None
    return rule(value, parameter or name)


# ------------------------------------------------------------------------------------------
# arrays
# ------------------------------------------------------------------------------------------
_EMBEDDING_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))


def check_float_matrix(x, name: str, *, ndim: int = 2) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray without copying when it already is one
    (float16 becomes float32; an empty integer array becomes an empty float32 one)."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        if x.dtype.kind == "f" and x.dtype.itemsize == 2:
            x = x.astype(np.float32)  # float16: no Numba path; compute in float32
        elif x.dtype.kind in "iu" and x.size == 0:
            x = x.astype(np.float32)
        else:
            raise ParameterTypeError(name, f"{name} must be a float32 or float64 array, got "
                                           f"dtype {x.dtype}")
    if x.ndim != ndim:
        raise ParameterError(name, f"{name} must be {ndim}-dimensional, got shape {x.shape}")
    return x


def check_ids(ids, name: str, shape) -> np.ndarray:
    """``ids`` as an int64 array of ``shape`` (dtype and shape only; the values are checked by
    :func:`simans_fast.core.check_candidates`)."""
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ParameterTypeError(name, f"{name} must be an integer array (document ids, -1 for "
                                       f"padding), got dtype {ids.dtype}")
    if ids.shape != tuple(shape):
        raise ParameterError(name, f"{name} must have shape {tuple(shape)} like "
                                   f"candidate_scores, got {ids.shape}")
    if ids.dtype != np.int64:
        if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
            raise ParameterError(name, f"{name} holds ids above the int64 range")
        ids = ids.astype(np.int64)
    return ids


def check_embeddings(x, name: str) -> np.ndarray:
    """An embedding matrix ``(rows, dim)``: the one rule of ``topk``, ``mine``,
    ``mine_candidates`` and the readers (docs/vocabulary.md).

    float32 and float16 are used as they are; float64 is accepted and computed in float32
    (block by block, so a memory map is never copied whole). Any other dtype, another number of
    dimensions or zero columns is an error. Returns ``x`` itself for arrays and memory maps (no
    copy)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ParameterTypeError(name, f"{name} must be a 2-D float array, got "
                                           f"{type(x).__name__}") from exc
    if x.ndim != 2:
        raise ParameterError(name, f"{name} must be 2-D (rows, dim), got shape {x.shape}")
    if x.dtype not in _EMBEDDING_DTYPES:
        raise ParameterTypeError(
            name, f"{name} must be float32 or float16 (float64 is accepted and computed in "
                  f"float32), got dtype {x.dtype}")
    if x.shape[1] < 1:
        raise ParameterError(name, f"{name} must have at least one column, got shape "
                                   f"{x.shape}")
    return x


as_matrix = check_embeddings


# ------------------------------------------------------------------------------------------
# the one CSR normaliser
# ------------------------------------------------------------------------------------------
def _int_part(a, name, parameter):
    arr = np.asarray(a)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ParameterTypeError(parameter,
                                 f"{name} must hold integers (corpus row indices), got dtype "
                                 f"{arr.dtype}")
    return arr.astype(np.int64, copy=False).ravel()


def _is_csr_pair(value) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and not isinstance(value[0], (numbers.Integral, np.bool_)))


def normalize_csr(value, n_rows: int, n_cols: int, *, name: str = "qrels", sort: bool = False,
                  unique: bool = True, allow_none: bool = False):
    """Per-row lists of column indices (positives, exclusions) as a CSR pair ``(indptr, ids)``.

    Accepted forms (the union of what the positives and the exclusions took before):

    * a ``tuple`` ``(indptr, ids)``: a CSR pair (``indptr`` of length ``n_rows + 1``, starting
      at 0, non-decreasing, ending at ``len(ids)``);
    * a SciPy sparse matrix (CSR, or anything with ``tocsr()``) with ``n_rows`` rows (its stored
      entries are the ids; their values are ignored);
    * a mapping ``{row: ids}`` (rows left out have none);
    * any other sequence or iterable with one array-like of ids per row (a tuple of another
      length than 2, or one whose first element is an integer, is such a sequence);
    * ``None`` when ``allow_none`` (returns ``None``).

    Every id must be an integer in ``[0, n_cols)``.

    Parameters
    ----------
    sort : bool, default False
        Sort the ids within each row (the top-k exclusions); else keep the given order.
    unique : bool, default True
        Drop repeated ids of a row (keeping the first occurrence).

    Returns
    -------
    indptr : ndarray (n_rows + 1,) int64, ids : ndarray (indptr[-1],) int64, C-contiguous.

    Raises
    ------
    ParameterError (a ValueError) naming ``name``; ParameterTypeError for non-integer ids.
    """
    if value is None:
        if allow_none:
            return None
        raise ParameterTypeError(name, f"{name} must be given (a CSR pair (indptr, ids), a list "
                                       f"of integer arrays, a mapping or a scipy CSR matrix), "
                                       f"got None")
    lists = None
    if not isinstance(value, (tuple, list, Mapping)) and hasattr(value, "tocsr") \
            and hasattr(value, "shape"):  # scipy.sparse
        shape = value.shape
        if shape[0] != n_rows:
            raise ParameterError(name, f"{name} has {shape[0]} rows, expected one per query "
                                       f"({n_rows})")
        m = value.tocsr()
        indptr = _int_part(m.indptr, f"{name} indptr", name)
        ids = _int_part(m.indices, f"{name} ids", name)
    elif hasattr(value, "indptr") and hasattr(value, "indices") \
            and not isinstance(value, (tuple, list, Mapping)):  # CSR-like object
        shape = getattr(value, "shape", None)
        if shape is not None and shape[0] != n_rows:
            raise ParameterError(name, f"{name} has {shape[0]} rows, expected one per query "
                                       f"({n_rows})")
        indptr = _int_part(value.indptr, f"{name} indptr", name)
        ids = _int_part(value.indices, f"{name} ids", name)
    elif _is_csr_pair(value):
        indptr = _int_part(value[0], f"{name}[0] (indptr)", name)
        ids = _int_part(value[1], f"{name}[1] (ids)", name)
        if indptr.shape[0] != n_rows + 1:
            raise ParameterError(name, f"{name}: CSR indptr must have n_queries + 1 = "
                                       f"{n_rows + 1} entries, got {indptr.shape[0]}")
        if indptr[0] != 0 or indptr[-1] != ids.shape[0] or np.any(np.diff(indptr) < 0):
            raise ParameterError(name, f"{name}: CSR indptr must start at 0, never decrease and "
                                       f"end at len(ids) = {ids.shape[0]}")
    elif isinstance(value, Mapping):
        lists = [()] * n_rows
        for key, row in value.items():
            if not is_int(key):
                raise ParameterTypeError(name, f"{name}: mapping keys must be integer query "
                                               f"rows, got {key!r}")
            if not 0 <= int(key) < n_rows:
                raise ParameterError(name, f"{name}: query row {key} outside [0, {n_rows})")
            lists[int(key)] = row
    elif isinstance(value, (str, bytes)):
        raise ParameterTypeError(name, f"{name} must be a CSR pair (indptr, ids), a list of "
                                       f"integer arrays, a mapping or a scipy CSR matrix, got "
                                       f"{type(value).__name__}")
    else:
        try:
            lists = list(value)
        except TypeError:
            raise ParameterTypeError(name, f"{name} must be a CSR pair (indptr, ids), a list of "
                                           f"integer arrays, a mapping or a scipy CSR matrix, "
                                           f"got {type(value).__name__}") from None
        if len(lists) != n_rows:
            raise ParameterError(name, f"{name} must have one entry per query ({n_rows}), got "
                                       f"{len(lists)}")
    if lists is not None:
        parts = [_int_part(v, f"{name}[{i}]", name) for i, v in enumerate(lists)]
        counts = np.fromiter((p.shape[0] for p in parts), dtype=np.int64, count=len(parts))
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if indptr.shape[0] != n_rows + 1:  # pragma: no cover - scipy guarantees it
        raise ParameterError(name, f"{name}: CSR indptr must have {n_rows + 1} entries")
    if ids.size:
        bad = (ids < 0) | (ids >= n_cols)
        if bad.any():
            first = int(ids[np.flatnonzero(bad)[0]])
            raise ParameterError(name, f"{name} holds document id {first}, outside "
                                       f"[0, {n_cols}) (ids are corpus row indices "
                                       f"0..{n_cols - 1})")
    counts = np.diff(indptr)
    if ids.size and (sort or (unique and np.any(counts > 1))):
        row = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
        # given order within equal (row, id) keeps the first occurrence first
        order = np.lexsort((np.arange(ids.size), ids, row))
        if unique:
            so_row, so_ids = row[order], ids[order]
            dup_sorted = np.zeros(ids.size, dtype=bool)
            dup_sorted[1:] = (so_row[1:] == so_row[:-1]) & (so_ids[1:] == so_ids[:-1])
        if sort:
            if unique and dup_sorted.any():
                order = order[~dup_sorted]
            ids = ids[order]
            row = row[order]
        elif unique and dup_sorted.any():
            keep = np.ones(ids.size, dtype=bool)
            keep[order[dup_sorted]] = False
            ids = ids[keep]
            row = row[keep]
        if ids.size != int(indptr[-1]):
            indptr = np.zeros(n_rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(row, minlength=n_rows), out=indptr[1:])
    return (np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(ids, dtype=np.int64))


# ------------------------------------------------------------------------------------------
# renamed parameters
# ------------------------------------------------------------------------------------------
def renamed_kwargs(_since: str = "0.9", **renames):
    """Decorator: keyword arguments renamed in this release keep working for one release.

    ``@renamed_kwargs(missing_positive="fallback")`` makes ``f(missing_positive=x)`` call
    ``f(fallback=x)`` with a :class:`DeprecationWarning` naming both. Passing both names is a
    :class:`ParameterTypeError`. The wrapped function's signature and docstring are kept.
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ParameterTypeError(new, f"{fn.__name__}() got both {new}= and "
                                                      f"its old name {old}=: pass {new}= only")
                    warnings.warn(f"{fn.__name__}(): {old}= is deprecated and will be removed "
                                  f"in the next release; use {new}= (same meaning)",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.__renamed_kwargs__ = dict(renames)
        return wrapper

    return deco

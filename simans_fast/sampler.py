"""SimANSSampler: tables built once, negatives re-drawn every epoch, saved without pickle."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os

import numpy as np

from . import _config
from . import core as _core
from .kernels import sampling as _k
from .rng import epoch_u64, seed_u64, to_u64  # noqa: F401

__all__ = ["SimANSSampler", "SamplerFileError"]

FORMAT_NAME = "simans_fast.sampler"
FORMAT_VERSION = 2  # 2: meta.json records every array's dtype, shape and sha256
_READABLE_VERSIONS = (1, 2)  # 1: no digests; its tables are rebuilt and compared on load
_POS_DOMAIN = _k.POS_DOMAIN  # "POSITIVE" (simans_fast._config.RNG_DOMAINS): positive choice
_POSITIVE_CHOICES = _config.POSITIVE_CHOICES
_ARRAYS = ("candidate_ids", "candidate_scores", "positive_scores", "row_keys", "logw",
           "alias_packed", "n_valid", "peak")
_INT64 = np.dtype(np.int64)


from ._validate import InputError as _InputError  # noqa: E402


class SamplerFileError(_InputError):
    """A saved sampler directory that cannot be loaded (missing, truncated, edited or foreign
    file); the message names the file. An :class:`simans_fast._validate.InputError` (a
    ``ValueError``) with ``.parameter == "path"`` and ``.path`` the file."""


def _keyword_only(method: str, args) -> TypeError:
    shown = ", ".join(repr(a) if not isinstance(a, np.ndarray) else "array(...)" for a in args)
    eg = "3" if len(args) != 1 or not isinstance(args[0], numbers.Integral) else repr(args[0])
    return TypeError(f"SimANSSampler.{method}() takes keyword arguments only, got positional "
                     f"{shown}: write {method}(epoch={eg}) for epoch {eg}, or "
                     f"{method}(rows=[...], epoch={eg}) for some queries")


class SimANSSampler:
    """SimANS negatives for a fixed candidate set, re-drawn cheaply every epoch.

    The log-weights and Walker/Vose alias tables are built once at construction; each call to
    :meth:`sample` only draws (a pure function of ``(seed, epoch, query key, draw index)``).

    Parameters
    ----------
    candidate_ids : int array (n_q, k)
        Candidate document ids per query (positives removed), ``-1`` for padding; ids below -1
        are an error (``ValueError`` naming ``candidate_ids``).
    candidate_scores : float array (n_q, k)
        Candidate scores (float32/float64), kept by reference. NaN or -inf marks padding
        whatever the id (id -1 marks padding whatever the score); ``+inf`` on a candidate that
        is not padding is an error (``ValueError`` naming ``candidate_scores``).
    positive_scores : array (n_q,) or (n_q, m)
        Score of each query's positive; with several positives, a NaN-padded matrix. NaN (or a
        row of NaN, or ``m = 0``) means the positive's score is unknown and ``fallback``
        applies; ``+inf`` / ``-inf`` are errors (``ValueError`` naming ``positive_scores``).
    n : int, default 15
        Negatives per query (>= 1; rows with fewer valid candidates are padded with -1).
    a, b, kernel
        See :func:`simans_fast.ambiguity_log_weights` (the paper's sign for ``b``).
    seed : int, default 0
    fallback : {"lowest", "uniform", "raise"}, default "lowest"
        Rows whose positive score is unknown.
    row_keys : int array (n_q,), optional
        Global query keys (default: row index); shards pass their global keys.
    positive_choice : {"random", "highest", "lowest"}, default "random"
        With several positives: one drawn uniformly per (query, epoch) from the seeded stream
        (the MS MARCO recipe of the paper's code), or always the highest- / lowest-scored one.
        ``random`` builds one table per (query, positive) pair. ``simans_fast.simans_negatives``
        makes the same choice.
    parallel : bool, default True
        Multi-threaded kernels (set False inside forked DataLoader workers).

    ``n_q = 0`` and ``k = 0`` are valid: every draw is then an empty or all ``-1`` array.
    :meth:`sample` returns document ids, :meth:`sample_columns` column indices into the
    candidate rows (like :func:`simans_fast.sample`).
    """

    def __init__(self, candidate_ids, candidate_scores, positive_scores, n: int = 15, *,
                 a: float = 0.5, b: float = 0.0, kernel: str = "gaussian", seed: int = 0,
                 fallback: str = "lowest", row_keys=None, positive_choice: str = "random",
                 parallel: bool = True, _tables=None):
        scores = _core.check_float_matrix(candidate_scores, "candidate_scores")
        n_q, k = scores.shape
        ids = _core.check_ids(candidate_ids, "candidate_ids", (n_q, k))
        pos = _core.check_positive_scores(positive_scores, n_q, matrix=True)
        if pos.ndim == 1:
            pos = pos.reshape(-1, 1)
        self.n = _core.check_n(n)
        self.a = _core.check_param(a, "a", nonneg=True)
        self.b = _core.check_param(b, "b")
        kcode = _core.check_kernel(kernel)
        self.kernel = kernel
        self._seed_u = seed_u64(seed)
        self.seed = int(seed)
        self.fallback = _core.check_fallback(fallback)
        self.positive_choice = _core.check_positive_choice(positive_choice)
        self.parallel = bool(parallel)
        self.candidate_ids = ids
        self.candidate_scores = scores
        self.positive_scores = pos
        self._keys = _core.check_row_keys(row_keys, n_q)
        self.row_keys = self._keys.view(np.int64)

        m = pos.shape[1]
        known = ~np.isnan(pos)
        n_pos = known.sum(axis=1)
        if self.fallback == "raise" and (n_pos == 0).any():
            bad = np.flatnonzero(n_pos == 0)
            raise ValueError(f"positive_scores is unknown (NaN) for {bad.size} query row(s), "
                             f"first {int(bad[0])}, and fallback='raise'")
        # pair layout: table row for (query q, its c-th known positive)
        if positive_choice == "random" and m > 1:
            counts = np.maximum(n_pos, 1)
            indptr = np.zeros(n_q + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            pair_query = np.repeat(np.arange(n_q, dtype=np.int64), counts)
            # column of the c-th known positive of each query (NaN column 0 for rows with none)
            order = np.argsort(~known, axis=1, kind="stable")
            within = np.arange(pair_query.size, dtype=np.int64) - indptr[pair_query]
            pair_col = order[pair_query, within]
        else:
            indptr = np.arange(n_q + 1, dtype=np.int64)
            pair_query = np.arange(n_q, dtype=np.int64)
            if m <= 1:
                pair_col = np.zeros(n_q, np.int64)
            else:
                filled = np.where(known, pos, -np.inf if positive_choice == "highest"
                                  else np.inf)
                pair_col = (np.argmax(filled, axis=1) if positive_choice == "highest"
                            else np.argmin(filled, axis=1)).astype(np.int64)
        self._indptr = indptr
        self._pair_query = pair_query
        self._pair_col = pair_col
        pair_pos = pos[pair_query, pair_col] if m else np.full(n_q, np.nan)
        self._pair_fallback = np.isnan(pair_pos)

        if _tables is not None:
            if _tables.shape != (pair_query.size, k):
                raise ValueError(f"tables have shape {_tables.shape}, this candidate set and its "
                                 f"positives need ({pair_query.size}, {k})")
            self.tables = _tables
        else:
            # log-weights and alias tables in one pass; table row r uses query pair_query[r]
            self.tables = _core.weights_and_tables(
                scores, pair_query, np.ascontiguousarray(pair_pos, np.float64), self.a, self.b,
                kcode, ids, self.parallel, scores_name="candidate_scores",
                ids_name="candidate_ids")
        self._fb_rows = (np.flatnonzero(self._pair_fallback) if self.fallback == "lowest"
                         else np.empty(0, np.int64))
        self._fb_cols = np.empty((self._fb_rows.size, self.n), np.int64)
        if self._fb_rows.size:
            _k.lowest_rows(self.tables.logw, self._fb_rows, self.n, self._fb_cols)
        self._fb_index = np.full(indptr[-1], -1, np.int64)
        self._fb_index[self._fb_rows] = np.arange(self._fb_rows.size)

    # ------------------------------------------------------------------------------------
    @property
    def n_queries(self) -> int:
        return self.candidate_ids.shape[0]

    @property
    def k(self) -> int:
        return self.candidate_ids.shape[1]

    def __len__(self) -> int:
        return self.n_queries

    def __repr__(self) -> str:
        return (f"SimANSSampler(n_queries={self.n_queries}, k={self.k}, n={self.n}, a={self.a}, "
                f"b={self.b}, kernel={self.kernel!r}, seed={self.seed}, "
                f"fallback={self.fallback!r}, positive_choice={self.positive_choice!r})")

    def _pairs(self, rows, epoch_u):
        """Table row (query, chosen positive) of each query in ``rows``."""
        counts = self._indptr[rows + 1] - self._indptr[rows]
        pairs = self._indptr[rows].copy()
        multi = counts > 1
        if multi.any():
            u = _core.positive_uniforms(self._seed_u, epoch_u, self._keys[rows[multi]])
            pairs[multi] += np.minimum((u * counts[multi]).astype(np.int64), counts[multi] - 1)
        return pairs

    def positive_index(self, *args, rows=None, epoch: int = 0) -> np.ndarray:
        """Column (into ``positive_scores``' second axis) of the positive used for each query in
        ``rows`` (default: all) at ``epoch``; -1 where it is unknown. Keyword arguments only."""
        if args:
            raise _keyword_only("positive_index", args)
        rows = _core.check_rows(rows, self.n_queries)
        pairs = self._pairs(rows, epoch_u64(epoch))
        col = self._pair_col[pairs].copy()
        col[self._pair_fallback[pairs]] = -1
        return col

    def sample_columns(self, *args, rows=None, epoch: int = 0, replace: bool = False,
                       max_reject: int | None = None,
                       parallel: bool | None = None) -> np.ndarray:
        """Like :meth:`sample` but returns **column indices** into the candidate rows (-1 padded),
        as :func:`simans_fast.sample` does. Keyword arguments only."""
        if args:
            raise _keyword_only("sample_columns", args)
        rows = _core.check_rows(rows, self.n_queries)
        return self._draw(rows, epoch, replace, max_reject, parallel, False)

    _NO_PIDX = np.empty(0, np.int64)

    def _draw(self, rows, epoch, replace, max_reject, parallel, want_ids,
              pidx=None) -> np.ndarray:
        """One kernel pass for checked ``rows``: choice of the positive's table row, fallback
        columns, draws and (``want_ids``) document ids; the same numbers as
        :meth:`_pairs` + :func:`simans_fast.core.sample_table_rows` + the fallback columns.
        ``pidx`` (int64, ``len(rows)``), when given, receives :meth:`positive_index` from the
        same pass."""
        epoch_u = epoch_u64(epoch)
        n = self.n
        mr = (_core.default_max_reject(n) if max_reject is None
              else _core.check_n(max_reject, "max_reject"))
        par = self.parallel if parallel is None else bool(parallel)
        out = np.empty((rows.shape[0], n), np.int64)
        if rows.shape[0] == 0:
            return out
        if self.k == 0:
            out[:] = -1
            if pidx is not None:
                pidx[:] = self.positive_index(rows=rows, epoch=epoch)
            return out
        if rows.dtype is not _INT64 or not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows, np.int64)
        t = self.tables
        fn = _k.sample_batch_par if par else _k.sample_batch_ser
        fn(t.packed, t.n_valid, t.peak, t.logw, self._indptr, self._keys, rows, self._seed_u,
           epoch_u, n, bool(replace), mr, self._fb_rows.shape[0] > 0,
           self._fb_index, self._fb_cols, self.candidate_ids, want_ids, out, self._pair_col,
           self._pair_fallback, self._NO_PIDX if pidx is None else pidx, _config.CHUNK)
        return out

    def _sample_batch(self, rows, epoch: int = 0, parallel: bool | None = None):
        """``(sample(rows=rows, epoch=epoch, parallel=parallel), positive_index(rows=rows,
        epoch=epoch))`` from one kernel pass, for ``rows`` already checked (int64 in
        ``0..n_queries-1``): what a DataLoader batch needs."""
        pidx = np.empty(rows.shape[0], np.int64)
        neg = self._draw(rows, epoch, False, None, parallel, True, pidx)
        return neg, pidx

    def sample(self, *args, rows=None, epoch: int = 0, replace: bool = False,
               max_reject: int | None = None, parallel: bool | None = None) -> np.ndarray:
        """Negative **document ids** for ``rows`` (default: all queries) at ``epoch``.

        Keyword arguments only: ``sample(epoch=3)`` (a positional ``sample(3)`` is a
        ``TypeError``, since it reads as ``rows=3``). Use :meth:`sample_columns` for column
        indices into the candidate rows.

        Parameters
        ----------
        rows : int array, optional
            Query rows to draw for, in the order wanted (default: all; ``[]`` gives ``(0, n)``).
        epoch : int, default 0
        replace : bool, default False
        max_reject : int, optional
            Duplicates tolerated per row before the exact finish (tuning; results stay exact).
        parallel : bool, optional
            Override the sampler's ``parallel``.

        Returns
        -------
        ndarray (len(rows), n) int64, ``-1`` padded.
        """
        if args:
            raise _keyword_only("sample", args)
        rows = _core.check_rows(rows, self.n_queries)
        return self._draw(rows, epoch, replace, max_reject, parallel, True)

    # ------------------------------------------------------------------------------------
    def _arrays(self) -> dict:
        return {
            "candidate_ids": self.candidate_ids,
            "candidate_scores": self.candidate_scores,
            "positive_scores": self.positive_scores,
            "row_keys": self.row_keys,
            "logw": self.tables.logw,
            "alias_packed": self.tables.packed,
            "n_valid": self.tables.n_valid,
            "peak": self.tables.peak,
        }

    def save(self, path) -> None:
        """Write the sampler to directory ``path`` (``.npy`` arrays + ``meta.json``, no pickle).

        ``meta.json`` records every array's dtype, shape and sha256, which :meth:`load` checks.
        Every file is fsynced in a temporary sibling directory that is then renamed into place,
        so an interrupted save never leaves a half-written sampler. An existing ``path`` is
        replaced only if it is a saved sampler or an empty directory.
        """
        from .store.atomic import atomic_dir, write_synced

        path = os.fspath(path)
        if os.path.lexists(path):
            if not os.path.isdir(path) or (os.listdir(path) and not os.path.isfile(
                    os.path.join(path, "meta.json"))):
                raise ValueError(f"path {path!r} exists and is not a saved SimANSSampler; "
                                 f"refusing to replace it")
        with atomic_dir(path, replace=True) as tmp:  # the store's one atomic writer
            entries = {name: _SAMPLER_DIR.write_array(tmp, name, arr)
                       for name, arr in self._arrays().items()}
            meta = dict(_SAMPLER_DIR.header_fields())
            meta.update({
                "n": self.n, "a": self.a, "b": self.b, "kernel": self.kernel, "seed": self.seed,
                "fallback": self.fallback, "positive_choice": self.positive_choice,
                "n_queries": self.n_queries, "k": self.k,
                "n_positive_columns": int(self.positive_scores.shape[1]),
                "n_pairs": int(self.tables.shape[0]),
                "arrays": entries,
            })
            meta["meta_sha256"] = _meta_digest(meta)
            write_synced(os.path.join(tmp, "meta.json"),
                         json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path, *, mmap: bool = True, parallel: bool = True) -> "SimANSSampler":
        """Load a sampler written by :meth:`save` (arrays memory-mapped by default).

        Nothing is trusted: ``meta.json`` is parsed and checked field by field; every array
        file must match the sha256, dtype and shape recorded there (and the shapes the
        parameters imply), hold no pickle, and pass the value checks of the constructor
        (ids >= -1, no +inf score, finite or NaN positives) and of
        :func:`simans_fast.core.check_alias_arrays` (aliases in range, probabilities in
        [0, 1], no invalid column drawable) before any kernel reads it. Any failure is a
        :class:`SamplerFileError` (a ``ValueError``) naming the file. Directories of format
        version 1 (no digests) load too: their tables are rebuilt from the candidates and must
        equal the saved ones.
        """
        path = os.fspath(path)
        meta_path = os.path.join(path, "meta.json")
        if not os.path.isfile(meta_path):
            raise SamplerFileError(f"path {path!r} is not a saved SimANSSampler (no meta.json)")
        meta = _read_meta(meta_path)
        version = meta["version"]
        n_q, k, m, n_pairs = (meta["n_queries"], meta["k"], meta.get("n_positive_columns"),
                              meta.get("n_pairs"))
        expect = {"candidate_ids": ((n_q, k), ("<i8",)),
                  "candidate_scores": ((n_q, k), ("<f4", "<f8")),
                  "positive_scores": ((n_q, m), ("<f8",)),
                  "row_keys": ((n_q,), ("<i8",)),
                  "logw": ((n_pairs, k), ("<f4",)),
                  "alias_packed": ((n_pairs, k, 2), ("<i4",)),
                  "n_valid": ((n_pairs,), ("<i4",)),
                  "peak": ((n_pairs,), ("<f4",))}
        files = {name: os.path.join(path, name + ".npy") for name in _ARRAYS}
        if version >= 2:
            _verify_digests(files, meta["arrays"], expect)
        arrays = {}
        for name in _ARRAYS:
            fpath = files[name]
            arrays[name] = _load_array(fpath, *expect[name], mmap)
            if name == "positive_scores" and m is None:  # version 1: learn m and n_pairs
                m = arrays[name].shape[1] if arrays[name].ndim == 2 else None
                expect["positive_scores"] = ((n_q, m), ("<f8",))
                _check_array(fpath, arrays[name], *expect["positive_scores"])
        fname = {key: os.path.join(path, f + ".npy") for key, f in (
            ("packed", "alias_packed"), ("n_valid", "n_valid"), ("logw", "logw"),
            ("peak", "peak"))}
        try:
            _core.check_candidate_values(arrays["candidate_ids"], arrays["candidate_scores"],
                                         ids_name=os.path.join(path, "candidate_ids.npy"),
                                         scores_name=os.path.join(path, "candidate_scores.npy"),
                                         parallel=parallel)
            pos_name = os.path.join(path, "positive_scores.npy")
            _core.check_positive_scores(arrays["positive_scores"], n_q, pos_name, matrix=True)
        except ValueError as e:
            raise SamplerFileError(str(e)) from None
        params = dict(n=meta["n"], a=meta["a"], b=meta["b"], kernel=meta["kernel"],
                      seed=meta["seed"], fallback=meta["fallback"],
                      positive_choice=meta["positive_choice"], parallel=parallel)
        tables = None
        if version >= 2:
            try:
                _core.check_alias_arrays(arrays["alias_packed"], arrays["n_valid"],
                                         arrays["logw"], arrays["peak"], names=fname,
                                         parallel=parallel)
            except ValueError as e:
                raise SamplerFileError(str(e)) from None
            tables = _core.AliasTables._unchecked(arrays["alias_packed"], arrays["n_valid"],
                                                  arrays["logw"], arrays["peak"])
        try:
            smp = cls(arrays["candidate_ids"], arrays["candidate_scores"],
                      arrays["positive_scores"], row_keys=arrays["row_keys"], _tables=tables,
                      **params)
        except ValueError as e:
            raise SamplerFileError(f"{path}: {e}") from None
        if tables is None:  # version 1: compare the rebuilt tables with the saved ones
            built = smp.tables
            for key, mine in (("logw", built.logw), ("packed", built.packed),
                              ("n_valid", built.n_valid), ("peak", built.peak)):
                saved = arrays[{"packed": "alias_packed"}.get(key, key)]
                if saved.shape != mine.shape or not np.array_equal(
                        saved.view(np.uint8) if saved.size else saved,
                        mine.view(np.uint8) if mine.size else mine):
                    raise SamplerFileError(f"{fname[key]} does not match the tables rebuilt from "
                                           f"the saved candidates (edited or corrupt file)")
        return smp


# ------------------------------------------------------------------------------------------
# file helpers
# ------------------------------------------------------------------------------------------
# The sampler directory follows the store's one policy for a directory of .npy arrays
# (simans_fast.store.arrays): format name, version, readable versions, each array's dtype,
# shape and sha256 (hashed while written), the same loader; errors are SamplerFileError.
from .store.arrays import ArrayDirFormat as _ArrayDirFormat  # noqa: E402

_SAMPLER_DIR = _ArrayDirFormat(FORMAT_NAME, FORMAT_VERSION, _READABLE_VERSIONS, "meta.json",
                               error=SamplerFileError)


def _meta_digest(meta) -> str:
    """sha256 of meta.json's content without its own digest (canonical JSON)."""
    body = {key: v for key, v in meta.items() if key != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_meta(meta_path) -> dict:
    meta = _SAMPLER_DIR.read_header(meta_path)  # JSON object, format, readable version
    version = meta["version"]
    if version >= 2:
        recorded = meta.get("meta_sha256")
        if not isinstance(recorded, str) or recorded != _meta_digest(meta):
            raise SamplerFileError(f"{meta_path}: its parameters do not match the meta_sha256 "
                                   f"recorded in it (file edited or corrupt)", path=meta_path)

    def field(name, ok, what):
        if name not in meta:
            raise SamplerFileError(f"{meta_path}: field {name!r} is missing", path=meta_path)
        if not ok(meta[name]):
            raise SamplerFileError(f"{meta_path}: field {name!r} must be {what}, got "
                                   f"{meta[name]!r}", path=meta_path)

    real = (lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
            and math.isfinite(x))
    field("n", lambda x: _is_int(x) and x >= 1, "an integer >= 1")
    field("a", lambda x: real(x) and x >= 0, "a finite number >= 0")
    field("b", real, "a finite number")
    field("kernel", lambda x: x in ("gaussian", "laplace"), "'gaussian' or 'laplace'")
    field("seed", _is_int, "an integer")
    field("fallback", lambda x: x in ("lowest", "uniform", "raise"),
          "'lowest', 'uniform' or 'raise'")
    field("positive_choice", lambda x: x in _POSITIVE_CHOICES, f"one of {list(_POSITIVE_CHOICES)}")
    field("n_queries", lambda x: _is_int(x) and x >= 0, "an integer >= 0")
    field("k", lambda x: _is_int(x) and x >= 0, "an integer >= 0")
    if version >= 2:
        field("n_positive_columns", lambda x: _is_int(x) and x >= 0, "an integer >= 0")
        field("n_pairs", lambda x: _is_int(x) and x >= 0, "an integer >= 0")
        field("arrays", lambda x: isinstance(x, dict) and all(
            isinstance(x.get(a), dict) and isinstance(x[a].get("sha256"), str)
            for a in _ARRAYS), f"an object with a sha256 for each of {list(_ARRAYS)}")
    return meta


def _check_array(fpath, arr, shape, dtypes):
    _SAMPLER_DIR.check_array(fpath, arr, shape, dtypes)
    if not arr.flags.c_contiguous:
        raise SamplerFileError(f"{fpath}: array is not stored in C order", path=fpath)


def _verify_digests(files, entries, expect):
    """Every file exists, its meta.json entry agrees with the parameters, and its sha256 is the
    recorded one (the store hashes the files concurrently)."""
    for name, fpath in files.items():
        if not os.path.isfile(fpath):
            raise SamplerFileError(f"{fpath}: file is missing", path=fpath)
        shape, dtypes = expect[name]
        entry = entries[name]
        if list(shape) != entry.get("shape") or entry.get("dtype") not in dtypes:
            raise SamplerFileError(f"{fpath}: meta.json records dtype {entry.get('dtype')!r} "
                                   f"and shape {entry.get('shape')!r}, which disagree with its "
                                   f"parameters (shape {list(shape)})", path=fpath)
    _SAMPLER_DIR.verify(files, entries)


def _load_array(fpath, shape, dtypes, mmap):
    arr = _SAMPLER_DIR.load_array(fpath, mmap=mmap, shape=shape, dtypes=dtypes)
    if not arr.flags.c_contiguous:
        raise SamplerFileError(f"{fpath}: array is not stored in C order", path=fpath)
    return arr

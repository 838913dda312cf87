"""SimANSSampler: tables built once, negatives re-drawn every epoch, saved without pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from . import core as _core
from ._numba import jit
from .kernels import rng as _krng
from .kernels import sampling as _k
from .rng import to_u64

__all__ = ["SimANSSampler"]

FORMAT_NAME = "simans_fast.sampler"
FORMAT_VERSION = 1
_POS_DOMAIN = 0x504F534954495645  # "POSITIVE": separates the positive-choice stream
_POSITIVE_CHOICES = ("random", "highest", "lowest")


class SimANSSampler:
    """SimANS negatives for a fixed candidate set, re-drawn cheaply every epoch.

    The log-weights and Walker/Vose alias tables are built once at construction; each call to
    :meth:`sample` only draws (a pure function of ``(seed, epoch, query key, draw index)``).

    Parameters
    ----------
    candidate_ids : int array (n_q, k)
        Candidate document ids per query (positives removed), ``-1`` for padding.
    candidate_scores : float array (n_q, k)
        Candidate scores (float32/float64; NaN or -inf marks padding). Kept by reference.
    positive_scores : array (n_q,) or (n_q, m)
        Score of each query's positive; with several positives, a NaN-padded matrix. NaN (or a
        row of NaN) means the positive's score is unknown and ``fallback`` applies.
    n : int, default 15
        Negatives per query.
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
        ``random`` builds one table per (query, positive) pair.
    parallel : bool, default True
        Multi-threaded kernels (set False inside forked DataLoader workers).
    """

    def __init__(self, candidate_ids, candidate_scores, positive_scores, n: int = 15, *,
                 a: float = 0.5, b: float = 0.0, kernel: str = "gaussian", seed: int = 0,
                 fallback: str = "lowest", row_keys=None, positive_choice: str = "random",
                 parallel: bool = True, _tables=None):
        scores = _core.check_float_matrix(candidate_scores, "candidate_scores")
        n_q, k = scores.shape
        ids = _core.check_ids(candidate_ids, "candidate_ids", (n_q, k))
        pos = np.asarray(positive_scores)
        if pos.dtype.kind not in "fiu":
            raise ValueError(f"positive_scores must be numeric, got dtype {pos.dtype}")
        if pos.ndim == 1:
            pos = pos.reshape(-1, 1)
        if pos.ndim != 2 or pos.shape[0] != n_q or pos.shape[1] < 1:
            raise ValueError(f"positive_scores must have shape ({n_q},) or ({n_q}, m), "
                             f"got {np.asarray(positive_scores).shape}")
        pos = pos.astype(np.float64, copy=False)
        self.n = _core.check_n(n)
        self.a = _core.check_param(a, "a", nonneg=True)
        self.b = _core.check_param(b, "b")
        _core.check_kernel(kernel)
        self.kernel = kernel
        self.seed = int(seed)
        self._seed_u = to_u64(seed, "seed")
        self.fallback = _core.check_fallback(fallback)
        if positive_choice not in _POSITIVE_CHOICES:
            raise ValueError(f"positive_choice must be one of {list(_POSITIVE_CHOICES)}, "
                             f"got {positive_choice!r}")
        self.positive_choice = positive_choice
        self.parallel = bool(parallel)
        self.candidate_ids = ids
        self.candidate_scores = scores
        self.positive_scores = pos
        self._keys = _core.check_row_keys(row_keys, n_q)
        self.row_keys = self._keys.view(np.int64)

        finite = np.isfinite(pos)
        n_pos = finite.sum(axis=1)
        if self.fallback == "raise" and (n_pos == 0).any():
            bad = np.flatnonzero(n_pos == 0)
            raise ValueError(f"positive_scores is unknown (non-finite) for {bad.size} query row(s), "
                             f"first {int(bad[0])}, and fallback='raise'")
        # pair layout: table row for (query q, its c-th finite positive)
        if positive_choice == "random" and pos.shape[1] > 1:
            counts = np.maximum(n_pos, 1)
            indptr = np.zeros(n_q + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            pair_query = np.repeat(np.arange(n_q, dtype=np.int64), counts)
            # column of the c-th finite positive of each query (NaN column 0 for rows with none)
            order = np.argsort(~finite, axis=1, kind="stable")
            within = np.arange(pair_query.size, dtype=np.int64) - indptr[pair_query]
            pair_col = order[pair_query, within]
        else:
            indptr = np.arange(n_q + 1, dtype=np.int64)
            pair_query = np.arange(n_q, dtype=np.int64)
            if pos.shape[1] == 1:
                pair_col = np.zeros(n_q, np.int64)
            else:
                with np.errstate(invalid="ignore"):
                    filled = np.where(finite, pos, -np.inf if positive_choice == "highest"
                                      else np.inf)
                pair_col = (np.argmax(filled, axis=1) if positive_choice == "highest"
                            else np.argmin(filled, axis=1)).astype(np.int64)
        self._indptr = indptr
        self._pair_query = pair_query
        self._pair_col = pair_col
        pair_pos = pos[pair_query, pair_col]
        self._pair_fallback = ~np.isfinite(pair_pos)

        if _tables is not None:
            self.tables = _tables
        else:
            if pair_query.size == n_q and np.array_equal(pair_query, np.arange(n_q)):
                sc, pid = scores, ids
            else:
                sc, pid = scores[pair_query], ids[pair_query]
            logw = _core.ambiguity_log_weights(sc, pair_pos, a=self.a, b=self.b, kernel=kernel,
                                               missing_positive="uniform", candidate_ids=pid,
                                               parallel=self.parallel)
            self.tables = _core.build_alias(logw, parallel=self.parallel)
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
            keys = self._keys[rows[multi]]
            u = _positive_uniforms(self._seed_u, epoch_u, np.ascontiguousarray(keys))
            pairs[multi] += np.minimum((u * counts[multi]).astype(np.int64), counts[multi] - 1)
        return pairs

    def positive_index(self, rows=None, epoch: int = 0) -> np.ndarray:
        """Column (into ``positive_scores``' second axis) of the positive used, -1 if unknown."""
        rows = _core.check_rows(rows, self.n_queries)
        pairs = self._pairs(rows, to_u64(epoch, "epoch"))
        col = self._pair_col[pairs].copy()
        col[self._pair_fallback[pairs]] = -1
        return col

    def sample_columns(self, rows=None, epoch: int = 0, *, replace: bool = False,
                       parallel: bool | None = None) -> np.ndarray:
        """Like :meth:`sample` but returns column indices into the candidate rows (-1 padded)."""
        rows = _core.check_rows(rows, self.n_queries)
        epoch_u = to_u64(epoch, "epoch")
        pairs = self._pairs(rows, epoch_u)
        par = self.parallel if parallel is None else bool(parallel)
        cols = _core.sample_table_rows(self.tables, self.n, pairs, self._keys[rows],
                                       bool(replace), self._seed_u, epoch_u,
                                       _core.default_max_reject(self.n), par)
        if self._fb_rows.size:
            fi = self._fb_index[pairs]
            hit = fi >= 0
            if hit.any():
                cols[hit] = self._fb_cols[fi[hit]]
        return cols

    def sample(self, rows=None, epoch: int = 0, *, replace: bool = False,
               parallel: bool | None = None) -> np.ndarray:
        """Negative document ids for ``rows`` (default: all queries) at ``epoch``.

        Returns
        -------
        ndarray (len(rows), n) int64, ``-1`` padded.
        """
        rows = _core.check_rows(rows, self.n_queries)
        cols = self.sample_columns(rows, epoch, replace=replace, parallel=parallel)
        ids = self.candidate_ids[rows[:, None], np.maximum(cols, 0)]
        ids[cols < 0] = -1
        return ids

    # ------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the sampler to directory ``path`` (``.npy`` arrays + ``meta.json``, no pickle).

        Written to a temporary sibling directory and renamed into place, so an interrupted save
        never leaves a half-written sampler. An existing ``path`` is replaced.
        """
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path)) or "."
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
        try:
            arrays = {
                "candidate_ids": self.candidate_ids,
                "candidate_scores": self.candidate_scores,
                "positive_scores": self.positive_scores,
                "row_keys": self.row_keys,
                "logw": self.tables.logw,
                "alias_packed": self.tables.packed,
                "n_valid": self.tables.n_valid,
                "peak": self.tables.peak,
            }
            for name, arr in arrays.items():
                np.save(os.path.join(tmp, name + ".npy"), np.ascontiguousarray(arr),
                        allow_pickle=False)
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "n": self.n, "a": self.a, "b": self.b, "kernel": self.kernel, "seed": self.seed,
                "fallback": self.fallback, "positive_choice": self.positive_choice,
                "n_queries": self.n_queries, "k": self.k,
            }
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
            if os.path.exists(path):
                old = path + ".old-" + os.path.basename(tmp)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path, *, mmap: bool = True, parallel: bool = True) -> "SimANSSampler":
        """Load a sampler written by :meth:`save` (arrays memory-mapped by default)."""
        path = os.fspath(path)
        meta_path = os.path.join(path, "meta.json")
        if not os.path.isfile(meta_path):
            raise ValueError(f"path {path!r} is not a saved SimANSSampler (no meta.json)")
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: version {meta.get('version')} not supported "
                             f"(this build reads version {FORMAT_VERSION})")

        def ld(name):
            return np.load(os.path.join(path, name + ".npy"), mmap_mode="r" if mmap else None,
                           allow_pickle=False)

        tables = _core.AliasTables(ld("alias_packed"), ld("n_valid"), ld("logw"), ld("peak"))
        return cls(ld("candidate_ids"), ld("candidate_scores"), ld("positive_scores"),
                   n=meta["n"], a=meta["a"], b=meta["b"], kernel=meta["kernel"],
                   seed=meta["seed"], fallback=meta["fallback"], row_keys=ld("row_keys"),
                   positive_choice=meta["positive_choice"], parallel=parallel, _tables=tables)


@jit
def _positive_uniforms_kernel(seed, epoch, keys, out):
    for i in range(keys.shape[0]):
        st = _krng.stream_state(seed ^ np.uint64(_POS_DOMAIN), epoch, keys[i])
        out[i] = _krng.draw_uniform(st, np.uint64(0))


def _positive_uniforms(seed_u, epoch_u, keys):
    out = np.empty(keys.shape[0], np.float64)
    _positive_uniforms_kernel(seed_u, epoch_u, keys.astype(np.uint64, copy=False), out)
    return out

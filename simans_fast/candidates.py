"""Exact top-k candidate retrieval and exact rescoring of given candidates.

Owner: the "topk" engineer (with simans_fast/kernels/topk.py).

:func:`topk` returns, for every query, the ``k`` best corpus rows by inner product (or cosine
similarity, or negative squared Euclidean distance), best first, ties broken by the lower
document id, optionally leaving out given rows per query (the positives). Two backends:

``"numba"`` (exact, default)
    The corpus is streamed against blocks of queries. Each thread takes a sub-block of queries,
    computes its scores against a tile of corpus rows with one single-threaded BLAS ``sgemm``
    into its own small buffer, and merges them, while still in cache, into per-query buffers of
    the best candidates so far (:func:`simans_fast.kernels.topk.gemm_select`); threads never
    wait for each other. After the first tiles almost every score is below the current k-th
    best, and a vectorised threshold test rejects it, so selection costs a few per cent of the
    GEMM. No ``n_queries x n_docs`` matrix is ever held: memory is set by the block sizes.
    float16 (or float64) inputs are converted to float32 block by block, so a corpus stored as
    float16, or one larger than memory opened with ``np.load(path, mmap_mode="r")``, works with
    memory set by the blocks (pages of a memory map are released after each block).

``"faiss"``
    An exact ``IndexFlatIP`` built on the corpus, a faiss index passed by the user (Flat, IVF,
    HNSW, PQ, ... already trained and filled, rows numbered like ``corpus``) or built from a
    factory string. Exclusions are handled by over-fetching. faiss is imported only here, and
    only when this backend is used.

Importing this module imports neither torch nor faiss.
"""

from __future__ import annotations

import logging
import mmap as _mmap_mod
from dataclasses import dataclass, field

import numpy as np

from ._progress import progress_bar

__all__ = ["Candidates", "topk", "rescore"]

logger = logging.getLogger(__name__)

_METRICS = ("ip", "cosine", "l2")
_BACKENDS = ("auto", "numba", "faiss")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))
#: default query block of the exact backend (rows)
DEFAULT_QUERY_BLOCK = 4096
#: bytes of float32 corpus rows converted at once (float16 / cosine / memory-mapped corpora)
DEFAULT_CORPUS_BUFFER = 32 * 2**20
#: corpus rows added to a faiss index at once
DEFAULT_CORPUS_BLOCK = 8192
#: fused kernel: query rows per thread task and corpus rows per GEMM tile
_SUB = 256
_TILE = 1024
#: margin (in standard deviations) of the entry-threshold guess; 0 disables guessing
_GUESS_Z = 5.0
#: memory budget (bytes) of the per-query candidate buffers of one query block
_STATE_BUDGET = 32 * 2**20
#: rows of the corpus used to train an index built from a factory string
_MAX_TRAIN = 262_144


@dataclass(frozen=True, eq=False)
class Candidates:
    """Top-k candidates of a set of queries.

    Attributes
    ----------
    ids : ndarray of shape (n_queries, k), int64
        Corpus row indices, best first; ``-1`` pads rows with fewer than ``k`` candidates.
    scores : ndarray of shape (n_queries, k), float32
        Their scores, non-increasing along each row; ``-inf`` where ``ids == -1``.
    backend : str
        Backend that produced them (``"numba"`` or ``"faiss"``).
    """

    ids: np.ndarray
    scores: np.ndarray
    backend: str = field(default="numba")

    @property
    def n_queries(self) -> int:
        """Number of queries (rows)."""
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Candidates per query (columns)."""
        return int(self.ids.shape[1])

    def __iter__(self):
        # allows ``ids, scores = topk(...)``
        yield self.ids
        yield self.scores


# ----------------------------------------------------------------------------------- validation


def _as_matrix(x, name):
    """2-D float array view of ``x`` (no copy for arrays / memory maps)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name} must be a 2-D float array, got {type(x).__name__}") from exc
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {x.shape}")
    if x.dtype not in _FLOATS:
        raise ValueError(
            f"{name} must be float32 or float16 (float64 is accepted and computed in float32), "
            f"got dtype {x.dtype}"
        )
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {x.shape}")
    return x


def _check_pair(queries, corpus):
    queries = _as_matrix(queries, "queries")
    corpus = _as_matrix(corpus, "corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"queries and corpus must have the same dimension: queries have dim "
            f"{queries.shape[1]}, corpus has dim {corpus.shape[1]}"
        )
    return queries, corpus


def _check_metric(metric):
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    return metric


def _check_pos_int(value, name, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def _int_array(a, name):
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False).ravel()


def _normalize_exclude(exclude, n_q, n_d):
    """CSR ``(indptr, ids)`` of excluded rows, ids sorted within each row, or ``None``."""
    if exclude is None:
        return None
    if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):  # scipy.sparse CSR
        shape = getattr(exclude, "shape", None)
        if shape is not None and shape[0] != n_q:
            raise ValueError(f"exclude has {shape[0]} rows, expected one per query ({n_q})")
        indptr = _int_array(exclude.indptr, "exclude indptr")
        ids = _int_array(exclude.indices, "exclude ids")
    elif isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ValueError("exclude as a tuple must be a CSR pair (indptr, ids); pass a list "
                             "of arrays for one array per query")
        indptr = _int_array(exclude[0], "exclude indptr")
        ids = _int_array(exclude[1], "exclude ids")
        if indptr.shape[0] != n_q + 1:
            raise ValueError(f"exclude indptr must have n_queries + 1 = {n_q + 1} entries, "
                             f"got {indptr.shape[0]}")
        if indptr[0] != 0 or indptr[-1] != ids.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError("exclude indptr must start at 0, be non-decreasing and end at "
                             f"len(ids) = {ids.shape[0]}")
    else:
        try:
            rows = list(exclude)
        except TypeError:
            raise ValueError("exclude must be a CSR pair (indptr, ids), a list of integer "
                             f"arrays or None, got {type(exclude).__name__}") from None
        if len(rows) != n_q:
            raise ValueError(f"exclude must have one entry per query ({n_q}), got {len(rows)}")
        arrs = [_int_array(r, f"exclude[{i}]") for i, r in enumerate(rows)]
        lens = np.fromiter((a.shape[0] for a in arrs), dtype=np.int64, count=n_q)
        indptr = np.zeros(n_q + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        ids = np.concatenate(arrs) if arrs else np.zeros(0, dtype=np.int64)
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= n_d:
            bad = lo if lo < 0 else hi
            raise ValueError(f"exclude holds document id {bad}, out of range for a corpus of "
                             f"{n_d} rows (ids are row indices 0..{n_d - 1})")
        row = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(indptr))
        ids = np.ascontiguousarray(ids[np.lexsort((ids, row))])
    return np.ascontiguousarray(indptr), ids


# ---------------------------------------------------------------------------- block helpers


def _release(arr, row_lo, row_hi):
    """Drop the pages of rows ``row_lo:row_hi`` of a shared read memory map from this process'
    resident set (the data stays in the page cache). A no-op for ordinary arrays."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "mode", "c") not in ("r", "r+", "readonly", "readwrite"):
        return
    if not hasattr(mm, "madvise") or not hasattr(_mmap_mod, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        start = arr.__array_interface__["data"][0] - base + row_lo * arr.strides[0]
        stop = start + (row_hi - row_lo) * arr.strides[0]
        page = _mmap_mod.PAGESIZE
        start = max(0, (start // page) * page)
        stop = min(len(mm), stop)
        if stop > start:
            mm.madvise(_mmap_mod.MADV_DONTNEED, start, stop - start)
    except (ValueError, OSError, TypeError, BufferError):  # pragma: no cover - best effort
        pass


def _release_all(arr):
    if getattr(arr, "_mmap", None) is not None and arr.ndim == 2:
        _release(arr, 0, arr.shape[0])


def _block_f32(src, lo, hi, buf, normalize):
    """Rows ``lo:hi`` of ``src`` as C-contiguous float32 (a view when possible, else converted
    into ``buf``), row-normalised when ``normalize``. The Numba kernels only ever see
    C-contiguous arrays here (one compiled signature each)."""
    from .kernels import topk as K

    blk = np.asarray(src[lo:hi])
    n = hi - lo
    if blk.dtype == np.float32 and blk.flags.c_contiguous:
        if not normalize:
            return blk
        out = buf[:n]
        K.block_to_f32(blk, out, True)
        return out
    out = buf[:n]
    if blk.dtype == np.float16:
        K.block_f16_to_f32(np.ascontiguousarray(blk).view(np.uint16), out, normalize)
        return out
    np.copyto(out, blk, casting="unsafe")  # float64 or strided float32
    if normalize:
        K.block_to_f32(out, out, True)
    return out


def _normalize_rows_inplace(x):
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    return x


def _sq_norms(x):
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


class _Threads:
    """Context manager: Numba (and, with threadpoolctl, BLAS) thread counts for one call."""

    def __init__(self, n_threads):
        self.n = n_threads
        self._prev = None
        self._ctl = None

    def __enter__(self):
        if self.n is None:
            return self
        import numba

        self._prev = numba.get_num_threads()
        numba.set_num_threads(min(self.n, numba.config.NUMBA_NUM_THREADS))
        try:
            from threadpoolctl import threadpool_limits

            self._ctl = threadpool_limits(limits=self.n, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            self._ctl = None
        return self

    def __exit__(self, *exc):
        if self.n is None:
            return False
        import numba

        numba.set_num_threads(self._prev)
        if self._ctl is not None:
            self._ctl.restore_original_limits()
        return False


# ------------------------------------------------------------------------------------ topk


def topk(
    queries,
    corpus,
    k,
    *,
    metric="ip",
    exclude=None,
    backend="auto",
    index=None,
    progress=False,
    query_block=None,
    corpus_block=None,
    n_threads=None,
):
    """Exact top-k corpus rows of every query.

    Parameters
    ----------
    queries : array of shape (n_queries, dim)
        float32 or float16 (float64 accepted, computed in float32). Memory maps work.
    corpus : array of shape (n_docs, dim)
        float32 or float16 (float64 accepted); ``np.load(path, mmap_mode="r")`` of a file larger
        than memory works with the ``"numba"`` backend (memory set by the block sizes).
    k : int
        Candidates per query. With ``k`` larger than the documents available to a query the row
        is padded with ``-1`` / ``-inf``.
    metric : {"ip", "cosine", "l2"}, default="ip"
        Inner product; cosine similarity (rows normalised on the fly, all-zero rows score 0); or
        ``"l2"``: the score is the negative squared Euclidean distance.
    exclude : tuple (indptr, ids), list of integer arrays, scipy CSR matrix or None
        Corpus rows to leave out per query (e.g. the positives). A ``tuple`` is read as a CSR
        pair (``indptr`` of length ``n_queries + 1``); a ``list`` as one array per query.
    backend : {"auto", "numba", "faiss"}, default="auto"
        ``"numba"``: the exact streaming backend. ``"faiss"``: a faiss index (exact
        ``IndexFlatIP`` unless ``index`` is given). ``"auto"``: ``"faiss"`` when ``index`` is
        given, otherwise the exact backend that is faster for these shapes (the choice is
        logged at INFO level and stored in ``Candidates.backend``).
    index : faiss index, str, tuple (str, str) or None
        faiss backend only. A faiss index over the corpus rows (already trained and filled, ids
        = corpus row numbers, inner-product metric; for ``metric="cosine"`` built on normalised
        rows; for ``"l2"`` an L2 index); a factory string such as ``"IVF1024,Flat"`` or
        ``"HNSW32"`` (built, trained on up to 262,144 corpus rows and filled here); or a pair
        ``(factory, params)`` where ``params`` is a faiss ``ParameterSpace`` string such as
        ``"nprobe=32"`` or ``"efSearch=128"``. Scores then come from the index (approximate for
        compressed indexes): use :func:`rescore` for exact scores.
    progress : bool, default=False
        Show a progress bar over blocks (needs tqdm; silently off without it).
    query_block, corpus_block : int, optional
        Block sizes in rows; results do not depend on them. ``query_block`` (default 4096,
        fewer for very large ``k``) queries share one pass over the corpus and one set of
        candidate buffers (``query_block * (2k + 64) * 8`` bytes); it also batches faiss
        searches. ``corpus_block``: corpus rows converted to float32 at once for float16,
        cosine or memory-mapped corpora (default: about 32 MB of rows); an in-memory float32
        corpus is used in place, in one block.
    n_threads : int, optional
        Threads for Numba, BLAS (through threadpoolctl, when installed) and faiss during this
        call; the previous settings are restored afterwards. ``None`` keeps the current ones.
        Results do not depend on it.

    Returns
    -------
    Candidates
        ``ids`` (n_queries, k) int64 and ``scores`` (n_queries, k) float32, each row sorted by
        score descending, ties by lower document id; ``backend`` names the backend used.

    Raises
    ------
    ValueError
        Bad shapes or dtypes, ``k < 1``, unknown metric/backend, excluded ids out of range.
    """
    queries, corpus = _check_pair(queries, corpus)
    k = _check_pos_int(k, "k", allow_none=False)
    metric = _check_metric(metric)
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    query_block = _check_pos_int(query_block, "query_block")
    corpus_block = _check_pos_int(corpus_block, "corpus_block")
    n_threads = _check_pos_int(n_threads, "n_threads")
    if index is not None and backend == "numba":
        raise ValueError("index is only used by the faiss backend: pass backend='faiss' or "
                         "'auto' with index, or drop index")
    n_q, n_d = queries.shape[0], corpus.shape[0]
    excl = _normalize_exclude(exclude, n_q, n_d)

    if backend == "auto":
        backend = _choose_backend(n_q, n_d, queries.shape[1], k, index)
        logger.info("simans_fast.topk: backend=%r for %d queries x %d docs (dim %d, k=%d)",
                    backend, n_q, n_d, queries.shape[1], k)
    with _Threads(n_threads):
        if backend == "numba":
            ids, scores = _topk_numba(queries, corpus, k, metric, excl, progress,
                                      query_block, corpus_block)
        else:
            ids, scores = _topk_faiss(queries, corpus, k, metric, excl, index, progress,
                                      query_block, n_threads)
    return Candidates(ids, scores, backend)


def _choose_backend(n_q, n_d, dim, k, index):
    """Backend for ``backend="auto"``.

    The exact streaming backend was faster than building and searching ``faiss.IndexFlatIP``
    at every shape measured (1 to 5,000 queries against 100,000 x 768 documents, k from 100 to
    1000; benchmarks/compare_topk.py, docs/topk.md), needs no copy of the corpus, and also
    serves float16 and memory-mapped corpora, so it is chosen unless an index is given.
    """
    if index is not None:
        return "faiss"
    return "numba"


def _blas_single_thread():
    """Context limiting every loaded BLAS to one thread, or ``None`` without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    return threadpool_limits(limits=1, user_api="blas")


def _topk_numba(queries, corpus, k, metric, excl, progress, query_block, corpus_block,
                fused=None, select=True, z=None):
    """Exact streaming top-k; returns (ids, scores).

    ``fused`` (default: when threadpoolctl is available) runs GEMM and selection in one Numba
    parallel region per corpus block, threads working on their own query sub-blocks with
    single-threaded BLAS calls (:func:`simans_fast.kernels.topk.gemm_select`). Otherwise each
    block is one multi-threaded NumPy matmul followed by a parallel selection pass
    (:func:`simans_fast.kernels.topk.select_block`). Both give identical results.
    ``select=False`` (fused only) runs the GEMMs alone: the benchmarks' floor. ``z`` is the
    margin of the threshold guess (see :func:`simans_fast.kernels.topk._compact`; 0 disables
    guessing); rows whose guess is not confirmed are recomputed without guessing.
    """
    import numba

    from .kernels import topk as K

    n_q, d = queries.shape
    n_d = corpus.shape[0]
    ids_out = np.full((n_q, k), -1, dtype=np.int64)
    scores_out = np.full((n_q, k), -np.inf, dtype=np.float32)
    if n_q == 0 or n_d == 0:
        return ids_out, scores_out
    if n_d >= 2**32:
        raise ValueError(f"corpus has {n_d} rows; the numba backend supports fewer than 2**32")

    blas_ctx = None
    if fused is None or fused:
        blas_ctx = _blas_single_thread()
        fused = blas_ctx is not None

    k_sel = min(k, n_d)
    cap = min(k_sel + max(k_sel, 128), n_d + 1)  # > k_sel: room to append before compaction
    qb = query_block or DEFAULT_QUERY_BLOCK
    qb = max(1, min(qb, n_q, _STATE_BUDGET // ((cap + K.CHUNK) * 8)))
    normalize = metric == "cosine"
    in_memory_f32 = (corpus.dtype == np.float32 and corpus.flags.c_contiguous
                     and getattr(corpus, "_mmap", None) is None)
    if corpus_block:
        cb = corpus_block
    elif fused and in_memory_f32 and not normalize:
        cb = n_d  # the whole corpus is one block: no copy, one parallel region per query block
    else:
        cb = max(_TILE, (DEFAULT_CORPUS_BUFFER // (4 * d)) // _TILE * _TILE)
    cb = max(1, min(cb, n_d))

    if excl is None:
        indptr = np.zeros(n_q + 1, dtype=np.int64)
        eids = np.zeros(0, dtype=np.int64)
    else:
        indptr, eids = excl

    qbuf = np.empty((qb, d), dtype=np.float32)
    need_cbuf = normalize or corpus.dtype != np.float32 or not corpus.flags.c_contiguous
    cbuf = np.empty((cb, d), dtype=np.float32) if need_cbuf else None
    if fused:
        # enough thread tasks for every thread even when there are few queries
        sub = max(1, min(_SUB, -(-min(qb, n_q) // numba.get_num_threads())))
        tile = max(1, min(_TILE, cb))
        n_thr = numba.config.NUMBA_NUM_THREADS
        sbuf = np.empty((n_thr, sub * tile), dtype=np.float32)
    else:
        sbuf = np.empty(qb * cb, dtype=np.float32)
    keys = np.empty((qb, cap + K.CHUNK), dtype=np.uint64)
    state = np.empty((qb, 3), dtype=np.int64)
    thr = np.empty((qb, 1), dtype=np.float32)
    ok = np.empty(qb, dtype=np.uint8)
    z = _GUESS_Z if z is None else float(z)
    n_tot = float(n_d)
    failed = []
    empty_f32 = np.zeros(0, dtype=np.float32)

    n_qblocks = -(-n_q // qb)
    n_cblocks = -(-n_d // cb)
    try:
        if blas_ctx is not None:
            blas_ctx.__enter__()
        with progress_bar(n_qblocks * n_cblocks, desc="top-k", enable=progress,
                          unit="block") as bar:
            for qs in range(0, n_q, qb):
                qe = min(n_q, qs + qb)
                nb = qe - qs
                Q = _block_f32(queries, qs, qe, qbuf, normalize)
                _release(queries, qs, qe)
                l2 = metric == "l2"
                qn = _sq_norms(Q) if l2 else empty_f32
                state[:nb, 0] = 0
                state[:nb, 1] = indptr[qs:qe]
                state[:nb, 2] = 0
                thr[:nb] = -np.inf
                kq = keys[:nb]
                for cs in range(0, n_d, cb):
                    ce = min(n_d, cs + cb)
                    nc = ce - cs
                    C = _block_f32(corpus, cs, ce, cbuf, normalize)
                    cn = _sq_norms(C) if l2 else empty_f32
                    if fused:
                        with numba.parallel_chunksize(1):
                            K.gemm_select(Q, C, cs, kq, state[:nb], thr[:nb], k_sel, indptr,
                                          eids, qs, n_tot, z, sbuf, sbuf.view(np.uint32), sub,
                                          tile, l2, qn, cn, select, K.SGEMM)
                    else:
                        S = sbuf[: nb * nc].reshape(nb, nc)
                        np.matmul(Q, C.T, out=S)
                        if l2:
                            K.l2_from_ip(S, qn, cn)
                        K.select_block(S, S.view(np.uint32), cs, kq, state[:nb], thr[:nb],
                                       k_sel, indptr, eids, qs, n_tot, z)
                    _release(corpus, cs, ce)
                    bar.update(1)
                if k_sel == k:
                    K.finalize(kq, state[:nb], thr[:nb], k_sel, ids_out[qs:qe],
                               scores_out[qs:qe], ok[:nb])
                else:  # k > n_docs: finalize into C-contiguous blocks, then pad
                    bi = np.empty((nb, k_sel), dtype=np.int64)
                    bs = np.empty((nb, k_sel), dtype=np.float32)
                    K.finalize(kq, state[:nb], thr[:nb], k_sel, bi, bs, ok[:nb])
                    ids_out[qs:qe, :k_sel] = bi
                    scores_out[qs:qe, :k_sel] = bs
                if select and not ok[:nb].all():
                    failed.append(qs + np.flatnonzero(ok[:nb] == 0))
    finally:
        if blas_ctx is not None:
            blas_ctx.__exit__(None, None, None)
    if failed:
        # rows whose threshold guess was not confirmed: redo them exactly, without guessing
        rows = np.concatenate(failed)
        logger.debug("simans_fast.topk: %d of %d rows recomputed without threshold guessing",
                     rows.size, n_q)
        sub_excl = None
        if excl is not None:
            lens = indptr[rows + 1] - indptr[rows]
            sub_ptr = np.zeros(rows.size + 1, dtype=np.int64)
            np.cumsum(lens, out=sub_ptr[1:])
            take = np.concatenate([np.arange(indptr[r], indptr[r + 1]) for r in rows]) \
                if sub_ptr[-1] else np.zeros(0, dtype=np.int64)
            sub_excl = (sub_ptr, eids[take])
        sub_q = np.asarray(queries[rows])
        i, s = _topk_numba(sub_q, corpus, k, metric, sub_excl, False, query_block,
                           corpus_block, fused=fused, z=0.0)
        ids_out[rows] = i
        scores_out[rows] = s
    return ids_out, scores_out


# ------------------------------------------------------------------------------------ faiss


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu "
                          "(or simans_fast[faiss])") from exc
    return faiss


def _faiss_index(faiss, index, corpus, metric, normalize, cb):
    """The faiss index to search: ``index`` checked, or built from the corpus."""
    n_d, d = corpus.shape
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    params = None
    if isinstance(index, tuple):
        if len(index) != 2 or not all(isinstance(p, str) for p in index):
            raise ValueError("index as a tuple must be (factory_string, parameter_string), "
                             f"got {index!r}")
        index, params = index
    if index is None or isinstance(index, str):
        if index is None:
            idx = faiss.IndexFlatIP(d) if faiss_metric == faiss.METRIC_INNER_PRODUCT else \
                faiss.IndexFlatL2(d)
        else:
            try:
                idx = faiss.index_factory(d, index, faiss_metric)
            except RuntimeError as exc:
                raise ValueError(f"index: faiss could not build {index!r}: {exc}") from None
        buf = np.empty((cb, d), dtype=np.float32)
        if not idx.is_trained:
            n_train = min(n_d, _MAX_TRAIN)
            rows = np.sort(np.random.default_rng(0).choice(n_d, size=n_train, replace=False))
            xt = np.asarray(corpus[rows], dtype=np.float32)
            if normalize:
                _normalize_rows_inplace(xt)
            idx.train(np.ascontiguousarray(xt))
            del xt
        for cs in range(0, n_d, cb):
            ce = min(n_d, cs + cb)
            idx.add(np.ascontiguousarray(_block_f32(corpus, cs, ce, buf, normalize)))
            _release(corpus, cs, ce)
    else:
        idx = index
        if not hasattr(idx, "search") or not hasattr(idx, "ntotal"):
            raise ValueError(f"index must be a faiss index, a factory string or None, got "
                             f"{type(index).__name__}")
        if idx.d != d:
            raise ValueError(f"index has dimension {idx.d}, queries/corpus have {d}")
        if idx.ntotal != n_d:
            raise ValueError(f"index holds {idx.ntotal} vectors but corpus has {n_d} rows; ids "
                             "must be corpus row numbers")
        if not idx.is_trained:
            raise ValueError("index is not trained")
        mt = getattr(idx, "metric_type", faiss_metric)
        if mt != faiss_metric:
            want = "METRIC_L2" if metric == "l2" else "METRIC_INNER_PRODUCT"
            raise ValueError(f"index metric does not match metric={metric!r}: expected {want}")
    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(idx, params)
        except RuntimeError as exc:
            raise ValueError(f"index: faiss rejected parameters {params!r}: {exc}") from None
    return idx


def _topk_faiss(queries, corpus, k, metric, excl, index, progress, query_block, n_threads):
    faiss = _import_faiss()
    import numba

    n_q, d = queries.shape
    n_d = corpus.shape[0]
    normalize = metric == "cosine"
    ids_out = np.full((n_q, k), -1, dtype=np.int64)
    scores_out = np.full((n_q, k), -np.inf, dtype=np.float32)
    if n_q == 0 or n_d == 0:
        return ids_out, scores_out
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads or numba.get_num_threads())
    try:
        idx = _faiss_index(faiss, index, corpus, metric, normalize, DEFAULT_CORPUS_BLOCK)
        if excl is None:
            extra = 0
            indptr = eids = None
        else:
            indptr, eids = excl
            extra = int(np.diff(indptr).max()) if n_q else 0
        kf = min(k + extra, idx.ntotal)
        # documents each query can get: min(k, n_docs - distinct excluded)
        avail = np.minimum(k, n_d - _distinct_per_row(excl, n_q))
        qb = query_block or 4096
        qbuf = np.empty((min(qb, n_q), d), dtype=np.float32)
        short = 0
        with progress_bar(n_q, desc="top-k (faiss)", enable=progress, unit="q") as bar:
            for qs in range(0, n_q, qb):
                qe = min(n_q, qs + qb)
                Q = np.ascontiguousarray(_block_f32(queries, qs, qe, qbuf, normalize))
                D, I = idx.search(Q, kf)
                D = D.astype(np.float32, copy=False)
                I = I.astype(np.int64, copy=False)
                if metric == "l2":
                    D = -D
                bad = I < 0
                if extra:
                    bad |= _excluded_mask(I, indptr[qs : qe + 1], eids, n_d)
                D = np.where(bad, np.float32(-np.inf), D)
                I = np.where(bad, -1, I)
                # canonical order: score descending, id ascending, padding last
                order = np.lexsort((np.where(bad, np.iinfo(np.int64).max, I), -D), axis=-1)
                I = np.take_along_axis(I, order, axis=1)[:, :k]
                D = np.take_along_axis(D, order, axis=1)[:, :k]
                kk = I.shape[1]
                ids_out[qs:qe, :kk] = I
                scores_out[qs:qe, :kk] = D
                got = np.count_nonzero(I >= 0, axis=1)
                short += int(np.count_nonzero(got < avail[qs:qe]))
                bar.update(qe - qs)
        if short:
            logger.warning("simans_fast.topk(backend='faiss'): %d of %d queries came back with "
                           "fewer than min(k=%d, documents available) candidates (approximate "
                           "index or too few results); they are padded with -1/-inf",
                           short, n_q, k)
    finally:
        faiss.omp_set_num_threads(prev)
    return ids_out, scores_out


def _excluded_mask(I, indptr, eids, n_d):
    """Boolean mask of ``I`` entries that are in their row's exclusion list."""
    nb, kf = I.shape
    lo = indptr[0]
    cnt = np.diff(indptr)
    if cnt.sum() == 0:
        return np.zeros(I.shape, dtype=bool)
    rows = np.repeat(np.arange(nb, dtype=np.int64), cnt)
    ex = rows * np.int64(n_d) + eids[lo : indptr[-1]]
    q = np.arange(nb, dtype=np.int64)[:, None] * np.int64(n_d) + np.where(I < 0, 0, I)
    return np.isin(q, ex) & (I >= 0)


def _distinct_per_row(excl, n_q):
    """Number of distinct excluded ids per query (ids sorted within rows)."""
    if excl is None:
        return np.zeros(n_q, dtype=np.int64)
    indptr, eids = excl
    if eids.size == 0:
        return np.zeros(n_q, dtype=np.int64)
    row = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(indptr))
    first = np.ones(eids.shape[0], dtype=bool)
    first[1:] = (eids[1:] != eids[:-1]) | (row[1:] != row[:-1])
    return np.bincount(row[first], minlength=n_q).astype(np.int64)


# ---------------------------------------------------------------------------------- rescore


def rescore(queries, corpus, ids, *, metric="ip", query_block=None):
    """Exact scores of given candidates.

    Parameters
    ----------
    queries : array of shape (n_queries, dim)
        float32 or float16 (float64 accepted).
    corpus : array of shape (n_docs, dim)
        float32 or float16 (float64 accepted); memory maps work (only the rows named in ``ids``
        are read). float16 values are converted exactly and products are summed in float64.
    ids : integer array of shape (n_queries, k)
        Corpus row indices; ``-1`` marks padding.
    metric : {"ip", "cosine", "l2"}, default="ip"
        As in :func:`topk`.
    query_block : int, optional
        Queries converted per block (default 4096).

    Returns
    -------
    ndarray of shape (n_queries, k), float32
        Scores, ``-inf`` where ``ids == -1``.

    Raises
    ------
    ValueError
        Shape or dtype mismatch, or ids outside ``[-1, n_docs)``.
    """
    from .kernels import topk as K

    queries, corpus = _check_pair(queries, corpus)
    metric = _check_metric(metric)
    query_block = _check_pos_int(query_block, "query_block")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        if ids.size == 0 and ids.ndim == 2:
            ids = ids.astype(np.int64)
        else:
            raise ValueError(f"ids must be an integer array, got dtype {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] != queries.shape[0]:
        raise ValueError(f"ids must have shape (n_queries, k) = ({queries.shape[0]}, k), got "
                         f"{ids.shape}")
    n_q, d = queries.shape
    n_d = corpus.shape[0]
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= n_d:
            bad = lo if lo < -1 else hi
            raise ValueError(f"ids holds {bad}, out of range: ids must be corpus row indices "
                             f"0..{n_d - 1} or -1 for padding")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    out = np.empty(ids.shape, dtype=np.float32)
    if ids.size == 0:
        return out
    mode = {"ip": 0, "cosine": 1, "l2": 2}[metric]
    if corpus.dtype == np.float16:
        cview = np.asarray(corpus).view(np.uint16)
    else:
        cview = np.asarray(corpus)
    qb = query_block or 4096
    qbuf = np.empty((min(qb, n_q), d), dtype=np.float32)
    for qs in range(0, n_q, qb):
        qe = min(n_q, qs + qb)
        Q = np.ascontiguousarray(_block_f32(queries, qs, qe, qbuf, metric == "cosine"))
        if corpus.dtype == np.float16:
            K.rescore_f16(Q, cview, ids[qs:qe], mode, out[qs:qe])
        else:
            K.rescore_dense(Q, cview, ids[qs:qe], mode, out[qs:qe])
        _release(queries, qs, qe)
        _release_all(corpus)
    return out

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
    wait for each other. Every BLAS call has one fixed, zero-padded shape and every row a fixed
    place in it, so the result is bit-identical for any thread count, block size or chunking
    (see :func:`_topk_numba`). After the first tiles almost every score is below the current k-th
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
import math
import os
import threading

import numpy as np

from . import _config
from ._config import thread_limits
from ._blocks import block_f32 as _block_f32, check_finite as _check_finite, empty_result, \
    sub_exclusions
from .candidates_torch import Candidates
from .store.pages import release_all, release_rows
from ._progress import progress_bar
from ._validate import ParameterError, check_embeddings, check_offset, check_pos_int, \
    normalize_csr, validate

__all__ = ["Candidates", "topk", "rescore"]

logger = logging.getLogger(__name__)

_METRICS = _config.METRICS
_BACKENDS = _config.BACKENDS
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))
#: default query block of the exact backend (rows): the package's one query block
DEFAULT_QUERY_BLOCK = _config.DEFAULT_QUERY_BLOCK
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
#: memory budget (bytes) of the score block of the unfused path
_SCORE_BUDGET = 64 * 2**20
#: rows of the corpus used to train an index built from a factory string
_MAX_TRAIN = 262_144


# the result type is defined one step below, in candidates_torch.py (shared with the torch
# backend, which must not import this module); it is re-exported here under its public name
# ----------------------------------------------------------------------------------- validation


def _as_matrix(x, name):
    """2-D float array view of ``x`` (no copy for arrays / memory maps): the embeddings rule of
    :func:`simans_fast._validate.check_embeddings`."""
    return check_embeddings(x, name)


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
    return validate("metric", metric)


_check_pos_int = check_pos_int
_check_offset = check_offset


def _int_array(a, name):
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False).ravel()


def _normalize_exclude(exclude, n_q, n_d):
    """CSR ``(indptr, ids)`` of excluded rows, ids sorted within each row, or ``None``: the one
    CSR normaliser (:func:`simans_fast._validate.normalize_csr`) with ``sort=True``."""
    return normalize_csr(exclude, n_q, n_d, name="exclude", sort=True, unique=False,
                         allow_none=True)


# ---------------------------------------------------------------------------- block helpers


# release_rows (drop a memory map's pages after a block) lives in store/pages.py


def _normalize_rows_inplace(x):
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    return x




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
    query_offset=0,
    corpus_offset=0,
    device=None,
    dtype=None,
    prefilter=None,
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
    backend : {"auto", "numba", "faiss", "torch"}, default="auto"
        ``"numba"``: the exact streaming backend. ``"faiss"``: a faiss index (exact
        ``IndexFlatIP`` unless ``index`` is given). ``"torch"``: exact top-k with torch on the
        tensors' device (:func:`simans_fast.torch.topk_torch`; torch tensors on any device or
        arrays moved to ``device`` block by block; on CPU its ids equal the numba backend's
        wherever scores are not tied). ``"auto"``: ``"faiss"`` when ``index`` is
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
        Block sizes in rows; results do not depend on them (bit for bit). ``query_block``
        (default 4096, fewer for very large ``k``; rounded up to a multiple of 256) queries
        share one pass over the corpus and one set of candidate buffers
        (``query_block * (2k + 64) * 8`` bytes); it also batches faiss searches.
        ``corpus_block`` (rounded up to a multiple of 1024): corpus rows converted to float32
        at once for float16, cosine or memory-mapped corpora (default: about 32 MB of rows);
        an in-memory float32 corpus is used in place, in one block.
    n_threads : int, optional
        Threads for Numba, BLAS (through threadpoolctl, when installed) and faiss during this
        call; the previous settings are restored afterwards. ``None`` keeps the current ones.
        Results do not depend on it (bit for bit).
    device, dtype : optional
        ``"torch"`` backend only: the device to compute on and the compute dtype.
    prefilter : {None, "none", "auto", "bfloat16"}, default=None
        ``"numba"`` backend, metrics ``"ip"`` and ``"cosine"``: ``"bfloat16"`` screens the
        corpus with bfloat16 matrix products (torch; several times faster than float32 on CPUs
        with AVX512-BF16 or AMX), keeps more than ``k`` candidates per query, proves with the
        products' error bound that no other document can reach the top k, and returns the top k
        of the exactly rescored candidates; a query whose proof fails (near ties at its k-th
        place) is searched again with more candidates, so the result is always exact. Its
        scores are :func:`rescore`'s (float64 sums rounded once to float32) bit for bit, a
        function of the query and the document alone; they differ from the float32 BLAS
        scores of ``prefilter=None`` in the last bits, so ids may differ where two scores are
        that close. ``"auto"``: ``"bfloat16"`` when torch is installed, this CPU multiplies
        bfloat16 natively, the metric allows it and the corpus is in memory or a memory map
        of at most a quarter of the physical memory; otherwise ``None``
        (:func:`resolve_prefilter`). See ``simans_fast/candidates_bf16.py`` for the bound and the proof.
    query_offset, corpus_offset : int, default=0
        ``"numba"`` and ``"torch"`` backends: the global row numbers of ``queries[0]`` and ``corpus[0]`` when
        these are slices of a larger set (query chunks, corpus shards). The scores of a query
        and a document are then bit-identical to those of the same pair in one call on the
        whole set (each row keeps its place in the fixed grid of BLAS calls; see
        docs/topk.md). The returned ids are still row numbers of ``corpus``.

    Returns
    -------
    Candidates
        ``ids`` (n_queries, k) int64 and ``scores`` (n_queries, k) float32, each row sorted by
        score descending, ties by lower document id; ``backend`` names the backend used.

    Raises
    ------
    ValueError
        Bad shapes or dtypes, ``k < 1``, unknown metric/backend, excluded ids out of range, a
        NaN or infinite value in ``queries`` or ``corpus`` (the message names the first such
        row; the numba backend checks each block as it converts it, so a memory-mapped corpus
        is still streamed once).
    """
    if backend == "torch":  # tensors on any device: validated by the torch backend
        if prefilter not in (None, "none", "auto"):
            raise ParameterError("prefilter", f"prefilter={prefilter!r} runs with the numba "
                                              f"backend, not backend='torch': pass "
                                              f"backend='numba' or prefilter='none'")
        if index is not None:
            raise ParameterError("index", "index is only used by the faiss backend: drop "
                                          "index with backend='torch'")
        from .candidates_torch import topk_torch

        return topk_torch(queries, corpus, k, metric=metric, exclude=exclude,
                          progress=progress, query_block=query_block, corpus_block=corpus_block,
                          n_threads=n_threads, query_offset=query_offset,
                          corpus_offset=corpus_offset, device=device, dtype=dtype)
    if device is not None or dtype is not None:
        raise ParameterError("device", "device and dtype are only used by backend='torch'")
    queries, corpus = _check_pair(queries, corpus)
    k = _check_pos_int(k, "k", allow_none=False)
    query_offset = _check_offset(query_offset, "query_offset")
    corpus_offset = _check_offset(corpus_offset, "corpus_offset")
    metric = _check_metric(metric)
    backend = validate("backend", backend)
    query_block = _check_pos_int(query_block, "query_block")
    corpus_block = _check_pos_int(corpus_block, "corpus_block")
    n_threads = _check_pos_int(n_threads, "n_threads")
    if index is not None and backend == "numba":
        raise ParameterError("index", "index is only used by the faiss backend: pass "
                                      "backend='faiss' or 'auto' with index, or drop index")
    n_q, n_d = queries.shape[0], corpus.shape[0]
    excl = _normalize_exclude(exclude, n_q, n_d)

    if backend == "auto":
        backend = _choose_backend(n_q, n_d, queries.shape[1], k, index)
        logger.info("simans_fast.topk: backend=%r for %d queries x %d docs (dim %d, k=%d)",
                    backend, n_q, n_d, queries.shape[1], k)
    from .candidates_bf16 import topk_bf16

    first = resolve_prefilter(prefilter, metric, backend, corpus)
    with thread_limits(n_threads):  # the package's one thread policy
        if first == "bfloat16":
            ids, scores = topk_bf16(queries, corpus, k, metric, excl, progress, query_block)
        elif backend == "numba":
            ids, scores = _topk_numba(queries, corpus, k, metric, excl, progress,
                                      query_block, corpus_block, query_offset=query_offset,
                                      corpus_offset=corpus_offset)
        else:
            ids, scores = _topk_faiss(queries, corpus, k, metric, excl, index, progress,
                                      query_block, n_threads)
    return Candidates(ids, scores, backend)


#: share of the machine's physical memory a memory-mapped corpus may take for
#: ``prefilter="auto"`` to screen it in bfloat16 (it then stays in the page cache, so rescoring's
#: reads of candidate rows at random do not go to the disk)
MMAP_PREFILTER_SHARE = 0.25


def physical_memory() -> int:
    """Bytes of physical memory of this machine (0 when unknown): a property of the machine,
    not of the moment (free memory is not used, so a choice made from it is repeatable)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 0


def resolve_prefilter(prefilter, metric="ip", backend="numba", corpus=None, index=None):
    """The first pass :func:`topk` runs for these arguments: ``"bfloat16"`` or ``None``.

    The one rule, used by :func:`topk` and by the jobs that record the choice in their identity
    (:func:`simans_fast.mine_candidates`, :class:`simans_fast.pipeline.MiningJob`,
    ``simans-fast mine``). ``"bfloat16"`` needs the numba backend (``backend``; ``"auto"`` is
    numba unless ``index`` is given) and metric ``"ip"`` or ``"cosine"``, and raises otherwise.
    ``"auto"`` is ``"bfloat16"`` where that would be allowed and this CPU multiplies bfloat16
    natively, except for a memory-mapped ``corpus`` larger than :data:`MMAP_PREFILTER_SHARE`
    of the physical memory (rescoring reads candidate rows at random: from the disk, for a
    file the page cache cannot keep); else ``None``. Every input is a property of the call or
    of the machine, never a timing or the free memory, so the choice is repeatable.
    """
    from .candidates_bf16 import check_prefilter

    backend = validate("backend", backend)
    first = check_prefilter(prefilter, metric)
    if backend == "auto":
        backend = "faiss" if index is not None else "numba"
    if backend != "numba":
        if first is not None and prefilter != "auto":
            raise ParameterError("prefilter", f"prefilter={prefilter!r} runs with the numba "
                                              f"backend, not backend={backend!r}: pass "
                                              f"backend='numba' or prefilter='none'")
        return None
    if (first is not None and prefilter == "auto"
            and (isinstance(corpus, np.memmap) or getattr(corpus, "_mmap", None) is not None)
            and int(corpus.nbytes) > MMAP_PREFILTER_SHARE * physical_memory()):
        return None
    return first


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


#: (get, set) thread-count functions of the BLAS library, tried in order on the library that
#: SciPy's ``cython_blas`` (whose ``sgemm`` the kernels call) resolves its symbols from
_BLAS_THREAD_SYMBOLS = (
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),  # SciPy's wheels
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),  # system / conda OpenBLAS
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),  # MKL
)
_BLAS_API = None
_WARNED_NO_BLAS_CONTROL = False


def _blas_thread_api():
    """``(get, set)`` ctypes functions for the thread count of the BLAS behind
    ``scipy.linalg.cython_blas``, or ``None`` when it exposes none of the known ones."""
    global _BLAS_API
    if _BLAS_API is None:
        _BLAS_API = False
        import ctypes

        try:
            import scipy.linalg.cython_blas as cython_blas

            lib = ctypes.CDLL(cython_blas.__file__)  # dlsym also searches its dependencies
        except (ImportError, OSError, AttributeError):  # pragma: no cover - exotic installs
            return None
        for get_name, set_name in _BLAS_THREAD_SYMBOLS:
            try:
                get, set_ = getattr(lib, get_name), getattr(lib, set_name)
            except AttributeError:
                continue
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            _BLAS_API = (get, set_)
            break
    return _BLAS_API or None


class _BlasOneThread:
    """Context manager: the BLAS that the kernels call runs single-threaded inside it.

    A BLAS call's bits depend on how many threads the library splits it over, so every score is
    computed by single-threaded calls. The library's own thread API is used (found next to
    SciPy's ``sgemm``: OpenBLAS, MKL), else threadpoolctl; ``active`` is False when neither is
    available (the BLAS then uses its own threads). Nested and concurrent uses (several Python
    threads calling :func:`topk`) share one limit, set by the first to enter and restored by the
    last to leave."""

    _lock = threading.Lock()
    _depth = 0
    _restore_fn = None

    def __init__(self):
        self.active = False

    @staticmethod
    def available():
        """Whether the BLAS can be limited to one thread."""
        if _blas_thread_api() is not None:
            return True
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            return False
        return True

    @staticmethod
    def _limit():
        """Set one thread; returns the function restoring the previous setting, or None."""
        api = _blas_thread_api()
        if api is not None:
            get, set_ = api
            prev = int(get())
            if prev != 1:
                set_(1)
                return lambda: set_(prev)
            return lambda: None
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return None
        return threadpool_limits(limits=1, user_api="blas").restore_original_limits

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._restore_fn = cls._limit()
            if cls._restore_fn is not None:
                cls._depth += 1
                self.active = True
        return self

    def __exit__(self, *exc):
        if self.active:
            cls = type(self)
            with cls._lock:
                cls._depth -= 1
                if cls._depth == 0:
                    fn, cls._restore_fn = cls._restore_fn, None
                    fn()
            self.active = False
        return False


def _query_layout(qpos, sub):
    """Padded row of every query: query ``i`` sits at row ``qpos[i]`` of its sub-block (one BLAS
    call), queries in input order, a new sub-block whenever the position does not increase."""
    new = np.ones(qpos.shape[0], dtype=bool)
    new[1:] = qpos[1:] <= qpos[:-1]
    sub_of = np.cumsum(new) - 1
    return sub_of, sub_of * sub + qpos


def _fill_edges(edge, C, lead, nc, tile):
    """Zero-padded copies of the first and last tile of a corpus block when they are partial
    (see :func:`simans_fast.kernels.topk.gemm_select`)."""
    ntile = -(-(lead + nc) // tile)
    n0 = min(nc, tile - lead)
    if n0 < tile:
        e = edge[0]
        e[:lead] = 0.0
        e[lead : lead + n0] = C[:n0]
        e[lead + n0 :] = 0.0
    if ntile > 1:
        lo = (ntile - 1) * tile - lead
        n = nc - lo
        if n < tile:
            e = edge[1]
            e[:n] = C[lo:]
            e[n:] = 0.0


def _topk_numba(queries, corpus, k, metric, excl, progress, query_block, corpus_block,
                fused=None, select=True, z=None, query_offset=0, corpus_offset=0, qpos=None,
                check=True):
    """Exact streaming top-k; returns (ids, scores).

    Every score comes from a single-threaded BLAS ``sgemm`` of one fixed shape, ``_SUB`` query
    rows by ``_TILE`` corpus rows by ``d`` (zero-padded), with query ``i`` at row
    ``(query_offset + i) % _SUB`` and corpus row ``j`` at row ``(corpus_offset + j) % _TILE`` of
    its call (``qpos`` overrides the query positions): BLAS kernels round an element
    differently depending on the call's shape, on the element's position in it and on the
    library's thread count, never on the other rows' values, so the scores, and hence the
    result, depend on the data alone, not on threads, blocks or the other queries.

    ``fused`` (default: whenever the BLAS can be limited to one thread, see
    :class:`_BlasOneThread`) runs GEMM and selection in one Numba parallel region per corpus
    block (:func:`simans_fast.kernels.topk.gemm_select`). Otherwise the same BLAS calls run one
    after the other into a score block, followed by a parallel selection pass
    (:func:`simans_fast.kernels.topk.select_block`); both give identical bits.
    ``select=False`` runs the GEMMs alone: the benchmarks' floor. ``z`` is the margin of the
    threshold guess (see :func:`simans_fast.kernels.topk._compact`; 0 disables guessing); rows
    whose guess is not confirmed are recomputed, at their positions, without guessing.
    ``check=False`` skips the finiteness checks (rows already checked).
    """
    import numba

    from .kernels import topk as K

    n_q, d = queries.shape
    n_d = corpus.shape[0]
    ids_out, scores_out = empty_result(n_q, k, n_d, "the numba backend")
    if n_q == 0 or n_d == 0:
        return ids_out, scores_out
    SUB, TILE = int(_SUB), int(_TILE)
    blas = _BlasOneThread()

    k_sel = min(k, n_d)
    cap = min(k_sel + max(k_sel, 128), n_d + 1)  # > k_sel: room to append before compaction
    row_bytes = (cap + K.CHUNK) * 8
    if qpos is None:
        qpos = (int(query_offset) + np.arange(n_q, dtype=np.int64)) % SUB
    sub_of, prow = _query_layout(qpos, SUB)
    n_subs = int(sub_of[-1]) + 1
    qb = query_block or DEFAULT_QUERY_BLOCK
    # sub-blocks per query block: the query block rounded up to whole BLAS calls
    nsb = max(1, min(-(-qb // SUB), n_subs, _STATE_BUDGET // (SUB * row_bytes)))

    normalize = metric == "cosine"
    l2 = metric == "l2"
    in_memory_f32 = (corpus.dtype == np.float32 and corpus.flags.c_contiguous
                     and getattr(corpus, "_mmap", None) is None)
    lead_c = int(corpus_offset) % TILE
    n_pos = lead_c + n_d  # padded corpus positions
    controlled = blas.available()
    fused = (fused is None or fused) and controlled
    if not controlled:
        global _WARNED_NO_BLAS_CONTROL
        if not _WARNED_NO_BLAS_CONTROL:
            _WARNED_NO_BLAS_CONTROL = True
            logger.warning("simans_fast.topk: cannot limit the BLAS behind SciPy to one thread "
                           "(no OpenBLAS/MKL thread API found and threadpoolctl is not "
                           "installed); scores may differ in the last bits between BLAS "
                           "thread settings")
    if corpus_block:
        cb = -(-corpus_block // TILE) * TILE
    elif fused and in_memory_f32 and not normalize:
        cb = -(-n_pos // TILE) * TILE  # one block: no copy, one parallel region per query block
    else:
        cb = max(TILE, (DEFAULT_CORPUS_BUFFER // (4 * d)) // TILE * TILE)
    if not fused:  # the score block holds nsb * SUB rows by cb columns
        cb = min(cb, max(TILE, (_SCORE_BUDGET // (4 * nsb * SUB)) // TILE * TILE))
    cb = min(cb, -(-n_pos // TILE) * TILE)
    cblocks = [(max(0, p - lead_c), min(n_d, p + cb - lead_c), lead_c if p == 0 else 0)
               for p in range(0, n_pos, cb)]

    # query blocks: (first query, end, first sub-block, sub-blocks, splits). The blocking
    # changes no bit (every row keeps its place in the BLAS calls), so it is chosen for load
    # balance: a whole number of equal tasks per thread in every parallel region.
    n_thr = numba.get_num_threads()
    n_tiles = -(-n_pos // TILE)
    if fused and nsb > n_thr and nsb < n_subs:
        nsb = nsb // n_thr * n_thr
    plan = []
    for sb0 in range(0, n_subs, nsb):
        ns = min(nsb, n_subs - sb0)
        qs = int(np.searchsorted(sub_of, sb0))
        qe = int(np.searchsorted(sub_of, sb0 + ns))
        n_split = 1
        if fused and ns % n_thr:  # also split the tiles among threads
            n_split = max(1, min(n_thr // math.gcd(ns, n_thr), n_tiles,
                                 max(_STATE_BUDGET, nsb * SUB * row_bytes)
                                 // (max(1, qe - qs) * row_bytes)))
        plan.append((qs, qe, sb0, ns, n_split))
    max_rows = max(p[4] * (p[1] - p[0]) for p in plan)

    if excl is None:
        indptr = np.zeros(n_q + 1, dtype=np.int64)
        eids = np.zeros(0, dtype=np.int64)
    else:
        indptr, eids = excl

    n_pad_max = nsb * SUB
    qconv = np.empty((n_pad_max, d), dtype=np.float32)
    qpad = np.empty((n_pad_max, d), dtype=np.float32)
    slots = np.empty(n_pad_max, dtype=np.int64)
    need_cbuf = normalize or corpus.dtype != np.float32 or not corpus.flags.c_contiguous
    cbuf = np.empty((cb, d), dtype=np.float32) if need_cbuf else None
    edge = np.zeros((2, TILE, d), dtype=np.float32)
    badbuf = np.empty(max(cb, n_pad_max), dtype=np.uint8)
    if fused:
        sbuf = np.empty((numba.config.NUMBA_NUM_THREADS, SUB * TILE), dtype=np.float32)
    else:
        sbuf = np.empty(n_pad_max * cb, dtype=np.float32)
    keys = np.empty((max_rows, cap + K.CHUNK), dtype=np.uint64)
    state = np.empty((max_rows, 3), dtype=np.int64)
    thr = np.empty((max_rows, 1), dtype=np.float32)
    ok = np.empty(n_pad_max, dtype=np.uint8)
    z = _GUESS_Z if z is None else float(z)
    n_tot = float(n_d)
    failed = []
    empty_f32 = np.zeros(0, dtype=np.float32)
    cn_cache = None

    with blas, progress_bar(len(plan) * len(cblocks), desc="top-k", enable=progress,
                            unit="block") as bar:
        for bi, (qs, qe, sb0, ns, n_split) in enumerate(plan):
            nb = qe - qs
            n_pad = ns * SUB
            Q = _block_f32(queries, qs, qe, qconv, normalize)
            if check:
                _check_finite(Q, "queries", qs, badbuf)
            loc = prow[qs:qe] - sb0 * SUB
            qp = qpad[:n_pad]
            qp.fill(0.0)
            qp[loc] = Q
            sl = slots[:n_pad]
            sl.fill(-1)
            sl[loc] = np.arange(nb, dtype=np.int64)
            release_rows(queries, qs, qe)
            qn = empty_f32
            if l2:
                qn = np.empty(nb, dtype=np.float32)
                K.sq_norms(Q, qn)
            rows = n_split * nb
            st, th, kq = state[:rows], thr[:rows], keys[:rows]
            st[:, 0] = 0
            st[:, 1] = np.tile(indptr[qs:qe], n_split)
            st[:, 2] = 0
            th[:] = -np.inf
            for lo, hi, lead in cblocks:
                nc = hi - lo
                C = _block_f32(corpus, lo, hi, cbuf, normalize)
                if check and bi == 0:
                    _check_finite(C, "corpus", lo, badbuf)
                cn = empty_f32
                if l2:
                    if cn_cache is not None and len(cblocks) == 1:
                        cn = cn_cache
                    else:
                        cn = np.empty(nc, dtype=np.float32)
                        K.sq_norms(C, cn)
                        cn_cache = cn
                _fill_edges(edge, C, lead, nc, TILE)
                if fused:
                    with numba.parallel_chunksize(1):
                        K.gemm_select(qp, sl, C, edge, lead, lo, kq, st, th, k_sel, indptr,
                                      eids, qs, n_tot, z, n_split, sbuf, sbuf.view(np.uint32),
                                      SUB, TILE, l2, qn, cn, select, K.SGEMM)
                else:
                    width = -(-(lead + nc) // TILE) * TILE
                    S = sbuf[: n_pad * width].reshape(n_pad, width)
                    K.gemm_block(qp, C, edge, lead, S, SUB, TILE, K.SGEMM)
                    if select:
                        K.select_block(S, S.view(np.uint32), sl, lead, nc, lo, kq, st, th,
                                       k_sel, indptr, eids, qs, n_tot, z, l2, qn, cn)
                release_rows(corpus, lo, hi)
                bar.update(1)
            if k_sel == k:
                K.finalize(kq, st, th, k_sel, n_split, ids_out[qs:qe], scores_out[qs:qe],
                           ok[:nb])
            else:  # k > n_docs: finalize into C-contiguous blocks, then pad
                bi_ = np.empty((nb, k_sel), dtype=np.int64)
                bs_ = np.empty((nb, k_sel), dtype=np.float32)
                K.finalize(kq, st, th, k_sel, n_split, bi_, bs_, ok[:nb])
                ids_out[qs:qe, :k_sel] = bi_
                scores_out[qs:qe, :k_sel] = bs_
            if select and not ok[:nb].all():
                failed.append(qs + np.flatnonzero(ok[:nb] == 0))
    if failed:
        # rows whose threshold guess was not confirmed: redo them exactly, without guessing,
        # each at its own position in the BLAS calls (so with the same scores)
        rows = np.concatenate(failed)
        logger.debug("simans_fast.topk: %d of %d rows recomputed without threshold guessing",
                     rows.size, n_q)
        sub_excl = None if excl is None else sub_exclusions(excl, rows)
        sub_q = np.asarray(queries[rows])
        i, s = _topk_numba(sub_q, corpus, k, metric, sub_excl, False, query_block,
                           corpus_block, fused=fused, z=0.0, corpus_offset=corpus_offset,
                           qpos=qpos[rows], check=False)
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
        badbuf = np.empty(cb, dtype=np.uint8)
        if not idx.is_trained:
            n_train = min(n_d, _MAX_TRAIN)
            rows = np.sort(np.random.default_rng(0).choice(n_d, size=n_train, replace=False))
            with np.errstate(over="ignore", invalid="ignore"):
                xt = np.ascontiguousarray(corpus[rows], dtype=np.float32)
            if not np.isfinite(xt).all():  # name the first bad row of the whole corpus
                for cs in range(0, n_d, cb):
                    ce = min(n_d, cs + cb)
                    _check_finite(_block_f32(corpus, cs, ce, buf, False), "corpus", cs, badbuf)
                    release_rows(corpus, cs, ce)
            if normalize:
                _normalize_rows_inplace(xt)
            idx.train(np.ascontiguousarray(xt))
            del xt
        for cs in range(0, n_d, cb):
            ce = min(n_d, cs + cb)
            blk = np.ascontiguousarray(_block_f32(corpus, cs, ce, buf, normalize))
            _check_finite(blk, "corpus", cs, badbuf)
            idx.add(blk)
            release_rows(corpus, cs, ce)
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
        qb = query_block or DEFAULT_QUERY_BLOCK
        qbuf = np.empty((min(qb, n_q), d), dtype=np.float32)
        badbuf = np.empty(min(qb, n_q), dtype=np.uint8)
        short = 0
        with progress_bar(n_q, desc="top-k (faiss)", enable=progress, unit="q") as bar:
            for qs in range(0, n_q, qb):
                qe = min(n_q, qs + qb)
                Q = np.ascontiguousarray(_block_f32(queries, qs, qe, qbuf, normalize))
                _check_finite(Q, "queries", qs, badbuf)
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
        Shape or dtype mismatch, ids outside ``[-1, n_docs)``, a NaN or infinite value in
        ``queries`` or in a corpus row named in ``ids`` (the message names the row).

    Notes
    -----
    Each score is a float64 sum rounded once to float32, computed the same way for every pair,
    so it does not depend on the thread count, ``query_block`` or the other ids. It agrees
    with :func:`topk`'s float32 BLAS score of the same pair to float32 rounding (about
    ``1e-7`` relative), not bit for bit: a BLAS rounds an element depending on its place in
    the call, which a single pair cannot reproduce at any reasonable cost.
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
    qb = query_block or DEFAULT_QUERY_BLOCK
    qbuf = np.empty((min(qb, n_q), d), dtype=np.float32)
    badbuf = np.empty(min(qb, n_q), dtype=np.uint8)
    # a memory-mapped corpus: reading a row through the map maps a whole page-cache folio (up
    # to 2 MiB on recent kernels), so the named rows are read from the file instead, a few
    # thousand at a time into one buffer, and scored there (the same values: each score
    # depends on the two rows only)
    import mmap as _mm
    import os as _os

    src = None
    if (isinstance(corpus, np.memmap) and getattr(corpus, "_mmap", None) is not None
            and corpus.filename and corpus.mode in ("r", "r+", "w+", "readonly", "readwrite",
                                                    "write")
            and corpus.strides == (d * corpus.itemsize, corpus.itemsize)
            and hasattr(_os, "preadv")):
        try:
            base = np.frombuffer(corpus._mmap, dtype=np.uint8, count=1).ctypes.data
            start = (int(corpus.offset) - int(corpus.offset) % _mm.ALLOCATIONGRANULARITY
                     + corpus.__array_interface__["data"][0] - base)
            src = (corpus.filename, start, d * corpus.itemsize)
        except (TypeError, ValueError, BufferError):  # pragma: no cover - best effort
            src = None
    rows_max = 16384
    sub = max(1, rows_max // max(1, ids.shape[1])) if src is not None else qb
    gbuf = None

    def gathered(blk):
        """(rows of ``blk``'s ids read from the file, ``blk`` renumbered into them)."""
        nonlocal gbuf
        valid = blk >= 0
        u = np.unique(blk[valid])
        if gbuf is None or gbuf.shape[0] < u.shape[0]:
            gbuf = np.empty((max(u.shape[0], 1), d), dtype=corpus.dtype)
        flat = gbuf.reshape(-1).view(np.uint8)
        path, start, rowb = src
        brk = np.flatnonzero(np.diff(u) != 1) + 1
        firsts = np.concatenate([[0], brk]).tolist()
        lasts = np.concatenate([brk, [u.shape[0]]]).tolist()
        with open(path, "rb", buffering=0) as f:
            fd = f.fileno()
            for a, b in zip(firsts, lasts):
                if a == b:
                    continue
                want = (b - a) * rowb
                got = _os.preadv(fd, [memoryview(flat[a * rowb:b * rowb])],
                                 start + int(u[a]) * rowb)
                if got != want:
                    raise OSError(f"{path}: short read ({got} of {want} bytes)")
        local = np.where(valid, np.searchsorted(u, np.where(valid, blk, 0)), -1)
        rows = gbuf[: u.shape[0]]
        return (rows.view(np.uint16) if corpus.dtype == np.float16 else rows), local

    for qs in range(0, n_q, qb):
        qe = min(n_q, qs + qb)
        Q = np.ascontiguousarray(_block_f32(queries, qs, qe, qbuf, metric == "cosine"))
        _check_finite(Q, "queries", qs, badbuf)
        for s0 in range(qs, qe, sub):
            s1 = min(qe, s0 + sub)
            cv, blk = (cview, ids[s0:s1]) if src is None else gathered(ids[s0:s1])
            blk = np.ascontiguousarray(blk, dtype=np.int64)
            Qs = Q[s0 - qs:s1 - qs]
            if corpus.dtype == np.float16:
                K.rescore_f16(Qs, cv, blk, mode, out[s0:s1])
            else:
                K.rescore_dense(Qs, cv, blk, mode, out[s0:s1])
        release_rows(queries, qs, qe)
        release_all(corpus)
        # the sums are float64: a non-finite one comes from a non-finite corpus row (the
        # queries are finite); a finite row whose score overflows float32 stays +-inf
        blk = ids[qs:qe]
        odd = ~np.isfinite(out[qs:qe]) & (blk >= 0)
        if odd.any():
            docs = np.unique(blk[odd])
            rows = np.asarray(corpus[docs], dtype=np.float32)
            bad = docs[~np.isfinite(rows).all(axis=1)]
            if bad.size:
                raise ValueError(f"corpus row {int(bad[0])} (named in ids) is not finite (it "
                                 f"holds NaN or inf): embeddings must be finite numbers")
    return out

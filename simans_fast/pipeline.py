"""End-to-end SimANS mining: exact top-k, positives removed, positive scores, sampler.

:func:`mine` is the one-call pipeline::

    sampler = sf.mine(queries, corpus, qrels, k=200, n=15, a=0.5, b=0.0, seed=0)
    negatives = sampler.sample(epoch=0)          # (n_queries, n) corpus row indices, -1 padded

:func:`mine_candidates` stops before the sampler and returns the arrays (candidates with the
positives excluded, every positive's exact score), which is what the command line tool saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._progress import progress_bar

__all__ = ["mine", "mine_candidates", "MinedCandidates", "normalize_qrels", "positive_matrix"]


@dataclass(frozen=True)
class MinedCandidates:
    """Candidates of a set of queries, positives excluded, with every positive's exact score.

    Attributes
    ----------
    candidate_ids : ndarray of shape (n_queries, k), int64
        Corpus row indices of the top-k non-positive documents, best first; ``-1`` pads rows
        with fewer than ``k`` candidates (tiny corpora).
    candidate_scores : ndarray of shape (n_queries, k), float32
        Their scores (non-increasing along a row); padding is ``-inf`` or NaN.
    positive_ids : ndarray of shape (n_queries, m), int64
        Corpus rows of each query's positives in qrels order (duplicates dropped), ``-1``
        padded; ``m = max(1, most positives of any query)``.
    positive_scores : ndarray of shape (n_queries, m), float32
        Exact score of each positive (computed for every positive, also when it is outside the
        top-k), NaN where ``positive_ids == -1``.
    """

    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray

    @property
    def n_queries(self) -> int:
        return int(self.candidate_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.candidate_ids.shape[1])


def _as_int_ids(x, name):
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer corpus row indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).ravel()


def normalize_qrels(qrels, n_queries: int, n_docs: int, *, name: str = "qrels"):
    """Validate positives and return them as CSR ``(indptr, ids)`` with duplicates removed.

    Parameters
    ----------
    qrels : tuple (indptr, ids), sequence of array-like, or mapping
        Positive corpus rows of each query row: a CSR pair given as a ``tuple`` of two arrays
        (``indptr`` of length ``n_queries + 1``), a ``list`` (or other sequence) with one array
        of corpus rows per query, or a mapping ``{query_row: corpus_rows}`` (missing queries
        have no positives).
    n_queries, n_docs : int
        Number of query rows and of corpus rows.
    name : str, default="qrels"
        Argument name used in error messages.

    Returns
    -------
    indptr : ndarray of shape (n_queries + 1,), int64
    ids : ndarray of shape (indptr[-1],), int64
        Positives of query ``i`` are ``ids[indptr[i]:indptr[i+1]]``, in the given order with
        repeated ids dropped.

    Raises
    ------
    ValueError
        Wrong length, non-integer ids, or ids outside ``[0, n_docs)``.
    """
    if isinstance(qrels, tuple) and len(qrels) == 2 and not isinstance(qrels[0], (int, np.integer)):
        indptr = _as_int_ids(qrels[0], f"{name}[0] (indptr)")
        ids = _as_int_ids(qrels[1], f"{name}[1] (ids)")
        if indptr.shape[0] != n_queries + 1:
            raise ValueError(
                f"{name}: CSR indptr must have n_queries + 1 = {n_queries + 1} entries, "
                f"got {indptr.shape[0]}"
            )
        if indptr[0] != 0 or indptr[-1] != ids.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError(
                f"{name}: CSR indptr must start at 0, never decrease and end at len(ids) = "
                f"{ids.shape[0]}"
            )
        lists = None
    elif isinstance(qrels, Mapping):
        lists = [()] * n_queries
        for key, value in qrels.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise ValueError(f"{name}: mapping keys must be integer query rows, got {key!r}")
            if not 0 <= int(key) < n_queries:
                raise ValueError(f"{name}: query row {key} outside [0, {n_queries})")
            lists[int(key)] = value
    elif isinstance(qrels, (str, bytes)) or not hasattr(qrels, "__len__"):
        raise ValueError(
            f"{name} must be a CSR tuple (indptr, ids), a list of arrays or a mapping, "
            f"got {type(qrels).__name__}"
        )
    else:
        lists = list(qrels)
        if len(lists) != n_queries:
            raise ValueError(
                f"{name} must have one entry per query ({n_queries}), got {len(lists)}"
            )
    if lists is not None:
        parts = [_as_int_ids(v, f"{name}[{i}]") for i, v in enumerate(lists)]
        counts = np.fromiter((p.shape[0] for p in parts), dtype=np.int64, count=len(parts))
        indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= n_docs):
        bad = int(ids[(ids < 0) | (ids >= n_docs)][0])
        raise ValueError(f"{name}: corpus row {bad} outside [0, {n_docs})")
    # drop repeated positives of a query, keeping the first occurrence
    counts = np.diff(indptr)
    if ids.size and np.any(counts > 1):
        q = np.repeat(np.arange(n_queries, dtype=np.int64), counts)
        order = np.lexsort((np.arange(ids.size), ids, q))
        dup = np.zeros(ids.size, dtype=bool)
        same = (q[order][1:] == q[order][:-1]) & (ids[order][1:] == ids[order][:-1])
        dup[order[1:][same]] = True
        if dup.any():
            keep = ~dup
            ids = ids[keep]
            new_counts = np.bincount(q[keep], minlength=n_queries).astype(np.int64)
            indptr = np.zeros(n_queries + 1, dtype=np.int64)
            np.cumsum(new_counts, out=indptr[1:])
    return np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(ids, dtype=np.int64)


def positive_matrix(indptr, ids, *, width: int | None = None) -> np.ndarray:
    """Dense ``(n_queries, m)`` int64 matrix of CSR positives, ``-1`` padded.

    ``m`` is ``width`` if given, else ``max(1, largest row)``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    n_q = indptr.shape[0] - 1
    counts = np.diff(indptr)
    m = int(counts.max()) if n_q and counts.size else 0
    if width is None:
        width = max(1, m)
    elif width < m:
        raise ValueError(f"width={width} is smaller than the largest row ({m})")
    out = np.full((n_q, width), -1, dtype=np.int64)
    if ids.size:
        rows = np.repeat(np.arange(n_q, dtype=np.int64), counts)
        cols = np.arange(ids.size, dtype=np.int64) - np.repeat(indptr[:-1], counts)
        out[rows, cols] = ids
    return out


def _check_embeddings(queries, corpus):
    for name, x in (("queries", queries), ("corpus", corpus)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ValueError(f"{name} must be a 2-D NumPy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(x.shape)}")
        if x.dtype.kind != "f":
            raise ValueError(f"{name} must hold floating-point embeddings, got dtype {x.dtype}")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but corpus has {corpus.shape[1]}: "
            "embed both with the same model"
        )
    if corpus.shape[0] == 0:
        raise ValueError("corpus is empty")


def _check_k(k, n_docs):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > n_docs:
        raise ValueError(f"k={k} is larger than the corpus ({n_docs} documents): lower k")


def _mine_block(queries, corpus, indptr, ids, pos, *, k, metric, backend, index, topk, rescore,
                query_offset=0):
    """Candidates and positive scores of one block of queries (CSR already sliced).

    ``query_offset`` is the block's first row in the whole query set: the exact backend places
    every query at the same position of its fixed-shape BLAS call whatever the chunking, so the
    scores are bit-identical for any chunk size.
    """
    cands = topk(
        queries, corpus, k, metric=metric, exclude=(indptr, ids), backend=backend, index=index,
        query_offset=query_offset,
    )
    cids = np.ascontiguousarray(cands.ids, dtype=np.int64)
    cscores = np.ascontiguousarray(cands.scores, dtype=np.float32)
    pscores = np.asarray(rescore(queries, corpus, pos, metric=metric), dtype=np.float32)
    pscores = np.array(pscores, dtype=np.float32, copy=True)
    pscores[pos < 0] = np.nan
    return cids, cscores, pscores


def mine_candidates(
    queries,
    corpus,
    qrels,
    *,
    k: int = 200,
    metric: str = "ip",
    backend: str = "auto",
    index=None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> MinedCandidates:
    """Top-k candidates with the positives removed, and every positive's exact score.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
        Query embeddings (float32; float16 accepted where the top-k backend accepts it).
    corpus : ndarray of shape (n_docs, dim)
        Document embeddings; may be a read-only memory map.
    qrels : tuple (indptr, ids), list of arrays or mapping
        Positive corpus rows of each query row; see :func:`normalize_qrels`.
    k : int, default=200
        Candidates kept per query (after the positives are removed).
    metric : {"ip", "cosine", "l2"}, default="ip"
        Passed to :func:`simans_fast.topk` and :func:`simans_fast.rescore`.
    backend : str, default="auto"
        Top-k backend, see :func:`simans_fast.topk`.
    index : object, optional
        A prebuilt index passed to :func:`simans_fast.topk`.
    chunk_size : int, optional
        Process queries in blocks of this many rows (bounds memory, drives the progress bar).
        ``None`` processes all queries in one call.
    progress : bool, default=False
        Show a progress bar on stderr (needs tqdm).

    Returns
    -------
    MinedCandidates
    """
    from .candidates import rescore, topk

    _check_embeddings(queries, corpus)
    n_q, n_docs = int(queries.shape[0]), int(corpus.shape[0])
    _check_k(k, n_docs)
    if chunk_size is not None and (
        isinstance(chunk_size, (bool, np.bool_))
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    indptr, ids = normalize_qrels(qrels, n_q, n_docs)
    pos = positive_matrix(indptr, ids)
    step = n_q if chunk_size is None else int(chunk_size)
    step = max(step, 1)
    cids = np.full((n_q, k), -1, dtype=np.int64)
    cscores = np.full((n_q, k), -np.inf, dtype=np.float32)
    pscores = np.full(pos.shape, np.nan, dtype=np.float32)
    with progress_bar(n_q, desc="mining", enable=progress, unit="q") as bar:
        for lo in range(0, n_q, step):
            hi = min(n_q, lo + step)
            sub_ptr = indptr[lo : hi + 1] - indptr[lo]
            sub_ids = ids[indptr[lo] : indptr[hi]]
            c_i, c_s, p_s = _mine_block(
                queries[lo:hi], corpus, sub_ptr, sub_ids, pos[lo:hi], k=k, metric=metric,
                backend=backend, index=index, topk=topk, rescore=rescore, query_offset=lo,
            )
            cids[lo:hi] = c_i
            cscores[lo:hi] = c_s
            pscores[lo:hi] = p_s
            bar.update(hi - lo)
    return MinedCandidates(cids, cscores, pos, pscores)


def mine(
    queries,
    corpus,
    qrels,
    *,
    k: int = 200,
    n: int = 15,
    a: float = 0.5,
    b: float = 0.0,
    kernel: str = "gaussian",
    seed: int = 0,
    positive_choice: str = "random",
    fallback: str = "lowest",
    metric: str = "ip",
    backend: str = "auto",
    index=None,
    row_keys=None,
    chunk_size: int | None = None,
    progress: bool = False,
):
    """Mine SimANS negatives: exact top-k, positives removed, positive scores, sampler.

    For each query the ``k`` best documents that are not among its positives become the
    candidates; every positive gets its exact score (also when it is not in the top-k, via
    :func:`simans_fast.rescore`); a :class:`simans_fast.SimANSSampler` is built on these arrays
    and returned. Draw the negatives of an epoch with ``sampler.sample(epoch=e)``.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
        Query embeddings.
    corpus : ndarray of shape (n_docs, dim)
        Document embeddings (a memory map works).
    qrels : tuple (indptr, ids), list of arrays or mapping
        Positive corpus rows of each query row: CSR pair (a ``tuple``), one array per query (a
        ``list``), or ``{query_row: corpus_rows}``. A query without positives gets the
        ``fallback`` negatives.
    k : int, default=200
        Candidates per query, positives excluded.
    n : int, default=15
        Negatives drawn per query and epoch.
    a, b : float, default=0.5, 0.0
        SimANS kernel parameters: weight ``exp(-a * (s - s_pos - b)**2)`` (paper's sign of b).
    kernel : {"gaussian", "laplace"}, default="gaussian"
        Weight kernel (``laplace``: ``exp(-a * |s - s_pos - b|)``, the MS MARCO passage code).
    seed : int, default=0
        Seed of the counter-based stream; draws depend on (seed, epoch, query row).
    positive_choice : {"random", "highest", "lowest"}, default="random"
        Queries with several positives: draw one per query and epoch from the seeded stream
        ("random", like the paper's MS MARCO code), or always use the positive with the highest
        or lowest score.
    fallback : {"lowest", "uniform", "raise"}, default="lowest"
        What a query without positives gets (see :func:`simans_fast.simans_negatives`).
    metric : {"ip", "cosine", "l2"}, default="ip"
        Similarity used for retrieval and scores.
    backend : str, default="auto"
        Top-k backend (see :func:`simans_fast.topk`).
    index : object, optional
        Prebuilt search index passed to :func:`simans_fast.topk`.
    row_keys : array-like of int64, optional
        Global query keys of these rows (for sharded runs), see :class:`simans_fast.SimANSSampler`.
    chunk_size : int, optional
        Query block size for the top-k stage (memory bound, progress granularity).
    progress : bool, default=False
        Progress bar on stderr (needs tqdm).

    Returns
    -------
    SimANSSampler
        Its ``sample`` returns corpus row indices (``-1`` padded).

    See Also
    --------
    mine_candidates : the same pipeline without the sampler.

    Examples
    --------
    >>> import numpy as np, simans_fast as sf
    >>> rng = np.random.default_rng(0)
    >>> corpus = rng.standard_normal((1000, 16), dtype=np.float32)
    >>> queries = corpus[:20] + 0.1 * rng.standard_normal((20, 16), dtype=np.float32)
    >>> sampler = sf.mine(queries, corpus, [[i] for i in range(20)], k=50, n=5)
    >>> sampler.sample(epoch=0).shape
    (20, 5)
    """
    from .sampler import SimANSSampler

    mined = mine_candidates(
        queries, corpus, qrels, k=k, metric=metric, backend=backend, index=index,
        chunk_size=chunk_size, progress=progress,
    )
    pscores = mined.positive_scores
    if pscores.shape[1] == 1:
        pscores = pscores[:, 0]
    return SimANSSampler(
        mined.candidate_ids,
        mined.candidate_scores,
        pscores,
        n=n,
        a=a,
        b=b,
        kernel=kernel,
        seed=seed,
        fallback=fallback,
        row_keys=row_keys,
        positive_choice=positive_choice,
    )

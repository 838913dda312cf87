"""Exact top-k with PyTorch on any device (``backend="torch"`` of :func:`simans_fast.topk`).

Floor 4, below :mod:`simans_fast.candidates` (which imports it for ``backend="torch"``), so the
library never imports upward into :mod:`simans_fast.torch`; ``simans_fast.torch.topk``
re-exports :func:`topk_torch`. This module also holds what both top-k modules share: the
result type :class:`Candidates` and the memory-map page release. torch is imported inside the
functions only (importing this module imports neither torch nor faiss).

:func:`topk_torch` computes what the numba backend computes -- for every query the ``k`` best
corpus rows by inner product, cosine similarity or negative squared Euclidean distance, best
first, ties broken by the lower document id, exclusions left out, rows padded with ``-1`` /
``-inf`` -- with ``torch.mm`` and ``torch.topk`` on the device where the embeddings (or the
model) live. It never holds an ``n_queries x n_docs`` matrix.

**Fixed-shape products.** A matrix-multiply kernel may round a dot product differently
depending on the shape of the call (and, for small calls, on the thread count), so every score
comes from one ``torch.mm`` of a fixed shape, ``TQ`` query rows by ``TC`` corpus rows (zero
padded; ``(256, 4096)`` on the CPU, ``(1024, 16384)`` elsewhere), with query ``i`` at row
``(query_offset + i) % TQ`` and document ``j`` at column ``(corpus_offset + j) % TC``. The
scores, hence the result, do not depend on ``query_block`` / ``corpus_block``, on how the
queries are chunked, or on how the corpus is sharded over ranks (pass the offsets); norms for
``"cosine"`` / ``"l2"`` are computed on the same fixed tiles.

**Selection per tile.** For a ``(TQ, TC)`` tile of scores (excluded pairs and padding set to
``-inf``), ``torch.topk(S, kk + 1)`` with ``kk = min(k, TC)``. Where the kk-th and the
(kk+1)-th scores differ the tile's top ``kk`` is unambiguous, and only those become keys. Rows
where they are equal (a tie across the cut, where ``torch.topk`` may keep either document) or
that hold a NaN (an overflowing product) are redone from the whole row with exact keys,
collected once per corpus block (one host synchronisation per corpus block, not per tile).

**Keys.** One ``int64`` per candidate: the float32 score's bits mapped to a signed integer in
score order (``-0.0`` read as ``+0.0``) in the high 32 bits, ``2**32 - 1 - doc_id`` in the low
32 bits, so keys order by score descending, then id ascending, exactly. Each query keeps its
best ``k`` keys; a tile's keys are merged with ``topk`` of the concatenation. At the end they
are sorted and decoded; ``-inf`` / NaN scores and unfilled slots become ``-1`` / ``-inf``, as in
the numba backend.

torch is imported inside the functions; nothing here needs CUDA to be imported, and a CPU-only
torch runs every path (the CUDA-only fp16/bf16 product with float32 output is probed, and the
CPU multiplies the rounded values in float32 instead).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _config
from ._progress import progress_bar
from .store.pages import release_rows
from ._validate import ParameterError, as_matrix as _as_matrix, check_bool, \
    check_offset as _check_offset, check_pos_int as _check_pos_int, normalize_csr, validate

__all__ = ["Candidates", "topk_torch", "tile_shape", "DEFAULT_QUERY_BLOCK",
           "CORPUS_BLOCK_BYTES"]

logger = logging.getLogger(__name__)

#: fixed (query rows, corpus rows) of every product, by device type; others use _TILE_DEFAULT
_TILES = {"cpu": (256, 4096)}
_TILE_DEFAULT = (1024, 16384)
#: default queries per block (rounded up to whole tiles): the package's one query block
DEFAULT_QUERY_BLOCK = _config.DEFAULT_QUERY_BLOCK
#: default bytes of raw corpus rows fetched (moved to the device) at once
CORPUS_BLOCK_BYTES = 256 * 2**20
#: bytes of the per-query key buffers of one query block (``query_block x 3k x 8``)
_STATE_BYTES = 256 * 2**20
_LOW = (1 << 32) - 1          # low 32 bits of a key hold _LOW - doc_id
_SENTINEL = -(1 << 63)        # an empty slot (decodes to NaN: never a valid candidate)
_NEG_INF = float("-inf")


def _torch():
    import torch

    return torch


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


def _check_metric(metric):
    return validate("metric", metric)


def _normalize_exclude(exclude, n_q, n_d):
    """CSR exclusions, ids sorted per row (:func:`simans_fast._validate.normalize_csr`)."""
    return normalize_csr(exclude, n_q, n_d, name="exclude", sort=True, unique=False,
                         allow_none=True)


def tile_shape(device) -> tuple:
    """``(TQ, TC)``: query rows and corpus rows of every product on ``device``."""
    torch = _torch()
    return _TILES.get(torch.device(device).type, _TILE_DEFAULT)


# ------------------------------------------------------------------------------ validation


def _check_input(x, name, torch):
    """A 2-D float tensor (any device) or a 2-D float NumPy array / memory map."""
    if isinstance(x, torch.Tensor):
        if x.ndim != 2:
            raise ParameterError(name,
                                 f"{name} must be 2-D (rows, dim), got shape {tuple(x.shape)}")
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise ParameterError(name,
                                 f"{name} must be float32, float16 or bfloat16 (float64 is accepted "
                                 f"and computed in float32), got dtype {x.dtype}")
        if x.shape[1] < 1:
            raise ParameterError(name, f"{name} must have at least one column, got shape "
                                       f"{tuple(x.shape)}")
        return x
    return _as_matrix(x, name)


def _torch_dtype(dt, torch):
    """torch dtype (float64 -> float32) of a NumPy or torch float dtype."""
    if isinstance(dt, torch.dtype):
        return torch.float32 if dt == torch.float64 else dt
    return torch.float16 if np.dtype(dt) == np.float16 else torch.float32


def _resolve_device(device, queries, corpus, torch):
    if device is None:
        for x in (corpus, queries):
            if isinstance(x, torch.Tensor):
                return x.device
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ParameterError("device",
                             f"device must be a torch device or its name, got {device!r}: "
                             f"{exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device",
                             f"device={device!r} but CUDA is not available in this torch build / "
                             "machine (torch.cuda.is_available() is False)")
    return dev


_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16",
                "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _resolve_dtype(dtype, q_dt, c_dt, torch):
    """Dtype the operands of the product are rounded to (float32, float16 or bfloat16)."""
    if dtype is None:
        if q_dt == c_dt and q_dt in (torch.float16, torch.bfloat16):
            return q_dt  # products of float16 / bfloat16 values are exact in float32
        return torch.float32
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        return getattr(torch, _DTYPE_NAMES[dtype])
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float16,
                                                     torch.bfloat16):
        return dtype
    raise ParameterError("dtype",
                         f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16 (or "
                         f"their names), got {dtype!r}")


def _reduced_mm_supported(dt, dev, torch):
    """Whether ``torch.mm(a, b, out_dtype=torch.float32)`` runs for ``dt`` inputs on ``dev``
    (float32 accumulation and result; CUDA in torch 2.13, not the CPU)."""
    try:
        a = torch.zeros((2, 2), dtype=dt, device=dev)
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _scores(Q, C, torch):
    """float32 scores of one fixed-shape tile pair."""
    if Q.dtype == torch.float32:
        return torch.mm(Q, C.T)
    return torch.mm(Q, C.T, out_dtype=torch.float32)


# ----------------------------------------------------------------------------------- keys


def _keys(v, low, torch):
    """int64 keys of float32 scores ``v`` (consumed) and ``low = _LOW - doc_id`` (int64,
    broadcastable): a higher key is a higher score, then a lower id."""
    v.add_(0.0)  # -0.0 -> +0.0
    bits = v.view(torch.int32)
    m = bits >> 31                  # -1 for negative floats, 0 otherwise
    m.bitwise_and_(0x7FFFFFFF)
    m.bitwise_xor_(bits)            # signed integers in score order
    key = m.to(torch.int64)
    key.mul_(1 << 32).add_(low)
    return key


def _decode(keys, torch):
    """(ids int64, scores float32) of keys; empty slots and -inf / NaN scores -> -1 / -inf."""
    k32 = (keys >> 32).to(torch.int32)
    m = k32 >> 31
    m.bitwise_and_(0x7FFFFFFF)
    m.bitwise_xor_(k32)
    scores = m.view(torch.float32)
    ids = _LOW - (keys & _LOW)
    valid = scores > _NEG_INF
    return (torch.where(valid, ids, torch.full_like(ids, -1)),
            torch.where(valid, scores, torch.full_like(scores, _NEG_INF)))


def _no_nan(S, torch):
    return torch.nan_to_num_(S, nan=_NEG_INF, posinf=float("inf"), neginf=_NEG_INF)


def _select_fast(S, low, kk, torch):
    """Keys of the top ``kk`` of every row of the score tile ``S`` (may be modified) and the
    rows to redo exactly (``None``: none). Rows to redo get empty keys here."""
    if kk >= S.shape[1]:  # every column is kept
        return _keys(_no_nan(S, torch), low.unsqueeze(0), torch), None
    vals, idx = torch.topk(S, kk + 1, dim=1, largest=True, sorted=True)
    kth, nxt = vals[:, kk - 1], vals[:, kk]
    redo = ((kth == nxt) & (kth > _NEG_INF)) | torch.isnan(vals[:, 0])
    keys = _keys(vals[:, :kk].contiguous(), low[idx[:, :kk]], torch)
    keys.masked_fill_(redo.unsqueeze(1), _SENTINEL)
    return keys, redo


def _select_exact(S, low, kk, torch):
    """Keys of the top ``kk`` of every row of ``S`` from exact keys of the whole rows (about
    16 bytes per score: done in chunks of a quarter of the tile's rows)."""
    n = S.shape[0]
    step = max(1, S.shape[0] // 4) if n > 1 else 1
    out = []
    for r0 in range(0, n, step):
        sub = _no_nan(S[r0:r0 + step].clone(), torch)
        full = _keys(sub, low.unsqueeze(0), torch)
        out.append(torch.topk(full, min(kk, full.shape[1]), dim=1, largest=True,
                              sorted=False).values)
        del sub, full
    return torch.cat(out)


def _merge(best, keys, k, torch):
    return torch.topk(torch.cat([best, keys], dim=1), k, dim=1, largest=True,
                      sorted=False).values


# ---------------------------------------------------------------------------------- tiles


def _fetch(x, lo, hi, dev, torch):
    """Rows ``lo:hi`` of ``x`` as a tensor on ``dev`` (own dtype; float64 -> float32)."""
    if isinstance(x, torch.Tensor):
        blk = x[lo:hi]
        if blk.dtype == torch.float64:
            blk = blk.to(torch.float32)
        return blk.detach().to(dev)
    arr = np.asarray(x[lo:hi])
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr)
    with warnings.catch_warnings():  # read-only memory maps: the tensor is only ever read
        warnings.simplefilter("ignore", UserWarning)
        blk = torch.from_numpy(arr)
    return blk.to(dev)


def _check_finite(blk, name, row0, torch):
    """ValueError naming the first row of ``blk`` (rows ``row0 ...``) with a NaN or an inf
    (in chunks of 64 Mi elements: a corpus on the device is checked in place)."""
    step = max(1, 2**26 // max(1, blk.shape[1]))
    ok = torch.cat([torch.isfinite(blk[r:r + step]).all(dim=1)
                    for r in range(0, blk.shape[0], step)])
    if not bool(ok.all()):
        r = row0 + int(torch.nonzero(~ok)[0, 0])
        raise ParameterError(name,
                             f"{name} row {r} is not finite (it holds NaN or inf): embeddings must "
                             "be finite numbers")


class _Tiler:
    """Fixed-shape operand tiles of one fetched block of rows.

    Rows ``r`` of the input sit at position ``lead + r`` of a grid of tiles of ``size`` rows;
    tile ``t`` covers positions ``[t * size, (t + 1) * size)``. ``prep`` turns a raw tile into
    ``(operand, scale or None, squared norms or None)`` (all of the tile's fixed shape)."""

    def __init__(self, raw, row0, lead, size, prep, torch):
        self.raw, self.row0, self.lead, self.size = raw, row0, lead, size
        self.prep, self.torch = prep, torch

    def span(self, t):
        """(first row, end row, offset of the first row in the tile) of tile ``t``'s rows."""
        p0 = t * self.size - self.lead
        a = max(self.row0, p0)
        b = min(self.row0 + self.raw.shape[0], p0 + self.size)
        return a, b, a - p0

    def tile(self, t):
        a, b, off = self.span(t)
        x = self.raw[a - self.row0:b - self.row0]
        if b - a != self.size:
            pad = self.torch.zeros((self.size, x.shape[1]), dtype=x.dtype, device=x.device)
            pad[off:off + (b - a)] = x
            x = pad
        return self.prep(x)


class _Prep:
    """Raw fixed-shape tile -> (operand, post-product scale or None, squared norms or None)."""

    def __init__(self, metric, cdt, reduced_mm, torch):
        self.metric, self.cdt, self.reduced_mm, self.torch = metric, cdt, reduced_mm, torch

    def __call__(self, raw):
        torch = self.torch
        x = raw.to(self.cdt)  # rounding to the product's dtype (a no-op when it already is)
        if not self.reduced_mm and x.dtype != torch.float32:
            x = x.to(torch.float32)  # exact: the values already are cdt values
        if self.metric == "cosine":
            xf = x if x.dtype == torch.float32 else x.to(torch.float32)
            nrm = torch.linalg.vector_norm(xf, dim=1)
            inv = torch.where(nrm > 0, 1.0 / nrm, torch.ones_like(nrm))
            if x.dtype == torch.float32:
                return x * inv.unsqueeze(1), None, None  # unit rows (like the numba backend)
            return x, inv, None  # reduced product: scale the scores afterwards
        if self.metric == "l2":
            xf = x if x.dtype == torch.float32 else x.to(torch.float32)
            return x, None, (xf * xf).sum(dim=1)
        return x, None, None


# ------------------------------------------------------------------------------------ main


def topk_torch(
    queries,
    corpus,
    k,
    *,
    metric="ip",
    exclude=None,
    progress=False,
    query_block=None,
    corpus_block=None,
    n_threads=None,
    query_offset=0,
    corpus_offset=0,
    device=None,
    dtype=None,
    return_tensors=False,
):
    """Exact top-k corpus rows of every query with PyTorch, on any device.

    Parameters
    ----------
    queries : tensor or array of shape (n_queries, dim)
        A torch tensor on any device (float32, float16, bfloat16; float64 is computed in
        float32) or a NumPy array / memory map (float32, float16, float64), moved to
        ``device`` one query block at a time.
    corpus : tensor or array of shape (n_docs, dim)
        Same types; a NumPy memory map larger than memory works (one corpus block is read and
        moved at a time, and its pages are released afterwards).
    k : int
        Candidates per query; rows with fewer than ``k`` documents available are padded with
        ``-1`` / ``-inf``.
    metric : {"ip", "cosine", "l2"}, default="ip"
        As in :func:`simans_fast.topk` (all-zero rows score 0 under ``"cosine"``; ``"l2"``
        scores ``-||q - d||^2``).
    exclude : tuple (indptr, ids), list of integer arrays, scipy CSR matrix or None
        Corpus rows to leave out per query, in every form :func:`simans_fast.topk` accepts
        (validated by the same function); they are set to ``-inf`` before selection.
    progress : bool, default=False
        A progress bar over (query block, corpus block) pairs (tqdm; silently off without it).
    query_block, corpus_block : int, optional
        Rows per block; results do not depend on them (bit for bit). ``query_block`` (default
        4096, fewer for very large ``k``; rounded up to whole tiles of ``TQ`` rows) queries
        share one pass over the corpus and hold ``query_block * 3k * 8`` bytes of keys.
        ``corpus_block`` (rounded up to whole tiles of ``TC`` rows): corpus rows fetched and
        moved to the device at once (default: about 256 MiB of raw rows; a corpus already on
        ``device`` is not copied).
    n_threads : int, optional
        Threads during this call when computing on the CPU: torch's intra-op pool, Numba's
        and BLAS's, as everywhere in the package (:func:`simans_fast._config.thread_limits`;
        restored after, also after an error).
    query_offset, corpus_offset : int, default=0
        The global row numbers of ``queries[0]`` and ``corpus[0]`` when these are slices of a
        larger set (query chunks, corpus shards): every row keeps its place in the grid of
        fixed-shape products, so the scores equal those of one call on the whole set bit for
        bit. Returned ids are still row numbers of ``corpus``.
    device : torch.device or str, optional
        Where to compute. Default: the corpus's device if it is a tensor, else the queries'
        device if they are a tensor, else the CPU.
    dtype : None, torch.float32, torch.float16 or torch.bfloat16 (or their names)
        Dtype the inputs are rounded to for the product. ``None``: float16 (bfloat16) when both
        inputs are float16 (bfloat16) -- products of such values are exact in float32 --,
        float32 otherwise. Where ``torch.mm(..., out_dtype=torch.float32)`` runs for that dtype
        (CUDA) the product takes the reduced inputs and accumulates and returns float32;
        elsewhere (the CPU, in torch 2.13) the rounded values are converted to float32 exactly
        and multiplied in float32 (same values up to summation order, slower than a native
        half product would be). Scores, norms and selection are always float32.
    return_tensors : bool, default=False
        Return ``ids`` / ``scores`` as torch tensors on ``device`` instead of NumPy arrays.

    Returns
    -------
    simans_fast.Candidates
        ``ids`` (n_queries, k) int64, ``scores`` (n_queries, k) float32, each row sorted by
        score descending, ties by lower document id; ``backend == "torch"``.

    Notes
    -----
    Memory on the device, beyond the inputs and the output: one score tile ``TQ x TC x 4``
    bytes (64 MiB on CUDA, 4 MiB on the CPU) and about as much again for ``topk`` and the tie
    redo; the operand tiles; the query block (``query_block x dim x 4``), the fetched corpus
    block (a copy only when the corpus is not already on ``device``, or when ``dtype`` /
    cosine / l2 need converted tiles, which are cached when the corpus is one block), and the
    keys (``query_block x 3k x 8``). The scores are those of the fixed-shape products: they
    may differ from the numba backend's (another BLAS) by a float32 rounding, so documents
    whose scores are that close may come in the other order; on integer-valued embeddings
    (every score exact) the two backends agree bit for bit, ties included.

    Raises
    ------
    ValueError
        Bad shapes or dtypes, ``k < 1``, unknown metric, bad block sizes or offsets, excluded
        ids out of range, NaN or infinite embeddings (the message names the row), an unknown or
        unavailable device, an unknown dtype.
    """
    torch = _torch()
    queries = _check_input(queries, "queries", torch)
    corpus = _check_input(corpus, "corpus", torch)
    if queries.shape[1] != corpus.shape[1]:
        raise ParameterError("queries",
                             f"queries and corpus must have the same dimension: queries have dim "
                             f"{queries.shape[1]}, corpus has dim {corpus.shape[1]}")
    k = _check_pos_int(k, "k", allow_none=False)
    metric = _check_metric(metric)
    query_block = _check_pos_int(query_block, "query_block")
    corpus_block = _check_pos_int(corpus_block, "corpus_block")
    n_threads = _check_pos_int(n_threads, "n_threads")
    query_offset = _check_offset(query_offset, "query_offset")
    corpus_offset = _check_offset(corpus_offset, "corpus_offset")
    return_tensors = check_bool(return_tensors, "return_tensors")
    dev = _resolve_device(device, queries, corpus, torch)
    cdt = _resolve_dtype(dtype, _torch_dtype(queries.dtype, torch),
                         _torch_dtype(corpus.dtype, torch), torch)
    n_q, n_d = int(queries.shape[0]), int(corpus.shape[0])
    if n_d >= 2**32:
        raise ParameterError("corpus",
                             f"corpus has {n_d} rows; the torch backend supports fewer than 2**32 "
                             "(shard it, see simans_fast.torch.distributed.sharded_topk)")
    excl = _normalize_exclude(exclude, n_q, n_d)

    # the package's thread policy (torch is imported, so it reaches torch's pool); on a GPU
    # the thread count is not the resource
    with _config.thread_limits(n_threads if dev.type == "cpu" else None), torch.no_grad():
        ids, scores = _run(queries, corpus, k, metric, excl, dev, cdt, query_block,
                           corpus_block, query_offset, corpus_offset, progress,
                           return_tensors, torch)
    return Candidates(ids, scores, "torch")


def _run(queries, corpus, k, metric, excl, dev, cdt, query_block, corpus_block, query_offset,
         corpus_offset, progress, return_tensors, torch):
    n_q, d = int(queries.shape[0]), int(queries.shape[1])
    n_d = int(corpus.shape[0])
    if n_q == 0 or n_d == 0:
        for x, name in ((queries, "queries"), (corpus, "corpus")):
            if x.shape[0]:
                _check_finite(_fetch(x, 0, x.shape[0], dev, torch), name, 0, torch)
        ids = torch.full((n_q, k), -1, dtype=torch.int64, device=dev)
        sc = torch.full((n_q, k), _NEG_INF, dtype=torch.float32, device=dev)
        return (ids, sc) if return_tensors else (ids.cpu().numpy(), sc.cpu().numpy())

    reduced_mm = cdt != torch.float32 and _reduced_mm_supported(cdt, dev, torch)
    prep = _Prep(metric, cdt, reduced_mm, torch)
    TQ, TC = _TILES.get(dev.type, _TILE_DEFAULT)
    q_lead, c_lead = query_offset % TQ, corpus_offset % TC
    n_qt = -(-(q_lead + n_q) // TQ)  # query tiles
    n_ct = -(-(c_lead + n_d) // TC)  # corpus tiles
    qb = query_block or min(DEFAULT_QUERY_BLOCK, max(1, _STATE_BYTES // (24 * k)))
    qbt = max(1, min(-(-qb // TQ), n_qt))  # query tiles per block
    if corpus_block:
        cbt = -(-corpus_block // TC)
    elif isinstance(corpus, torch.Tensor) and corpus.device == dev:
        cbt = n_ct  # already there: tiles are views, nothing is fetched
    else:
        itemsize = 2 if _torch_dtype(corpus.dtype, torch) != torch.float32 else 4
        cbt = max(1, CORPUS_BLOCK_BYTES // (itemsize * d * TC))
    cbt = max(1, min(cbt, n_ct))
    logger.debug("simans_fast.topk_torch: %d x %d on %s: tiles %d x %d, blocks of %d x %d "
                 "tiles, product in %s", n_q, n_d, dev, TQ, TC, qbt, cbt,
                 cdt if reduced_mm else torch.float32)

    arange_c = torch.arange(TC, dtype=torch.int64, device=dev)
    if not return_tensors:
        ids_np = np.empty((n_q, k), dtype=np.int64)
        sc_np = np.empty((n_q, k), dtype=np.float32)
    else:
        out_ids, out_sc = [], []
    c_blocks = [(u0, min(n_ct, u0 + cbt)) for u0 in range(0, n_ct, cbt)]
    # prepared corpus tiles are kept across query blocks when the corpus is one small block
    c_cache = {} if len(c_blocks) == 1 and n_d * d * 4 <= CORPUS_BLOCK_BYTES else None
    checked_corpus = False

    def tile_scores(qtile, ctile, r0, r1):
        """Scores of query rows r0:r1 of a query tile against a corpus tile (fixed shapes)."""
        Q, q_scale, q_sq = qtile
        C, c_scale, c_sq = ctile
        S = _scores(Q, C, torch)[r0:r1]
        if q_scale is not None:
            S.mul_(q_scale[r0:r1].unsqueeze(1)).mul_(c_scale.unsqueeze(0))
        if q_sq is not None:
            S.mul_(2.0).sub_(q_sq[r0:r1].unsqueeze(1)).sub_(c_sq.unsqueeze(0))
        return S

    n_qblocks = -(-n_qt // qbt)
    with progress_bar(n_qblocks * len(c_blocks), desc="top-k (torch)", enable=progress,
                      unit="block") as bar:
        for t0 in range(0, n_qt, qbt):
            t1 = min(n_qt, t0 + qbt)
            ql0 = max(0, t0 * TQ - q_lead)
            ql1 = min(n_q, t1 * TQ - q_lead)
            qraw = _fetch(queries, ql0, ql1, dev, torch)
            _check_finite(qraw, "queries", ql0, torch)
            qtiler = _Tiler(qraw, ql0, q_lead, TQ, prep, torch)
            qtiles = {t: qtiler.tile(t) for t in range(t0, t1)}
            # real rows of each query tile: local queries a:b at tile rows off:off + b - a
            qspan = {t: qtiler.span(t) for t in range(t0, t1)}
            best = {t: torch.full((qspan[t][1] - qspan[t][0], k), _SENTINEL,
                                  dtype=torch.int64, device=dev) for t in range(t0, t1)}
            ex = _block_exclusions(excl, ql0, ql1, qspan, t0, t1, q_lead, c_lead, TQ, TC,
                                   n_ct, dev, torch) if excl is not None else None
            for u0, u1 in c_blocks:
                dl0 = max(0, u0 * TC - c_lead)
                dl1 = min(n_d, u1 * TC - c_lead)
                if c_cache is not None and c_cache:
                    craw = None
                else:
                    craw = _fetch(corpus, dl0, dl1, dev, torch)
                    if not checked_corpus:
                        _check_finite(craw, "corpus", dl0, torch)
                ctiler = _Tiler(craw, dl0, c_lead, TC, prep, torch) if craw is not None \
                    else None
                pending = []  # (query tile, corpus tile, rows flagged for an exact redo)
                for u in range(u0, u1):
                    if c_cache is not None and u in c_cache:
                        ctile, cspan = c_cache[u]
                    else:
                        ctile, cspan = ctiler.tile(u), ctiler.span(u)
                        if c_cache is not None:
                            c_cache[u] = (ctile, cspan)
                    a, b, off = cspan
                    low = (_LOW - (u * TC - c_lead)) - arange_c  # _LOW - doc id of each column
                    if off > 0 or b - a < TC:  # padded columns: keep ids in range
                        low = low.clamp(_LOW - (n_d - 1), _LOW)
                    kk = min(k, TC)
                    for t in range(t0, t1):
                        qa, qb_, qoff = qspan[t]
                        S = tile_scores(qtiles[t], ctile, qoff, qoff + qb_ - qa)
                        _mask(S, off, b - a, ex, t - t0, u, torch)
                        keys, redo = _select_fast(S, low, kk, torch)
                        del S
                        best[t] = _merge(best[t], keys, k, torch)
                        if redo is not None:
                            pending.append((t, u, low, redo))
                if pending:
                    _redo(pending, qtiles, qspan, best, tile_scores, ex, t0, k, TC, ctiler,
                          c_cache, torch)
                if not isinstance(corpus, torch.Tensor):
                    release_rows(corpus, dl0, dl1)  # a memory map's pages: read again when needed
                bar.update(1)
            checked_corpus = True
            for t in range(t0, t1):
                qa, qb_, _ = qspan[t]
                if qb_ <= qa:
                    continue
                ids, sc = _decode(torch.sort(best[t], dim=1, descending=True).values, torch)
                if return_tensors:
                    out_ids.append(ids)
                    out_sc.append(sc)
                else:
                    ids_np[qa:qb_] = ids.cpu().numpy()
                    sc_np[qa:qb_] = sc.cpu().numpy()
            if not isinstance(queries, torch.Tensor):
                release_rows(queries, ql0, ql1)
    if return_tensors:
        return torch.cat(out_ids), torch.cat(out_sc)
    return ids_np, sc_np


def _mask(S, off, n_real, ex, ti, u, torch):
    """Set padded columns and excluded (query, document) pairs of a score tile to -inf."""
    if off > 0:
        S[:, :off] = _NEG_INF
    if off + n_real < S.shape[1]:
        S[:, off + n_real:] = _NEG_INF
    if ex is not None:
        rows, cols, ptr, n_t = ex
        g = u * n_t + ti
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        if hi > lo:
            S.index_put_((rows[lo:hi], cols[lo:hi]),
                         torch.tensor(_NEG_INF, dtype=S.dtype, device=S.device))


def _redo(pending, qtiles, qspan, best, tile_scores, ex, t0, k, TC, ctiler, c_cache, torch):
    """Exact selection for the rows whose fast selection was ambiguous (one host sync)."""
    flags = torch.cat([p[3] for p in pending])
    hit = torch.nonzero(flags).squeeze(1).cpu().numpy()
    if hit.size == 0:
        return
    sizes = np.array([p[3].shape[0] for p in pending], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    which = np.searchsorted(starts, hit, side="right") - 1
    for i in np.unique(which):
        t, u, low, _ = pending[i]
        rows = torch.from_numpy(hit[which == i] - starts[i]).to(low.device)
        ctile = c_cache[u][0] if c_cache is not None and u in c_cache else ctiler.tile(u)
        a, b, off = c_cache[u][1] if c_cache is not None and u in c_cache else ctiler.span(u)
        qa, qb_, qoff = qspan[t]
        S = tile_scores(qtiles[t], ctile, qoff, qoff + qb_ - qa)  # the same bits again
        _mask(S, off, b - a, ex, t - t0, u, torch)
        keys = _select_exact(S.index_select(0, rows), low, min(k, TC), torch)
        del S
        best[t][rows] = _merge(best[t].index_select(0, rows), keys, k, torch)


def _block_exclusions(excl, ql0, ql1, qspan, t0, t1, q_lead, c_lead, TQ, TC, n_ct, dev, torch):
    """Excluded pairs of queries ``ql0:ql1`` as (row in its tile's real rows, column in its
    corpus tile) on ``dev``, grouped by (corpus tile ``u``, query tile ``t``): group
    ``u * n_t + (t - t0)`` is ``[ptr[g], ptr[g + 1])``."""
    indptr, eids = excl
    n_t = t1 - t0
    p0, p1 = int(indptr[ql0]), int(indptr[ql1])
    q = np.repeat(np.arange(ql0, ql1, dtype=np.int64), np.diff(indptr[ql0:ql1 + 1]))
    doc = eids[p0:p1]
    t = (q + q_lead) // TQ
    first = np.array([qspan[x][0] for x in range(t0, t1)], dtype=np.int64)
    rows = q - first[t - t0]
    pos = doc + c_lead
    u, cols = pos // TC, pos % TC
    g = u * n_t + (t - t0)
    order = np.argsort(g, kind="stable")
    ptr = np.searchsorted(g[order], np.arange(n_ct * n_t + 1), side="left")
    return (torch.from_numpy(np.ascontiguousarray(rows[order])).to(dev),
            torch.from_numpy(np.ascontiguousarray(cols[order])).to(dev), ptr, n_t)

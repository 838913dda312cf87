"""Sharded mining and sampling with ``torch.distributed`` (any backend; gloo on CPU).

* **Sharded mining.** Every rank holds a contiguous block of corpus rows and all queries. It
  computes the exact top-k of every query over its block with :func:`simans_fast.topk`, or with
  :func:`simans_fast.torch.topk.topk_torch` on the block's device for ``backend="torch"``
  (exclusions translated to local rows), maps the local rows to global ones, and the ranks
  exchange ``(scores, ids)`` with ``all_gather``. The merge orders by score descending, ties by
  the lower global document id, which is the order of the single-process :func:`simans_fast.topk`,
  so the merged candidates equal the single-process ones whenever each (query, document) score
  is computed the same way on a shard as on the whole corpus (always for ``"cosine"`` and
  ``"l2"`` rows normalised per row; for BLAS products see ``docs/torch.md``).
* **Sharded sampling.** Every rank draws only for its own block of queries, passing the
  queries' global keys (``row_keys``) to the counter-based generator, so its rows are bit for bit
  the rows of the single-process draw. :func:`gather_rows` reassembles the full matrix if needed.

Every function takes ``group`` (default: the default process group); all ranks of the group must
call it together with the same query set.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .. import core as _core
from .._validate import ParameterError, check_int, normalize_csr, renamed_kwargs

__all__ = ["shard_range", "corpus_offsets", "sharded_topk", "sharded_mine_candidates",
           "shard_sampler", "sample_shard", "gather_rows", "merge_topk", "gather_merge"]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _comm_device(group=None):
    """Device of the tensors exchanged by the collectives: CUDA for an NCCL group (NCCL only
    moves CUDA tensors), the CPU otherwise (gloo, or a mixed ``"cpu:gloo,cuda:nccl"`` group)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _rank_world(group=None):
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("torch.distributed is not initialised: call "
                         "torch.distributed.init_process_group first")
    return dist.get_rank(group), dist.get_world_size(group)


def shard_range(n_items: int, rank: int, world_size: int) -> slice:
    """Contiguous block of ``n_items`` owned by ``rank`` (sizes differ by at most one, the first
    ``n_items % world_size`` ranks get one more, like ``numpy.array_split``)."""
    for name, v in (("n_items", n_items), ("rank", rank), ("world_size", world_size)):
        check_int(v, name, what="an int")
    if n_items < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ParameterError("need",
                             f"need n_items >= 0 and 0 <= rank < world_size, got n_items={n_items}, "
                             f"rank={rank}, world_size={world_size}")
    base, extra = divmod(int(n_items), int(world_size))
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (1 if rank < extra else 0))


def _all_gather_ints(values, group):
    """all_gather of a small int64 vector; returns (world, len) ndarray."""
    _, world = _rank_world(group)
    t = torch.as_tensor(np.asarray(values, dtype=np.int64)).to(_comm_device(group))
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t, group=group)
    return torch.stack(out).cpu().numpy()


def corpus_offsets(n_local: int, *, group=None) -> np.ndarray:
    """Global row offset of every rank's corpus block, from the local row counts (in rank order).

    Returns ``offsets`` of length ``world_size + 1``: rank ``r`` holds global rows
    ``offsets[r]:offsets[r + 1]``.
    """
    sizes = _all_gather_ints([n_local], group)[:, 0]
    offsets = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def _exclude_csr(exclude, n_q, n_docs):
    """Global exclusions as a validated CSR pair (or None), via the one CSR normaliser."""
    return normalize_csr(exclude, n_q, n_docs, name="exclude", sort=True, unique=False,
                         allow_none=True)


def _localize(csr, lo, hi):
    """CSR of global rows -> CSR of the rows in [lo, hi), shifted to local numbering."""
    indptr, ids = csr
    n_q = indptr.size - 1
    keep = (ids >= lo) & (ids < hi)
    row = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(indptr))
    new_ptr = np.zeros(n_q + 1, np.int64)
    np.cumsum(np.bincount(row[keep], minlength=n_q), out=new_ptr[1:])
    return new_ptr, np.ascontiguousarray(ids[keep] - lo)


def merge_topk(scores, ids, k: int):
    """Merge per-shard top-k lists (global ids) into the top ``k``: score descending, ties by
    lower id, padding (``id == -1``) last as ``-1`` / ``-inf``.

    Parameters
    ----------
    scores : ndarray (n_q, m) float32
    ids : ndarray (n_q, m) int64
        Concatenated shard lists; every document appears at most once per row.
    k : int

    Returns
    -------
    (ids, scores) : ndarrays (n_q, k) int64 and float32
    """
    scores = np.asarray(scores, np.float32)
    ids = np.asarray(ids, np.int64)
    n_q, m = ids.shape
    pad = ids < 0
    key_ids = np.where(pad, np.iinfo(np.int64).max, ids)
    neg = np.where(pad, np.float32(np.inf), -scores)
    neg = np.where(np.isnan(neg), np.float32(np.inf), neg)
    order = np.lexsort((key_ids, neg), axis=-1)[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_scores = np.take_along_axis(scores, order, axis=1)
    if m < k:
        out_ids = np.concatenate([out_ids, np.full((n_q, k - m), -1, np.int64)], axis=1)
        out_scores = np.concatenate([out_scores, np.full((n_q, k - m), -np.inf, np.float32)],
                                    axis=1)
    padded = out_ids < 0
    out_scores[padded] = -np.inf
    return np.ascontiguousarray(out_ids), np.ascontiguousarray(out_scores)


def gather_merge(scores, ids, k: int, *, group=None):
    """All-gather every rank's ``(scores, ids)`` (same shape on every rank, global ids) and
    merge them with :func:`merge_topk`; the result is the same on every rank."""
    _, world = _rank_world(group)
    if world == 1:
        return merge_topk(scores, ids, k)
    dev = _comm_device(group)
    t_ids = torch.from_numpy(np.ascontiguousarray(ids, np.int64)).to(dev)
    t_sc = torch.from_numpy(np.ascontiguousarray(scores, np.float32)).to(dev)
    g_ids = [torch.empty_like(t_ids) for _ in range(world)]
    g_sc = [torch.empty_like(t_sc) for _ in range(world)]
    dist.all_gather(g_ids, t_ids, group=group)
    dist.all_gather(g_sc, t_sc, group=group)
    return merge_topk(torch.cat(g_sc, 1).cpu().numpy(), torch.cat(g_ids, 1).cpu().numpy(), k)


# ------------------------------------------------------------------------------------------
# sharded mining
# ------------------------------------------------------------------------------------------
#: queries per exchange of the sharded functions when ``query_block`` is not given
SHARDED_QUERY_BLOCK = 16384


@renamed_kwargs(query_chunk="query_block")
def sharded_topk(queries, corpus_shard, k: int, *, exclude=None, metric: str = "ip",
                 offsets=None, query_block: int | None = None, group=None, **topk_kwargs):
    """Exact global top-k when every rank holds a block of the corpus rows.

    Parameters
    ----------
    queries : ndarray (n_queries, dim)
        All queries, identical on every rank (with ``backend="torch"`` also a tensor).
    corpus_shard : ndarray (n_local, dim)
        This rank's block of corpus rows (global rows ``offsets[rank]:offsets[rank + 1]``;
        blocks in rank order, e.g. ``corpus[shard_range(n_docs, rank, world)]``); with
        ``backend="torch"`` also a tensor on any device (e.g. this rank's GPU).
    k : int
        Candidates per query.
    exclude : optional
        Rows to leave out per query, in *global* corpus row numbers (any form accepted by
        :func:`simans_fast.topk`).
    metric : {"ip", "cosine", "l2"}
    offsets : array of length world_size + 1, optional
        Global row offsets of the blocks; default: from the block sizes (one all_gather).
    query_block : int, optional
        Queries per block: per exchange (bounds the gathered buffers to
        ``world_size * query_block * k * 12`` bytes; default 16384) and, when given, also the
        local top-k's query block. Results do not depend on it. Old name ``query_chunk``
        (deprecated for one release).
    group : ProcessGroup, optional
    **topk_kwargs
        Passed to :func:`simans_fast.topk` (``backend``, ``n_threads``...).
        ``backend="torch"``: the local top-k is
        :func:`simans_fast.torch.topk.topk_torch` (the rest of ``topk_kwargs`` -- ``device``,
        ``dtype``, ``query_block``, ``corpus_block``, ... -- go to it), computed where the
        shard lives, with the shard's and the chunk's global offsets, so every score is
        bit-identical to the single-process ``topk_torch`` and the merged result equals it
        exactly, for any data; the merge is the same as for the other backends.

    Returns
    -------
    simans_fast.Candidates
        The same on every rank: global row ids (``-1`` padded) and scores (``-inf`` padded),
        ordered by score descending, ties by lower id.
    """
    from ..candidates import Candidates, topk

    rank, world = _rank_world(group)
    k = _core.check_n(k, "k")
    if query_block is not None:
        topk_kwargs["query_block"] = _core.check_n(query_block, "query_block")
    query_chunk = SHARDED_QUERY_BLOCK if query_block is None else topk_kwargs["query_block"]
    if not hasattr(queries, "shape") or len(queries.shape) != 2:
        raise ParameterError("queries",
                             f"queries must be a 2-D array, got {type(queries).__name__}")
    if not hasattr(corpus_shard, "shape") or len(corpus_shard.shape) != 2:
        raise ParameterError("corpus_shard",
                             f"corpus_shard must be a 2-D array, got {type(corpus_shard).__name__}")
    n_q = int(queries.shape[0])
    n_local = int(corpus_shard.shape[0])
    shapes = _all_gather_ints([n_q, k, queries.shape[1], n_local], group)
    if not (shapes[:, :3] == shapes[0, :3]).all():
        raise ParameterError("every",
                             f"every rank must pass the same queries and k: got (n_queries, k, dim) "
                             f"= {[tuple(int(v) for v in r[:3]) for r in shapes]} over the ranks")
    if offsets is None:
        offsets = np.zeros(world + 1, np.int64)
        np.cumsum(shapes[:, 3], out=offsets[1:])
    else:
        offsets = np.asarray(offsets, np.int64)
        if offsets.shape != (world + 1,) or np.any(np.diff(offsets) != shapes[:, 3]):
            raise ParameterError("offsets",
                                 f"offsets must have world_size + 1 = {world + 1} entries whose "
                                 f"differences are the ranks' block sizes {shapes[:, 3].tolist()}")
    lo, hi = int(offsets[rank]), int(offsets[rank + 1])
    n_docs = int(offsets[-1])
    if n_docs == 0:
        raise ParameterError("the", "the corpus is empty on every rank")
    excl = _exclude_csr(exclude, n_q, n_docs)
    local_excl = _localize(excl, lo, hi) if excl is not None else None
    for name in ("query_offset", "corpus_offset"):
        if name in topk_kwargs:
            raise ParameterError(name, f"{name} is set by sharded_topk (the global offsets of the "
                                       "query chunk and of this rank's shard): do not pass it")
    if topk_kwargs.get("backend") == "torch":
        from ..candidates_torch import topk_torch as search

        opts = {name: v for name, v in topk_kwargs.items() if name != "backend"}
    else:
        search, opts = topk, topk_kwargs

    def local_topk(q, ex, qs):
        # global offsets: every score is bit-identical to the single-process call's
        return search(q, corpus_shard, k, metric=metric, exclude=ex, query_offset=qs,
                      corpus_offset=lo, **opts)

    out_ids = np.full((n_q, k), -1, np.int64)
    out_scores = np.full((n_q, k), -np.inf, np.float32)
    for qs in range(0, n_q, query_chunk):
        qe = min(n_q, qs + query_chunk)
        if n_local:
            ex = None
            if local_excl is not None:
                p, e = local_excl
                ex = (p[qs:qe + 1] - p[qs], e[p[qs]:p[qe]])
            c = local_topk(queries[qs:qe], ex, qs)
            ids = np.where(c.ids >= 0, c.ids + lo, -1)
            sc = np.ascontiguousarray(c.scores, np.float32)
        else:
            ids = np.full((qe - qs, k), -1, np.int64)
            sc = np.full((qe - qs, k), -np.inf, np.float32)
        mids, msc = gather_merge(sc, ids, k, group=group)
        out_ids[qs:qe] = mids
        out_scores[qs:qe] = msc
    return Candidates(out_ids, out_scores, "sharded")


@renamed_kwargs(query_chunk="query_block")
def sharded_mine_candidates(queries, corpus_shard, qrels, *, k: int = 200, metric: str = "ip",
                            offsets=None, query_block: int | None = None, group=None,
                            **topk_kwargs):
    """:func:`simans_fast.mine_candidates` with the corpus sharded over the ranks.

    Candidates: :func:`sharded_topk` with the positives excluded. Positive scores: each rank
    rescores the positives it holds and a ``MAX`` all-reduce combines them. The result (the same
    on every rank) equals the single-process ``mine_candidates`` under the condition stated in
    :func:`sharded_topk`.

    Parameters
    ----------
    queries, corpus_shard, k, metric, offsets, query_block, group, **topk_kwargs
        See :func:`sharded_topk`.
    qrels : tuple (indptr, ids), list of arrays or mapping
        Positives as *global* corpus rows (see :func:`simans_fast.pipeline.normalize_qrels`).

    Returns
    -------
    simans_fast.MinedCandidates
    """
    from ..candidates import rescore
    from ..pipeline import MinedCandidates, positive_matrix

    rank, world = _rank_world(group)
    n_local = int(corpus_shard.shape[0])
    if offsets is None:
        offsets = corpus_offsets(n_local, group=group)
    offsets = np.asarray(offsets, np.int64)
    n_docs = int(offsets[-1])
    n_q = int(queries.shape[0])
    indptr, ids = normalize_csr(qrels, n_q, n_docs, name="qrels")
    cands = sharded_topk(queries, corpus_shard, k, exclude=(indptr, ids), metric=metric,
                         offsets=offsets, query_block=query_block, group=group, **topk_kwargs)
    pos = positive_matrix(indptr, ids)
    lo, hi = int(offsets[rank]), int(offsets[rank + 1])
    mine_ = (pos >= lo) & (pos < hi)
    pscores = np.full(pos.shape, -np.inf, np.float32)
    if n_local and mine_.any():
        local = np.where(mine_, pos - lo, -1)
        got = np.asarray(rescore(queries, corpus_shard, local, metric=metric), np.float32)
        pscores = np.where(mine_, got, np.float32(-np.inf)).astype(np.float32)
    if world > 1:
        t = torch.from_numpy(np.ascontiguousarray(pscores)).to(_comm_device(group))
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        pscores = t.cpu().numpy()
    pscores = np.array(pscores, np.float32, copy=True)
    pscores[pos < 0] = np.nan
    return MinedCandidates(cands.ids, cands.scores, pos, pscores)


# ------------------------------------------------------------------------------------------
# sharded sampling
# ------------------------------------------------------------------------------------------
def shard_sampler(candidate_ids, candidate_scores, positive_scores, n: int = 15, *,
                  row_keys=None, group=None, rank=None, world_size=None, **sampler_kwargs):
    """A :class:`simans_fast.SimANSSampler` over this rank's contiguous block of queries.

    The arrays may be the full ones (memory maps: only the block is read) — the block
    ``shard_range(n_queries, rank, world_size)`` is taken — and the sampler gets the global keys
    of its rows, so ``sampler.sample(epoch=e)`` equals rows ``block`` of the single-process
    ``SimANSSampler(...).sample(epoch=e)`` exactly.

    Parameters
    ----------
    candidate_ids, candidate_scores, positive_scores, n
        Full arrays, as for :class:`simans_fast.SimANSSampler`.
    row_keys : array (n_queries,), optional
        Global query keys (default: the global row index).
    group : ProcessGroup, optional
    rank, world_size : int, optional
        Override the group's (e.g. to build the shards without torch.distributed).
    **sampler_kwargs
        ``a``, ``b``, ``kernel``, ``seed``, ``fallback``, ``positive_choice``, ``parallel``.

    Returns
    -------
    (sampler, rows) : SimANSSampler, slice
        ``rows`` is the block of global query rows the sampler covers.
    """
    from ..sampler import SimANSSampler

    if rank is None or world_size is None:
        r, w = _rank_world(group)
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    n_q = int(np.shape(candidate_ids)[0])
    rows = shard_range(n_q, rank, world_size)
    if row_keys is None:
        keys = np.arange(rows.start, rows.stop, dtype=np.int64)
    else:
        keys = np.asarray(row_keys)
        if keys.shape != (n_q,):
            raise ParameterError("row_keys", f"row_keys must have shape ({n_q},), got {keys.shape}")
        keys = keys[rows]
    sampler = SimANSSampler(candidate_ids[rows], candidate_scores[rows], positive_scores[rows],
                            n, row_keys=keys, **sampler_kwargs)
    return sampler, rows


def sample_shard(sampler, epoch: int = 0, *, group=None, rank=None, world_size=None,
                 gather: bool = False, parallel=None):
    """Draw this rank's block of a full-size sampler (every rank holds the whole sampler).

    Returns ``(negatives, rows)`` for the rank's block ``shard_range(n_queries, rank, world)``;
    with ``gather=True`` the full ``(n_queries, n)`` matrix (the same on every rank), which
    equals ``sampler.sample(epoch=epoch)``.
    """
    if rank is None or world_size is None:
        r, w = _rank_world(group)
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    rows = shard_range(int(sampler.n_queries), rank, world_size)
    neg = sampler.sample(rows=np.arange(rows.start, rows.stop, dtype=np.int64), epoch=epoch,
                         parallel=parallel)
    if gather:
        return gather_rows(neg, int(sampler.n_queries), group=group), slice(0, sampler.n_queries)
    return neg, rows


def gather_rows(local, n_total: int, *, group=None) -> np.ndarray:
    """Reassemble contiguous row blocks (``shard_range`` layout) from every rank.

    Parameters
    ----------
    local : ndarray (n_local, ...)
        This rank's block; the same trailing shape and dtype on every rank.
    n_total : int
        Total rows.

    Returns
    -------
    ndarray (n_total, ...), the same on every rank.
    """
    rank, world = _rank_world(group)
    local = np.ascontiguousarray(local)
    blk = shard_range(int(n_total), rank, world)
    if local.shape[0] != blk.stop - blk.start:
        raise ParameterError("rank", f"rank {rank} passed {local.shape[0]} rows but its block of "
                                     f"{n_total} has {blk.stop - blk.start}")
    if world == 1:
        return local.copy()
    width = -(-int(n_total) // world)
    t = torch.from_numpy(local)
    buf = torch.zeros((width,) + tuple(t.shape[1:]), dtype=t.dtype)
    buf[: t.shape[0]] = t
    buf = buf.to(_comm_device(group))
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf, group=group)
    out = [parts[r][: shard_range(int(n_total), r, world).stop
                     - shard_range(int(n_total), r, world).start] for r in range(world)]
    return torch.cat(out).cpu().numpy()

"""torch.utils.data adapters: datasets, a collate function and a per-batch lookup.

Every draw is a pure function of ``(seed, epoch, query key)``, so the negatives of a batch do
not depend on the number of DataLoader workers, the multiprocessing start method, or which
worker computes them. Inside DataLoader workers the serial Numba kernels are used: Numba's
OpenMP threading layer aborts a forked child that enters a parallel region after its parent did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .. import _config
from .. import core as _core
from .._validate import (ParameterError, ParameterTypeError, check_epoch, check_int, check_seed,
                         is_int, renamed_kwargs)
from ..kernels.sampling import row_range as _row_range
from ..rng import uniforms
from ..sampler import SimANSSampler as _SimANSSampler
from .sampling import in_worker, resolve_parallel, tensor_to_numpy

_parallel = resolve_parallel  # old private name

__all__ = ["SimANSDataset", "SimANSIterableDataset", "collate_simans", "negatives_for",
           "shard_indices", "check_sampler", "check_positive_ids", "positive_ids_for"]

_SHUFFLE_DOMAIN = _config.SHUFFLE_DOMAIN  # "SHUFFLE": the shuffle's own stream (the registry)
_INT64 = np.dtype(np.int64)


def check_sampler(sampler):
    """``sampler`` when it is a :class:`simans_fast.SimANSSampler` (or exposes its interface)."""
    for attr in ("sample", "positive_index", "n_queries", "n"):
        if not hasattr(sampler, attr):
            raise ParameterTypeError("sampler", f"sampler must be a simans_fast.SimANSSampler "
                                                f"(or expose sample/positive_index/n_queries/n), "
                                                f"got {type(sampler).__name__}")
    return sampler


def check_positive_ids(positive_ids, n_q):
    """Positive document ids as an int64 ``(n_q, m)`` array (``None`` passes)."""
    if positive_ids is None:
        return None
    p = tensor_to_numpy(positive_ids, "positive_ids")
    if p.dtype.kind not in "iu":
        raise ParameterTypeError("positive_ids", f"positive_ids must be integer document ids "
                                                 f"(-1 padded), got dtype {p.dtype}")
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != n_q:
        raise ParameterError("positive_ids", f"positive_ids must have shape ({n_q},) or "
                                             f"({n_q}, m) like the sampler's positive_scores, "
                                             f"got {np.shape(positive_ids)}")
    return p.astype(np.int64, copy=False)


# old private names (torch/st.py and torch/refresh.py use the public ones)
_check_sampler = check_sampler
_check_epoch = check_epoch
_check_positive_ids = check_positive_ids


def positive_ids_for(positive_ids, pidx, rows):
    """Positive document id of each row: the column the sampler used; for rows whose positive
    score is unknown (``pidx == -1``) the first listed positive (-1 if none)."""
    sub = positive_ids[rows]
    first = np.argmax(sub >= 0, axis=1)
    col = np.where(pidx >= 0, pidx, first)
    return sub[np.arange(rows.size), col]


_positive_ids_for = positive_ids_for


def _batch_arrays(sampler, rows, epoch, positive_ids, parallel=None, checked=False):
    """The arrays of a batch. ``checked``: ``rows`` is already an int64 array of valid rows
    (the datasets' own), so a :class:`simans_fast.SimANSSampler` draws the negatives and the
    positive index in one kernel pass without checking them again."""
    if not checked:
        rows = np.asarray(rows, dtype=np.int64)
    par = resolve_parallel(parallel, rows.shape[0])
    fast = getattr(sampler, "_sample_batch", None) if checked else None
    if fast is not None:
        neg, pidx = fast(rows, epoch, par)
    else:
        neg = sampler.sample(rows=rows, epoch=epoch, parallel=par)
        pidx = sampler.positive_index(rows=rows, epoch=epoch)
    out = {"query_index": rows, "positive_index": pidx, "negative_ids": neg}
    if positive_ids is not None:
        out["positive_id"] = positive_ids_for(positive_ids, pidx, rows)
    return out


def _warm_serial(sampler):
    """Compile (or load from Numba's cache) the serial kernels in the main process, so forked
    workers inherit them and spawned workers find them in the on-disk cache."""
    if sampler.n_queries and not in_worker():
        sampler.sample(rows=np.zeros(1, np.int64), epoch=0, parallel=False)


def _to_tensors(arrays):
    from_numpy = torch.from_numpy
    return {name: from_numpy(v if v.flags.c_contiguous else np.ascontiguousarray(v))
            for name, v in arrays.items()}


_from_numpy = torch.from_numpy


class _Batch(Sequence):
    """The per-item dicts of a batch, made on access; also carries the batch as tensors so that
    :func:`collate_simans` returns it without re-stacking."""

    __slots__ = ("tensors",)

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return int(self.tensors["query_index"].shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {name: t[i] for name, t in self.tensors.items()}


def negatives_for(sampler, query_indices, epoch: int = 0, *, parallel: bool | None = None):
    """Negative document ids of a batch of queries, for trainers that fetch them per batch.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
    query_indices : tensor, array or sequence of int
        Query rows of the batch.
    epoch : int, default 0
    parallel : bool, optional
        Multi-threaded kernels; default: serial inside DataLoader workers and for batches of
        fewer than 8192 queries, multi-threaded otherwise.

    Returns
    -------
    torch.LongTensor of shape (len(query_indices), n)
        ``-1`` padded; on the device of ``query_indices`` when it is a tensor.
    """
    if type(sampler) is not _SimANSSampler:
        check_sampler(sampler)
    epoch = check_epoch(epoch)
    if type(query_indices) is np.ndarray:  # the common cases: no device to return to
        device = None
        rows = query_indices
    elif (type(query_indices) is torch.Tensor and query_indices.dtype is torch.int64
          and query_indices.is_cpu and not query_indices.is_neg()):
        device = None
        rows = query_indices.numpy()  # shares memory, as tensor_to_numpy does
    else:
        device = query_indices.device if isinstance(query_indices, torch.Tensor) else None
        rows = tensor_to_numpy(query_indices, "query_indices")
    if rows.dtype is not _INT64 or rows.ndim != 1:
        if rows.dtype.kind not in "iu" and rows.size:
            raise ValueError(f"query_indices must be integers, got dtype {rows.dtype}")
        rows = rows.ravel().astype(np.int64, copy=False)
    # sample() checks the rows (one bounds pass for an int64 batch) and draws
    neg = _from_numpy(sampler.sample(rows=rows, epoch=epoch,
                                     parallel=resolve_parallel(parallel, rows.shape[0])))
    return neg if device is None or device.type == "cpu" else neg.to(device)


def collate_simans(batch):
    """Collate items of :class:`SimANSDataset` / :class:`SimANSIterableDataset`.

    Returns a dict of tensors: ``query_index`` (B,), ``positive_index`` (B,), ``negative_ids``
    (B, n) and, when the dataset has positive ids, ``positive_id`` (B,). Batches fetched with the
    dataset's batched ``__getitems__`` are passed through without re-stacking.
    """
    if isinstance(batch, _Batch):
        return dict(batch.tensors)
    if isinstance(batch, dict):  # already a batch (iterable dataset with batch_size)
        return batch
    if len(batch) == 0:
        raise ValueError("batch is empty")
    out = {}
    for name in batch[0]:
        vals = [item[name] for item in batch]
        if isinstance(vals[0], torch.Tensor):
            out[name] = torch.stack(vals)
        else:
            out[name] = torch.as_tensor(np.asarray(vals))
    return out


class _EpochAndSampler:
    """``set_epoch`` (as ``DistributedSampler`` has it) and ``set_sampler`` for both datasets."""

    def set_epoch(self, epoch: int) -> None:
        """Use the negatives (and, when shuffling, the order) of ``epoch`` from now on."""
        self.epoch = _check_epoch(epoch)

    def set_sampler(self, sampler) -> None:
        """Replace the sampler, e.g. after re-mining (see :mod:`simans_fast.torch.refresh`);
        it must hold the same number of queries."""
        _check_sampler(sampler)
        if sampler.n_queries != self.sampler.n_queries:
            raise ValueError(f"the new sampler has {sampler.n_queries} queries, the dataset "
                             f"{self.sampler.n_queries}")
        self.sampler = sampler


class SimANSDataset(_EpochAndSampler, Dataset):
    """Map-style dataset: item ``i`` is query ``i`` with its SimANS negatives of the epoch.

    ``dataset[i]`` is ``{"query_index": i, "positive_index": c, "positive_id": p,
    "negative_ids": LongTensor(n)}`` (``positive_id`` only when ``positive_ids`` is given;
    ``positive_index`` is the column of the positive used, ``-1`` if its score is unknown).
    Call :meth:`set_epoch` at the start of every epoch, as with
    ``torch.utils.data.distributed.DistributedSampler``; the negatives change with the epoch and
    are otherwise a pure function of ``(seed, epoch, query key)``.

    The dataset implements ``__getitems__``, so a DataLoader with ``batch_size`` fetches a whole
    batch in one vectorised call; use ``collate_fn=collate_simans``.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
    positive_ids : int array or tensor of shape (n_q,) or (n_q, m), optional
        Document ids of the positives (columns aligned with the sampler's positive_scores,
        ``-1`` padded). With several positives, ``positive_id`` is the one the sampler chose
        for this epoch.
    epoch : int, default 0

    Notes
    -----
    DataLoader workers hold a copy of the dataset made when the iterator is created (at every
    ``iter(loader)`` unless ``persistent_workers=True``): call :meth:`set_epoch` and
    :meth:`set_sampler` before iterating; with ``persistent_workers=True`` the workers keep the
    epoch and sampler they started with.
    """

    def __init__(self, sampler, *, positive_ids=None, epoch: int = 0):
        self.sampler = _check_sampler(sampler)
        self.positive_ids = _check_positive_ids(positive_ids, sampler.n_queries)
        self.epoch = _check_epoch(epoch)
        _warm_serial(sampler)

    def __len__(self) -> int:
        return int(self.sampler.n_queries)

    def _rows(self, indices):
        """``indices`` (a list of ints from the DataLoader's batch sampler, an array) as a
        C-contiguous int64 array of rows in ``0..n_queries-1``: one bounds pass; negative
        indices count from the end; ``IndexError`` / ``ValueError`` otherwise."""
        rows = np.asarray(indices)
        if rows.dtype is not _INT64 or rows.ndim != 1 or not rows.flags.c_contiguous:
            if rows.dtype.kind not in "iu" and rows.size:
                raise ValueError(f"indices must be integers, got {indices!r}")
            rows = np.ascontiguousarray(rows.astype(np.int64, copy=False).ravel())
        n_q = self.sampler.n_queries
        if rows.shape[0]:
            lo, hi = _row_range(rows)
            if lo < -n_q or hi >= n_q:
                raise IndexError(f"index out of range for a dataset of {n_q} queries")
            if lo < 0:
                return np.where(rows < 0, rows + n_q, rows)
        return rows

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            index = index.item()
        if not is_int(index):
            raise ParameterTypeError("index", f"index must be an int, got "
                                              f"{type(index).__name__}")
        arrays = _batch_arrays(self.sampler, self._rows([index]), self.epoch, self.positive_ids,
                               checked=True)
        return {name: v[0] for name, v in _to_tensors(arrays).items()}

    def __getitems__(self, indices):
        if not isinstance(indices, (list, np.ndarray)):
            indices = list(indices)
        rows = self._rows(indices)  # int64, C-contiguous, bounds checked
        # the DataLoader's hot path: one kernel pass (a SimANSSampler's _sample_batch), tensors
        # sharing the arrays (each call allocates its own: nothing is shared across threads or
        # workers)
        arrays = _batch_arrays(self.sampler, rows, self.epoch, self.positive_ids, checked=True)
        return _Batch(_to_tensors(arrays))


def _dist_rank_world(rank, world_size):
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    for name, v in (("rank", rank), ("world_size", world_size)):
        check_int(v, name, what="an int")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def shard_indices(n_items: int, rank: int, world_size: int, *, shuffle: bool = False,
                  seed: int = 0, epoch: int = 0, drop_last: bool = False) -> np.ndarray:
    """The item indices of ``rank``, as ``DistributedSampler`` assigns them.

    The (optionally shuffled, keyed on ``(seed, epoch)``) order is padded by repeating its
    beginning to a multiple of ``world_size`` (or truncated, ``drop_last=True``), then rank
    ``r`` takes positions ``r, r + world_size, ...``. Every rank gets the same count.
    """
    if shuffle:
        u = uniforms(check_seed(seed) ^ _SHUFFLE_DOMAIN, check_epoch(epoch),
                     np.zeros(1, np.int64), n_items)[0]
        order = np.argsort(u, kind="stable").astype(np.int64)
    else:
        order = np.arange(n_items, dtype=np.int64)
    if drop_last:
        total = (n_items // world_size) * world_size
        order = order[:total]
    else:
        total = -(-n_items // world_size) * world_size
        if total > n_items and n_items > 0:
            reps = -(-(total - n_items) // n_items)
            order = np.concatenate([order] + [order] * reps)[:total]
    return np.ascontiguousarray(order[rank:total:world_size], dtype=np.int64)


class SimANSIterableDataset(_EpochAndSampler, IterableDataset):
    """Streaming form: queries sharded by distributed rank, then by DataLoader worker.

    Without ``batch_size`` it yields items like :class:`SimANSDataset`; with ``batch_size`` it
    yields collated batches (use ``DataLoader(ds, batch_size=None)``), sharded over workers batch
    by batch, so the sequence of batches is the same for any number of workers.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
    positive_ids : optional
        See :class:`SimANSDataset`.
    epoch : int, default 0
    batch_size : int, optional
        Yield batches of this many queries.
    shuffle : bool, default False
        Shuffle the queries with a permutation keyed on ``(seed, epoch)`` (identical on every
        rank).
    seed : int, default 0
        Seed of the shuffle.
    drop_last : bool, default False
        Drop the tail that does not divide evenly over the ranks (else pad by repeating
        queries, as ``DistributedSampler``; every rank gets the same number of queries), and,
        with ``batch_size``, a last incomplete batch.
    rank, world_size : int, optional
        Default: from ``torch.distributed`` when initialised, else 0 and 1.
    query_block : int, default 1024
        Queries sampled per vectorised call when yielding items (old name ``chunk_size``,
        deprecated for one release). The items do not depend on it.
    """

    @renamed_kwargs(chunk_size="query_block")
    def __init__(self, sampler, *, positive_ids=None, epoch: int = 0, batch_size=None,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, rank=None,
                 world_size=None, query_block: int = 1024):
        self.sampler = _check_sampler(sampler)
        self.positive_ids = _check_positive_ids(positive_ids, sampler.n_queries)
        self.epoch = _check_epoch(epoch)
        _warm_serial(sampler)
        if batch_size is not None:
            batch_size = _core.check_n(batch_size, "batch_size")
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.query_block = _core.check_n(query_block, "query_block")

    @property
    def chunk_size(self) -> int:
        """Old name of :attr:`query_block` (deprecated)."""
        return self.query_block

    def rank_indices(self) -> np.ndarray:
        """Query rows of this rank for the current epoch, in iteration order."""
        return shard_indices(self.sampler.n_queries, self.rank, self.world_size,
                             shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
                             drop_last=self.drop_last)

    def __len__(self) -> int:
        n = self.rank_indices().size
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        rows = self.rank_indices()
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        if self.batch_size is not None:
            bs = self.batch_size
            n_batches = rows.size // bs if self.drop_last else -(-rows.size // bs)
            for j in range(wid, n_batches, nw):
                arrays = _batch_arrays(self.sampler, rows[j * bs:(j + 1) * bs], self.epoch,
                                       self.positive_ids, checked=True)
                yield _to_tensors(arrays)
            return
        mine = rows[wid::nw]
        for lo in range(0, mine.size, self.query_block):
            arrays = _batch_arrays(self.sampler, mine[lo:lo + self.query_block], self.epoch,
                                   self.positive_ids, checked=True)
            t = _to_tensors(arrays)
            for i in range(t["query_index"].shape[0]):
                yield {name: v[i] for name, v in t.items()}

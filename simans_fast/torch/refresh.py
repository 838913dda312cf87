"""Refresh hook: re-score or re-mine the candidates with the model being trained.

SimANS (like ANCE) periodically re-encodes the corpus with the current checkpoint and rebuilds
the candidates, because the ambiguity of a negative depends on the model's own scores. The user
supplies two callbacks that re-encode queries and corpus; :func:`refresh` then either re-scores
the existing candidates (``mode="rescore"``, cheap: ``n_queries * k`` dot products) or re-mines
them with an exact top-k (``mode="mine"``), and returns a new sampler with the same settings.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import core as _core
from .._validate import check_int
from .data import check_positive_ids as _check_positive_ids

__all__ = ["RefreshSchedule", "refresh", "SimANSRefresher", "embeddings_to_numpy"]

_MODES = ("rescore", "mine")


def embeddings_to_numpy(x, name: str) -> np.ndarray:
    """Embeddings from an encoder callback (tensor on any device, or array) as a 2-D float
    array on the host (float16/bfloat16/float64 tensors as float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype != torch.float32:
            x = x.float()
        x = x.cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{name} must return a 2-D floating array (rows, dim), got dtype "
                         f"{x.dtype} and shape {x.shape}")
    return x


def _positive_matrix(positive_ids, n_q):
    """The (n_q, m) int64 positive ids that re-mining excludes (required here)."""
    if positive_ids is None:
        raise ValueError("positive_ids is required: the positives to exclude when re-mining "
                         "and to re-score")
    return _check_positive_ids(positive_ids, n_q)


class RefreshSchedule:
    """When to refresh: every ``every`` optimisation steps, starting at step ``start``.

    Parameters
    ----------
    every : int
        Steps between refreshes.
    start : int, optional
        First step that refreshes (default ``every``: the initial candidates are used for the
        first ``every`` steps).

    Examples
    --------
    >>> s = RefreshSchedule(100)
    >>> [t for t in range(0, 401) if s.due(t)]
    [100, 200, 300, 400]
    """

    def __init__(self, every: int, *, start: int | None = None):
        self.every = _core.check_n(every, "every")
        if start is None:
            start = self.every
        self.start = check_int(start, "start", min=0, what="a non-negative int")

    def due(self, step: int) -> bool:
        """Whether ``step`` (the number of optimisation steps done) is a refresh step."""
        check_int(step, "step", what="an int")
        return step >= self.start and (step - self.start) % self.every == 0

    def __repr__(self) -> str:
        return f"RefreshSchedule(every={self.every}, start={self.start})"


def refresh(sampler, encode_queries, encode_corpus, *, positive_ids, mode: str = "mine",
            k: int | None = None, metric: str = "ip", **topk_kwargs):
    """Re-encode with the current model and rebuild the sampler.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
        The current sampler; its settings (``n``, ``a``, ``b``, ``kernel``, ``seed``,
        ``fallback``, ``positive_choice``, ``row_keys``, ``parallel``) are kept.
    encode_queries : callable () -> (n_queries, dim) array or tensor
        Embeds the training queries with the model being trained (in ``sampler``'s row order).
    encode_corpus : callable () -> (n_docs, dim) array or tensor
        Embeds the corpus (row ``i`` is document id ``i``).
    positive_ids : int array (n_queries,) or (n_queries, m), -1 padded
        Corpus rows of the positives, columns aligned with the sampler's ``positive_scores``.
    mode : {"mine", "rescore"}, default "mine"
        ``"mine"``: new exact top-``k`` candidates with the positives excluded
        (:func:`simans_fast.topk`). ``"rescore"``: keep the candidate ids, recompute their
        scores (:func:`simans_fast.rescore`). Positive scores are recomputed in both modes.
    k : int, optional
        Candidates per query for ``"mine"`` (default: the sampler's ``k``).
    metric : {"ip", "cosine", "l2"}, default "ip"
    **topk_kwargs
        Passed to :func:`simans_fast.topk` (``backend``, ``index``, ``n_threads``...).

    Returns
    -------
    simans_fast.SimANSSampler
    """
    from ..candidates import rescore, topk
    from ..sampler import SimANSSampler

    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
    if not callable(encode_queries) or not callable(encode_corpus):
        raise ValueError("encode_queries and encode_corpus must be callables returning "
                         "embeddings")
    n_q = int(sampler.n_queries)
    pos_ids = _positive_matrix(positive_ids, n_q)
    if np.shape(sampler.positive_scores)[1:] not in ((), (pos_ids.shape[1],)):
        raise ValueError(f"positive_ids has shape {pos_ids.shape} but the sampler's "
                         f"positive_scores has shape {np.shape(sampler.positive_scores)}")
    if mode == "mine" and k is not None:
        k = _core.check_n(k, "k")
    Q = embeddings_to_numpy(encode_queries(), "encode_queries")
    if Q.shape[0] != n_q:
        raise ValueError(f"encode_queries returned {Q.shape[0]} rows, the sampler has {n_q} "
                         f"queries")
    C = embeddings_to_numpy(encode_corpus(), "encode_corpus")
    if C.shape[1] != Q.shape[1]:
        raise ValueError(f"query embeddings have dimension {Q.shape[1]}, corpus {C.shape[1]}")
    if pos_ids.size and pos_ids.max() >= C.shape[0]:
        raise ValueError(f"positive_ids holds {int(pos_ids.max())}, outside the corpus of "
                         f"{C.shape[0]} rows")
    if mode == "mine":
        kk = int(sampler.k) if k is None else k
        valid = pos_ids >= 0
        indptr = np.zeros(n_q + 1, np.int64)
        np.cumsum(valid.sum(axis=1), out=indptr[1:])
        cands = topk(Q, C, kk, metric=metric, exclude=(indptr, pos_ids[valid]), **topk_kwargs)
        cand_ids = np.ascontiguousarray(cands.ids, np.int64)
        cand_scores = np.ascontiguousarray(cands.scores, np.float32)
    else:
        cand_ids = np.asarray(sampler.candidate_ids)
        if cand_ids.size and cand_ids.max() >= C.shape[0]:
            raise ValueError(f"the sampler's candidates hold id {int(cand_ids.max())}, outside "
                             f"the corpus of {C.shape[0]} rows")
        cand_scores = rescore(Q, C, cand_ids, metric=metric)
    pscores = np.array(rescore(Q, C, pos_ids, metric=metric), np.float64)
    pscores[pos_ids < 0] = np.nan
    return SimANSSampler(cand_ids, cand_scores, pscores, sampler.n, a=sampler.a, b=sampler.b,
                         kernel=sampler.kernel, seed=sampler.seed, fallback=sampler.fallback,
                         row_keys=sampler.row_keys, positive_choice=sampler.positive_choice,
                         parallel=sampler.parallel)


class SimANSRefresher:
    """Refresh a sampler on a schedule during training and hand it to the datasets using it.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
    encode_queries, encode_corpus : callables
        See :func:`refresh`.
    positive_ids : int array
        See :func:`refresh`.
    every : int or RefreshSchedule
        Refresh every this many steps (or a schedule).
    datasets : sequence, optional
        Objects with ``set_sampler`` (e.g. :class:`~simans_fast.torch.SimANSDataset`) updated
        after each refresh.
    mode, k, metric, **topk_kwargs
        See :func:`refresh`.

    Examples
    --------
    >>> refresher = SimANSRefresher(sampler, enc_q, enc_c, positive_ids=pos, every=500,
    ...                             datasets=[dataset])            # doctest: +SKIP
    >>> for step, batch in enumerate(loader, 1):                   # doctest: +SKIP
    ...     train_step(batch)
    ...     if refresher.step(step):
    ...         loader = make_loader(dataset)   # workers must see the new sampler
    """

    def __init__(self, sampler, encode_queries, encode_corpus, *, positive_ids, every,
                 datasets=(), mode: str = "mine", k: int | None = None, metric: str = "ip",
                 **topk_kwargs):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        self.sampler = sampler
        self.encode_queries = encode_queries
        self.encode_corpus = encode_corpus
        self.positive_ids = _positive_matrix(positive_ids, int(sampler.n_queries))
        self.schedule = every if isinstance(every, RefreshSchedule) else RefreshSchedule(every)
        self.datasets = list(datasets)
        for ds in self.datasets:
            if not hasattr(ds, "set_sampler"):
                raise ValueError(f"datasets must have set_sampler, got {type(ds).__name__}")
        self.mode = mode
        self.k = k
        self.metric = metric
        self.topk_kwargs = topk_kwargs
        self.history: list[int] = []

    def refresh(self, step: int | None = None):
        """Refresh now; returns the new sampler."""
        self.sampler = refresh(self.sampler, self.encode_queries, self.encode_corpus,
                               positive_ids=self.positive_ids, mode=self.mode, k=self.k,
                               metric=self.metric, **self.topk_kwargs)
        for ds in self.datasets:
            ds.set_sampler(self.sampler)
        self.history.append(-1 if step is None else int(step))
        return self.sampler

    def step(self, step: int) -> bool:
        """Call after optimisation step ``step``; refreshes when the schedule says so.

        Returns True when it refreshed (rebuild DataLoader iterators whose workers hold the old
        sampler).
        """
        if self.schedule.due(step):
            self.refresh(step)
            return True
        return False

"""Negative-selection strategies beside SimANS, and NV-Retriever's positive-aware filters.

One entry point, :func:`select_negatives`, switches between strategies with one argument, on the
same candidates and the same seeded counter-based generator as SimANS:

* ``"simans"``: SimANS (Gaussian or Laplace kernel), via :func:`simans_fast.simans_negatives`;
* ``"top"``: the ``n`` highest-scoring candidates (optionally after skipping the first ``skip``
  ranks): the classic "hard negatives", and NV-Retriever's recipe when combined with a filter;
* ``"uniform"``: uniform sampling without replacement among the ranks ``[lo, hi)`` of ``window``
  (FlagEmbedding's ``"10-210"`` range sampling), via :func:`simans_fast.sample` on log-weights
  that are 0 inside the window and ``-inf`` outside.

:func:`filter_candidates` applies the same filters and rank windows on their own and returns the
filtered candidates, for any other tool.

Rules (shared by both functions)
--------------------------------
* A candidate is *valid* when its id is ``>= 0`` and its score is finite.
* *Ranks* are 0-based positions among a row's valid candidates ordered by score, highest first,
  ties broken by column. They are computed *before* filtering: ``skip=10`` always drops the ten
  best-scored retrieved candidates, whether or not the filters would have removed some of them
  (as FlagEmbedding's and sentence-transformers' rank ranges do). Candidates from
  :func:`simans_fast.topk` are already in rank order.
* Rank restrictions: ``skip=r`` keeps ranks ``>= r``; ``window=(lo, hi)`` keeps ranks
  ``lo <= rank < hi`` (``hi=None``: no upper bound). Both may be given; both then apply.
  They restrict every strategy (SimANS included).
* Filters (NV-Retriever, Moreira et al. 2024) keep a candidate only if its score ``s`` is
  **strictly below** every active threshold (a score equal to a threshold is removed):

  - TopK-Abs, ``max_score=t``: ``s < t``;
  - TopK-MarginPos, ``margin=m``: ``s < s_pos - m``;
  - TopK-PercPos, ``perc=f``: ``s < s_pos - (1 - f) * |s_pos|``. For ``s_pos > 0`` this is
    NV-Retriever's ``s < f * s_pos``; for a negative positive score it stays *below* the
    positive (``s_pos = -2, f = 0.95`` keeps ``s < -2.1``), where ``s < f * s_pos`` would keep
    candidates scored above the positive.

  Thresholds are computed in float64 from the given values (float32 scores are widened exactly).
* Positive scores: ``(n_q,)``, or ``(n_q, m)`` NaN-padded with several positives; the filters then
  use the lowest known positive score of the row (as NV-Retriever and sentence-transformers).
  A non-finite positive score means the positive is unknown: the positive-relative filters
  (``margin``, ``perc``) cannot be evaluated and are **not applied** to that row (``max_score`` and
  the rank restrictions still are); SimANS then uses its ``fallback``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import core as _core
from .kernels import strategies as _k

__all__ = ["STRATEGIES", "FilteredCandidates", "filter_candidates", "select_negatives"]

STRATEGIES = ("simans", "top", "uniform")
_CHUNK = 1024
_NO_LIMIT = np.iinfo(np.int64).max


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _check_optional_float(x, name):
    if x is None:
        return None
    return _core.check_param(x, name)


def _check_rank_limits(skip, window):
    if isinstance(skip, (bool, np.bool_)) or not isinstance(skip, numbers.Integral):
        raise ValueError(f"skip must be a non-negative integer (ranks to skip), got {skip!r}")
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    lo, hi = int(skip), _NO_LIMIT
    if window is not None:
        if isinstance(window, str) or not hasattr(window, "__len__") or len(window) != 2:
            raise ValueError(f"window must be a pair (lo, hi) of ranks, hi exclusive (hi may be "
                             f"None), got {window!r}")
        wlo, whi = window
        for v, nm in ((wlo, "lo"), (whi, "hi")):
            if v is None and nm == "hi":
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"window {nm} must be a non-negative integer, got {v!r} "
                                 f"in window={window!r}")
        if whi is not None and whi <= wlo:
            raise ValueError(f"window must satisfy lo < hi, got window={window!r}")
        lo = max(lo, int(wlo))
        hi = _NO_LIMIT if whi is None else int(whi)
    return lo, hi


def _reference_positive(positive_scores, n_q):
    """(n_q,) float64: the score filters compare against (lowest known positive of the row)."""
    pos = np.asarray(positive_scores)
    if pos.dtype.kind not in "fiu":
        raise ValueError(f"positive_scores must be numeric, got dtype {pos.dtype}")
    if pos.ndim == 1:
        if pos.shape[0] != n_q:
            raise ValueError(f"positive_scores must have shape ({n_q},) or ({n_q}, m), "
                             f"got {pos.shape}")
        return pos.astype(np.float64, copy=False)
    if pos.ndim == 2 and pos.shape[0] == n_q:
        p = pos.astype(np.float64, copy=False)
        known = np.isfinite(p)
        low = np.where(known, p, np.inf).min(axis=1, initial=np.inf)
        return np.where(known.any(axis=1), low, np.nan)
    raise ValueError(f"positive_scores must have shape ({n_q},) or ({n_q}, m), got {pos.shape}")


@dataclass(frozen=True)
class _Plan:
    ids: np.ndarray
    scores: np.ndarray
    pos_ref: np.ndarray | None
    max_score: float
    margin: float | None
    perc: float | None
    lo: int
    hi: int

    @property
    def active(self) -> bool:
        return (self.max_score != math.inf or self.margin is not None or self.perc is not None
                or self.lo > 0 or self.hi != _NO_LIMIT)


def _plan(candidate_ids, candidate_scores, positive_scores, max_score, margin, perc, skip,
          window) -> _Plan:
    scores = _core.check_float_matrix(candidate_scores, "candidate_scores", ndim=2)
    n_q, k = scores.shape
    ids = _core.check_ids(candidate_ids, "candidate_ids", (n_q, k))
    if ids.size and ids.min() < -1:
        raise ValueError(f"candidate_ids must be document ids >= 0, or -1 for padding; found "
                         f"{int(ids.min())}")
    max_score = _check_optional_float(max_score, "max_score")
    margin = _check_optional_float(margin, "margin")
    perc = _check_optional_float(perc, "perc")
    if perc is not None and not 0.0 <= perc <= 1.0:
        raise ValueError(f"perc must be in [0, 1] (fraction of the positive's score), got {perc}")
    lo, hi = _check_rank_limits(skip, window)
    if positive_scores is None:
        if margin is not None or perc is not None:
            raise ValueError("positive_scores is required for the margin and perc filters")
        pos_ref = None
    else:
        pos_ref = _reference_positive(positive_scores, n_q)
    return _Plan(ids, scores, pos_ref, math.inf if max_score is None else max_score, margin,
                 perc, lo, hi)


def _compute_mask(plan: _Plan, parallel: bool):
    n_q, k = plan.scores.shape
    mask = np.empty((n_q, k), np.bool_)
    n_kept = np.empty(n_q, np.int64)
    if n_q == 0:
        return mask, n_kept
    pos = plan.pos_ref if plan.pos_ref is not None else np.full(n_q, np.nan)
    need_rank = plan.lo > 0 or plan.hi != _NO_LIMIT
    fn = _k.mask_par if parallel else _k.mask_ser
    fn(plan.ids, plan.scores, pos, float(plan.max_score), plan.margin is not None,
       0.0 if plan.margin is None else plan.margin, plan.perc is not None,
       0.0 if plan.perc is None else plan.perc, plan.lo, plan.hi, need_rank, mask, n_kept, _CHUNK)
    return mask, n_kept


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilteredCandidates:
    """Result of :func:`filter_candidates`.

    Attributes
    ----------
    ids : ndarray of int64, shape (n_q, k) or (n_q, width)
        Candidate ids, ``-1`` where removed (or, with ``compact=True``, the kept ids left-packed
        in their original column order and ``-1`` padded to ``width = max(n_kept)``).
    scores : ndarray, same shape as ``ids``
        Scores in the input dtype, NaN where ``ids`` is ``-1``.
    mask : ndarray of bool, shape (n_q, k)
        True where a candidate of the *input* columns was kept.
    n_kept : ndarray of int64, shape (n_q,)
        Candidates kept per row.
    """

    ids: np.ndarray
    scores: np.ndarray
    mask: np.ndarray
    n_kept: np.ndarray


def filter_candidates(candidate_ids, candidate_scores, positive_scores=None, *, max_score=None,
                      margin=None, perc=None, skip: int = 0, window=None, compact: bool = False,
                      parallel: bool = True) -> FilteredCandidates:
    """Apply NV-Retriever's positive-aware filters and rank restrictions to candidates.

    See the module docstring for the exact rules (strict ``<`` thresholds, ranks before
    filtering, lowest known positive, unknown positives).

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Candidate document ids (positives removed), ``-1`` for padding.
    candidate_scores : float array of shape (n_q, k)
        Their scores, float32 or float64.
    positive_scores : array of shape (n_q,) or (n_q, m), optional
        Positive scores (NaN-padded with several positives); needed for ``margin`` and ``perc``.
    max_score : float, optional
        TopK-Abs: keep ``s < max_score``.
    margin : float, optional
        TopK-MarginPos: keep ``s < s_pos - margin``.
    perc : float in [0, 1], optional
        TopK-PercPos: keep ``s < s_pos - (1 - perc) * |s_pos|`` (``perc=0.95``: NV-Retriever's
        best setting, "below 95 % of the positive's score").
    skip : int, default 0
        Drop the ``skip`` best-ranked candidates.
    window : (int, int or None), optional
        Keep ranks ``lo <= rank < hi`` only.
    compact : bool, default False
        Left-pack the kept candidates (width ``max(n_kept)``) instead of masking in place.
    parallel : bool, default True
        Use the multi-threaded kernels.

    Returns
    -------
    FilteredCandidates
        ``ids`` and ``scores`` plug directly into :func:`select_negatives`,
        :func:`simans_fast.simans_negatives` or :class:`simans_fast.SimANSSampler`.
    """
    plan = _plan(candidate_ids, candidate_scores, positive_scores, max_score, margin, perc, skip,
                 window)
    mask, n_kept = _compute_mask(plan, parallel)
    n_q, k = plan.scores.shape
    width = (int(n_kept.max()) if n_q else 0) if compact else k
    out_ids = np.empty((n_q, width), np.int64)
    out_scores = np.empty((n_q, width), plan.scores.dtype)
    if n_q and width:
        (_k.apply_par if parallel else _k.apply_ser)(plan.ids, plan.scores, mask, out_ids,
                                                     out_scores, bool(compact), _CHUNK)
    return FilteredCandidates(out_ids, out_scores, mask, n_kept)


def select_negatives(candidate_ids, candidate_scores, positive_scores, n: int, *,
                     strategy: str = "simans", a: float = 0.5, b: float = 0.0,
                     kernel: str = "gaussian", skip: int = 0, window=None, max_score=None,
                     margin=None, perc=None, seed: int = 0, epoch: int = 0, row_keys=None,
                     fallback: str = "lowest", parallel: bool = True) -> np.ndarray:
    """Select ``n`` negatives per query with one of several strategies, on the same candidates.

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Candidate document ids (positives removed), ``-1`` for padding.
    candidate_scores : float array of shape (n_q, k)
        Their scores (float32 or float64; NaN or +-inf marks padding).
    positive_scores : array of shape (n_q,) or (n_q, m)
        Positive scores (NaN-padded with several positives; NaN: unknown). Used by SimANS and by
        the ``margin``/``perc`` filters; ignored by ``top``/``uniform`` otherwise (pass NaNs).
    n : int
        Negatives per query.
    strategy : {"simans", "top", "uniform"}, default "simans"
        ``simans``: :func:`simans_fast.simans_negatives` on the kept candidates. ``top``: the
        ``n`` highest-scoring kept candidates, best first (deterministic; no random numbers).
        ``uniform``: ``n`` kept candidates uniformly without replacement, in draw order.
    a, b, kernel
        SimANS parameters (see :func:`simans_fast.ambiguity_log_weights`); ``simans`` only.
    skip : int, default 0
        Skip the ``skip`` best-ranked candidates (any strategy).
    window : (int, int or None), optional
        Keep ranks ``lo <= rank < hi`` only (any strategy); ``(10, 210)`` with ``"uniform"`` is
        FlagEmbedding's default range sampling.
    max_score, margin, perc : float, optional
        NV-Retriever filters TopK-Abs, TopK-MarginPos, TopK-PercPos applied before the
        strategy (see :func:`filter_candidates`).
    seed, epoch : int
        Key the counter-based generator (``simans``, ``uniform``).
    row_keys : int array of shape (n_q,), optional
        Global query keys (default: row index): a shard passing its rows' global keys gets the
        same negatives as one process holding all rows.
    fallback : {"lowest", "uniform", "raise"}, default "lowest"
        ``simans`` only: rows whose positive score is unknown.
    parallel : bool, default True
        Use the multi-threaded kernels.

    Returns
    -------
    ndarray of shape (n_q, n), int64
        Document ids, ``-1`` padded when a row keeps fewer than ``n`` candidates.

    Notes
    -----
    With no filter and no rank restriction, ``strategy="simans"`` returns exactly
    ``simans_fast.simans_negatives(...)`` with the same arguments. All strategies are
    bit-identical across thread counts, processes and row subsets (given ``row_keys``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    n = _core.check_n(n)
    plan = _plan(candidate_ids, candidate_scores, positive_scores, max_score, margin, perc, skip,
                 window)
    n_q, k = plan.scores.shape
    if strategy == "simans":
        ids = plan.ids
        if plan.active:
            mask, _ = _compute_mask(plan, parallel)
            ids = np.where(mask, plan.ids, -1)
        return _core.simans_negatives(ids, plan.scores, positive_scores, n, a=a, b=b,
                                      kernel=kernel, seed=seed, epoch=epoch, fallback=fallback,
                                      row_keys=row_keys, parallel=parallel)
    # top and uniform do not need a, b, kernel, fallback, but validate them all the same so a
    # typo never passes silently
    _core.check_param(a, "a", nonneg=True)
    _core.check_param(b, "b")
    _core.check_kernel(kernel)
    _core.check_fallback(fallback)
    keys = _core.check_row_keys(row_keys, n_q)
    mask, _ = _compute_mask(plan, parallel)
    if strategy == "top":
        cols = np.empty((n_q, n), np.int64)
        out = np.empty((n_q, n), np.int64)
        if n_q:
            (_k.top_par if parallel else _k.top_ser)(plan.ids, plan.scores, mask, n, cols, out,
                                                     _CHUNK)
        return out
    # uniform: exact sampling without replacement from log-weights 0 (kept) / -inf (other)
    logw = np.empty((n_q, k), np.float32)
    if n_q and k:
        (_k.uniform_logw_par if parallel else _k.uniform_logw_ser)(mask, logw, _CHUNK)
    cols = _core.sample(logw, n, seed=seed, epoch=epoch, row_keys=keys.view(np.int64),
                        parallel=parallel)
    out = np.empty((n_q, n), np.int64)
    if n_q:
        (_k.gather_par if parallel else _k.gather_ser)(plan.ids, cols, out, _CHUNK)
    return out

"""Negative-selection strategies beside SimANS, and positive-aware candidate filters.

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
* A candidate is *valid* when its id is ``>= 0`` and its score is finite. ``-1`` ids and NaN or
  ``-inf`` scores are padding; ids below ``-1``, and ``+inf`` on a candidate whose id is not
  ``-1``, are errors (``ValueError`` naming the argument and the index).
* *Marked positives*: ``positive_ids`` (the row's positive document ids) and/or ``positive_mask``
  (``True`` at a candidate to treat as a positive, e.g. a document whose text is the query's
  own) mark candidates that are **never returned**. They only matter for lists that still hold
  positives (raw retrieval ranks); candidates from ``sf.topk(..., exclude=positives)`` have none.
* *Ranks* are 0-based positions, score highest first, ties broken by column (stable), among the
  candidates that *count*; the rank rule (``rank_rule``) says which count:

  =========================== ===================================================================
  ``"candidates"`` (default)  valid candidates that are not marked positives, counted *before*
                              the score filters. ``skip=10`` always drops the ten best-scored
                              non-positive candidates, whatever the filters remove. This is the
                              rule of every earlier release.
  ``"flagembedding"``         FlagEmbedding's ``hn_mine.py``: raw retrieval ranks. Every valid
                              candidate counts, marked positives included, before the filters;
                              the positives are dropped afterwards, so ``window=(10, 210)`` yields
                              fewer than 200 candidates when positives fall inside it. Equal to
                              ``"candidates"`` when no candidate is marked.
  ``"sentence-transformers"`` sentence-transformers' ``mine_hard_negatives``: only candidates that
                              survive everything count (valid, not a marked positive, pass every
                              score filter): it takes the top ``range_max`` survivors and skips
                              the first ``range_min``, i.e. ``window=(range_min, range_max)``.
  =========================== ===================================================================

  Candidates from :func:`simans_fast.topk` are already in rank order; unsorted rows are ranked per
  row. Invalid candidates never take a rank.
* Rank restrictions: ``skip=r`` keeps ranks ``>= r``; ``window=(lo, hi)`` keeps ranks
  ``lo <= rank < hi`` (``hi=None``: no upper bound). Both may be given; both then apply.
  They restrict every strategy (SimANS included).
* Score filters (NV-Retriever, Moreira et al. 2024, plus sentence-transformers' ``min_score``):

  - TopK-Abs, ``max_score=t``: keep ``s < t``;
  - ``min_score=t``: keep ``s > t``;
  - TopK-MarginPos, ``margin=m``: keep ``s < s_pos - m`` (sentence-transformers'
    ``absolute_margin``);
  - TopK-PercPos, ``perc=f``: keep ``s < s_pos - (1 - f) * |s_pos|`` (sentence-transformers'
    ``relative_margin = 1 - f``). For ``s_pos > 0`` this is NV-Retriever's ``s < f * s_pos``; for
    a negative positive score it stays *below* the positive (``s_pos = -2, f = 0.95`` keeps
    ``s < -2.1``), where ``s < f * s_pos`` would keep candidates scored above the positive.

  The equality rule (``threshold_rule``): ``"strict"`` (default) removes a score *equal* to a
  threshold (``<`` and ``>`` above); ``"sentence-transformers"`` keeps it (``<=`` and ``>=``), as
  its ``mine_hard_negatives`` removes only ``s > max_score``, ``s < min_score``,
  ``s + absolute_margin > s_pos`` and ``s > s_pos - |s_pos| * relative_margin``. Thresholds are
  computed in float64 from the given values (float32 scores are widened exactly);
  sentence-transformers computes them in the scores' dtype (float32), so the two can also differ
  for a score within one float32 rounding of a positive-relative threshold.
* Positive scores: ``(n_q,)``, or ``(n_q, m)`` NaN-padded with several positives; the filters then
  use the lowest known positive score of the row (as NV-Retriever and sentence-transformers).
  NaN means the positive's score is unknown: the positive-relative filters (``margin``, ``perc``)
  cannot be evaluated and are **not applied** to that row (``max_score``, ``min_score`` and the
  rank restrictions still are); SimANS then uses its ``fallback``. ``+inf`` and ``-inf`` are
  errors (no candidate is "close to" an infinite score).
* Degenerate shapes: 0 queries gives ``(0, n)`` (``filter_candidates``: ``(0, k)``, or ``(0, 0)``
  compacted); 0 candidates, or fewer kept candidates than ``n``, gives rows padded with ``-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _config
from . import core as _core
from ._validate import (ParameterError, check_choice, check_epoch, check_int, check_seed,
                        check_window)
from .kernels import strategies as _k

__all__ = ["RANK_RULES", "STRATEGIES", "THRESHOLD_RULES", "FilteredCandidates",
           "filter_candidates", "select_negatives"]

STRATEGIES = _config.STRATEGIES
RANK_RULES = _config.RANK_RULES
THRESHOLD_RULES = _config.THRESHOLD_RULES
_RANK_CODES = {"candidates": _k.RANK_CANDIDATES, "flagembedding": _k.RANK_RETRIEVED,
               "sentence-transformers": _k.RANK_SURVIVORS}
_CHUNK = _config.CHUNK
_NO_LIMIT = np.iinfo(np.int64).max


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _check_values(x: np.ndarray, name: str, kind: str, ids: np.ndarray | None = None) -> None:
    """Reject values no caller means, naming the parameter and the first bad index.

    The one place this module checks values: a local stand-in for the shared value checks being
    added to ``core.py`` (same rules), to be swapped for them.

    * ``kind="ids"``: ids below ``-1`` are an error (``-1`` is padding);
    * ``kind="scores"``: ``+inf`` is an error on a candidate that is not padding (``ids`` given:
      id ``>= 0``; without ``ids``: anywhere); NaN and ``-inf`` mark padding;
    * ``kind="positive_scores"``: ``+inf`` and ``-inf`` are errors; NaN means "unknown".
    """
    if x.size == 0:
        return
    if kind == "ids":
        low = int(x.min())
        if low < -1:
            where = tuple(int(i) for i in np.argwhere(x < -1)[0])
            raise ParameterError(name,
                                 f"{name} must hold document ids >= 0, or -1 for padding; found "
                                 f"{low} (first value below -1 at index {where})")
    elif kind == "scores":
        if np.fmax.reduce(x, axis=None) == np.inf:  # fmax skips NaN; no temporary array
            bad = np.isposinf(x) if ids is None else np.isposinf(x) & (ids >= 0)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ParameterError(name,
                                     f"{name} is +inf at index {where}: a candidate's score must be "
                                     f"finite (NaN or -inf marks padding, as does id -1)")
    elif kind == "positive_scores":
        if np.fmax.reduce(np.abs(x), axis=None) == np.inf:
            where = tuple(int(i) for i in np.argwhere(np.isinf(x))[0])
            raise ParameterError(name,
                                 f"{name} is {x[where]} at index {where}: a positive's score must "
                                 f"be finite, or NaN when unknown")
    else:  # pragma: no cover - programming error
        raise AssertionError(kind)


def _check_optional_float(x, name):
    if x is None:
        return None
    return _core.check_param(x, name)


_check_choice = check_choice


def _check_rank_limits(skip, window):
    skip = check_int(skip, "skip", min=0, what="a non-negative integer (ranks to skip)")
    lo, hi = int(skip), _NO_LIMIT
    window = check_window(window, "window")
    if window is not None:
        lo = max(lo, window[0])
        hi = _NO_LIMIT if window[1] is None else window[1]
    return lo, hi


def _reference_positive(positive_scores, n_q):
    """(n_q,) float64: the score filters compare against (lowest known positive of the row)."""
    pos = np.asarray(positive_scores)
    if pos.dtype.kind not in "fiu":
        raise ParameterError("positive_scores",
                             f"positive_scores must be numeric, got dtype {pos.dtype}")
    if pos.ndim not in (1, 2) or pos.shape[0] != n_q:
        raise ParameterError("positive_scores",
                             f"positive_scores must have shape ({n_q},) or ({n_q}, m), "
                             f"got {pos.shape}")
    p = pos.astype(np.float64, copy=False)
    _check_values(p, "positive_scores", "positive_scores")
    if p.ndim == 1:
        return p
    known = np.isfinite(p)
    low = np.where(known, p, np.inf).min(axis=1, initial=np.inf)
    return np.where(known.any(axis=1), low, np.nan)


def _positive_flags(positive_ids, positive_mask, ids, parallel):
    """bool (n_q, k): candidates marked as positives, or None when nothing is marked."""
    n_q, k = ids.shape
    flags = None
    if positive_mask is not None:
        pm = np.asarray(positive_mask)
        if pm.dtype != np.bool_:
            raise ParameterError("positive_mask",
                                 f"positive_mask must be a boolean array (True = a positive), got "
                                 f"dtype {pm.dtype}")
        if pm.shape != (n_q, k):
            raise ParameterError("positive_mask",
                                 f"positive_mask must have shape {(n_q, k)} like candidate_ids, got "
                                 f"{pm.shape}")
        flags = np.array(pm, dtype=np.bool_, order="C")  # own copy: positive_ids add to it
    if positive_ids is not None:
        pid = np.asarray(positive_ids)
        if pid.dtype.kind not in "iu" and not (pid.size == 0 and pid.dtype.kind == "f"):
            raise ParameterError("positive_ids",
                                 f"positive_ids must be an integer array (document ids, -1 for "
                                 f"padding), got dtype {pid.dtype}")
        if pid.ndim == 1:
            pid = pid[:, None]
        if pid.ndim != 2 or pid.shape[0] != n_q:
            raise ParameterError("positive_ids",
                                 f"positive_ids must have shape ({n_q},) or ({n_q}, m), got "
                                 f"{np.asarray(positive_ids).shape}")
        if pid.dtype.kind == "u" and pid.size and pid.max() > np.iinfo(np.int64).max:
            raise ParameterError("positive_ids", "positive_ids holds ids above the int64 range")
        pid = np.ascontiguousarray(pid, dtype=np.int64)
        _check_values(pid, "positive_ids", "ids")
        if flags is None:
            flags = np.zeros((n_q, k), np.bool_)
        if n_q and k and pid.shape[1]:
            (_k.positive_mask_par if parallel else _k.positive_mask_ser)(ids, pid, flags, _CHUNK)
    return flags


@dataclass(frozen=True)
class _Plan:
    ids: np.ndarray
    scores: np.ndarray
    pos_ref: np.ndarray | None
    is_pos: np.ndarray | None
    max_score: float
    min_score: float
    margin: float | None
    perc: float | None
    lo: int
    hi: int
    rank_rule: str
    inclusive: bool

    @property
    def active(self) -> bool:
        return (self.max_score != math.inf or self.min_score != -math.inf
                or self.margin is not None or self.perc is not None or self.lo > 0
                or self.hi != _NO_LIMIT or self.is_pos is not None)


def _plan(candidate_ids, candidate_scores, positive_scores, *, max_score, min_score, margin,
          perc, skip, window, rank_rule, threshold_rule, positive_ids, positive_mask,
          parallel) -> _Plan:
    scores = _core.check_float_matrix(candidate_scores, "candidate_scores", ndim=2)
    n_q, k = scores.shape
    ids = _core.check_ids(candidate_ids, "candidate_ids", (n_q, k))
    _check_values(ids, "candidate_ids", "ids")
    _check_values(scores, "candidate_scores", "scores", ids=ids)
    max_score = _check_optional_float(max_score, "max_score")
    min_score = _check_optional_float(min_score, "min_score")
    margin = _check_optional_float(margin, "margin")
    perc = _check_optional_float(perc, "perc")
    if perc is not None and not 0.0 <= perc <= 1.0:
        raise ParameterError("perc",
                             f"perc must be in [0, 1] (fraction of the positive's score), got {perc}")
    lo, hi = _check_rank_limits(skip, window)
    _check_choice(rank_rule, "rank_rule", RANK_RULES)
    _check_choice(threshold_rule, "threshold_rule", THRESHOLD_RULES)
    if positive_scores is None:
        if margin is not None or perc is not None:
            raise ParameterError("positive_scores",
                                 "positive_scores is required for the margin and perc filters")
        pos_ref = None
    else:
        pos_ref = _reference_positive(positive_scores, n_q)
    is_pos = _positive_flags(positive_ids, positive_mask, ids, parallel)
    return _Plan(ids, scores, pos_ref, is_pos, math.inf if max_score is None else max_score,
                 -math.inf if min_score is None else min_score, margin, perc, lo, hi, rank_rule,
                 threshold_rule == "sentence-transformers")


def _compute_mask(plan: _Plan, parallel: bool):
    n_q, k = plan.scores.shape
    mask = np.empty((n_q, k), np.bool_)
    n_kept = np.empty(n_q, np.int64)
    if n_q == 0:
        return mask, n_kept
    pos = plan.pos_ref if plan.pos_ref is not None else np.full(n_q, np.nan)
    need_rank = plan.lo > 0 or plan.hi != _NO_LIMIT
    has_pos = plan.is_pos is not None
    is_pos = plan.is_pos if has_pos else np.zeros((1, k), np.bool_)
    fn = _k.mask_par if parallel else _k.mask_ser
    fn(plan.ids, plan.scores, pos, is_pos, has_pos, float(plan.max_score),
       float(plan.min_score), plan.margin is not None,
       0.0 if plan.margin is None else plan.margin, plan.perc is not None,
       0.0 if plan.perc is None else plan.perc, plan.inclusive, plan.lo, plan.hi, need_rank,
       _RANK_CODES[plan.rank_rule], mask, n_kept, _CHUNK)
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


# the parameters both public functions share, spliced into their docstrings
_COMMON_DOC = """\
    max_score : float, optional
        TopK-Abs: keep ``s < max_score`` (``<=`` with ``threshold_rule="sentence-transformers"``).
    min_score : float, optional
        Keep ``s > min_score`` (``>=`` with ``threshold_rule="sentence-transformers"``).
    margin : float, optional
        TopK-MarginPos: keep ``s < s_pos - margin`` (sentence-transformers' ``absolute_margin``).
    perc : float in [0, 1], optional
        TopK-PercPos: keep ``s < s_pos - (1 - perc) * |s_pos|`` (``perc=0.95``: NV-Retriever's
        best setting, "below 95 % of the positive's score"; sentence-transformers'
        ``relative_margin`` is ``1 - perc``).
    skip : int, default 0
        Drop the ``skip`` best-ranked candidates.
    window : (int, int or None), optional
        Keep ranks ``lo <= rank < hi`` only.
    rank_rule : {"candidates", "flagembedding", "sentence-transformers"}, default "candidates"
        Which candidates take a rank for ``skip``/``window``. ``"candidates"``: every valid
        candidate that is not a marked positive, before the score filters (earlier releases'
        rule). ``"flagembedding"``: raw retrieval ranks, marked positives included (then
        dropped), before the score filters, as FlagEmbedding's ``hn_mine.py``
        ``--range_for_sampling``. ``"sentence-transformers"``: only the candidates that survive
        the positive mask and every score filter, as ``mine_hard_negatives``' ``range_min`` /
        ``range_max``.
    threshold_rule : {"strict", "sentence-transformers"}, default "strict"
        ``"strict"``: a score equal to a threshold is removed; ``"sentence-transformers"``: it is
        kept.
    positive_ids : int array of shape (n_q,) or (n_q, m), optional
        The row's positive document ids, ``-1`` padded: candidates with one of these ids are
        never returned (and count in the ranks only under ``rank_rule="flagembedding"``).
        Needed only when the candidates still hold the positives (raw retrieval ranks).
    positive_mask : bool array of shape (n_q, k), optional
        Same, by position: ``True`` marks a candidate to treat as a positive (e.g. a document
        whose text is the query's own, which ``hn_mine.py`` also counts and drops). May be
        combined with ``positive_ids`` (a candidate marked by either is a positive).
"""


def filter_candidates(candidate_ids, candidate_scores, positive_scores=None, *, max_score=None,
                      min_score=None, margin=None, perc=None, skip: int = 0, window=None,
                      rank_rule: str = "candidates", threshold_rule: str = "strict",
                      positive_ids=None, positive_mask=None, compact: bool = False,
                      parallel: bool = True) -> FilteredCandidates:
    """Apply positive-aware score filters and rank restrictions to candidates.

    See the module docstring for the exact rules (thresholds, rank rules, lowest known
    positive, unknown positives).

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Candidate document ids, ``-1`` for padding (ids below ``-1``: ``ValueError``).
    candidate_scores : float array of shape (n_q, k)
        Their scores, float32 or float64; NaN or ``-inf`` marks padding, ``+inf`` is an error
        (unless the id is ``-1``).
    positive_scores : array of shape (n_q,) or (n_q, m), optional
        Positive scores (NaN-padded with several positives; NaN: unknown; ``+-inf``: error);
        needed for ``margin`` and ``perc``.
    {common}
    compact : bool, default False
        Left-pack the kept candidates (width ``max(n_kept)``) instead of masking in place.
    parallel : bool, default True
        Use the multi-threaded kernels.

    Returns
    -------
    FilteredCandidates
        ``ids`` and ``scores`` plug directly into :func:`select_negatives`,
        :func:`simans_fast.simans_negatives` or :class:`simans_fast.SimANSSampler`. Marked
        positives are removed (``-1``) like every other candidate that is not kept.
    """
    plan = _plan(candidate_ids, candidate_scores, positive_scores, max_score=max_score,
                 min_score=min_score, margin=margin, perc=perc, skip=skip, window=window,
                 rank_rule=rank_rule, threshold_rule=threshold_rule, positive_ids=positive_ids,
                 positive_mask=positive_mask, parallel=parallel)
    mask, n_kept = _compute_mask(plan, parallel)
    n_q, k = plan.scores.shape
    width = (int(n_kept.max()) if n_q else 0) if compact else k
    out_ids = np.empty((n_q, width), np.int64)
    out_scores = np.empty((n_q, width), plan.scores.dtype)
    if n_q and width:
        (_k.apply_par if parallel else _k.apply_ser)(plan.ids, plan.scores, mask, out_ids,
                                                     out_scores, bool(compact), _CHUNK)
    return FilteredCandidates(out_ids, out_scores, mask, n_kept)


if filter_candidates.__doc__:  # None under python -OO
    filter_candidates.__doc__ = filter_candidates.__doc__.replace("    {common}\n", _COMMON_DOC)


def select_negatives(candidate_ids, candidate_scores, positive_scores, n: int, *,
                     strategy: str = "simans", a: float = 0.5, b: float = 0.0,
                     kernel: str = "gaussian", skip: int = 0, window=None, max_score=None,
                     min_score=None, margin=None, perc=None, rank_rule: str = "candidates",
                     threshold_rule: str = "strict", positive_ids=None, positive_mask=None,
                     seed: int = 0, epoch: int = 0, row_keys=None, fallback: str = "lowest",
                     parallel: bool = True) -> np.ndarray:
    """Select ``n`` negatives per query with one of several strategies, on the same candidates.

    Parameters
    ----------
    candidate_ids : int array of shape (n_q, k)
        Candidate document ids, ``-1`` for padding (ids below ``-1``: ``ValueError``). Either
        positives removed (``sf.topk(..., exclude=positives)``) or raw retrieval lists with the
        positives marked by ``positive_ids`` / ``positive_mask``.
    candidate_scores : float array of shape (n_q, k)
        Their scores (float32 or float64; NaN or ``-inf`` marks padding, ``+inf`` is an error
        unless the id is ``-1``).
    positive_scores : array of shape (n_q,) or (n_q, m)
        Positive scores (NaN-padded with several positives; NaN: unknown; ``+-inf``: error). Used by
        SimANS and by the ``margin``/``perc`` filters; ignored by ``top``/``uniform`` otherwise
        (pass NaNs).
    n : int
        Negatives per query (``n > k`` is allowed: rows are ``-1`` padded).
    strategy : {"simans", "top", "uniform"}, default "simans"
        ``simans``: :func:`simans_fast.simans_negatives` on the kept candidates. ``top``: the
        ``n`` highest-scoring kept candidates, best first (deterministic; no random numbers).
        ``uniform``: ``n`` kept candidates uniformly without replacement, in draw order.
    a, b, kernel
        SimANS parameters (see :func:`simans_fast.ambiguity_log_weights`); ``simans`` only.
    {common}
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
    With no filter, no rank restriction and no marked positive, ``strategy="simans"`` returns
    exactly ``simans_fast.simans_negatives(...)`` with the same arguments. All strategies are
    bit-identical across thread counts, processes and row subsets (given ``row_keys``).

    sentence-transformers' ``mine_hard_negatives(range_min=r0, range_max=r1, max_score=...,
    min_score=..., absolute_margin=m, relative_margin=g, num_negatives=n,
    sampling_strategy="top")`` on its raw top-``(r1 + max_positives)`` list is
    ``select_negatives(ids, scores, pos, n, strategy="top", window=(r0, r1), margin=m,
    perc=1 - g, ..., rank_rule="sentence-transformers", threshold_rule="sentence-transformers",
    positive_ids=...)``, except at exact score ties. FlagEmbedding's ``hn_mine.py
    --range_for_sampling 10-210`` on its raw top-210 list is ``strategy="uniform",
    window=(10, 210), rank_rule="flagembedding", positive_ids=...`` (and the query's own text
    in ``positive_mask``), with seeded draws instead of ``random.sample``.
    """
    _check_choice(strategy, "strategy", STRATEGIES)
    n = _core.check_n(n)
    plan = _plan(candidate_ids, candidate_scores, positive_scores, max_score=max_score,
                 min_score=min_score, margin=margin, perc=perc, skip=skip, window=window,
                 rank_rule=rank_rule, threshold_rule=threshold_rule, positive_ids=positive_ids,
                 positive_mask=positive_mask, parallel=parallel)
    n_q, k = plan.scores.shape
    if strategy == "simans":
        ids = plan.ids
        if plan.active:
            mask, _ = _compute_mask(plan, parallel)
            ids = np.where(mask, plan.ids, -1)
        pos = positive_scores
        if np.ndim(pos) == 2 and (k == 0 or np.shape(pos)[1] == 0):
            # no candidate to sample, or no positive column at all: the row's reference
            # positive (NaN where none is known) gives the core's defined result for it
            pos = plan.pos_ref
        return _core.simans_negatives(ids, plan.scores, pos, n, a=a, b=b, kernel=kernel,
                                      seed=seed, epoch=epoch, fallback=fallback,
                                      row_keys=row_keys, parallel=parallel)
    # top and uniform do not need a, b, kernel, fallback, but validate them all the same so a
    # typo never passes silently
    _core.check_param(a, "a", nonneg=True)
    _core.check_param(b, "b")
    _core.check_kernel(kernel)
    _core.check_fallback(fallback)
    check_seed(seed)
    check_epoch(epoch)
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


if select_negatives.__doc__:  # None under python -OO
    select_negatives.__doc__ = select_negatives.__doc__.replace("    {common}\n", _COMMON_DOC)

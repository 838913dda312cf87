"""How many candidates does SimANS really choose from? Effective candidates per query.

SimANS draws negatives with probability ``p_i ∝ exp(logw_i)`` over a query's valid candidates.
When the scores' spread is small against ``1/sqrt(a)`` (cosine scores in [-1, 1] with the
paper's ``a = 0.5``), every ``p_i`` is nearly ``1/n_valid`` and SimANS is uniform sampling in
disguise. This module measures that, per query, from the log-weights:

``perplexity`` (default)
    ``exp(H(p))`` with ``H(p) = -Σ p_i log p_i``: the number of equally likely candidates that
    would be exactly as uncertain as ``p``.
``inverse_simpson``
    ``1 / Σ p_i²``: the number of equally likely candidates with the same chance that two
    independent draws pick the same candidate.

Both lie in ``[1, n_valid]``, equal ``n_valid`` exactly when the weights are uniform, and 1
when one candidate holds all the mass (``inverse_simpson <= perplexity`` always). They
describe one draw; ``n`` draws without replacement cover at most ``min(n, n_valid)``
candidates, so rows with ``n_valid <= n`` take every candidate whatever the weights.

Everything here is plain NumPy (float64), row-chunked; it imports numpy, the leaves
(``_validate``), ``core`` and ``strategies`` (lazily).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._config import DEFAULT_QUERY_BLOCK

__all__ = ["MEASURES", "FlatWeightsWarning", "EffectiveCandidates", "effective_candidates",
           "simans_effective_candidates", "summarize_effective", "warn_if_flat",
           "candidates_effective", "parse_window", "score_scale_of", "strategy_filters"]

MEASURES = ("perplexity", "inverse_simpson")
#: default share of the valid candidates above which the weights count as "nearly flat"
FLAT_RATIO = 0.9
_CHUNK = DEFAULT_QUERY_BLOCK  # queries per block (results never depend on it)


class FlatWeightsWarning(UserWarning):
    """SimANS weights are nearly uniform over the valid candidates (check the score scale)."""


@dataclass(frozen=True)
class EffectiveCandidates:
    """Per-query effective number of candidates (see the module docstring).

    Attributes
    ----------
    effective : ndarray of shape (n_q,), float64
        Effective number of candidates; NaN for rows without a valid candidate.
    n_valid : ndarray of shape (n_q,), int64
        Valid candidates (finite log-weight) per row.
    measure : str
        ``"perplexity"`` or ``"inverse_simpson"``.
    """

    effective: np.ndarray
    n_valid: np.ndarray
    measure: str

    @property
    def ratio(self) -> np.ndarray:
        """``effective / n_valid`` per row (NaN where ``n_valid == 0``); 1.0 means uniform."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_valid > 0, self.effective / np.maximum(self.n_valid, 1),
                            np.nan)


def _check_measure(measure):
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    return measure


def effective_candidates(log_weights, *, measure: str = "perplexity") -> EffectiveCandidates:
    """Effective number of candidates of every row of (unnormalised) log-weights.

    Parameters
    ----------
    log_weights : float array of shape (n_q, k)
        Log-weights as returned by :func:`simans_fast.ambiguity_log_weights`: ``-inf`` (or NaN)
        marks an invalid candidate. Only differences within a row matter.
    measure : {"perplexity", "inverse_simpson"}, default "perplexity"

    Returns
    -------
    EffectiveCandidates
    """
    _check_measure(measure)
    lw = np.asarray(log_weights)
    if lw.ndim != 2 or lw.dtype.kind != "f":
        got = f"dtype {lw.dtype}" if lw.dtype.kind != "f" else f"shape {lw.shape}"
        raise ValueError(f"log_weights must be a 2-D float array (n_q, k), got {got}")
    n_q = lw.shape[0]
    eff = np.full(n_q, np.nan)
    n_valid = np.zeros(n_q, np.int64)
    for lo in range(0, n_q, _CHUNK):
        x = lw[lo:lo + _CHUNK].astype(np.float64)
        valid = np.isfinite(x)
        nv = valid.sum(axis=1)
        n_valid[lo:lo + _CHUNK] = nv
        if x.shape[1] == 0:
            continue
        peak = np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0)
        z = np.where(valid, x - peak, -np.inf)          # <= 0, 0 at the peak
        w = np.exp(z)                                   # 0 for invalid
        tot = w.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = w / tot
            if measure == "perplexity":
                # H = log(tot) - Σ p z (z finite wherever p > 0)
                pz = np.where(p > 0, p * np.where(valid, z, 0.0), 0.0).sum(axis=1)
                h = np.log(tot[:, 0]) - pz
                e = np.exp(h)
            else:
                e = 1.0 / (p * p).sum(axis=1)
        e = np.clip(e, 1.0, np.maximum(nv, 1).astype(np.float64))
        eff[lo:lo + _CHUNK] = np.where(nv > 0, e, np.nan)
    return EffectiveCandidates(eff, n_valid, measure)


def simans_effective_candidates(candidate_scores, positive_scores, *, a: float = 0.5,
                                b: float = 0.0, kernel: str = "gaussian",
                                score_scale: float = 1.0, candidate_ids=None,
                                measure: str = "perplexity") -> EffectiveCandidates:
    """Effective candidates of SimANS with these parameters on these scores.

    The weights are ``exp(-a (c·s_i - c·s_pos - b)^2)`` (``gaussian``) or
    ``exp(-a |c·s_i - c·s_pos - b|)`` (``laplace``) with ``c = score_scale``, exactly what
    :func:`simans_fast.mine_hard_negatives` samples from (and, with ``score_scale=1``, what
    :func:`simans_fast.simans_negatives` samples from).

    Parameters
    ----------
    candidate_scores : float array of shape (n_q, k)
        NaN or ``-inf`` marks padding.
    positive_scores : array of shape (n_q,)
        Rows with a non-finite positive get uniform weights (``fallback="uniform"``).
    a, b, kernel
        As in :func:`simans_fast.ambiguity_log_weights`; ``b`` is in scaled units.
    score_scale : float, default 1.0
        Multiplier applied to every score before the kernel (> 0).
    candidate_ids : int array of shape (n_q, k), optional
        ``-1`` marks padding too.
    measure : {"perplexity", "inverse_simpson"}
    """
    from . import core as _core

    c = _check_scale(score_scale)
    s = np.asarray(candidate_scores, dtype=np.float64) * c
    p = np.asarray(positive_scores, dtype=np.float64) * c
    logw = _core.ambiguity_log_weights(s, p, a=a, b=b, kernel=kernel,
                                       fallback="uniform", candidate_ids=candidate_ids)
    return effective_candidates(logw, measure=measure)


def _check_scale(score_scale):
    from ._validate import check_real

    return check_real(score_scale, "score_scale", min=0, min_exclusive=True)


def summarize_effective(eff: EffectiveCandidates, n: int | None = None) -> dict:
    """Aggregate figures: mean / median effective candidates, mean valid, mean ratio.

    Rows with no valid candidate are left out; with ``n`` given, so are rows with
    ``n_valid <= n`` for ``mean_ratio`` and ``flat_rows`` (every candidate is taken there
    whatever the weights). ``flat_rows``: rows whose ratio exceeds :data:`FLAT_RATIO`.
    """
    has = eff.n_valid > 0
    sel = has if n is None else has & (eff.n_valid > int(n))
    r = eff.ratio
    out = {
        "measure": eff.measure,
        "rows": int(has.sum()),
        "mean_effective": float(np.mean(eff.effective[has])) if has.any() else float("nan"),
        "median_effective": float(np.median(eff.effective[has])) if has.any() else float("nan"),
        "mean_valid": float(np.mean(eff.n_valid[has])) if has.any() else float("nan"),
        "rows_compared": int(sel.sum()),
        "mean_ratio": float(np.mean(r[sel])) if sel.any() else float("nan"),
        "flat_rows": int(np.count_nonzero(r[sel] > FLAT_RATIO)) if sel.any() else 0,
    }
    return out


def warn_if_flat(eff: EffectiveCandidates, n: int | None = None, *,
                 threshold: float = FLAT_RATIO, hint: str = "", stacklevel: int = 2) -> bool:
    """Warn (:class:`FlatWeightsWarning`) when the weights are nearly uniform on average.

    "Nearly flat": the mean over rows (with more than ``n`` valid candidates when ``n`` is
    given) of ``effective / n_valid`` exceeds ``threshold`` (default 0.9). Returns whether it
    warned.
    """
    summ = summarize_effective(eff, n)
    ratio = summ["mean_ratio"]
    if not np.isfinite(ratio) or ratio <= threshold:
        return False
    warnings.warn(
        f"SimANS weights are nearly flat: {summ['mean_effective']:.1f} effective candidates "
        f"({eff.measure}) of {summ['mean_valid']:.1f} valid per query on average "
        f"({ratio:.0%} > {threshold:.0%}), so sampling is close to uniform." + hint,
        FlatWeightsWarning, stacklevel=stacklevel + 1)
    return True


# --------------------------------------------------------------------------- saved parameters
def parse_window(value, parameter: str = "window"):
    """A rank window as saved in a parameter set: ``"LO-HI"`` / ``"LO-"`` (FlagEmbedding's
    ``10-210``) or a pair ``(lo, hi)``; returns ``(lo, hi)`` (``hi`` None: no bound) or None.
    The rule is :func:`simans_fast._validate.check_window` (errors name ``parameter``)."""
    from ._validate import check_window

    return check_window(value, parameter, text=True)


def rank_room(parameters, k: int) -> int:
    """Candidate ranks a saved parameter set leaves each query out of ``k``: ranks from
    ``max(skip, window lo)`` up to ``min(k, window hi)``. Fewer than ``n`` cannot give every
    query ``n`` negatives; mining refuses such a set before it starts."""
    skip = int(parameters.get("skip") or 0)
    window = parse_window(parameters.get("window"))
    lo = max(skip, window[0] if window else 0)
    hi = k if window is None or window[1] is None else min(k, window[1])
    return max(0, hi - lo)


def default_score_scale(*, encoded: bool, normalized: bool = True) -> float:
    """The score scale ``c`` a mining job uses when none is given: 20 (the scale of
    MultipleNegativesRankingLoss, :data:`simans_fast._config.DEFAULT_SCORE_SCALE`) for the
    cosines of texts it encodes with unit-length embeddings, where the paper's ``a = 0.5`` on
    raw cosines would be nearly uniform; 1 for raw scores (embeddings you pass, a run's own
    scores), as in the paper."""
    from ._config import DEFAULT_SCORE_SCALE

    return float(DEFAULT_SCORE_SCALE) if encoded and normalized else 1.0


def score_scale_of(parameters) -> float:
    """The score multiplier ``c`` of a saved parameter set (absent: 1, raw scores)."""
    v = parameters.get("score_scale")
    return 1.0 if v is None else float(v)


def strategy_filters(parameters) -> dict:
    """The rank and score options of a saved parameter set, as keyword arguments of
    :func:`simans_fast.filter_candidates` (``skip``, ``window``, ``max_score``, ``margin``,
    ``perc``)."""
    out = {key: (None if parameters.get(key) is None else float(parameters[key]))
           for key in ("max_score", "margin", "perc")}
    out["skip"] = int(parameters.get("skip") or 0)
    out["window"] = parse_window(parameters.get("window"))
    return out


def has_strategy_filters(filters: dict) -> bool:
    """Whether :func:`strategy_filters` asks for any rank or score restriction."""
    return bool(filters["skip"]) or filters["window"] is not None or any(
        filters[key] is not None for key in ("max_score", "margin", "perc"))


_EFF_BLOCK = 1 << 16


def candidates_effective(candidates, parameters):
    """Effective number of SimANS candidates per query of a candidates file, or None.

    ``candidates`` has ``candidate_ids``, ``candidate_scores`` and ``positive_scores`` (a
    :class:`simans_fast.store.candidates.CandidatesFile` or
    :class:`simans_fast.MinedCandidates`); ``parameters`` is a saved parameter set (``a``,
    ``b``, ``kernel``, optional ``score_scale``, ``positive_choice``, ``strategy`` and the rank
    and score options).

    The weights are those the sampler uses: ``exp(-a (c s - c s_pos - b)^2)`` (or Laplace) over
    the candidates kept by the rank and score options, ``c`` the score scale. With several
    positives: ``highest`` / ``lowest`` use that one; ``random`` averages over the query's
    positives (each is used in some epochs). Queries without a known positive (fallback) and
    strategies other than SimANS have no such figure (NaN / None).
    """
    from .strategies import filter_candidates

    if (parameters.get("strategy") or "simans") != "simans":
        return None
    cids = np.asarray(candidates.candidate_ids)
    cscores = np.asarray(candidates.candidate_scores)
    pscores = np.asarray(candidates.positive_scores, dtype=np.float64)
    n_q, m = pscores.shape
    c = score_scale_of(parameters)
    choice = parameters.get("positive_choice", "random")
    filters = strategy_filters(parameters)
    options = has_strategy_filters(filters)
    eff = np.full(n_q, np.nan)
    n_valid = np.zeros(n_q, np.int64)
    for lo in range(0, n_q, _EFF_BLOCK):
        hi = min(n_q, lo + _EFF_BLOCK)
        ids = cids[lo:hi]
        s = cscores[lo:hi]
        p = pscores[lo:hi]
        known = ~np.isnan(p)
        if options:
            ids = filter_candidates(ids, s, p[:, 0] if m == 1 else p, **filters).ids
        if m == 1 or choice == "random":
            cols = [p[:, j] for j in range(m)]
        else:
            filled = np.where(known, p, -np.inf if choice == "highest" else np.inf)
            j = np.argmax(filled, 1) if choice == "highest" else np.argmin(filled, 1)
            cols = [p[np.arange(hi - lo), j]]
        tot = np.zeros(hi - lo)
        cnt = np.zeros(hi - lo)
        nv = np.zeros(hi - lo, np.int64)
        for col in cols:
            ok = ~np.isnan(col)
            if not ok.any():
                continue
            e = simans_effective_candidates(s, np.where(ok, col, 0.0),
                                            a=float(parameters["a"]), b=float(parameters["b"]),
                                            kernel=parameters["kernel"], score_scale=c,
                                            candidate_ids=ids)
            use = ok & (e.n_valid > 0)
            tot += np.where(use, e.effective, 0.0)
            cnt += use
            nv = np.where(use, e.n_valid, nv)
        has = cnt > 0
        eff[lo:hi] = np.where(has, tot / np.maximum(cnt, 1), np.nan)
        n_valid[lo:hi] = np.where(has, nv, 0)
    return EffectiveCandidates(eff, n_valid, "perplexity")

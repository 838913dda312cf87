"""``sf.mine_hard_negatives``: a drop-in for sentence-transformers' ``util.mine_hard_negatives``.

Same parameters, defaults, meanings, output columns and row order as sentence-transformers 6.3
(re-implemented from its documented behaviour and read source, not copied), with exact top-k
search from :func:`simans_fast.topk`, exact positive scores from :func:`simans_fast.rescore`, and
two more sampling strategies keyed by ``seed`` and ``epoch``: a seeded ``"random"`` and
``"simans"``. See docs/hard_negatives.md for every rule and every difference.

Pipeline (one unique query per row; repeated anchors are one query with several positives):

1. encode the corpus (the dataset's positives plus ``corpus``, de-duplicated by text) and the
   unique anchors with ``normalize_embeddings=True``, so scores are cosine similarities;
2. the *pool*: the ``range_max + max_positives + 1`` best documents of the whole corpus, as
   sentence-transformers 6.3 retrieves them, minus the query's positives and the query's own
   text when the corpus holds it (fetched exactly as the best other documents, truncated where
   the left-out ones would have taken places in that list); with ``include_positives`` the
   positives stay in (and the query's own text too when it is one of them);
3. ``cross_encoder`` re-scores the pool and the positives, and the pool is re-sorted by those
   scores (sentence-transformers 6.2 did so only when a margin, ``max_score`` or
   ``min_score`` was set);
4. filters, a score exactly at a threshold is kept: ``s + absolute_margin > pos``,
   ``s > pos - |pos| * relative_margin``, ``s > max_score``, ``s < min_score`` remove a
   candidate (``pos``: the query's lowest positive score), evaluated in float32 as
   sentence-transformers does;
5. the window: ranks ``range_min .. range_max - 1`` among the surviving candidates;
6. ``sampling_strategy``: ``"top"`` (the first ``num_negatives``), ``"random"`` (uniform without
   replacement, seeded), ``"simans"`` (SimANS weights on ``score_scale``-scaled scores, seeded);
   sampled negatives are re-sorted best first;
7. the columns of ``output_format`` (:mod:`simans_fast.formats.sentence_transformers`).
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings

import numpy as np

__all__ = ["mine_hard_negatives", "SAMPLING_STRATEGIES", "DEFAULT_SCORE_SCALE"]

logger = logging.getLogger(__name__)

SAMPLING_STRATEGIES = ("top", "random", "simans")
from ._config import DEFAULT_SCORE_SCALE  # noqa: E402  the SimANS score multiplier
#: default SimANS candidate window (ranks after ``range_min``) when ``range_max`` is not given
DEFAULT_SIMANS_WINDOW = 100
_ROW_CHUNK = 4096
#: corpus embeddings searched at a time when the corpus is streamed: rows of
#: ``_STREAM_BYTES`` float32 (65,536 rows at dim 384), a multiple of topk's 1024-row tile, or
#: ``_STREAM_ROWS`` rows when set (tests). Results do not depend on it; fewer, larger blocks
#: mean fewer fresh top-k thresholds (each search of a block starts from its own)
_STREAM_BYTES = 96 * 2**20
_STREAM_ROWS = None


def _stream_rows(dim):
    if _STREAM_ROWS:
        return int(_STREAM_ROWS)
    return max(1024, _STREAM_BYTES // (4 * max(1, dim)) // 1024 * 1024)


# ------------------------------------------------------------------------------ validation
def _is_int(x):
    from ._validate import is_int

    return is_int(x)


def _check_int(x, name, *, minimum=None, allow_none=False):
    from ._validate import check_int

    return check_int(x, name, min=minimum, allow_none=allow_none)


def _check_float(x, name, *, allow_none=True, positive=False, nonneg=False):
    from ._validate import check_real

    return check_real(x, name, allow_none=allow_none, min=0 if (positive or nonneg) else None,
                      min_exclusive=positive)


def _check_bool(x, name):
    from ._validate import check_bool

    return check_bool(x, name)


def _check_prompts(prompt_name, prompt, which):
    for v, nm in ((prompt_name, f"{which}_prompt_name"), (prompt, f"{which}_prompt")):
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{nm} must be a str or None, got {type(v).__name__}")
    if prompt_name is not None and prompt is not None:
        raise ValueError(f"{which}_prompt_name={prompt_name!r} and {which}_prompt={prompt!r} are "
                         f"both given: pass one of them (sentence-transformers would silently use "
                         f"{which}_prompt)")


def _check_texts(texts, what):
    """Every entry a non-empty str; the error names ``what`` and the index."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{what} row {i} is not a str (got {type(t).__name__}): every text "
                             f"must be a non-empty string")
        if not t:
            raise ValueError(f"{what} row {i} is an empty string: every text must be a non-empty "
                             f"string")
    return texts


def _pick_columns(dataset, anchor_column_name, positive_column_name):
    columns = list(getattr(dataset, "column_names", None) or [])
    if not columns:
        raise TypeError("dataset must be a datasets.Dataset (or have column_names), got "
                        f"{type(dataset).__name__}")
    for name, value in (("anchor_column_name", anchor_column_name),
                        ("positive_column_name", positive_column_name)):
        if value is not None and value not in columns:
            raise ValueError(f"{name}={value!r} is not a column of the dataset; its columns are "
                             f"{columns}")
    anchor = anchor_column_name or columns[0]
    if positive_column_name:
        positive = positive_column_name
    else:
        if len(columns) < 2:
            raise ValueError("dataset must contain at least two columns to select the positive "
                             f"column automatically; its columns are {columns}")
        positive = columns[1]
    if anchor == positive:
        raise ValueError(f"anchor_column_name and positive_column_name both select column "
                         f"{anchor!r}; name two different columns")
    return anchor, positive


def _devices(use_multi_process):
    """``use_multi_process`` -> list of devices for a multi-process pool, or None."""
    if use_multi_process is False or use_multi_process is None:
        return None
    if use_multi_process is True:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"] * 4      # sentence-transformers' default without CUDA
    if isinstance(use_multi_process, (list, tuple)) and use_multi_process and all(
            isinstance(d, str) and d for d in use_multi_process):
        return list(use_multi_process)
    raise ValueError(f"use_multi_process must be True, False or a non-empty list of device names "
                     f"such as ['cuda:0', 'cuda:1'] or ['cpu', 'cpu'], got {use_multi_process!r}")


# ------------------------------------------------------------------------------ encoding
def _embed(model, texts, *, role, prompt_name, prompt, batch_size, devices, cache_folder,
           progress):
    """Normalised float32 embeddings through :func:`simans_fast.encode.encode`."""
    from .encode import encode

    emb = encode(model, texts, role=role, prompt_name=prompt_name, prompt=prompt,
                 batch_size=batch_size, device=devices, normalize_embeddings=True,
                 dtype="float32", cache_folder=cache_folder, progress=progress)
    return np.ascontiguousarray(emb, dtype=np.float32)


def _corpus_chunks(model, docs, prompt_name, prompt, batch_size, devices, cache_folder,
                   progress):
    """The documents' normalised float32 embeddings as ``(rows, emb)`` chunks in the order
    :func:`simans_fast.encode.encode_chunks` encodes them; with ``cache_folder``, read from the
    cached file (encoded into it first when missing) in that same order."""
    from .encode import batch_order, encode_chunks

    if cache_folder is not None:
        emb = _embed(model, docs, role="document", prompt_name=prompt_name, prompt=prompt,
                     batch_size=batch_size, devices=devices, cache_folder=cache_folder,
                     progress=progress)
        if emb.shape[0] != len(docs):
            raise ValueError(f"the model returned embeddings of shape {emb.shape} for "
                             f"{len(docs)} documents")
        return _array_chunks(emb, batch_order(docs), _stream_rows(emb.shape[1]))
    return _checked_chunks(encode_chunks(model, docs, role="document", prompt_name=prompt_name,
                                         prompt=prompt, batch_size=batch_size, device=devices,
                                         normalize_embeddings=True, dtype="float32",
                                         progress=progress), len(docs))


def _checked_chunks(chunks, n):
    seen = 0
    for rows, emb in chunks:
        if emb.ndim != 2 or emb.shape[0] != rows.shape[0]:
            raise ValueError(f"the model returned embeddings of shape {emb.shape} for "
                             f"{rows.shape[0]} documents")
        seen += rows.shape[0]
        yield rows, emb
    if seen != n:
        raise ValueError(f"the model returned embeddings for {seen} of {n} documents")


def _resolve_model(model):
    if isinstance(model, (str, os.PathLike)):
        from .encode import load_model

        return load_model(model)
    if not (callable(getattr(model, "encode_query", None))
            and callable(getattr(model, "encode_document", None))):
        raise TypeError(f"model must be a SentenceTransformer (or a model name or path), got "
                        f"{type(model).__name__}")
    return model


def _similarity_name(model):
    name = getattr(model, "similarity_fn_name", None) or "cosine"
    name = getattr(name, "value", name)
    if name not in ("cosine", "dot"):
        raise ValueError(f"model.similarity_fn_name is {name!r}: mine_hard_negatives scores "
                         f"normalised embeddings by inner product, which equals 'cosine' and "
                         f"'dot'; set model.similarity_fn_name = 'cosine' or use "
                         f"sentence_transformers.util.mine_hard_negatives")
    return name


# ------------------------------------------------------------------------------ the pool
def _positive_matrix(pos_indptr, pos_ids, n_q):
    n_pos = np.diff(pos_indptr)
    width = int(n_pos.max()) if n_q else 0
    mat = np.full((n_q, width), -1, np.int64)
    rows = np.repeat(np.arange(n_q, dtype=np.int64), n_pos)
    cols = np.arange(pos_ids.shape[0], dtype=np.int64) - np.repeat(pos_indptr[:-1], n_pos)
    mat[rows, cols] = pos_ids
    return mat


def _left_out_in_pool(cand_scores, out_mat_scores, k_total):
    """Per query: how many of its left-out documents (positives, its own text; scores
    ``out_mat_scores``, ``-inf`` padded) rank within the best ``k_total`` of the corpus.

    The pool of the other candidates holds ``k_total - that`` documents, exactly the others of
    the corpus's top ``k_total`` (ties at the boundary: left-out documents first)."""
    n_q, m = out_mat_scores.shape
    out = np.zeros(n_q, np.int64)
    for lo in range(0, n_q, _ROW_CHUNK):
        cs = cand_scores[lo:lo + _ROW_CHUNK]
        ps = out_mat_scores[lo:lo + _ROW_CHUNK]
        for j in range(m):
            s = ps[:, j:j + 1]
            known = np.isfinite(s[:, 0])
            before = (cs > s).sum(axis=1)
            before += (ps > s).sum(axis=1) + ((ps == s)[:, :j]).sum(axis=1)
            out[lo:lo + _ROW_CHUNK] += known & (before < k_total)
    return out


def _sort_rows_desc(ids, scores):
    """Rows sorted by score descending (stable: ties keep their order), invalid last."""
    key = np.where(ids >= 0, scores, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


def _cross_encoder_scores(cross_encoder, queries, corpus, ids, q_of_pair, pos_ids, *, batch_size,
                          devices, progress):
    """Cross-encoder scores of every valid pool entry and of every (query, positive) pair."""
    qi, cj = np.nonzero(ids >= 0)
    pairs = [(queries[q], corpus[d]) for q, d in zip(qi.tolist(), ids[qi, cj].tolist())]
    n_pool = len(pairs)
    pairs += [(queries[q], corpus[d]) for q, d in zip(q_of_pair.tolist(), pos_ids.tolist())]
    kwargs = {"batch_size": batch_size, "show_progress_bar": progress, "convert_to_numpy": True}
    if devices is not None:
        kwargs["device"] = devices
    pred = cross_encoder.predict(pairs, **kwargs)
    if hasattr(pred, "detach"):
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.shape != (len(pairs),):
        raise ValueError(f"cross_encoder.predict must return one score per pair ({len(pairs)}), "
                         f"got shape {pred.shape}")
    if not np.isfinite(pred).all():
        raise ValueError("cross_encoder.predict returned a non-finite score")
    scores = np.full(ids.shape, -np.inf, np.float32)
    scores[qi, cj] = pred[:n_pool]
    return scores, pred[n_pool:]


def _array_chunks(emb, order, step):
    """(rows, float32 rows of ``emb``) in ``order``, ``step`` rows at a time."""
    for lo in range(0, order.shape[0], step):
        rows = order[lo:lo + step]
        yield rows, np.ascontiguousarray(emb[rows], dtype=np.float32)


def _search_block(query_emb, block, k, exclude, offset, prefilter=None):
    """:func:`simans_fast.topk` of all queries against one block of the streamed corpus, the
    block's rows at places ``offset ...`` of topk's fixed grid of BLAS calls."""
    from .candidates import topk

    c = topk(query_emb, block, k, exclude=exclude, backend="numba", corpus_offset=offset,
             prefilter=prefilter)
    return c.ids, c.scores


def _merge_pool(best_ids, best_scores, ids, scores, k):
    """The best ``k`` of two candidate lists per row, by score, ties by lower id (the ids
    here are places in the streamed order, as within one topk call)."""
    all_ids = np.concatenate([best_ids, ids], axis=1)
    all_scores = np.concatenate([best_scores, scores], axis=1)
    key_ids = np.where(all_ids >= 0, all_ids, np.iinfo(np.int64).max)
    order = np.lexsort((key_ids, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_ids, order, 1), np.take_along_axis(all_scores, order, 1)


def _stream_pool(chunks, n_d, dim, query_emb, k, excl_q, excl_d, keep_docs, *,
                 block_rows=None, prefilter=None):
    """Exact top-``k`` documents of every query over a corpus handed over in chunks.

    ``chunks`` yields ``(rows, emb)``: document ids and their float32 embeddings, the rows of
    all chunks together a permutation ``order`` of ``range(n_d)`` (the order in which
    :func:`simans_fast.encode.encode_chunks` encodes them). Document ``order[p]`` takes place
    ``p`` of :func:`simans_fast.topk`'s grid (``corpus_offset``), so the result is exactly that
    of one ``topk`` call on ``corpus[order]`` (ids mapped back), whatever the chunking: every
    score bit-identical, ties by lower place. Only one block of ``block_rows`` embeddings is
    held at a time, plus those of ``keep_docs``.

    ``(excl_q, excl_d)``: (query, document) pairs left out (sorted by query), or None.
    ``prefilter``: topk's (with ``"bfloat16"`` the scores are :func:`simans_fast.rescore`'s, a
    function of the pair alone, and the merge of the blocks is just as exact).
    Returns ids (document ids, -1 padded) and scores of shape ``(n_q, k)`` sorted by score,
    ties by lower document id; and the float32 embeddings of ``keep_docs`` (sorted unique ids).
    """
    n_q = query_emb.shape[0]
    step = int(block_rows or _stream_rows(dim))
    best_ids = np.full((n_q, k), -1, np.int64)
    best_scores = np.full((n_q, k), -np.inf, np.float32)
    kept = np.zeros((keep_docs.shape[0], dim), np.float32)
    slot = np.full(n_d, -1, np.int64)
    slot[keep_docs] = np.arange(keep_docs.shape[0], dtype=np.int64)
    place = np.full(n_d, -1, np.int64)          # place of each document in the stream
    order = np.empty(n_d, np.int64)             # document at each place
    step = max(1, min(step, n_d))
    buf = np.empty((step, dim), np.float32)
    state = {"start": 0, "fill": 0}

    def flush():
        nonlocal best_ids, best_scores
        start, m = state["start"], state["fill"]
        if m == 0:
            return
        excl = None
        if excl_q is not None:
            pp = place[excl_d]
            sel = (pp >= start) & (pp < start + m)
            indptr = np.zeros(n_q + 1, np.int64)
            np.cumsum(np.bincount(excl_q[sel], minlength=n_q), out=indptr[1:])
            excl = (indptr, pp[sel] - start)
        ids, scores = _search_block(query_emb, buf[:m], min(k, m), excl, start, prefilter)
        ids = np.where(ids >= 0, ids + start, -1)
        best_ids, best_scores = _merge_pool(best_ids, best_scores, ids, scores, k)
        state["start"], state["fill"] = start + m, 0

    for rows, emb in chunks:
        rows = np.asarray(rows, np.int64)
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape != (rows.shape[0], dim):
            raise ValueError(f"the model returned document embeddings of shape {emb.shape} for "
                             f"{rows.shape[0]} documents; the queries' are {dim}-dimensional")
        lo = 0
        while lo < rows.shape[0]:
            m = state["fill"]
            t = min(rows.shape[0] - lo, step - m)
            r, e = rows[lo:lo + t], emb[lo:lo + t]
            at = state["start"] + m
            if at + t > n_d or (place[r] >= 0).any():
                raise RuntimeError("the corpus chunks are not a permutation of the documents")
            buf[m:m + t] = e
            place[r] = np.arange(at, at + t, dtype=np.int64)
            order[at:at + t] = r
            s = slot[r]
            hit = s >= 0
            if hit.any():
                kept[s[hit]] = e[hit]
            state["fill"] = m + t
            lo += t
            if state["fill"] == step:
                flush()
    flush()
    if state["start"] != n_d:
        raise RuntimeError(f"the corpus chunks hold {state['start']} of {n_d} documents")
    ids = np.where(best_ids >= 0, order[np.maximum(best_ids, 0)], -1)
    key_ids = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    srt = np.lexsort((key_ids, -best_scores), axis=1)
    return (np.take_along_axis(ids, srt, 1), np.take_along_axis(best_scores, srt, 1), kept)


# ------------------------------------------------------------------------------ filters
def _margin_filters(ids, scores, ref, *, absolute_margin, relative_margin, max_score, min_score,
                    n_cells):
    """sentence-transformers' positive-relative filters, in its order and float32 arithmetic.

    Returns ``(removed, counters)``: ``removed`` (bool, like ``ids``) marks what
    ``absolute_margin`` and ``relative_margin`` remove, computed as sentence-transformers does
    (``s + absolute_margin > pos`` and ``s > pos - |pos| * relative_margin`` in float32, which
    :func:`simans_fast.filter_candidates` evaluates in float64: the two differ for a score
    within one float32 rounding of such a threshold); ``counters`` is ``{name: (skipped,
    ratio)}`` for every filter that removes something (``max_score`` / ``min_score`` counted
    here for the statistics table, applied by :func:`simans_fast.filter_candidates`), with
    sentence-transformers' denominators (all cells of its score matrix, less what the margins
    removed)."""
    valid = ids >= 0
    removed = np.zeros(ids.shape, dtype=bool)
    counters = {}
    remaining = n_cells
    f32 = np.float32
    ref = ref.astype(np.float32)[:, None]

    def drop(name, hit, margin):
        nonlocal remaining
        hit &= valid
        k = int(hit.sum())
        if k:
            counters[name] = (k, k / remaining if remaining else float("nan"))
            if margin:
                remaining -= k
                removed[hit] = True
        valid[hit] = False

    with np.errstate(invalid="ignore", over="ignore"):
        if absolute_margin is not None:
            drop("absolute_margin", (scores + f32(absolute_margin)) > ref, True)
        if relative_margin is not None:
            thr = ref - np.abs(ref) * f32(relative_margin)
            drop("relative_margin", scores > thr, True)
        if max_score is not None:
            drop("max_score", scores > f32(max_score), False)
        if min_score is not None:
            drop("min_score", scores < f32(min_score), False)
    return removed, counters


def _f32(x):
    """``x`` rounded to float32 (None stays None): for float32 scores, the float64 comparison
    with the rounded value is sentence-transformers' float32 comparison, exactly."""
    return None if x is None else float(np.float32(x))


def _apply_filters(ids, scores, ref, *, absolute_margin, relative_margin, max_score, min_score,
                   n_cells):
    """sentence-transformers' filters, in its order and float32 arithmetic, in place.

    The margins' removals (:func:`_margin_filters`) go to
    :func:`simans_fast.filter_candidates` as ``positive_mask``, with ``max_score`` /
    ``min_score`` (float32-rounded) and sentence-transformers' equality rule (a score at a
    threshold is kept). Removed candidates get id -1 / score -inf. Returns the counters of
    :func:`_margin_filters`."""
    from .strategies import filter_candidates

    removed, counters = _margin_filters(ids, scores, ref, absolute_margin=absolute_margin,
                                        relative_margin=relative_margin, max_score=max_score,
                                        min_score=min_score, n_cells=n_cells)
    if ids.size:
        kept = filter_candidates(ids, _finite_or_pad(scores), max_score=_f32(max_score),
                                 min_score=_f32(min_score),
                                 threshold_rule="sentence-transformers", positive_mask=removed)
        ids[~kept.mask] = -1
        scores[~kept.mask] = -np.inf
    return counters


def _finite_or_pad(scores):
    """float32 scores with NaN as -inf (padding for :func:`simans_fast.filter_candidates`)."""
    sc = np.asarray(scores, dtype=np.float32)
    nan = np.isnan(sc)
    return np.where(nan, np.float32(-np.inf), sc) if nan.any() else sc


def _window(ids, scores, range_min, range_max):
    """Ranks ``range_min .. range_max - 1`` among each row's surviving candidates, best first,
    ``(n_q, range_max - range_min)``, ``-1`` / ``-inf`` padded:
    :func:`simans_fast.filter_candidates` with ``window=(range_min, range_max)`` and
    sentence-transformers' rank rule (only survivors take a rank) on rows sorted best first
    (a survivor's rank is then its place among the row's survivors)."""
    from .strategies import filter_candidates

    n_q = ids.shape[0]
    w = range_max - range_min
    out_ids = np.full((n_q, w), -1, np.int64)
    out_scores = np.full((n_q, w), -np.inf, np.float32)
    if ids.shape[1] == 0 or n_q == 0:
        return out_ids, out_scores
    kept = filter_candidates(ids, _finite_or_pad(scores), window=(range_min, range_max),
                             rank_rule="sentence-transformers", compact=True)
    got = min(kept.ids.shape[1], w)
    out_ids[:, :got] = kept.ids[:, :got]
    out_scores[:, :got] = np.where(kept.ids[:, :got] >= 0, kept.scores[:, :got], -np.inf)
    return out_ids, out_scores


def _sorted_draw(cols, ids, scores):
    """Drawn columns -> (ids, scores) re-sorted best first (the window is already in rank
    order, so sorting the columns sorts by score, ties by rank); -1 draws last."""
    big = np.iinfo(np.int64).max
    c = np.sort(np.where(cols >= 0, cols, big), axis=1)
    ok = c != big
    cc = np.where(ok, c, 0)
    out_ids = np.where(ok, np.take_along_axis(ids, cc, 1), -1)
    out_scores = np.where(ok, np.take_along_axis(scores, cc, 1), np.float32(-np.inf))
    return out_ids, out_scores.astype(np.float32)


# ------------------------------------------------------------------------------ reporting
def _describe(x):
    """sentence-transformers' statistics of one score column, formatted as it prints them."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]

    def f(v):
        return f"{v:.4f}"

    if n == 0:
        return {"Mean": "nan", "Median": "nan", "Std": "nan", "Min": "inf", "25%": "inf",
                "50%": "inf", "75%": "inf", "Max": "-inf"}
    srt = np.sort(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = float(np.std(x, ddof=1)) if n > 1 else float("nan")
    return {"Mean": f(float(x.mean())), "Median": f(float(srt[(n - 1) // 2])),  # lower median
            "Std": f(std), "Min": f(float(srt[0])),
            "25%": f(float(np.quantile(x, 0.25))), "50%": f(float(np.quantile(x, 0.5))),
            "75%": f(float(np.quantile(x, 0.75))), "Max": f(float(srt[-1]))}


def _statistics_lines(pos, neg, diff):
    row = "{:<6} {:>14} {:>14} {:>14}"
    lines = [row.format("Metric", "Positive", "Negative", "Difference"),
             row.format("Count", f"{len(pos):,}", f"{len(neg):,}", "")]
    dp, dn, dd = _describe(pos), _describe(neg), _describe(diff)
    for metric in ("Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"):
        lines.append(row.format(metric, dp[metric], dn[metric], dd[metric]))
    return lines


# ------------------------------------------------------------------------------ public
def mine_hard_negatives(
    dataset,
    model,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    corpus: list | None = None,
    cross_encoder=None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    query_prompt_name: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process=False,
    verbose: bool = True,
    cache_folder: str | None = None,
    as_triplets: bool | None = None,
    margin: float | None = None,
    *,
    a: float = 0.5,
    b: float = 0.0,
    kernel: str = "gaussian",
    score_scale: float = DEFAULT_SCORE_SCALE,
    seed: int = 0,
    epoch: int = 0,
    prefilter: str | None = "auto",
):
    """Add hard negatives to a dataset of (anchor, positive) pairs.

    A drop-in for ``sentence_transformers.util.mine_hard_negatives`` (6.x): every parameter up
    to ``margin`` has its name, default and meaning, and with ``sampling_strategy="top"`` the
    rows equal its output except where two candidates' scores tie exactly. What differs is
    listed under Notes and in docs/hard_negatives.md.

    Parameters
    ----------
    dataset : datasets.Dataset
        (anchor, positive) rows. Rows repeating an anchor give that anchor several positives,
        all excluded from its negatives.
    model : SentenceTransformer, or a model name / local path
        Embeds anchors with ``encode_query`` and documents with ``encode_document``, normalised
        (scores are cosine similarities), through :func:`simans_fast.encode.encode`.
    anchor_column_name, positive_column_name : str, optional
        Default: the dataset's first and second column. A name that is not a column is an error.
    corpus : list of str, optional
        More candidate documents; the dataset's positives are always added; de-duplicated by
        text, first occurrence first.
    cross_encoder : CrossEncoder, optional
        Re-scores the candidate pool and the positives when a margin, ``max_score`` or
        ``min_score`` is set (otherwise unused, as in sentence-transformers).
    range_min : int, default 0
        Skip this many best surviving candidates.
    range_max : int, optional
        Rank limit among surviving candidates. Default: ``range_min + num_negatives +
        max_positives``, or ``range_min + 10 * num_negatives + max_positives`` when a margin or
        ``max_score`` (or ``min_score`` with a cross-encoder) is set; with
        ``sampling_strategy="simans"`` at least ``range_min + 100 + max_positives`` (SimANS needs
        candidates to choose from; the paper used the top 100-200). No 2048 cap (faiss runs on
        the CPU here).
    max_score, min_score, absolute_margin, relative_margin : float, optional
        Filters; a score exactly at a threshold is kept. A candidate is removed when
        ``s > max_score``, ``s < min_score``, ``s + absolute_margin > pos`` or
        ``s > pos - |pos| * relative_margin``, with ``pos`` the query's lowest positive score.
    num_negatives : int, default 3
    sampling_strategy : {"top", "random", "simans"}, default "top"
        ``"top"``: the best ``num_negatives`` of the window. ``"random"``: uniform without
        replacement in the window, **seeded** by ``seed``/``epoch`` (sentence-transformers'
        uses the unseeded global ``random``). ``"simans"``: SimANS, without replacement, with
        probability ``∝ exp(-a (c·s - c·pos - b)^2)`` (``kernel="laplace"``:
        ``exp(-a |c·s - c·pos - b|)``), ``c = score_scale``, ``pos`` the lowest positive score.
        Sampled negatives are re-sorted best first.
    query_prompt_name, query_prompt, corpus_prompt_name, corpus_prompt : str, optional
        Prompts for the anchors and the documents (name in ``model.prompts``, or the text).
        Giving both of a pair is an error.
    include_positives : bool, default False
        Keep the positives among the candidates (forces ``output_format="n-tuple"``).
    output_format : {"triplet", "n-tuple", "labeled-pair", "labeled-list"}, default "triplet"
    output_scores : bool, default False
        Add the scores (``triplet``/``n-tuple``: a ``scores`` column) or replace the labels by
        scores (``labeled-pair``: ``score``; ``labeled-list``: ``scores``).
    batch_size : int, default 32
        Encoding (and cross-encoder) batch size.
    faiss_batch_size : int, default 16384
        Queries per faiss search with ``use_faiss``. The exact default backend picks its own
        blocks; results never depend on either.
    use_faiss : bool, default False
        Search with an exact faiss ``IndexFlatIP`` on the CPU (``sf.topk(backend="faiss")``)
        instead of the exact Numba backend. Same results either way (up to score ties).
    use_multi_process : bool or list of str, default False
        Encode with a multi-process pool: a list of devices, or True (every CUDA device, else
        4 CPU processes, as sentence-transformers).
    verbose : bool, default True
        Print progress, the statistics table (plus the SimANS effective number of candidates
        with ``sampling_strategy="simans"``) and the filter counts.
    cache_folder : str, optional
        Embedding cache of :func:`simans_fast.encode.encode` (keyed by the model's identity,
        role, prompt and the texts).
    as_triplets, margin
        Deprecated as in sentence-transformers: ``as_triplets`` selects ``"triplet"`` /
        ``"n-tuple"``, ``margin`` is ``absolute_margin`` (with a ``FutureWarning``).
    a : float, default 0.5
        SimANS sharpness (``>= 0``; ``0`` is uniform), in units of *scaled* scores.
    b : float, default 0.0
        SimANS shift of the peak, in scaled units (the paper's sign: ``s - pos - b``).
    kernel : {"gaussian", "laplace"}, default "gaussian"
    score_scale : float, default 20.0
        Multiplier ``c`` applied to every score (candidates and positive) before the SimANS
        kernel. The paper's ``a`` (0.5 Gaussian, 3 Laplace) refers to un-normalised dot-product
        scores of BERT-base bi-encoders, spread over several units within a query's top 100;
        cosine scores span a few hundredths to tenths there, so ``a = 0.5`` on them is nearly
        uniform. 20 is the scale of MultipleNegativesRankingLoss (temperature 0.05): the
        logits the model was trained on. Pass 1.0 for scores that are already on that scale
        (e.g. a cross-encoder's logits). Only ``"simans"`` uses it.
    seed, epoch : int, default 0
        Key the counter-based generator (``"random"``, ``"simans"``): the same seed and epoch
        give the same negatives, another epoch gives fresh ones.
    prefilter : {"auto", "bfloat16", None}, default "auto"
        First pass of the exact search (:func:`simans_fast.topk`'s ``prefilter``):
        ``"auto"`` screens in bfloat16 when this CPU multiplies bfloat16 natively (AVX512-BF16,
        AMX), then proves and rescores, so the result stays exact with float64-summed scores;
        ``None`` searches in float32 throughout. Not used with ``use_faiss``.

    Returns
    -------
    datasets.Dataset
        Columns (input names kept): ``triplet``: anchor, positive, negative (+ scores);
        ``n-tuple``: anchor, positive, negative_1..n (+ scores); ``labeled-pair``: anchor,
        positive (the document), label (or score); ``labeled-list``: anchor, positive (list),
        labels (or scores).

    Raises
    ------
    ValueError, TypeError
        Empty dataset, a missing column, an empty or non-str text, both prompts of a pair,
        inconsistent ranges, an unknown strategy / format / kernel, a model whose similarity is
        not cosine or dot.

    Warns
    -----
    simans_fast.diagnostics.FlatWeightsWarning
        With ``"simans"``, when the weights are nearly uniform over the window (mean effective
        candidates above 90 % of the valid ones): raise ``score_scale`` or ``a``.

    Notes
    -----
    Differences from sentence-transformers: a column name that does not exist, an empty text,
    or both prompts of a pair are errors (it silently falls back / accepts); ``"random"`` is
    seeded; ``"simans"`` is added; no faiss GPU and no 2048 cap; only cosine/dot models. The
    reference is sentence-transformers 6.3 (a query's own text left out of its candidates,
    ``cross_encoder`` always re-scoring, ``min_score`` counting only what it removed); 6.2
    differed there.
    """
    # ---------------------------------------------------------------- arguments
    try:
        import datasets  # noqa: F401  (needed for the output)
    except ImportError as exc:  # pragma: no cover - installed with the extra
        raise ImportError("mine_hard_negatives needs the `datasets` package: "
                          "pip install datasets") from exc
    from .formats import sentence_transformers as st_format

    if len(dataset) == 0:
        raise ValueError("The dataset is empty: pass a dataset with at least one (anchor, "
                         "positive) row")
    verbose = _check_bool(verbose, "verbose")
    include_positives = _check_bool(include_positives, "include_positives")
    output_scores = _check_bool(output_scores, "output_scores")
    use_faiss = _check_bool(use_faiss, "use_faiss")
    from .candidates_bf16 import check_prefilter

    check_prefilter(prefilter, "ip")  # a bad value fails before anything is encoded
    faiss_batch_size = _check_int(faiss_batch_size, "faiss_batch_size", minimum=1)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    range_min = _check_int(range_min, "range_min", minimum=0)
    range_max = _check_int(range_max, "range_max", minimum=1, allow_none=True)
    num_negatives = _check_int(num_negatives, "num_negatives", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    epoch = _check_int(epoch, "epoch", minimum=0)
    shown = {"absolute_margin": absolute_margin if margin is None else margin,
             "relative_margin": relative_margin, "max_score": max_score, "min_score": min_score}
    max_score = _check_float(max_score, "max_score")
    min_score = _check_float(min_score, "min_score")
    absolute_margin = _check_float(absolute_margin, "absolute_margin")
    relative_margin = _check_float(relative_margin, "relative_margin")
    margin = _check_float(margin, "margin")
    a = _check_float(a, "a", allow_none=False, nonneg=True)
    b = _check_float(b, "b", allow_none=False)
    score_scale = _check_float(score_scale, "score_scale", allow_none=False, positive=True)
    if kernel not in ("gaussian", "laplace"):
        raise ValueError(f"kernel must be 'gaussian' or 'laplace', got {kernel!r}")
    if sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling_strategy must be one of {list(SAMPLING_STRATEGIES)}, got "
                         f"{sampling_strategy!r}")
    _check_prompts(query_prompt_name, query_prompt, "query")
    _check_prompts(corpus_prompt_name, corpus_prompt, "corpus")
    devices = _devices(use_multi_process)
    if cache_folder is not None and not isinstance(cache_folder, (str, os.PathLike)):
        raise TypeError(f"cache_folder must be a path or None, got {type(cache_folder).__name__}")
    if use_faiss:
        try:                 # a clear ImportError before any encoding
            import faiss  # noqa: F401
        except ImportError as exc:
            raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu (or "
                              '"simans_fast[faiss]"), or pass use_faiss=False (the default '
                              "exact backend gives the same candidates)") from exc

    anchor_col, positive_col = _pick_columns(dataset, anchor_column_name, positive_column_name)

    if as_triplets is not None:
        output_format = "triplet" if _check_bool(as_triplets, "as_triplets") else "n-tuple"
        warnings.warn(f"as_triplets is deprecated: use output_format; using "
                      f"output_format={output_format!r}", FutureWarning, stacklevel=2)
    if include_positives:
        if (range_min != 0 or range_max is not None or max_score is not None
                or min_score is not None or absolute_margin is not None
                or relative_margin is not None or margin is not None
                or sampling_strategy != "top"):
            logger.warning("With include_positives=True, changing range_min, range_max, "
                           "max_score, min_score, absolute_margin, relative_margin or "
                           "sampling_strategy from their defaults may still discard positives.")
        if output_format != "n-tuple":
            logger.warning('With include_positives=True, output_format is set to "n-tuple" so '
                           "that the ranking order is kept.")
            output_format = "n-tuple"
    if output_format == "n-tuple-scores":
        warnings.warn('output_format="n-tuple-scores" is deprecated: use output_format="n-tuple"'
                      " with output_scores=True", FutureWarning, stacklevel=2)
        output_format, output_scores = "n-tuple", True
    if output_format not in st_format.OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {list(st_format.OUTPUT_FORMATS)}, got "
                         f"{output_format!r}")
    if margin is not None:
        warnings.warn(f"margin is deprecated: use absolute_margin and/or relative_margin; using "
                      f"absolute_margin={margin}", FutureWarning, stacklevel=2)
        absolute_margin = margin

    # ---------------------------------------------------------------- texts
    all_anchors = _check_texts(list(dataset[anchor_col]), f"dataset column {anchor_col!r}")
    all_positives = _check_texts(list(dataset[positive_col]), f"dataset column {positive_col!r}")
    if corpus is not None:
        if isinstance(corpus, str) or not hasattr(corpus, "__iter__"):
            raise TypeError(f"corpus must be a list of str, got {type(corpus).__name__}")
        corpus = _check_texts(corpus if isinstance(corpus, list) else list(corpus), "corpus")

    rows_per_anchor: dict = {}
    for t in all_anchors:
        rows_per_anchor[t] = rows_per_anchor.get(t, 0) + 1
    max_positives = max(rows_per_anchor.values())

    filtering = (absolute_margin is not None or relative_margin is not None
                 or max_score is not None or (cross_encoder is not None and min_score is not None))
    if range_max is None:
        spread = 10 * num_negatives if filtering else num_negatives
        if sampling_strategy == "simans":
            spread = max(spread, DEFAULT_SIMANS_WINDOW)
        range_max = range_min + spread + max_positives
        if verbose:
            print(f"Setting range_max to {range_max} based on the provided parameters.")
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} "
                         f"and range_max={range_max}.")
    if num_negatives > range_max - range_min:
        raise ValueError(f"Cannot mine {num_negatives} negatives per query: only "
                         f"{range_max - range_min} candidates remain after skipping the first "
                         f"range_min={range_min} of range_max={range_max}. Decrease "
                         f"num_negatives or range_min, or increase range_max.")

    # documents: corpus then positives, de-duplicated by text, first occurrence first; only
    # the positives need a text -> id lookup (no dict over the whole corpus is kept)
    unique = dict.fromkeys(itertools.chain(corpus if corpus is not None else (), all_positives))
    docs = corpus if corpus is not None and len(unique) == len(corpus) else list(unique)
    del unique
    queries = list(dict.fromkeys(all_anchors))
    # document ids of the positives and of the queries' own texts (sentence-transformers 6.3
    # leaves a query's own text out of its candidates); no dict over the whole corpus
    doc_index = dict.fromkeys(all_positives)
    doc_index.update((t, None) for t in queries if t not in doc_index)
    found = 0
    for i, t in enumerate(docs):
        if t in doc_index and doc_index[t] is None:
            doc_index[t] = i
            found += 1
            if found == len(doc_index):
                break
    self_doc = np.fromiter((-1 if doc_index[t] is None else doc_index[t] for t in queries),
                           np.int64, len(queries))
    query_index = {t: i for i, t in enumerate(queries)}
    n_q, n_d = len(queries), len(docs)
    pos_lists = [[] for _ in range(n_q)]
    for qt, pt in zip(all_anchors, all_positives):
        lst = pos_lists[query_index[qt]]
        d = doc_index[pt]
        if d not in lst:
            lst.append(d)
    del doc_index, query_index
    n_pos = np.fromiter((len(p) for p in pos_lists), np.int64, n_q)
    pos_indptr = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)
    pos_ids = np.fromiter((d for p in pos_lists for d in p), np.int64, int(pos_indptr[-1]))
    q_of_pair = np.repeat(np.arange(n_q, dtype=np.int64), n_pos)
    # the documents left out of each query's candidates: its positives (unless
    # include_positives) and its own text when the corpus holds it (unless include_positives
    # and the text is also its positive), as sentence-transformers 6.3
    if include_positives:
        same = np.array([d in p for d, p in zip(self_doc.tolist(), pos_lists)], bool)
        self_doc[same] = -1
        ex_lists = [[d] if d >= 0 else [] for d in self_doc.tolist()]
    else:
        ex_lists = [p + [d] if d >= 0 and d not in p else list(p)
                    for p, d in zip(pos_lists, self_doc.tolist())]
    n_ex = np.fromiter((len(e) for e in ex_lists), np.int64, n_q)
    ex_indptr = np.concatenate([[0], np.cumsum(n_ex)]).astype(np.int64)
    ex_ids = np.fromiter((d for e in ex_lists for d in e), np.int64, int(ex_indptr[-1]))
    ex_q = np.repeat(np.arange(n_q, dtype=np.int64), n_ex)
    if verbose:
        if n_q != len(all_anchors):
            print(f"Found {n_q} unique queries out of {len(all_anchors)} total queries.")
        if max_positives > 1:
            print(f"Found an average of {np.mean(list(rows_per_anchor.values())):.3f} positives "
                  f"per query.")

    # ---------------------------------------------------------------- embeddings, pool
    model = _resolve_model(model)
    _similarity_name(model)
    # sentence-transformers 6.3 retrieves range_max + max_positives + 1 documents (room for
    # the positives and the query's own text) and masks the left-out ones
    k_total = range_max + max_positives + 1
    k_search = min(k_total, n_d)
    pos_mat = _positive_matrix(pos_indptr, pos_ids, n_q)
    ex_mat = _positive_matrix(ex_indptr, ex_ids, n_q)
    query_emb = _embed(model, queries, role="query", prompt_name=query_prompt_name,
                       prompt=query_prompt, batch_size=batch_size, devices=devices,
                       cache_folder=cache_folder, progress=verbose)
    if query_emb.shape[0] != n_q:
        raise ValueError(f"the model returned embeddings of shape {query_emb.shape} for {n_q} "
                         f"queries")
    from .candidates import rescore

    if use_faiss:
        corpus_emb = _embed(model, docs, role="document", prompt_name=corpus_prompt_name,
                            prompt=corpus_prompt, batch_size=batch_size, devices=devices,
                            cache_folder=cache_folder, progress=verbose)
        if corpus_emb.shape != (n_d, query_emb.shape[1]):
            raise ValueError(f"the model returned embeddings of shapes {query_emb.shape} "
                             f"(queries) and {corpus_emb.shape} (documents) for {n_q} queries "
                             f"and {n_d} documents")
        from .candidates import topk

        exclude = (ex_indptr, ex_ids) if ex_ids.size else None
        cands = topk(query_emb, corpus_emb, k_search, exclude=exclude, backend="faiss",
                     query_block=faiss_batch_size, progress=verbose)
        pool_ids = np.array(cands.ids, dtype=np.int64)
        pool_scores = np.array(cands.scores, dtype=np.float32)
        pos_mat_scores = rescore(query_emb, corpus_emb, pos_mat)      # -inf where padded
        ex_mat_scores = rescore(query_emb, corpus_emb, ex_mat)
        del corpus_emb
    else:
        # the corpus streamed through the exact search in the order it is encoded: only one
        # block of its embeddings (and the positives') is ever held
        chunks = _corpus_chunks(model, docs, corpus_prompt_name, corpus_prompt, batch_size,
                                devices, cache_folder, verbose)
        keep = np.unique(np.concatenate([pos_ids, ex_ids]))
        excl_q, excl_d = (ex_q, ex_ids) if ex_ids.size else (None, None)
        pool_ids, pool_scores, kept = _stream_pool(chunks, n_d, query_emb.shape[1], query_emb,
                                                   k_search, excl_q, excl_d, keep,
                                                   prefilter=prefilter)

        def slots(mat):
            return np.where(mat >= 0, np.searchsorted(keep, np.maximum(mat, 0)), -1)

        pos_mat_scores = rescore(query_emb, kept, slots(pos_mat))     # -inf where padded
        ex_mat_scores = rescore(query_emb, kept, slots(ex_mat))
        del kept
    pos_scores = pos_mat_scores[q_of_pair, np.arange(q_of_pair.shape[0]) - pos_indptr[q_of_pair]]
    if ex_ids.size:
        keep_n = k_total - _left_out_in_pool(pool_scores, ex_mat_scores, k_total)
        cut = np.arange(k_search)[None, :] >= keep_n[:, None]
        pool_ids[cut] = -1
        pool_scores[cut] = -np.inf
    del query_emb

    if cross_encoder is not None:  # sentence-transformers 6.3: always (6.2: only with a filter)
        pool_scores, pos_scores = _cross_encoder_scores(
            cross_encoder, queries, docs, pool_ids, q_of_pair, pos_ids, batch_size=batch_size,
            devices=devices, progress=verbose)
        pool_ids, pool_scores = _sort_rows_desc(pool_ids, pool_scores)
    pos_scores = np.asarray(pos_scores, np.float32)

    # ---------------------------------------------------------------- filters, window
    ref = np.minimum.reduceat(pos_scores, pos_indptr[:-1]) if n_q else np.empty(0, np.float32)
    counters = _apply_filters(pool_ids, pool_scores, ref, absolute_margin=absolute_margin,
                              relative_margin=relative_margin, max_score=max_score,
                              min_score=min_score, n_cells=n_q * k_total)
    win_ids, win_scores = _window(pool_ids, pool_scores, range_min, range_max)

    # ---------------------------------------------------------------- sampling
    eff = None
    if sampling_strategy == "top":
        neg_ids = win_ids[:, :num_negatives].copy()
        neg_scores = win_scores[:, :num_negatives].copy()
    else:
        from .core import ambiguity_log_weights, sample

        keys = np.arange(n_q, dtype=np.int64)
        if sampling_strategy == "random":
            logw = np.where(win_ids >= 0, np.float32(0.0), np.float32(-np.inf))
        else:
            logw = ambiguity_log_weights(win_scores.astype(np.float64) * score_scale,
                                         ref.astype(np.float64) * score_scale, a=a, b=b,
                                         kernel=kernel, candidate_ids=win_ids)
            from .diagnostics import effective_candidates

            eff = effective_candidates(logw)
        cols = sample(logw, num_negatives, seed=seed, epoch=epoch, row_keys=keys)
        neg_ids, neg_scores = _sorted_draw(cols, win_ids, win_scores)
    neg_scores = np.where(neg_ids >= 0, neg_scores, np.float32(-np.inf)).astype(np.float32)

    if verbose:
        print("Negative candidates mined, preparing dataset...")
    built = st_format.build_columns(
        output_format, anchor_column=anchor_col, positive_column=positive_col, queries=queries,
        corpus=docs, positive_indptr=pos_indptr, positive_ids=pos_ids, positive_scores=pos_scores,
        negative_ids=neg_ids, negative_scores=neg_scores, output_scores=output_scores,
        n_input_rows=len(all_anchors))
    out = st_format.to_dataset(built)

    # ---------------------------------------------------------------- report
    flat_hint = (f" Raise score_scale (now {score_scale:g}) or a (now {a:g}); see "
                 f"docs/hard_negatives.md.")
    if eff is not None:
        from .diagnostics import summarize_effective, warn_if_flat

        warn_if_flat(eff, num_negatives, hint=flat_hint, stacklevel=2)
    if verbose:
        for line in _statistics_lines(pos_scores, built.negative_scores,
                                      built.difference_scores):
            print(line)
        if eff is not None:
            s = summarize_effective(eff, num_negatives)
            print(f"SimANS ({kernel}, a={a:g}, b={b:g}, score_scale={score_scale:g}): "
                  f"{s['mean_effective']:.1f} effective candidates (exp entropy; median "
                  f"{s['median_effective']:.1f}) of {s['mean_valid']:.1f} valid per query; "
                  f"{s['flat_rows']:,} of {s['rows_compared']:,} queries with more than "
                  f"{num_negatives} candidates are nearly flat (> 90 %).")
        for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
            if name in counters:
                skipped, ratio = counters[name]
                print(f"Skipped {skipped:,} potential negatives ({ratio:.2%}) due to the "
                      f"{name} of {shown[name]}.")
        missing = built.max_samples - len(out)
        if missing > 0:
            fixes = ["range_max"]
            if range_min > 0:
                fixes.append("range_min")
            for name, value in (("absolute_margin", absolute_margin),
                                ("relative_margin", relative_margin), ("max_score", max_score)):
                if value is not None:
                    fixes.append(name)
            joined = fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " and " + fixes[-1]
            print(f"Could not find enough negatives for {missing} samples "
                  f"({missing / built.max_samples:.2%}). Consider adjusting the {joined} "
                  f"parameter{'s' if len(fixes) > 1 else ''} if you'd like to find more valid "
                  f"negatives.")
    return out

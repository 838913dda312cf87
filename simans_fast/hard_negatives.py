"""``sf.mine_hard_negatives``: a drop-in for sentence-transformers' ``util.mine_hard_negatives``.

Same parameters, defaults, meanings, output columns and row order as sentence-transformers 6.x
(re-implemented from its documented behaviour and read source, not copied), with exact top-k
search from :func:`simans_fast.topk`, exact positive scores from :func:`simans_fast.rescore`, and
two more sampling strategies keyed by ``seed`` and ``epoch``: a seeded ``"random"`` and
``"simans"``. See docs/hard_negatives.md for every rule and every difference.

Pipeline (one unique query per row; repeated anchors are one query with several positives):

1. encode the corpus (the dataset's positives plus ``corpus``, de-duplicated by text) and the
   unique anchors with ``normalize_embeddings=True``, so scores are cosine similarities;
2. the *pool*: the ``range_max + max_positives`` best documents of the whole corpus, as
   sentence-transformers retrieves them, minus the query's positives (fetched exactly as the
   best non-positive documents, truncated where the query's positives would have taken places
   in that list); with ``include_positives`` the positives stay in;
3. ``cross_encoder`` re-scores the pool and the positives (only when a margin, ``max_score`` or
   ``min_score`` is set), and the pool is re-sorted by those scores;
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

import logging
import math
import numbers
import os
import warnings

import numpy as np

__all__ = ["mine_hard_negatives", "SAMPLING_STRATEGIES", "DEFAULT_SCORE_SCALE"]

logger = logging.getLogger(__name__)

SAMPLING_STRATEGIES = ("top", "random", "simans")
#: default multiplier of the (cosine) scores before the SimANS kernel: the scale of
#: sentence-transformers' MultipleNegativesRankingLoss (temperature 0.05), i.e. the logits the
#: model was trained on
DEFAULT_SCORE_SCALE = 20.0
#: default SimANS candidate window (ranks after ``range_min``) when ``range_max`` is not given
DEFAULT_SIMANS_WINDOW = 100
_ROW_CHUNK = 4096


# ------------------------------------------------------------------------------ validation
def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _check_int(x, name, *, minimum=None, allow_none=False):
    if x is None and allow_none:
        return None
    if not _is_int(x):
        raise TypeError(f"{name} must be an integer, got {x!r}")
    x = int(x)
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={x}")
    return x


def _check_float(x, name, *, allow_none=True, positive=False, nonneg=False):
    if x is None and allow_none:
        return None
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a number, got {x!r}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {x!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {name}={x!r}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={x!r}")
    return v


def _check_bool(x, name):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {x!r}")
    return bool(x)


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


def _positives_in_pool(cand_scores, pos_mat_scores, k_total):
    """Per query: how many of its positives rank within the best ``k_total`` of the corpus.

    The pool of non-positive candidates holds ``k_total - that`` documents, exactly the
    non-positives of the corpus's top ``k_total`` (ties at the boundary: positives first)."""
    n_q, m = pos_mat_scores.shape
    out = np.zeros(n_q, np.int64)
    for lo in range(0, n_q, _ROW_CHUNK):
        cs = cand_scores[lo:lo + _ROW_CHUNK]
        ps = pos_mat_scores[lo:lo + _ROW_CHUNK]
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


# ------------------------------------------------------------------------------ filters
def _apply_filters(ids, scores, ref, *, absolute_margin, relative_margin, max_score, min_score,
                   n_cells):
    """sentence-transformers' filters, in its order and float32 arithmetic, in place.

    Removed candidates get id -1 / score -inf. Returns ``{name: (skipped, ratio)}`` for the
    filters that removed something, with sentence-transformers' denominators (all cells of its
    score matrix, less what the margins removed)."""
    valid = ids >= 0
    counters = {}
    remaining = n_cells
    f32 = np.float32
    ref = ref.astype(np.float32)[:, None]

    def drop(name, removed, decrement):
        nonlocal remaining
        removed &= valid
        k = int(removed.sum())
        if k:
            counters[name] = (k, k / remaining if remaining else float("nan"))
            if decrement:
                remaining -= k
        valid[removed] = False

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
    ids[~valid] = -1
    scores[~valid] = -np.inf
    return counters


def _window(ids, scores, range_min, range_max):
    """Ranks ``range_min .. range_max - 1`` among each row's surviving candidates."""
    n_q, width = ids.shape
    w = range_max - range_min
    out_ids = np.full((n_q, w), -1, np.int64)
    out_scores = np.full((n_q, w), -np.inf, np.float32)
    if width == 0 or n_q == 0:
        return out_ids, out_scores
    order = np.argsort(ids < 0, axis=1, kind="stable")     # survivors first, in rank order
    take = order[:, range_min:range_max]
    got = take.shape[1]
    if got:
        out_ids[:, :got] = np.take_along_axis(ids, take, 1)
        out_scores[:, :got] = np.take_along_axis(scores, take, 1)
    out_scores[out_ids < 0] = -np.inf
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
    seeded; ``"simans"`` is added; no faiss GPU and no 2048 cap; the ``min_score`` line of the
    statistics counts only candidates ``min_score`` removed (sentence-transformers also counts
    positions that were already empty); only cosine/dot models.
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
        corpus = _check_texts(list(corpus), "corpus")

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

    docs = list(dict.fromkeys((corpus if corpus is not None else []) + all_positives))
    doc_index = {t: i for i, t in enumerate(docs)}
    queries = list(dict.fromkeys(all_anchors))
    query_index = {t: i for i, t in enumerate(queries)}
    n_q, n_d = len(queries), len(docs)
    pos_lists = [[] for _ in range(n_q)]
    for qt, pt in zip(all_anchors, all_positives):
        lst = pos_lists[query_index[qt]]
        d = doc_index[pt]
        if d not in lst:
            lst.append(d)
    n_pos = np.fromiter((len(p) for p in pos_lists), np.int64, n_q)
    pos_indptr = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)
    pos_ids = np.fromiter((d for p in pos_lists for d in p), np.int64, int(pos_indptr[-1]))
    q_of_pair = np.repeat(np.arange(n_q, dtype=np.int64), n_pos)
    if verbose:
        if n_q != len(all_anchors):
            print(f"Found {n_q} unique queries out of {len(all_anchors)} total queries.")
        if max_positives > 1:
            print(f"Found an average of {np.mean(list(rows_per_anchor.values())):.3f} positives "
                  f"per query.")

    # ---------------------------------------------------------------- embeddings
    model = _resolve_model(model)
    _similarity_name(model)
    corpus_emb = _embed(model, docs, role="document", prompt_name=corpus_prompt_name,
                        prompt=corpus_prompt, batch_size=batch_size, devices=devices,
                        cache_folder=cache_folder, progress=verbose)
    query_emb = _embed(model, queries, role="query", prompt_name=query_prompt_name,
                       prompt=query_prompt, batch_size=batch_size, devices=devices,
                       cache_folder=cache_folder, progress=verbose)
    if corpus_emb.shape[0] != n_d or query_emb.shape[0] != n_q or (
            corpus_emb.shape[1] != query_emb.shape[1]):
        raise ValueError(f"the model returned embeddings of shapes {query_emb.shape} (queries) "
                         f"and {corpus_emb.shape} (documents) for {n_q} queries and {n_d} "
                         f"documents")

    # ---------------------------------------------------------------- pool
    from .candidates import rescore, topk

    k_total = range_max + max_positives
    k_search = min(k_total, n_d)
    exclude = None if include_positives else [np.asarray(p, np.int64) for p in pos_lists]
    backend = "faiss" if use_faiss else "numba"
    cands = topk(query_emb, corpus_emb, k_search, exclude=exclude, backend=backend,
                 query_block=faiss_batch_size if use_faiss else None, progress=verbose)
    pool_ids = np.array(cands.ids, dtype=np.int64)
    pool_scores = np.array(cands.scores, dtype=np.float32)
    pos_mat = _positive_matrix(pos_indptr, pos_ids, n_q)
    pos_mat_scores = rescore(query_emb, corpus_emb, pos_mat)          # -inf where padded
    pos_scores = pos_mat_scores[q_of_pair, np.arange(q_of_pair.shape[0]) - pos_indptr[q_of_pair]]
    if not include_positives:
        keep = k_total - _positives_in_pool(pool_scores, pos_mat_scores, k_total)
        cut = np.arange(k_search)[None, :] >= keep[:, None]
        pool_ids[cut] = -1
        pool_scores[cut] = -np.inf
    del query_emb, corpus_emb

    if cross_encoder is not None and (absolute_margin is not None or relative_margin is not None
                                      or max_score is not None or min_score is not None):
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

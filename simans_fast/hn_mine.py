"""FlagEmbedding's ``hn_mine.py`` as a library call: JSONL in, the same JSONL with new ``neg`` out.

:func:`hn_mine` keeps the meaning of FlagEmbedding's ``scripts/hn_mine.py`` (1.4) and fixes
what its users report:

* **Corpus**: every ``pos`` and ``neg`` text of the input (de-duplicated by text), or the texts of
  ``candidate_pool`` (JSONL ``{"text": ...}``) when one is given. Here the corpus keeps the
  order of first appearance (FlagEmbedding's ``list(set(...))`` changes order between runs).
* **Ranks are raw retrieval ranks**: each query retrieves its ``hi`` best corpus texts
  (``range_for_sampling = "lo-hi"``, default ``"10-210"``) by inner product of the embeddings
  (cosine with ``normalize_embeddings``); the window is ranks ``lo .. hi-1`` of that list *with
  the positives and the query's own text counted*; those are then dropped from the window.
  So ``"10-210"`` gives at most 200 candidates, fewer when positives rank inside the window.
* **Strategy** inside the window: ``"random"`` (FlagEmbedding's ``random.sample``, here seeded),
  ``"top"`` (the best-ranked ones), or ``"simans"`` (SimANS weights around the record's lowest
  positive score, via :func:`simans_fast.select_negatives`). A window holding ``negative_number`` candidates or
  fewer gives all of them, in rank order (as FlagEmbedding does).
* **Padding**: a record left with fewer than ``negative_number`` negatives is filled with corpus
  texts drawn uniformly at random, seeded, and (unlike FlagEmbedding, issues #464 / #470) never
  one of its positives, never its own query text and never a text it already has. When the
  corpus has too few such texts the record keeps fewer negatives (counted in the result).
* **Output**: the input records in order, every key passed through unchanged except ``neg``
  (replaced) and ``neg_scores``: replaced by the embedder's scores with ``output_scores=True``
  (then ``pos_scores`` too, on the same scale), otherwise removed, never left stale.

SimANS on cosine scores: ``a`` and ``b`` refer to scores multiplied by ``score_scale`` (the
weights are ``exp(-a (c s_i - c s_pos - b)^2)`` with ``c = score_scale``, Laplace:
``exp(-a |c s_i - c s_pos - b|)``). The default ``c = 20`` is the scale of
sentence-transformers' MultipleNegativesRankingLoss (temperature 0.05), so cosines become the
logits the model was trained on and the paper's ``a = 0.5`` keeps its meaning; ``c = 1`` applies
``a`` to raw cosines, where it makes the weights nearly uniform. The result reports the mean
effective number of candidates per query and a :class:`simans_fast.diagnostics.FlatWeightsWarning`
is issued when the weights are nearly flat.

:func:`simans_fast.cli.hn_mine.add_hn_mine_arguments` defines FlagEmbedding's command-line
flags for the ``simans-fast hn-mine`` command; ``hn_mine_kwargs`` there turns the parsed flags into
:func:`hn_mine` arguments (flags that cannot be honoured are errors, never ignored).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STRATEGIES",
    "DEFAULT_SCORE_SCALE",
    "HnMineResult",
    "parse_range",
    "build_corpus",
    "forbidden_rows",
    "window_candidates",
    "choose_negatives",
    "pad_negatives",
    "hn_mine",
]

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "top", "simans")
from ._config import DEFAULT_SCORE_SCALE  # noqa: E402  the SimANS score multiplier
_MASK64 = (1 << 64) - 1
from ._config import HN_PAD_DOMAIN as _PAD_STREAM  # noqa: E402  "hn_pad": padding draws' stream


@dataclass(frozen=True)
class HnMineResult:
    """What :func:`hn_mine` did.

    Attributes
    ----------
    output_file : str
    n_records : int
    n_corpus : int
        Texts searched (the de-duplicated corpus or candidate pool).
    mean_window : float
        Mean candidates per record left in the window after dropping positives and the query.
    padded_records : int
        Records that needed random padding.
    padded_negatives : int
        Negatives added by padding, in all.
    short_records : int
        Records left with fewer than ``negative_number`` negatives (corpus too small).
    effective : dict or None
        ``strategy="simans"``: :func:`simans_fast.diagnostics.summarize_effective` of the
        window (mean effective candidates per query, ...).
    """

    output_file: str
    n_records: int
    n_corpus: int
    mean_window: float
    padded_records: int
    padded_negatives: int
    short_records: int
    effective: dict | None = None


# ----------------------------------------------------------------------------- validation
def _check_int(x, name, *, low=None):
    from ._validate import check_int

    return check_int(x, name, min=low)


def _check_real(x, name, *, positive=False):
    from ._validate import check_real

    return check_real(x, name, min=0 if positive else None, min_exclusive=positive)


def parse_range(range_for_sampling, name: str = "range_for_sampling") -> tuple:
    """``"10-210"`` (or a pair) -> ``(10, 210)``: ranks ``lo <= rank < hi``, 0-based; both
    bounds required, as in FlagEmbedding. The rule is :func:`simans_fast._validate.check_window`."""
    from ._validate import ParameterError, check_window

    value = range_for_sampling
    if isinstance(value, str):
        value = "".join(value.split())  # FlagEmbedding int()s each side: "10 - 210" reads
    window = None if value is None else check_window(value, name, text=True)
    if window is None or window[1] is None:
        raise ParameterError(name, f"{name} must give both bounds, lo-hi (e.g. 10-210), got "
                                   f"{range_for_sampling!r}")
    return window


def _check_format(fmt, name="query_instruction_format"):
    if not isinstance(fmt, str):
        raise ValueError(f"{name} must be a string such as '{{}}{{}}', got {fmt!r}")
    try:
        probe = fmt.format("\x00I\x00", "\x00Q\x00")
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(f"{name} {fmt!r}: must format (instruction, query) with two '{{}}' "
                         f"placeholders ({type(e).__name__}: {e})") from None
    if "\x00Q\x00" not in probe:
        raise ValueError(f"{name} {fmt!r}: does not place the query (the second '{{}}')")
    return fmt


# ----------------------------------------------------------------------------- array steps
def build_corpus(records, candidate_pool=None):
    """The searched texts: ``pos`` + ``neg`` of every record, or the candidate pool's texts,
    de-duplicated by text in order of first appearance. Returns ``(texts, index)``."""
    texts, index = [], {}

    def add(t):
        if t not in index:
            index[t] = len(texts)
            texts.append(t)

    if candidate_pool is None:
        for rec in records:
            for t in rec["pos"]:
                add(t)
            for t in rec.get("neg", ()):
                add(t)
    else:
        for t in candidate_pool:
            add(t)
    return texts, index


def forbidden_rows(records, index):
    """CSR ``(indptr, ids)``: the corpus rows a record may not take as a negative (its positives
    and its own query text, where they are in the corpus), sorted, distinct per record."""
    indptr = np.zeros(len(records) + 1, np.int64)
    out = []
    for r, rec in enumerate(records):
        rows = {index[t] for t in rec["pos"] if t in index}
        q = index.get(rec["query"])
        if q is not None:
            rows.add(q)
        out.extend(sorted(rows))
        indptr[r + 1] = len(out)
    return indptr, np.asarray(out, dtype=np.int64)


def _row_of(indptr):
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _forbidden_matrix(forbidden, n_q):
    """CSR ``(indptr, ids)`` -> ``(n_q, m)`` int64, ``-1`` padded (``positive_ids``)."""
    indptr, fid = (np.asarray(x, dtype=np.int64) for x in forbidden)
    counts = np.diff(indptr)
    m = int(counts.max()) if counts.size else 0
    mat = np.full((n_q, m), -1, np.int64)
    if fid.size:
        cols = np.arange(fid.size, dtype=np.int64) - np.repeat(indptr[:-1], counts)
        mat[_row_of(indptr), cols] = fid
    return mat


def window_candidates(topk_ids, topk_scores, lo: int, hi: int, forbidden):
    """Columns ``lo:hi`` of the raw top-``hi`` lists, forbidden rows set to ``-1``.

    Returns ``(ids, scores)`` of shape ``(n_q, hi - lo)`` (fewer columns when the lists are
    shorter); the scores are kept (a ``-1`` id marks the entry invalid). This is
    :func:`simans_fast.filter_candidates` with ``window=(lo, hi)``,
    ``rank_rule="flagembedding"`` (raw ranks: forbidden documents take their rank, then are
    dropped) and the forbidden rows as ``positive_ids``, on lists sorted best first (as
    :func:`simans_fast.topk` returns them: a rank is then the column).
    """
    from .strategies import filter_candidates

    top = np.asarray(topk_ids)
    scores = np.asarray(topk_scores)[:, lo:hi]
    ids = np.array(top[:, lo:hi], dtype=np.int64, copy=True)
    if ids.size:
        kept = filter_candidates(top[:, :hi], np.asarray(topk_scores)[:, :hi],
                                 window=(lo, hi), rank_rule="flagembedding",
                                 positive_ids=_forbidden_matrix(forbidden, top.shape[0]))
        ids[~kept.mask[:, lo:hi]] = -1
    return ids, scores


def _compact(ids, n):
    """The first ``n`` valid (>= 0) entries of each row, in order, ``-1`` padded."""
    n_q, k = ids.shape
    out = np.full((n_q, n), -1, np.int64)
    if n_q == 0 or k == 0 or n == 0:
        return out
    valid = ids >= 0
    order = np.argsort(~valid, axis=1, kind="stable")[:, :n]
    got = np.take_along_axis(ids, order, axis=1)
    got = np.where(np.take_along_axis(valid, order, axis=1), got, -1)
    out[:, :got.shape[1]] = got
    return out


def choose_negatives(ids, scores, n: int, *, strategy: str = "random", positive_scores=None,
                     seed: int = 0, a: float = 0.5, b: float = 0.0, kernel: str = "gaussian",
                     score_scale: float = DEFAULT_SCORE_SCALE, row_keys=None) -> np.ndarray:
    """``n`` negatives per row from window candidates (``-1`` = not a candidate).

    Rows with ``n`` candidates or fewer take them all, in rank (column) order. Otherwise:
    ``"top"`` the first ``n``; ``"random"`` ``n`` uniformly without replacement (draw order);
    ``"simans"`` SimANS draws on ``score_scale * scores`` around ``score_scale *
    positive_scores`` (``(n_q,)``). Seeded by ``(seed, row key)``.
    """
    from .strategies import select_negatives

    ids = np.asarray(ids, dtype=np.int64)
    n_q = ids.shape[0]
    keys = np.arange(n_q, dtype=np.int64) if row_keys is None else np.asarray(row_keys, np.int64)
    all_in = _compact(ids, n)
    if strategy == "top" or n_q == 0 or ids.shape[1] == 0:
        return all_in
    n_valid = (ids >= 0).sum(axis=1)
    many = n_valid > n
    if not many.any():
        return all_in
    rows = np.flatnonzero(many)
    sub_ids = ids[rows]
    if strategy == "random":
        pos = np.full(rows.size, np.nan)
        got = select_negatives(sub_ids, np.asarray(scores)[rows], pos, n, strategy="uniform",
                               seed=seed, row_keys=keys[rows])
    elif strategy == "simans":
        c = _check_real(score_scale, "score_scale", positive=True)
        s = np.asarray(scores, dtype=np.float64)[rows] * c
        p = np.asarray(positive_scores, dtype=np.float64)[rows] * c
        got = select_negatives(sub_ids, s, p, n, strategy="simans", a=a, b=b, kernel=kernel,
                               seed=seed, row_keys=keys[rows])
    else:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    out = all_in
    out[rows] = got
    return out


def pad_negatives(neg, n_corpus: int, forbidden, *, seed: int = 0, row_keys=None):
    """Fill the ``-1`` slots of ``neg`` with corpus rows drawn uniformly without replacement,
    never a forbidden row of the record (``forbidden`` CSR) nor one it already holds.

    Draws come from NumPy's Philox generator keyed by ``(seed, stream, row key)``: the result
    depends on nothing else. Returns ``(neg_filled, padded_per_row)``; a row keeps ``-1`` slots
    only when the corpus has no allowed row left.
    """
    neg = np.array(neg, dtype=np.int64, copy=True)
    n_q, n = neg.shape
    indptr, fid = forbidden
    keys = np.arange(n_q, dtype=np.int64) if row_keys is None else np.asarray(row_keys, np.int64)
    padded = np.zeros(n_q, np.int64)
    seed_u = int(seed) & _MASK64
    for r in np.flatnonzero((neg < 0).any(axis=1)) if n_q else ():
        have = [int(x) for x in neg[r] if x >= 0]
        taken = set(have)
        taken.update(int(x) for x in fid[indptr[r]:indptr[r + 1]])
        need = n - len(have)
        allowed = n_corpus - len(taken)
        if allowed <= 0:
            continue
        need_now = min(need, allowed)
        rng = np.random.Generator(np.random.Philox(
            np.random.SeedSequence([seed_u, _PAD_STREAM, int(keys[r]) & _MASK64])))
        new = []
        tries = 0
        limit = 8 * need_now + 64
        # successive uniform draws over the allowed rows (rejection of taken ones) ...
        while len(new) < need_now and tries < limit:
            x = int(rng.integers(n_corpus))
            tries += 1
            if x not in taken:
                taken.add(x)
                new.append(x)
        if len(new) < need_now:  # ... finished exactly when most rows are taken
            rest = np.setdiff1d(np.arange(n_corpus, dtype=np.int64),
                                np.fromiter(taken, np.int64, len(taken)), assume_unique=True)
            new.extend(int(x) for x in rng.choice(rest, need_now - len(new), replace=False))
        row = have + new
        neg[r, :len(row)] = row
        neg[r, len(row):] = -1
        padded[r] = len(new)
    return neg, padded


# ----------------------------------------------------------------------------- model helpers
_FE_POOLING = {"cls": "cls", "mean": "mean", "last_token": "lasttoken", "lasttoken": "lasttoken"}


def _model_pooling(model):
    for module in model:
        mode = getattr(module, "pooling_mode", None)
        if isinstance(mode, str):
            return mode
        get = getattr(module, "get_pooling_mode_str", None)
        if callable(get):
            return get()
    return None


def _check_pooling(model, pooling_method):
    if pooling_method is None:
        return
    own = _model_pooling(model)
    want = _FE_POOLING.get(pooling_method, pooling_method)
    if own is None or want != own:
        raise ValueError(f"pooling_method {pooling_method!r}: the model pools with {own!r}, and "
                         f"simans-fast encodes with the model's own pooling; drop "
                         f"pooling_method (--pooling_method) or pass the model's")


def _max_len_limit(model):
    lims = []
    tok = getattr(model, "tokenizer", None)
    m = getattr(tok, "model_max_length", None)
    if isinstance(m, int) and 0 < m < 10**6:
        lims.append(m)
    try:
        cfg = model[0].auto_model.config
        p = getattr(cfg, "max_position_embeddings", None)
        if isinstance(p, int) and p > 0:
            lims.append(p)
    except Exception:  # noqa: BLE001 - not a transformers-backed first module
        pass
    return min(lims) if lims else None


class _MaxLength:
    """Temporarily set ``model.max_seq_length`` (restored afterwards)."""

    def __init__(self, model, length, name):
        self.model, self.length, self.name = model, length, name

    def __enter__(self):
        self.old = getattr(self.model, "max_seq_length", None)
        if self.length is not None:
            lim = _max_len_limit(self.model)
            if lim is not None and self.length > lim:
                raise ValueError(f"{self.name} {self.length}: the model takes at most {lim} "
                                 f"tokens")
            self.model.max_seq_length = self.length
        return self

    def __exit__(self, *exc):
        if self.length is not None:
            self.model.max_seq_length = self.old
        return False


def _device_kind(device):
    if device is None:
        return None
    d = device[0] if isinstance(device, (list, tuple)) else device
    return str(d).split(":")[0]


# ----------------------------------------------------------------------------- main call
def hn_mine(input_file, output_file, model, *, candidate_pool=None,
            range_for_sampling="10-210", negative_number: int = 15, strategy: str = "random",
            seed: int = 0, a: float = 0.5, b: float = 0.0, kernel: str = "gaussian",
            score_scale: float = DEFAULT_SCORE_SCALE, query_instruction_for_retrieval=None,
            query_instruction_format: str = "{}{}", batch_size: int = 256,
            search_batch_size=None, use_gpu_for_searching: bool = False, search_device=None,
            device=None,
            normalize_embeddings: bool = True, use_fp16: bool = False, pooling_method=None,
            query_max_length=None, passage_max_length=None, trust_remote_code: bool = False,
            cache_dir=None, cache_folder=None, embedding_dtype: str = "float32",
            output_scores: bool = False, progress: bool = True,
            prefilter=None) -> HnMineResult:
    """Mine hard negatives for a FlagEmbedding JSONL file (see the module docstring).

    Parameters
    ----------
    input_file : str
        FlagEmbedding JSONL (``query``, ``pos``, optional ``neg``, other keys passed through);
        read strictly (errors name the file and line).
    output_file : str
        Written atomically once everything succeeded (it may be ``input_file``).
    model : str, os.PathLike or SentenceTransformer
        A sentence-transformers model or its name / directory (loaded offline-friendly by
        :func:`simans_fast.encode.load_model`).
    candidate_pool : str or sequence of str, optional
        A JSONL file of ``{"text": ...}`` lines (or the texts) to search instead of the input's
        ``pos`` + ``neg`` texts.
    range_for_sampling : str or (int, int), default "10-210"
        Raw retrieval ranks ``lo <= rank < hi`` (0-based) to sample from.
    negative_number : int, default 15
    strategy : {"random", "top", "simans"}, default "random"
    seed : int, default 0
        Every random choice (window sampling, padding) is a function of ``(seed, record index)``.
    a, b, kernel, score_scale
        SimANS parameters (``strategy="simans"``): weights ``exp(-a (c s - c s_pos - b)^2)``
        (gaussian) or ``exp(-a |c s - c s_pos - b|)`` (laplace), ``c = score_scale``,
        ``s_pos`` the record's lowest positive score (as :func:`simans_fast.mine_hard_negatives`).
    query_instruction_for_retrieval, query_instruction_format
        As FlagEmbedding: queries are encoded as ``format.format(instruction, query)`` (then no
        model prompt is added); without an instruction the model's own query prompt applies.
    batch_size : int, default 256
        Texts per forward pass.
    search_batch_size : int, optional
        Queries per top-k block (results do not depend on it).
    use_gpu_for_searching : bool, default False
        Exact top-k with PyTorch (:func:`simans_fast.torch.topk.topk_torch`) on
        ``search_device`` instead of the CPU kernels; the same candidates except at exact ties.
    search_device : str, optional
        Device of that search: default ``device`` when it names a CUDA device, else ``"cuda"``
        (checked before anything is encoded).
    device : str or list of str, optional
        Encoding device; a list encodes through sentence-transformers' multi-process pool.
    normalize_embeddings : bool, default True
        Unit vectors, so scores are cosines.
    use_fp16 : bool, default False
        Load the model in float16 (only for a model given by name, on a CUDA device; on a CPU
        it is not applied, as FlagEmbedding does, and logged).
    pooling_method : str, optional
        FlagEmbedding's flag; only the model's own pooling is supported (else ValueError).
    query_max_length, passage_max_length : int, optional
        ``max_seq_length`` while encoding queries / texts (default: the model's own).
    trust_remote_code, cache_dir
        Passed to the model loader (``cache_dir`` = its ``cache_folder``).
    cache_folder : str, optional
        Embedding cache of :func:`simans_fast.encode.encode` (cannot return stale embeddings).
    embedding_dtype : {"float32", "float16"}
    output_scores : bool, default False
        Write ``neg_scores`` and ``pos_scores`` (the embedder's scores). Without it an input
        ``neg_scores`` is removed (it described the old negatives); ``pos_scores`` is kept.
    progress : bool, default True
    prefilter : {None, "none", "auto", "bfloat16"}, default None
        First pass of the CPU top-k (:func:`simans_fast.topk`; not with
        ``use_gpu_for_searching``). ``"bfloat16"`` is faster on CPUs with AVX512-BF16 or AMX;
        its raw scores are :func:`simans_fast.rescore`'s, so ranks can differ from the
        float32 search only where two scores agree to float32 rounding.

    Returns
    -------
    HnMineResult
    """
    from . import encode as _enc
    from .formats import flagembedding as fe

    lo, hi = parse_range(range_for_sampling)
    n = _check_int(negative_number, "negative_number", low=1)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    seed = _check_int(seed, "seed")
    a = _check_real(a, "a")
    b = _check_real(b, "b")
    score_scale = _check_real(score_scale, "score_scale", positive=True)
    if kernel not in ("gaussian", "laplace"):
        raise ValueError(f"kernel must be 'gaussian' or 'laplace', got {kernel!r}")
    batch_size = _check_int(batch_size, "batch_size", low=1)
    if search_batch_size is not None:
        search_batch_size = _check_int(search_batch_size, "search_batch_size", low=1)
    for v, nm in ((query_max_length, "query_max_length"),
                  (passage_max_length, "passage_max_length")):
        if v is not None:
            _check_int(v, nm, low=1)
    fmt = _check_format(query_instruction_format)
    if query_instruction_for_retrieval is not None and not isinstance(
            query_instruction_for_retrieval, str):
        raise ValueError(f"query_instruction_for_retrieval must be a string, got "
                         f"{query_instruction_for_retrieval!r}")
    for v, nm in ((use_gpu_for_searching, "use_gpu_for_searching"),
                  (normalize_embeddings, "normalize_embeddings"), (use_fp16, "use_fp16"),
                  (output_scores, "output_scores"), (trust_remote_code, "trust_remote_code")):
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{nm} must be True or False, got {v!r}")
    if not isinstance(output_file, (str, os.PathLike)):
        raise ValueError(f"output_file must be a path, got {output_file!r}")
    out_dir = os.path.dirname(os.path.abspath(os.fspath(output_file)))
    if os.path.isdir(os.fspath(output_file)):
        raise ValueError(f"output_file {output_file}: is a directory")
    if not os.path.isdir(out_dir):
        raise ValueError(f"output_file {output_file}: directory {out_dir} does not exist")

    from .candidates import resolve_prefilter

    first = resolve_prefilter(prefilter, "ip", "numba")  # the corpus is held in memory
    if use_gpu_for_searching:  # "auto" means none there; an explicit bfloat16 is refused
        if first is not None and prefilter != "auto":
            raise ValueError("prefilter is the first pass of the CPU top-k: drop it with "
                             "use_gpu_for_searching=True (--use_gpu_for_searching)")
        first = None
    prefilter = first
    if search_device is not None and not use_gpu_for_searching:
        raise ValueError("search_device is only used with use_gpu_for_searching=True")
    if use_gpu_for_searching:
        kind0 = _device_kind(device)
        if search_device is None:
            search_device = device if kind0 == "cuda" and isinstance(device, str) else "cuda"
        if str(search_device).startswith("cuda"):
            try:
                import torch
            except ImportError:  # pragma: no cover - torch comes with sentence-transformers
                raise ValueError("use_gpu_for_searching needs torch") from None
            if not torch.cuda.is_available():
                raise ValueError(f"use_gpu_for_searching: search device {search_device!r} but "
                                 f"CUDA is not available here (torch.cuda.is_available() is "
                                 f"False); drop use_gpu_for_searching (--use_gpu_for_searching)")

    # ---- inputs
    records = fe.read_records(input_file, parameter="input_file")
    if not records:
        raise ValueError(f"input_file {input_file}: holds no record")
    pool = None
    if candidate_pool is not None:
        if isinstance(candidate_pool, (str, os.PathLike)):
            pool = fe.read_candidate_pool(candidate_pool, parameter="candidate_pool")
        else:
            pool = list(candidate_pool)
            for i, t in enumerate(pool):
                if not isinstance(t, str) or not t.strip():
                    raise ValueError(f"candidate_pool[{i}] must be a non-empty string, got {t!r}")
        if not pool:
            raise ValueError(f"candidate_pool {candidate_pool!r}: holds no text")
    corpus, index = build_corpus(records, pool)
    n_corpus = len(corpus)
    forbidden = forbidden_rows(records, index)
    # positives outside the searched corpus are encoded too (for their scores), never searched
    extra = []
    ex_index = {}
    for rec in records:
        for t in rec["pos"]:
            if t not in index and t not in ex_index:
                ex_index[t] = n_corpus + len(extra)
                extra.append(t)

    # ---- model
    loaded_here = isinstance(model, (str, os.PathLike))
    kind = _device_kind(device)
    if loaded_here:
        model = _enc.load_model(model, device=device if isinstance(device, str) else None,
                                trust_remote_code=trust_remote_code, cache_folder=cache_dir)
        if use_fp16:
            if kind == "cuda" or (kind is None and str(getattr(model, "device", "")).startswith(
                    "cuda")):
                model.half()
            else:
                logger.info("use_fp16: not applied on a CPU device (as FlagEmbedding does)")
    else:
        model = _enc.load_model(model)
        if use_fp16:
            raise ValueError("use_fp16 applies to a model loaded by name; convert a model object "
                             "yourself (model.half()) before passing it")
        if trust_remote_code or cache_dir is not None:
            raise ValueError("trust_remote_code / cache_dir apply to a model loaded by name, not "
                             "to a model object")
    _check_pooling(model, pooling_method)

    # ---- encode
    enc_kw = dict(batch_size=batch_size, device=device, normalize_embeddings=normalize_embeddings,
                  dtype=embedding_dtype, cache_folder=cache_folder, progress=progress)
    queries = [rec["query"] for rec in records]
    if query_instruction_for_retrieval is not None:
        q_texts = [fmt.format(query_instruction_for_retrieval, q) for q in queries]
        q_prompt = ""  # the instruction replaces the model's query prompt
    else:
        q_texts, q_prompt = queries, None
    uq, q_inv = _unique(q_texts)
    with _MaxLength(model, passage_max_length, "passage_max_length"):
        d_emb = np.asarray(_enc.encode(model, corpus + extra, role="document", **enc_kw))
    with _MaxLength(model, query_max_length, "query_max_length"):
        q_emb_u = np.asarray(_enc.encode(model, uq, role="query", prompt=q_prompt, **enc_kw))
    q_emb = q_emb_u[q_inv]

    # ---- search (raw ranks, nothing excluded) and the window
    searched = d_emb[:n_corpus]
    if use_gpu_for_searching:
        from .candidates_torch import topk_torch

        cands = topk_torch(q_emb, searched, hi, metric="ip", query_block=search_batch_size,
                           device=search_device, progress=progress)
    else:
        from .candidates import topk

        cands = topk(q_emb, searched, hi, metric="ip", query_block=search_batch_size,
                     progress=progress, prefilter=prefilter)
    top_ids, top_scores = np.asarray(cands.ids), np.asarray(cands.scores)
    w_ids, w_scores = window_candidates(top_ids, top_scores, lo, hi, forbidden)

    # ---- positive scores (exact, for SimANS and output_scores)
    m = max(len(rec["pos"]) for rec in records)
    pos_rows = np.full((len(records), m), -1, np.int64)
    for r, rec in enumerate(records):
        for j, t in enumerate(rec["pos"]):
            pos_rows[r, j] = index[t] if t in index else ex_index[t]
    from .candidates import rescore

    pos_scores = rescore(q_emb, d_emb, pos_rows)  # -inf where padded
    pos_mat = np.where(pos_rows >= 0, pos_scores.astype(np.float64), np.inf)
    pos_ref = pos_mat.min(axis=1)  # SimANS centres on the lowest positive score (as
    # sf.mine_hard_negatives does); every record has at least one positive

    # ---- choose, pad
    neg = choose_negatives(w_ids, w_scores, n, strategy=strategy, positive_scores=pos_ref,
                           seed=seed, a=a, b=b, kernel=kernel, score_scale=score_scale)
    neg, padded = pad_negatives(neg, n_corpus, forbidden, seed=seed)
    counts = (neg >= 0).sum(axis=1)
    if (counts == 0).any():
        r = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"input_file {input_file}: record {r + 1} gets no negative: the corpus "
                         f"holds no text other than its positives and its query")
    effective = None
    if strategy == "simans":
        from .diagnostics import (simans_effective_candidates, summarize_effective,
                                  warn_if_flat)

        eff = simans_effective_candidates(w_scores, pos_ref, a=a, b=b, kernel=kernel,
                                          score_scale=score_scale, candidate_ids=w_ids)
        effective = summarize_effective(eff, n)
        warn_if_flat(eff, n, hint=f" Raise score_scale (now {score_scale:g}) or a.")

    neg_scores = rescore(q_emb, searched, neg) if output_scores else None

    # ---- output
    def out_records():
        for r, rec in enumerate(records):
            c = int(counts[r])
            texts = [corpus[int(j)] for j in neg[r, :c]]
            if output_scores:
                yield fe.replace_negatives(
                    rec, texts, neg_scores=neg_scores[r, :c].tolist(),
                    pos_scores=pos_scores[r, :len(rec["pos"])].tolist())
            else:
                yield fe.replace_negatives(rec, texts)

    fe.write_records(output_file, out_records(), require_neg=True)
    n_valid = (w_ids >= 0).sum(axis=1)
    return HnMineResult(
        output_file=os.fspath(output_file), n_records=len(records), n_corpus=n_corpus,
        mean_window=float(n_valid.mean()) if n_valid.size else 0.0,
        padded_records=int((padded > 0).sum()), padded_negatives=int(padded.sum()),
        short_records=int((counts < n).sum()), effective=effective)


def _unique(texts):
    """(unique texts in first-appearance order, inverse index array)."""
    idx, uniq = {}, []
    inv = np.empty(len(texts), np.int64)
    for i, t in enumerate(texts):
        j = idx.get(t)
        if j is None:
            j = idx[t] = len(uniq)
            uniq.append(t)
        inv[i] = j
    return uniq, inv

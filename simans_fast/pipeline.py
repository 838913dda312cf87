"""End-to-end SimANS mining: exact top-k, positives removed, positive scores, sampler.

:func:`mine` is the one-call pipeline::

    sampler = sf.mine(queries, corpus, qrels, k=200, n=15, a=0.5, b=0.0, seed=0)
    negatives = sampler.sample(epoch=0)          # (n_queries, n) corpus row indices, -1 padded

:func:`mine_candidates` stops before the sampler and returns the arrays (candidates with the
positives excluded, every positive's exact score), which is what the command line tool saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _validate
from ._config import DEFAULT_QUERY_BLOCK
from ._progress import progress_bar
from .store.negatives import EpochNegatives

__all__ = ["mine", "mine_candidates", "MinedCandidates", "normalize_qrels", "positive_matrix",
           "EpochNegatives", "epoch_negatives", "MiningJob", "CALLBACK_POINTS", "identity_diff",
           "read_job_file", "array_identity", "run_candidates", "parameter_set", "job_identity", "check_inputs_not_outputs"]


@dataclass(frozen=True)
class MinedCandidates:
    """Candidates of a set of queries, positives excluded, with every positive's exact score.

    Attributes
    ----------
    candidate_ids : ndarray of shape (n_queries, k), int64
        Corpus row indices of the top-k non-positive documents, best first; ``-1`` pads rows
        with fewer than ``k`` candidates (tiny corpora).
    candidate_scores : ndarray of shape (n_queries, k), float32
        Their scores (non-increasing along a row); padding is ``-inf`` or NaN.
    positive_ids : ndarray of shape (n_queries, m), int64
        Corpus rows of each query's positives in qrels order (duplicates dropped), ``-1``
        padded; ``m = max(1, most positives of any query)``.
    positive_scores : ndarray of shape (n_queries, m), float32
        Exact score of each positive (computed for every positive, also when it is outside the
        top-k), NaN where ``positive_ids == -1``.
    """

    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray

    @property
    def n_queries(self) -> int:
        return int(self.candidate_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.candidate_ids.shape[1])


def normalize_qrels(qrels, n_queries: int, n_docs: int, *, name: str = "qrels"):
    """Validate positives and return them as CSR ``(indptr, ids)`` with duplicates removed.

    Parameters
    ----------
    qrels : tuple (indptr, ids), sequence of array-like, or mapping
        Positive corpus rows of each query row: a CSR pair given as a ``tuple`` of two arrays
        (``indptr`` of length ``n_queries + 1``), a ``list`` (or other sequence) with one array
        of corpus rows per query, or a mapping ``{query_row: corpus_rows}`` (missing queries
        have no positives).
    n_queries, n_docs : int
        Number of query rows and of corpus rows.
    name : str, default="qrels"
        Argument name used in error messages.

    Returns
    -------
    indptr : ndarray of shape (n_queries + 1,), int64
    ids : ndarray of shape (indptr[-1],), int64
        Positives of query ``i`` are ``ids[indptr[i]:indptr[i+1]]``, in the given order with
        repeated ids dropped.

    Raises
    ------
    ParameterError (a ValueError)
        Wrong length, non-integer ids, or ids outside ``[0, n_docs)``.

    The one CSR normaliser is :func:`simans_fast._validate.normalize_csr`; this is its name for
    the positives.
    """
    return _validate.normalize_csr(qrels, n_queries, n_docs, name=name)


def positive_matrix(indptr, ids, *, width: int | None = None) -> np.ndarray:
    """Dense ``(n_queries, m)`` int64 matrix of CSR positives, ``-1`` padded.

    ``m`` is ``width`` if given, else ``max(1, largest row)``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    n_q = indptr.shape[0] - 1
    counts = np.diff(indptr)
    m = int(counts.max()) if n_q and counts.size else 0
    if width is None:
        width = max(1, m)
    elif width < m:
        raise ValueError(f"width={width} is smaller than the largest row ({m})")
    out = np.full((n_q, width), -1, dtype=np.int64)
    if ids.size:
        rows = np.repeat(np.arange(n_q, dtype=np.int64), counts)
        cols = np.arange(ids.size, dtype=np.int64) - np.repeat(indptr[:-1], counts)
        out[rows, cols] = ids
    return out


def _check_embeddings(queries, corpus):
    queries = _validate.check_embeddings(queries, "queries")
    corpus = _validate.check_embeddings(corpus, "corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise _validate.ParameterError(
            "queries",
            f"queries have dimension {queries.shape[1]} but corpus has {corpus.shape[1]}: "
            "embed both with the same model")
    if corpus.shape[0] == 0:
        raise _validate.ParameterError("corpus", "corpus is empty")
    return queries, corpus


def _mine_block(queries, corpus, indptr, ids, pos, *, k, metric, backend, index, topk, rescore,
                query_offset=0, prefilter=None):
    """Candidates and positive scores of one block of queries (CSR already sliced).

    ``query_offset`` is the block's first row in the whole query set: the exact backend places
    every query at the same position of its fixed-shape BLAS call whatever the chunking, so the
    scores are bit-identical for any chunk size. ``prefilter``: the first pass as
    :func:`simans_fast.candidates.resolve_prefilter` resolved it for the whole run (``None``
    or ``"bfloat16"``, never ``"auto"``: every block makes the same choice).
    """
    cands = topk(
        queries, corpus, k, metric=metric, exclude=(indptr, ids), backend=backend, index=index,
        query_offset=query_offset, prefilter=prefilter,
    )
    cids = np.ascontiguousarray(cands.ids, dtype=np.int64)
    cscores = np.ascontiguousarray(cands.scores, dtype=np.float32)
    pscores = np.asarray(rescore(queries, corpus, pos, metric=metric), dtype=np.float32)
    pscores = np.array(pscores, dtype=np.float32, copy=True)
    pscores[pos < 0] = np.nan
    return cids, cscores, pscores


@_validate.renamed_kwargs(chunk_size="query_block")
def mine_candidates(
    queries,
    corpus,
    qrels,
    *,
    k: int = 200,
    metric: str = "ip",
    backend: str = "auto",
    index=None,
    query_block: int | None = None,
    progress: bool = False,
    prefilter: str | None = None,
) -> MinedCandidates:
    """Top-k candidates with the positives removed, and every positive's exact score.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
        Query embeddings (float32; float16 accepted where the top-k backend accepts it).
    corpus : ndarray of shape (n_docs, dim)
        Document embeddings; may be a read-only memory map.
    qrels : tuple (indptr, ids), list of arrays or mapping
        Positive corpus rows of each query row; see :func:`normalize_qrels`.
    k : int, default=200
        Candidates kept per query (after the positives are removed).
    metric : {"ip", "cosine", "l2"}, default="ip"
        Passed to :func:`simans_fast.topk` and :func:`simans_fast.rescore`.
    backend : str, default="auto"
        Top-k backend, see :func:`simans_fast.topk`.
    index : object, optional
        A prebuilt index passed to :func:`simans_fast.topk`.
    query_block : int, optional
        Process queries in blocks of this many rows (bounds memory, drives the progress bar);
        ``None``: :data:`simans_fast._config.DEFAULT_QUERY_BLOCK` (4096, as the command line).
        Results do not depend on it. ``chunk_size=`` is its old name (deprecated).
    progress : bool, default=False
        Show a progress bar on stderr (needs tqdm).
    prefilter : {None, "none", "auto", "bfloat16"}, default=None
        First pass of the exact top-k (:func:`simans_fast.topk`): ``"bfloat16"`` screens the
        corpus in bfloat16, proves per query that no other document reaches the top k and
        rescores the survivors exactly (its top-k 1.4-2.5x faster on the CPUs with AVX512-BF16
        or AMX measured in docs/topk.md);
        the candidate scores are then :func:`simans_fast.rescore`'s, the same arithmetic as the
        positive scores. ``"auto"`` is resolved once for the whole run
        (:func:`simans_fast.candidates.resolve_prefilter`).

    Returns
    -------
    MinedCandidates
    """
    from .candidates import rescore, resolve_prefilter, topk

    queries, corpus = _check_embeddings(queries, corpus)
    prefilter = resolve_prefilter(prefilter, metric, backend, corpus, index)
    n_q, n_docs = int(queries.shape[0]), int(corpus.shape[0])
    k = _validate.check_k(k, n_docs)
    query_block = _validate.validate("query_block", query_block)
    indptr, ids = normalize_qrels(qrels, n_q, n_docs)
    pos = positive_matrix(indptr, ids)
    step = DEFAULT_QUERY_BLOCK if query_block is None else int(query_block)
    cids = np.full((n_q, k), -1, dtype=np.int64)
    cscores = np.full((n_q, k), -np.inf, dtype=np.float32)
    pscores = np.full(pos.shape, np.nan, dtype=np.float32)
    with progress_bar(n_q, desc="mining", enable=progress, unit="q") as bar:
        for lo in range(0, n_q, step):
            hi = min(n_q, lo + step)
            sub_ptr = indptr[lo : hi + 1] - indptr[lo]
            sub_ids = ids[indptr[lo] : indptr[hi]]
            c_i, c_s, p_s = _mine_block(
                queries[lo:hi], corpus, sub_ptr, sub_ids, pos[lo:hi], k=k, metric=metric,
                backend=backend, index=index, topk=topk, rescore=rescore, query_offset=lo,
                prefilter=prefilter,
            )
            cids[lo:hi] = c_i
            cscores[lo:hi] = c_s
            pscores[lo:hi] = p_s
            bar.update(hi - lo)
    return MinedCandidates(cids, cscores, pos, pscores)


@_validate.renamed_kwargs(chunk_size="query_block")
def mine(
    queries,
    corpus,
    qrels,
    *,
    k: int = 200,
    n: int = 15,
    a: float = 0.5,
    b: float = 0.0,
    kernel: str = "gaussian",
    seed: int = 0,
    positive_choice: str = "random",
    fallback: str = "lowest",
    metric: str = "ip",
    backend: str = "auto",
    index=None,
    row_keys=None,
    query_block: int | None = None,
    progress: bool = False,
    prefilter: str | None = None,
):
    """Mine SimANS negatives: exact top-k, positives removed, positive scores, sampler.

    For each query the ``k`` best documents that are not among its positives become the
    candidates; every positive gets its exact score (also when it is not in the top-k, via
    :func:`simans_fast.rescore`); a :class:`simans_fast.SimANSSampler` is built on these arrays
    and returned. Draw the negatives of an epoch with ``sampler.sample(epoch=e)``.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
        Query embeddings.
    corpus : ndarray of shape (n_docs, dim)
        Document embeddings (a memory map works).
    qrels : tuple (indptr, ids), list of arrays or mapping
        Positive corpus rows of each query row: CSR pair (a ``tuple``), one array per query (a
        ``list``), or ``{query_row: corpus_rows}``. A query without positives gets the
        ``fallback`` negatives.
    k : int, default=200
        Candidates per query, positives excluded.
    n : int, default=15
        Negatives drawn per query and epoch.
    a, b : float, default=0.5, 0.0
        SimANS kernel parameters: weight ``exp(-a * (s - s_pos - b)**2)`` (paper's sign of b).
    kernel : {"gaussian", "laplace"}, default="gaussian"
        Weight kernel (``laplace``: ``exp(-a * |s - s_pos - b|)``, the MS MARCO passage code).
    seed : int, default=0
        Seed of the counter-based stream; draws depend on (seed, epoch, query row).
    positive_choice : {"random", "highest", "lowest"}, default="random"
        Queries with several positives: draw one per query and epoch from the seeded stream
        ("random", like the paper's MS MARCO code), or always use the positive with the highest
        or lowest score.
    fallback : {"lowest", "uniform", "raise"}, default="lowest"
        What a query without positives gets (see :func:`simans_fast.simans_negatives`).
    metric : {"ip", "cosine", "l2"}, default="ip"
        Similarity used for retrieval and scores.
    backend : str, default="auto"
        Top-k backend (see :func:`simans_fast.topk`).
    index : object, optional
        Prebuilt search index passed to :func:`simans_fast.topk`.
    row_keys : array-like of int64, optional
        Global query keys of these rows (for sharded runs), see :class:`simans_fast.SimANSSampler`.
    query_block : int, optional
        Queries per block of the top-k stage (memory bound, progress granularity; results do
        not depend on it); ``None``: 4096. ``chunk_size=`` is its old name (deprecated).
    progress : bool, default=False
        Progress bar on stderr (needs tqdm).
    prefilter : {None, "none", "auto", "bfloat16"}, default=None
        First pass of the exact top-k, see :func:`mine_candidates`.

    Returns
    -------
    SimANSSampler
        Its ``sample`` returns corpus row indices (``-1`` padded).

    See Also
    --------
    mine_candidates : the same pipeline without the sampler.

    Examples
    --------
    >>> import numpy as np, simans_fast as sf
    >>> rng = np.random.default_rng(0)
    >>> corpus = rng.standard_normal((1000, 16), dtype=np.float32)
    >>> queries = corpus[:20] + 0.1 * rng.standard_normal((20, 16), dtype=np.float32)
    >>> sampler = sf.mine(queries, corpus, [[i] for i in range(20)], k=50, n=5)
    >>> sampler.sample(epoch=0).shape
    (20, 5)
    """
    from .sampler import SimANSSampler

    mined = mine_candidates(
        queries, corpus, qrels, k=k, metric=metric, backend=backend, index=index,
        query_block=query_block, progress=progress, prefilter=prefilter,
    )
    pscores = mined.positive_scores
    if pscores.shape[1] == 1:
        pscores = pscores[:, 0]
    return SimANSSampler(
        mined.candidate_ids,
        mined.candidate_scores,
        pscores,
        n=n,
        a=a,
        b=b,
        kernel=kernel,
        seed=seed,
        fallback=fallback,
        row_keys=row_keys,
        positive_choice=positive_choice,
    )


# =========================================================================== parameter sets
#: the options of the other strategies a parameter set may hold (besides ``strategy``)
STRATEGY_OPTIONS = ("skip", "window", "max_score", "margin", "perc")


def parameter_set(*, n, a, b, kernel, seed, positive_choice, fallback, score_scale=None,
                  strategy=None, skip=None, window=None, max_score=None, margin=None,
                  perc=None) -> dict:
    """The sampling parameters a mining job records (``provenance.job`` and the candidates
    header), as :func:`epoch_negatives` reads them back.

    ``score_scale`` is recorded only when it is not 1, so runs on raw scores keep their
    header; a strategy other than SimANS and its options only when given (0 is a real
    threshold for ``margin``; only ``skip=0`` means no option). The values are not checked
    here (see :mod:`simans_fast._validate`).
    """
    out = {"n": n, "a": float(a), "b": float(b), "kernel": kernel, "seed": seed,
           "positive_choice": positive_choice, "fallback": fallback}
    c = score_scale
    if c is not None and not (isinstance(c, (int, float)) and float(c) == 1.0):
        out["score_scale"] = float(c) if isinstance(c, (int, float)) and not isinstance(
            c, bool) else c
    if strategy not in (None, "simans"):
        out["strategy"] = strategy
    for key, v in zip(STRATEGY_OPTIONS, (skip, window, max_score, margin, perc)):
        if v is None or (key == "skip" and v == 0):
            continue
        out[key] = v
    return out


# =========================================================================== epoch negatives
def _candidates_store():
    """The candidates-directory module (floor 2)."""
    from .store import candidates as store

    return store


def epoch_negatives(candidates, epoch: int, params: dict):
    """Draw one epoch's negatives from candidates; returns an ``EpochNegatives``.

    Parameters
    ----------
    candidates : CandidatesFile or MinedCandidates-like
        ``candidate_ids``, ``candidate_scores``, ``positive_ids``, ``positive_scores`` and the
        id lists ``query_ids`` / ``doc_ids`` (a loaded candidates directory).
    epoch : int
        The epoch (``0 <= epoch < 2**64``).
    params : dict
        ``n``, ``a``, ``b``, ``kernel``, ``seed``, ``positive_choice``, ``fallback``, and
        optionally ``score_scale`` and the strategy options (``strategy``, ``skip``, ``window``,
        ``max_score``, ``margin``, ``perc``): a saved parameter set
        (``CandidatesFile.parameters``) with any overrides.

    Default SimANS without rank or score options uses :class:`simans_fast.SimANSSampler`;
    any other strategy or option goes through :func:`simans_fast.select_negatives` (same
    stream, same draws where both apply). SimANS sees ``c * score`` with ``c`` the score scale.
    The positive used this epoch comes first in ``positive_rows``, the others after it in
    qrels order.
    """
    from .diagnostics import has_strategy_filters, score_scale_of, strategy_filters
    from .sampler import SimANSSampler

    cids = np.asarray(candidates.candidate_ids)
    cscores = np.asarray(candidates.candidate_scores)
    pscores = np.asarray(candidates.positive_scores)
    pos_ids = np.asarray(candidates.positive_ids)
    c = score_scale_of(params)
    p_in = pscores[:, 0] if pscores.shape[1] == 1 else pscores
    # SimANS sees c * score (float64, so c * s is what sf.mine_hard_negatives and
    # diagnostics compute); c = 1 passes the stored float32 scores unchanged
    s_sim, p_sim = ((cscores, p_in) if c == 1.0 else
                    (cscores.astype(np.float64) * c, p_in.astype(np.float64) * c))
    n, a, b = int(params["n"]), float(params["a"]), float(params["b"])
    kernel, seed, fallback = params["kernel"], int(params["seed"]), params["fallback"]
    sampler = SimANSSampler(cids, s_sim, p_sim, n=n, a=a, b=b, kernel=kernel, seed=seed,
                            fallback=fallback, positive_choice=params["positive_choice"])
    strategy = params.get("strategy") or "simans"
    filters = strategy_filters(params)
    if strategy == "simans" and not has_strategy_filters(filters):
        cols = sampler.sample_columns(epoch=epoch)
    else:
        from .strategies import filter_candidates, select_negatives

        # column indices stand in for the ids, so the result is columns (scores, ranks follow)
        col_ids = np.where(cids >= 0, np.arange(cids.shape[1])[None, :], -1)
        if strategy != "simans" or c == 1.0:  # top / uniform do not depend on the scale
            cols = select_negatives(col_ids, cscores, p_in, n, strategy=strategy, a=a, b=b,
                                    kernel=kernel, seed=seed, epoch=epoch, fallback=fallback,
                                    **filters)
        else:
            # thresholds and ranks on the stored scores, then SimANS on c * score
            kept = filter_candidates(col_ids, cscores, p_in, **filters)
            cols = select_negatives(kept.ids, s_sim, p_sim, n, strategy="simans", a=a, b=b,
                                    kernel=kernel, seed=seed, epoch=epoch, fallback=fallback)
    n_q = cids.shape[0]
    rows = np.arange(n_q)[:, None]
    valid = cols >= 0
    safe = np.where(valid, cols, 0)
    neg_rows = np.where(valid, cids[rows, safe], -1)
    neg_scores = np.where(valid, cscores[rows, safe], np.float32(np.nan)).astype(np.float32)
    neg_ranks = np.where(valid, safe + 1, 0).astype(np.int64)
    m = pos_ids.shape[1]
    p = sampler.positive_index(epoch=epoch)
    p = np.where(p < 0, 0, p)[:, None]
    col = np.arange(m)[None, :]
    order = np.where(col == 0, p, np.where(col <= p, col - 1, col))
    pos_rows = pos_ids[rows, order]
    pos_scores = pscores[rows, order].astype(np.float32)
    return EpochNegatives(candidates.query_ids, candidates.doc_ids, pos_rows, pos_scores,
                          neg_rows, neg_scores, neg_ranks)


# =========================================================================== the mining job
#: the work directory of an unfinished job inside its output directory
WORK_DIR = ".simans-work"
#: the finished candidates directory inside the output directory
CANDIDATES_DIR = "candidates"
JOB_FILE = "job.json"
#: the named points at which a :class:`MiningJob` calls its ``callback(point, info)``
CALLBACK_POINTS = ("chunk_ready", "chunk_written", "assembled", "candidates_written",
                   "work_removed")
_CHUNK_ARRAYS = ("candidate_ids", "candidate_scores", "positive_scores")
_CAND_ARRAYS = ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores")
_CHUNK_MANIFEST = "manifest.json"


def identity_diff(a, b, prefix: str = "") -> list:
    """Dotted keys where two job identities (nested JSON dicts) differ (type-sensitive)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            out += identity_diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b and type(a) is type(b) else [prefix[:-1] or "(job)"]


def read_job_file(path):
    """A JSON object written by a job (job.json, a manifest), or None when unreadable."""
    import json

    try:
        with open(path, "rb") as f:
            job = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return job if isinstance(job, dict) else None


def array_identity(arr) -> dict:
    """Shape, dtype and a content fingerprint of an input matrix (part of a job identity)."""
    store = _candidates_store()
    return {"shape": [int(s) for s in arr.shape], "dtype": arr.dtype.str,
            "fingerprint": store.array_fingerprint(arr)}


def job_identity(*, queries, corpus, query_ids, doc_ids, qrels, qrels_info: dict,
                 skip_missing_qrels: bool, k: int, metric: str, backend: str, query_block,
                 parameters: dict, extra: dict | None = None, prefilter=None) -> dict:
    """What a mining run is made from, as :class:`MiningJob` records it: a run in a directory
    is continued or reused only by a job with the same identity.

    ``queries`` / ``corpus`` are the embeddings (None where there are none, or before a job
    that encodes has encoded them: :func:`array_identity` of each), ``qrels`` the qrels file
    (its sha256), ``qrels_info`` what :func:`simans_fast.formats.trec.read_qrels` reported;
    ``extra`` adds parts such as ``encode`` (model identity, resolved prompts, texts digests)
    and ``run`` (run file digest, re-scoring). ``prefilter`` is the top-k's first pass as
    resolved (:func:`simans_fast.candidates.resolve_prefilter`: ``None`` or ``"bfloat16"``);
    it is recorded only when it is not ``None``, so runs made before it existed stay
    resumable. ``simans-fast mine`` and
    :func:`simans_fast.mine_texts` build their jobs' identities here, so each resumes the
    other's runs.
    """
    from .store.atomic import file_sha256
    from .store.ids import ids_sha256

    inputs = {}
    for name, arr in (("queries", queries), ("corpus", corpus)):
        if arr is not None:
            inputs[name] = array_identity(arr)
    inputs.update({
        "query_ids_sha256": ids_sha256(query_ids),
        "doc_ids_sha256": ids_sha256(doc_ids),
        "qrels_sha256": file_sha256(qrels),
        "skip_missing_qrels": bool(skip_missing_qrels),
    })
    job = {
        "k": k,
        "metric": metric,
        "backend": backend,
        "chunk_size": query_block,  # the key of older job files: runs stay resumable
        "parameters": parameters,
        "inputs": inputs,
        "qrels": qrels_info,
    }
    if prefilter is not None:
        job["prefilter"] = prefilter
    if extra:
        job.update(extra)
    return job


def check_inputs_not_outputs(inputs: dict, outputs) -> None:
    """No input lies where a job writes or deletes: ``inputs`` maps a parameter to a path
    (None, a missing path or a non-path such as a model object are skipped), ``outputs`` are
    the job's directories and files. Raises ``InputError`` naming the parameter."""
    from ._validate import InputError
    from .store.atomic import inside, same_file

    for name, path in inputs.items():
        if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
            continue  # a model object or a Hub name; missing files are named by their reader
        for o in outputs:
            if inside(path, o) or same_file(path, o):
                raise InputError(f"{os.fspath(path)}: lies where the job writes its output "
                                 f"({o}); move it or choose another output directory",
                                 parameter=name, path=os.fspath(path))


def _input_error(message, path, parameter="out"):
    from ._validate import InputError

    return InputError(message, parameter=parameter, path=path)


def _chunk_name(c: int) -> str:
    return f"c{c:07d}"


class MiningJob:
    """A resumable mining run in a directory: chunked candidates, checkpoints, assembly.

    The job mines the candidates of ``n_queries`` queries in blocks of ``query_block`` rows;
    each block's arrays are checkpointed atomically (with their sha256) under
    ``out/.simans-work/chunks``, so a job interrupted at any moment (also by SIGKILL) and run
    again with ``resume=True`` continues where it stopped and writes byte-for-byte the
    candidates directory an uninterrupted job writes (``out/candidates``, the layout of
    :func:`simans_fast.save_candidates`). What a resumed job reuses is verified first (chunk
    digests, shapes and dtypes; a finished candidates directory's digests and header against
    this job), and the temporary files a killed job left are removed.

    Parameters
    ----------
    out : str
        Output directory (created when missing).
    identity : dict
        JSON description of what the job is made from (inputs' digests, parameters); a job
        resumes only a run with the same identity, and the candidates header records it as
        ``provenance.job``.
    query_ids, doc_ids : sequence of str
        Id of each query row and corpus row.
    positives : ndarray of shape (n_queries, m), int64
        Positive corpus rows, ``-1`` padded (:func:`positive_matrix`).
    k : int
        Candidates per query.
    parameters : dict
        Sampling parameters recorded in the header (``k`` and ``metric`` are added).
    metric : str, default "ip"
    query_block : int, default DEFAULT_QUERY_BLOCK
        Queries per checkpointed block (results do not depend on it).
    outputs : sequence of str, default ()
        Names of files in ``out`` that the caller writes from the candidates: removed with
        ``overwrite=True``, their stale temporary files removed before a run.
    callback : callable, optional
        ``callback(point, info)`` at each of :data:`CALLBACK_POINTS` (``info`` a dict:
        ``chunk`` and ``path`` for the chunk points, ``path`` otherwise); for progress reports
        and for tests that kill the process at a given point.
    """

    def __init__(self, out, identity: dict, *, query_ids, doc_ids, positives, k: int,
                 parameters: dict, metric: str = "ip", query_block: int | None = None,
                 outputs=(), callback=None):
        self.out = str(out)
        self.identity = identity
        self.query_ids = query_ids
        self.doc_ids = doc_ids
        self.positives = np.ascontiguousarray(positives, dtype=np.int64)
        self.k = int(k)
        self.metric = metric
        self.parameters = dict(parameters)
        self.query_block = int(DEFAULT_QUERY_BLOCK if query_block is None else query_block)
        self.outputs = tuple(outputs)
        self.callback = callback
        self.work = os.path.join(self.out, WORK_DIR)
        self.chunks_dir = os.path.join(self.work, "chunks")
        self.candidates_path = os.path.join(self.out, CANDIDATES_DIR)
        self.n_queries = int(self.positives.shape[0])
        self.n_docs = len(doc_ids)
        self.n_chunks = -(-self.n_queries // self.query_block) if self.n_queries else 0
        #: chunks found complete when :meth:`mine` started (a resumed job), and discarded ones
        self.chunks_reused = 0
        self.chunks_discarded = 0
        #: set by :meth:`prepare` when an unfinished run's job.json was unreadable (its
        #: checkpoints were discarded)
        self.job_file_discarded = False
        self._done = None

    # ------------------------------------------------------------------ helpers
    def _point(self, point: str, **info) -> None:
        if self.callback is not None:
            self.callback(point, info)

    def _rows(self, c: int):
        return c * self.query_block, min(self.n_queries, (c + 1) * self.query_block)

    def header_parameters(self) -> dict:
        return dict(self.parameters, k=self.k, metric=self.metric)

    # ------------------------------------------------------------------ state of ``out``
    def check_out(self) -> None:
        """``out`` and the job's directories in it are directories (or absent)."""
        out = self.out
        if os.path.lexists(out) and not os.path.isdir(out):
            raise _input_error(f"{out}: exists and is not a directory; choose a directory name",
                               out)
        for p, what in ((self.work, "the work directory"),
                        (self.candidates_path, "the candidates directory")):
            if os.path.lexists(p) and not os.path.isdir(p):
                raise _input_error(f"{out}: {p} ({what}) is not a directory; move it away or "
                                   "choose another output directory", out)

    def holds_run(self) -> bool:
        """Whether ``out`` holds a run of a job (finished or not)."""
        return os.path.lexists(self.work) or os.path.lexists(self.candidates_path)

    def recorded_identity(self):
        """The identity of the run in ``out``: the finished candidates' ``provenance.job``
        (``{}`` when it has none), the unfinished run's job.json, or None (none, unreadable)."""
        if os.path.isdir(self.candidates_path):
            header = _candidates_store().read_header(self.candidates_path)
            prov = header.get("provenance")
            old = prov.get("job") if isinstance(prov, dict) else None
            return old if isinstance(old, dict) else {}
        return read_job_file(os.path.join(self.work, JOB_FILE))

    def remove_outputs(self) -> None:
        """Delete the job's directories and its ``outputs`` (``overwrite``)."""
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.candidates_path, ignore_errors=True)
        for name in self.outputs:
            p = os.path.join(self.out, name)
            if os.path.isfile(p) or os.path.islink(p):
                os.unlink(p)

    def prepare(self, *, resume: bool = False, overwrite: bool = False) -> str:
        """Check ``out`` and decide what is left to do; returns ``"fresh"``, ``"chunks"``
        (an unfinished run resumes) or ``"candidates"`` (the candidates are complete).

        Every check comes before the first change to the disk. A run in ``out`` needs
        ``resume=True`` (same identity) or ``overwrite=True``.
        """
        from .store.atomic import atomic_write_text, json_dumps, remove_stale_temp_files

        if resume and overwrite:
            raise _input_error("resume=True and overwrite=True: give one of them, not both",
                               None, parameter="resume")
        out = self.out
        self.check_out()
        if self.holds_run() and not resume and not overwrite:
            raise _input_error(f"{out}: already holds a run; pass resume=True to continue or "
                               "reuse it, overwrite=True to start again, or choose another "
                               "output directory", out)
        if os.path.isdir(self.candidates_path) and not overwrite:
            diff = identity_diff(self.recorded_identity(), self.identity)
            if diff:
                raise _input_error(f"{out}: holds a run made with different inputs or "
                                   f"parameters ({', '.join(diff[:4])}); use another output "
                                   "directory or overwrite=True", out)
        # ---- the first change to the disk happens here, after every check
        if overwrite:
            self.remove_outputs()
        if os.path.isdir(out):
            for name in self.outputs:
                remove_stale_temp_files(os.path.join(out, name))
            remove_stale_temp_files(os.path.join(self.work, JOB_FILE))
            remove_stale_temp_files(self.candidates_path)
        if os.path.isdir(self.candidates_path):
            return "candidates"
        jp = os.path.join(self.work, JOB_FILE)
        if os.path.isdir(self.work) and os.path.lexists(jp):
            old = read_job_file(jp)
            if old is None:  # its checkpoints cannot be trusted: mined again
                import shutil

                self.job_file_discarded = True
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                diff = identity_diff(old, self.identity)
                if diff:
                    raise _input_error(f"{out}: holds an unfinished run made with different "
                                       f"inputs or parameters ({', '.join(diff[:4])}); run it "
                                       "again with the same arguments, use another output "
                                       "directory, or overwrite=True", out)
                return "chunks"
        os.makedirs(self.chunks_dir, exist_ok=True)
        atomic_write_text(jp, json_dumps(self.identity))
        return "fresh"

    # ------------------------------------------------------------------ chunk checkpoints
    def write_chunk(self, c: int, arrays: dict) -> None:
        """Checkpoint chunk ``c`` atomically: its arrays and a manifest of their digests."""
        from .store.atomic import (commit_dir, file_sha256, fsync_file, json_dumps, tmp_dir,
                                   write_synced)

        path = os.path.join(self.chunks_dir, _chunk_name(c))
        tmp = tmp_dir(path)
        manifest = {}
        for name, arr in arrays.items():
            fp = os.path.join(tmp, name + ".npy")
            with open(fp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
                fsync_file(f)
            manifest[name] = {"sha256": file_sha256(fp), "shape": [int(s) for s in arr.shape],
                              "dtype": arr.dtype.str}
        write_synced(os.path.join(tmp, _CHUNK_MANIFEST), json_dumps(manifest))
        self._point("chunk_ready", chunk=c, path=tmp)
        commit_dir(tmp, path)
        self._point("chunk_written", chunk=c, path=path)

    def read_chunk(self, c: int):
        """Chunk ``c``'s arrays if its files match their digests, shapes and dtypes, else None."""
        from .store.atomic import file_sha256

        lo, hi = self._rows(c)
        rows, k, m = hi - lo, self.k, self.positives.shape[1]
        d = os.path.join(self.chunks_dir, _chunk_name(c))
        manifest = read_job_file(os.path.join(d, _CHUNK_MANIFEST))
        if manifest is None:
            return None
        want = {"candidate_ids": ((rows, k), np.dtype(np.int64).str),
                "candidate_scores": ((rows, k), np.dtype(np.float32).str),
                "positive_scores": ((rows, m), np.dtype(np.float32).str)}
        arrs = {}
        for name, (shape, dt) in want.items():
            spec = manifest.get(name)
            if not isinstance(spec, dict) or spec.get("shape") != list(shape) or spec.get(
                    "dtype") != dt:
                return None
            fp = os.path.join(d, name + ".npy")
            try:
                if file_sha256(fp) != spec.get("sha256"):
                    return None
                a = np.load(fp, allow_pickle=False)
            except Exception:  # missing, truncated, a pickle, ...: mined again
                return None
            if a.shape != shape or a.dtype.str != dt:
                return None
            arrs[name] = a
        ids = arrs["candidate_ids"]
        if ids.size and (int(ids.min()) < -1 or int(ids.max()) >= self.n_docs):
            return None
        return arrs

    def scan(self) -> set:
        """The complete chunks (indices); damaged checkpoints and temporary debris are
        removed. Sets :attr:`chunks_reused` and :attr:`chunks_discarded`; :meth:`mine` mines
        the others (it scans first when this was not called)."""
        import shutil

        os.makedirs(self.chunks_dir, exist_ok=True)
        for name in os.listdir(self.chunks_dir):  # debris of a run killed mid-write
            if name.startswith(".") and name.endswith(".tmp"):
                p = os.path.join(self.chunks_dir, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
        done = set()
        redo = 0
        for c in range(self.n_chunks):
            p = os.path.join(self.chunks_dir, _chunk_name(c))
            if not os.path.lexists(p):
                continue
            if os.path.isdir(p) and self.read_chunk(c) is not None:
                done.add(c)
                continue
            redo += 1
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        self.chunks_reused, self.chunks_discarded = len(done), redo
        self._done = done
        return done

    # ------------------------------------------------------------------ mining
    def mine(self, queries=None, corpus=None, qrels=None, *, backend: str = "auto",
             block=None, progress: bool = False, desc: str = "top-k") -> int:
        """Mine every chunk not yet checkpointed; returns the number of chunks.

        Either ``queries``, ``corpus`` and ``qrels`` (CSR ``(indptr, ids)`` of the positives,
        the rows of ``positives``) for the exact top-k with the positives removed, or
        ``block(lo, hi) -> (candidate_ids, candidate_scores, positive_scores)`` giving the
        candidates of query rows ``lo..hi`` (e.g. from a run file). The top-k's first pass is
        the identity's ``prefilter`` (:func:`job_identity`; none when it has none), so every
        block of a run, resumed or not, makes the same choice.
        """
        from .candidates import rescore, topk

        done = self._done if self._done is not None else self.scan()
        self._done = None
        if block is None:
            indptr, pids = (np.asarray(x, dtype=np.int64) for x in qrels)
        pos = self.positives
        prefilter = self.identity.get("prefilter")
        initial = sum(self._rows(c)[1] - self._rows(c)[0] for c in done)
        with progress_bar(self.n_queries, desc=desc, enable=progress, unit="q",
                          initial=initial) as bar:
            for c in range(self.n_chunks):
                if c in done:
                    continue
                lo, hi = self._rows(c)
                if block is not None:
                    cids, cscores, pscores = block(lo, hi)
                else:
                    sub_ptr = indptr[lo:hi + 1] - indptr[lo]
                    sub_ids = pids[indptr[lo]:indptr[hi]]
                    q = np.ascontiguousarray(queries[lo:hi])
                    cids, cscores, pscores = _mine_block(
                        q, corpus, sub_ptr, sub_ids, pos[lo:hi], k=self.k, metric=self.metric,
                        backend=backend, index=None, topk=topk, rescore=rescore,
                        query_offset=lo, prefilter=prefilter)
                self.write_chunk(c, {"candidate_ids": np.ascontiguousarray(cids, np.int64),
                                     "candidate_scores": np.ascontiguousarray(cscores,
                                                                              np.float32),
                                     "positive_scores": np.ascontiguousarray(pscores,
                                                                             np.float32)})
                bar.update(hi - lo)
        return self.n_chunks

    # ------------------------------------------------------------------ assembly
    def assemble(self) -> None:
        """Concatenate the checkpoints into ``out/candidates`` (built, then renamed)."""
        import shutil

        from numpy.lib.format import open_memmap

        from .store.atomic import commit_dir, file_sha256, fsync_file

        store = _candidates_store()
        adir = os.path.join(self.work, "assemble")
        shutil.rmtree(adir, ignore_errors=True)
        os.makedirs(adir)
        n_q, k, m = self.n_queries, self.k, self.positives.shape[1]
        shapes = {"candidate_ids": ((n_q, k), np.int64),
                  "candidate_scores": ((n_q, k), np.float32),
                  "positive_scores": ((n_q, m), np.float32)}
        mms = {name: open_memmap(os.path.join(adir, name + ".npy"), mode="w+", dtype=dt,
                                 shape=shp) for name, (shp, dt) in shapes.items()}
        for c in range(self.n_chunks):
            lo, hi = self._rows(c)
            arrs = self.read_chunk(c)
            if arrs is None:  # changed since it was checked: a clear error, never a wrong file
                raise _input_error(f"{self.out}: checkpoint {_chunk_name(c)} in "
                                   f"{self.chunks_dir} changed during the run; run the same job "
                                   "again with resume=True", self.out)
            for name in _CHUNK_ARRAYS:
                mms[name][lo:hi] = arrs[name]
        for mm in mms.values():
            mm.flush()
        mms.clear()
        with open(os.path.join(adir, "positive_ids.npy"), "wb") as f:
            np.save(f, self.positives, allow_pickle=False)
        hashes, arrays = {}, {}
        for name in _CAND_ARRAYS:
            fp = os.path.join(adir, name + ".npy")
            with open(fp, "rb+") as f:
                fsync_file(f)
            hashes[name] = file_sha256(fp)
            arrays[name] = np.load(fp, mmap_mode="r", allow_pickle=False)  # shapes only
        store.write_candidates_dir_finish(adir, arrays, self.query_ids, self.doc_ids,
                                          self.header_parameters(), {"job": self.identity},
                                          hashes)
        del arrays
        self._point("assembled", path=adir)
        commit_dir(adir, self.candidates_path)
        self._point("candidates_written", path=self.candidates_path)

    def verify(self):
        """Load the finished ``out/candidates`` with every digest checked, and check that it is
        the one this job writes (header, positives); returns the ``CandidatesFile``."""
        store = _candidates_store()
        cand = self.candidates_path
        cf = store.load_candidates(cand, verify=True)
        header = cf.header
        n_q, m = self.positives.shape
        dtypes = {"candidate_ids": np.int64, "candidate_scores": np.float32,
                  "positive_ids": np.int64, "positive_scores": np.float32}
        shapes = {"candidate_ids": (n_q, self.k), "candidate_scores": (n_q, self.k),
                  "positive_ids": (n_q, m), "positive_scores": (n_q, m)}
        # the header this job writes (zero-copy views carry the shapes; digests as verified)
        views = {name: np.broadcast_to(np.zeros((), dtypes[name]), shape)
                 for name, shape in shapes.items()}
        hashes = {name: header["arrays"][name]["sha256"] for name in _CAND_ARRAYS}
        want = store.candidates_header(views, self.query_ids, self.doc_ids,
                                       self.header_parameters(), {"job": self.identity}, hashes)
        have = dict(header)
        want.pop("simans_fast_version", None)
        have.pop("simans_fast_version", None)
        problems = identity_diff(have, want)
        if problems:
            hp = os.path.join(cand, "header.json")
            raise _input_error(f"{hp}: disagrees with the run that wrote it "
                               f"({', '.join(problems[:4])}); the candidates were edited or "
                               "damaged: pass overwrite=True to mine them again", hp)
        if not np.array_equal(np.asarray(cf.positive_ids), self.positives):
            pp = os.path.join(cand, "positive_ids.npy")
            raise _input_error(f"{pp}: differs from the positives of the qrels; the candidates "
                               "were edited or damaged: pass overwrite=True to mine them "
                               "again", pp)
        return cf

    def remove_work(self) -> None:
        """Delete the checkpoints (after the candidates are complete)."""
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)
        self._point("work_removed", path=self.work)

    def run(self, queries=None, corpus=None, qrels=None, *, resume: bool = False,
            overwrite: bool = False, backend: str = "auto", block=None,
            progress: bool = False, desc: str = "top-k"):
        """:meth:`prepare`, then :meth:`mine` and :meth:`assemble` (or :meth:`verify` the
        finished candidates), then :meth:`remove_work`; returns the loaded candidates."""
        state = self.prepare(resume=resume, overwrite=overwrite)
        if state == "candidates":
            cf = self.verify()
        else:
            self.mine(queries, corpus, qrels, backend=backend, block=block, progress=progress,
                      desc=desc)
            self.assemble()
            cf = _candidates_store().load_candidates(self.candidates_path)
        self.remove_work()
        return cf


def run_candidates(run_ids, run_scores, positives, k: int, *, queries=None, corpus=None,
                   metric: str = "ip", corpus_ids=None):
    """``block(lo, hi)`` for :meth:`MiningJob.mine`: the candidates of query rows ``lo..hi``
    taken from a run (``run_ids`` / ``run_scores`` of shape (n_queries, depth), ``-1`` padded,
    rows in the order of ``positives``).

    Positives are removed; without ``queries``/``corpus`` the run's scores are kept and a
    positive's score is its run score (NaN when the run does not list it: the fallback
    applies); with them every candidate and positive gets its exact score
    (:func:`simans_fast.rescore`) and each row is re-sorted by it (stable: ties keep the run's
    order). Rows keep their ``k`` best.

    ``corpus_ids`` (sorted, unique int64): ``corpus`` holds only these documents, row ``i``
    being document ``corpus_ids[i]`` (e.g. ``np.unique`` of the run's ids and the positives,
    so that only those are encoded); it must hold every id of the run and of ``positives``.
    The ids returned stay the corpus ids; the scores equal those of the full corpus.
    """
    from .candidates import rescore

    if corpus_ids is not None:
        ParameterError = _validate.ParameterError
        corpus_ids = np.asarray(corpus_ids)
        if corpus_ids.ndim != 1 or corpus_ids.dtype.kind not in "iu":
            raise ParameterError("corpus_ids", "corpus_ids: expected a 1-d integer array of corpus ids")
        corpus_ids = corpus_ids.astype(np.int64, copy=False)
        if corpus_ids.size > 1 and not (np.diff(corpus_ids) > 0).all():
            raise ParameterError("corpus_ids", "corpus_ids: must be sorted and unique (np.unique)")
        if corpus is None or corpus.shape[0] != corpus_ids.size:
            raise ParameterError("corpus_ids", f"corpus_ids: {corpus_ids.size} ids but corpus has "
                                 f"{None if corpus is None else corpus.shape[0]} rows; give "
                                 "one id per corpus row")

    def local(ids):  # corpus ids -> rows of ``corpus`` (-1 stays -1)
        if corpus_ids is None:
            return ids
        valid = ids >= 0
        at = np.searchsorted(corpus_ids, np.where(valid, ids, 0))
        if valid.any() and (corpus_ids.size == 0 or not (
                corpus_ids[np.minimum(at, corpus_ids.size - 1)][valid] == ids[valid]).all()):
            raise _validate.ParameterError("corpus_ids",
                                           "corpus_ids: misses an id of the run or of the positives")
        return np.where(valid, at, -1).astype(np.int64)

    def block(lo, hi):
        ids = run_ids[lo:hi]
        sc = run_scores[lo:hi]
        p = positives[lo:hi]
        b, depth = ids.shape
        is_pos = np.zeros(ids.shape, dtype=bool)
        pscores = np.full(p.shape, np.nan, dtype=np.float32)
        rows = np.arange(b)
        for j in range(p.shape[1]):
            pj = p[:, j:j + 1]
            hit = (ids == pj) & (pj >= 0)
            is_pos |= hit
            found = hit.any(axis=1)
            pscores[:, j] = np.where(found, sc[rows, np.argmax(hit, axis=1)], np.nan)
        keep = (ids >= 0) & ~is_pos
        order = np.argsort(~keep, axis=1, kind="stable")  # kept ones first, in run order
        cids = np.where(np.take_along_axis(keep, order, 1),
                        np.take_along_axis(ids, order, 1), -1).astype(np.int64)
        if queries is not None:  # exact scores, rows re-sorted by them
            q = np.ascontiguousarray(queries[lo:hi])
            cs = np.asarray(rescore(q, corpus, local(cids), metric=metric), dtype=np.float32)
            o2 = np.argsort(-cs.astype(np.float64), axis=1, kind="stable")
            cids = np.take_along_axis(cids, o2, 1)
            cs = np.take_along_axis(cs, o2, 1)
            pscores = np.array(rescore(q, corpus, local(p), metric=metric), dtype=np.float32)
            pscores[p < 0] = np.nan
        else:
            cs = np.where(cids >= 0, np.take_along_axis(sc, order, 1), -np.inf)
        cs = np.where(cids >= 0, cs, -np.inf).astype(np.float32)
        out_ids = np.full((b, k), -1, dtype=np.int64)
        out_sc = np.full((b, k), -np.inf, dtype=np.float32)
        w = min(k, depth)
        out_ids[:, :w] = cids[:, :w]
        out_sc[:, :w] = cs[:, :w]
        return out_ids, out_sc, pscores

    return block

"""Texts and a model in, a resumable candidates directory out: :func:`mine_texts`.

This is the job ``simans-fast mine --model NAME --texts DIR --qrels FILE --out DIR`` runs, as
one Python call, and the steps it is made of (the command line composes the same steps)::

    import simans_fast as sf

    cand = sf.mine_texts("sentence-transformers/all-MiniLM-L6-v2",
                         queries="beir/nq/queries.jsonl", corpus="beir/nq/corpus.jsonl",
                         qrels="beir/nq/qrels/train.tsv", out="runs/nq", k=100, resume=True)
    neg = sf.epoch_negatives(cand, 1, cand.parameters)   # any epoch, any time

The texts are encoded into ``out/embeddings`` (chunked, resumable after a kill, reused when
complete; ``cache_folder`` also keeps them in a cache keyed by the model's weights, the
prompt and the texts), then the exact top-k is mined with the positives removed, in
checkpointed blocks (:class:`simans_fast.pipeline.MiningJob`). A run in ``out`` is continued or
reused only with ``resume=True`` and only when it was made from the same model, prompts,
texts, qrels and parameters; ``simans-fast mine --resume`` and this function continue each
other's runs.
"""

from __future__ import annotations

import os

import numpy as np

from . import _validate
from ._config import DEFAULT_QUERY_BLOCK
from ._validate import InputError, ParameterError

__all__ = ["mine_texts", "EMBEDDINGS_DIR", "queries_with_positives", "corpus_rows_to_encode",
           "encoding_identity", "without_embeddings", "check_out_for_encoding",
           "encode_inputs", "check_prompts", "resolve_prompts"]

#: where a job that encodes keeps its embeddings, inside its output directory
EMBEDDINGS_DIR = "embeddings"


# --------------------------------------------------------------------------------- steps
def queries_with_positives(indptr, *, all_queries: bool = False):
    """The query rows a job mines when its queries come from texts: those with a positive in
    the qrels (every row with ``all_queries=True``).

    Returns ``(rows, indptr)``: the kept rows (int64) and the CSR offsets of their positives
    (the positives' id array is unchanged: dropped rows hold none).
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    counts = np.diff(indptr)
    n = counts.size
    rows = (np.arange(n, dtype=np.int64) if all_queries
            else np.flatnonzero(counts > 0).astype(np.int64))
    if rows.size < n:
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts[rows], out=indptr[1:])
    return rows, indptr


def corpus_rows_to_encode(run_ids, positives, doc_texts, batch_size: int) -> np.ndarray:
    """The corpus rows re-scoring a run needs encoded: sorted int64 rows.

    Needed are the run's documents and the positives; encoded are the whole batches of the
    full corpus that hold one of them. sentence-transformers pads each batch to its longest
    text, so an embedding depends (at the float32 rounding level) on its batch mates; encoding
    those batches, in corpus order, gives each needed document the batch it has when the whole
    corpus is encoded (the length order of the subset is the concatenation of those batches,
    every batch but the last full), hence the same bits as encoding all.
    """
    from .encode import batch_order

    run_ids = np.asarray(run_ids)
    positives = np.asarray(positives)
    need = np.unique(np.concatenate([run_ids[run_ids >= 0],
                                     positives[positives >= 0]]).astype(np.int64))
    batch_of = np.empty(len(doc_texts), dtype=np.int64)
    batch_of[batch_order(doc_texts)] = np.arange(len(doc_texts), dtype=np.int64) // batch_size
    touched = np.zeros(int(batch_of.max()) + 1 if len(doc_texts) else 0, dtype=bool)
    touched[batch_of[need]] = True
    return np.flatnonzero(touched[batch_of]).astype(np.int64)


def check_prompts(*, query_prompt=None, query_prompt_name=None, doc_prompt=None,
                  doc_prompt_name=None) -> None:
    """A role's prompt is given as a text or as a name of the model's prompts, not both
    (:func:`simans_fast.encode.check_prompt_choice`, before any model is loaded)."""
    from .encode import check_prompt_choice

    for which, name, text in (("query", query_prompt_name, query_prompt),
                              ("doc", doc_prompt_name, doc_prompt)):
        check_prompt_choice(name, text, names=(f"{which}_prompt_name", f"{which}_prompt"))


def resolve_prompts(model, *, query_prompt_name=None, query_prompt=None, doc_prompt_name=None,
                    doc_prompt=None):
    """The query and document prompt texts, resolved as sentence-transformers does
    (:func:`simans_fast.encode.resolve_prompt`; errors name these parameters)."""
    from .encode import resolve_prompt

    return tuple(resolve_prompt(model, role, name, text,
                                names=(f"{which}_prompt_name", f"{which}_prompt"))
                 for which, role, name, text in (
                     ("query", "query", query_prompt_name, query_prompt),
                     ("doc", "document", doc_prompt_name, doc_prompt)))


def encoding_identity(model, query_prompt, doc_prompt, query_texts, doc_texts, *,
                      normalize_embeddings: bool = True, embedding_dtype: str = "float32",
                      all_queries: bool = False) -> dict:
    """The ``encode`` part of a job's identity: the model (weights digest and revision), the
    resolved prompts, the embeddings' settings and the texts' digests."""
    from .encode import model_identity, texts_sha256

    return {
        "model": model_identity(model),
        "query_prompt": query_prompt,
        "doc_prompt": doc_prompt,
        "normalize_embeddings": bool(normalize_embeddings),
        "embedding_dtype": embedding_dtype,
        "query_texts_sha256": texts_sha256(query_texts),
        "doc_texts_sha256": texts_sha256(doc_texts),
        "all_queries": bool(all_queries),
    }


def without_embeddings(identity):
    """A job identity minus the embedding fingerprints and what is resolved from them (the
    top-k's first pass): known only once a job has encoded."""
    if not isinstance(identity, dict):
        return {}
    out = dict(identity)
    out.pop("prefilter", None)  # resolved from the corpus embeddings (job_identity)
    inputs = out.get("inputs")
    if isinstance(inputs, dict):
        out["inputs"] = {k: v for k, v in inputs.items() if k not in ("queries", "corpus")}
    return out


def _out_error(message, out):
    return InputError(message, parameter="out", path=out)


def check_out_for_encoding(job, identity: dict, *, resume: bool = False,
                           overwrite: bool = False) -> None:
    """A job that encodes checks its output directory before its first write (as
    :meth:`MiningJob.prepare` does later): a run there (candidates, checkpoints or
    embeddings) needs ``resume=True`` or ``overwrite=True``; ``resume=True`` needs the same
    model identity, prompts, texts and parameters (``identity``, its embeddings unknown yet).
    """
    from .pipeline import identity_diff, read_job_file

    out = job.out
    emb = os.path.join(out, EMBEDDINGS_DIR)
    job.check_out()
    if os.path.lexists(emb) and not os.path.isdir(emb):
        raise _out_error(f"{out}: {emb} (the embeddings directory) is not a directory; move it "
                         "away or choose another output directory", out)
    if not (job.holds_run() or os.path.lexists(emb)):
        return
    if not resume and not overwrite:
        raise _out_error(f"{out}: already holds a run; pass resume=True to continue or reuse "
                         "it, overwrite=True to start again, or choose another output "
                         "directory", out)
    if overwrite:
        return
    old = job.recorded_identity()
    if old is None:
        old = read_job_file(os.path.join(emb, "job.json"))
    if old is None:
        return
    diff = identity_diff(without_embeddings(old), without_embeddings(identity))
    if diff:
        raise _out_error(f"{out}: holds a run made with a different model, prompts, texts or "
                         f"parameters ({', '.join(diff[:4])}); run it again with the same "
                         "arguments, use another output directory, or overwrite=True", out)


def _stat_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def encode_inputs(job, identity: dict, model, query_texts, doc_texts, *, query_prompt_name=None,
                  query_prompt=None, doc_prompt_name=None, doc_prompt=None, batch_size: int = 32,
                  device=None, normalize_embeddings: bool = True,
                  embedding_dtype: str = "float32", cache_folder=None, overwrite: bool = False,
                  progress: bool = False, log=None):
    """Encode the documents, then the queries, into ``job.out/embeddings`` (resumable; reused
    when complete). Returns ``(queries, corpus)``, memory-mapped.

    ``identity`` (the job's identity before encoding) is written to ``embeddings/job.json``
    first; ``overwrite=True`` removes the job's previous outputs first. ``log(line)`` gets a
    line before and after each matrix (what is encoded, its shape, texts/s or "reused").
    """
    import time

    from ._progress import fmt_time
    from .encode import encode
    from .formats.embeddings import check_finite
    from .store.atomic import atomic_write_text, json_dumps, remove_stale_temp_files

    say = log or (lambda _line: None)
    edir = os.path.join(job.out, EMBEDDINGS_DIR)
    # ---- the first change to the disk
    if overwrite:
        job.remove_outputs()
    os.makedirs(edir, exist_ok=True)
    remove_stale_temp_files(os.path.join(edir, "job.json"))
    atomic_write_text(os.path.join(edir, "job.json"), json_dumps(identity))
    common = dict(batch_size=batch_size, device=device,
                  normalize_embeddings=normalize_embeddings, dtype=embedding_dtype,
                  cache_folder=cache_folder, progress=progress)
    arrays = {}
    for name, texts, role, pname, ptext in (
            ("corpus", doc_texts, "document", doc_prompt_name, doc_prompt),
            ("queries", query_texts, "query", query_prompt_name, query_prompt)):
        path = os.path.join(edir, name + ".npy")
        what = "documents" if role == "document" else "queries"
        before = _stat_key(path)
        say(f"encoding {len(texts)} {what} ({role} role) -> {path}")
        t0 = time.perf_counter()
        arr = encode(model, texts, role=role, prompt_name=pname, prompt=ptext, out=path,
                     **common)
        dt = time.perf_counter() - t0
        reused = before is not None and before == _stat_key(path)
        say(f"  {arr.shape[0]} x {arr.shape[1]} {np.dtype(arr.dtype).name} "
            + ("(finished embeddings of the same model, prompt and texts reused)" if reused
               else f"in {fmt_time(dt)} ({len(texts) / max(dt, 1e-9):.0f} texts/s)"))
        check_finite(arr, path=path, parameter="model")
        arrays[name] = arr
    if job.callback is not None:
        job.callback("encoded", {"path": edir})
    return arrays["queries"], arrays["corpus"]


# --------------------------------------------------------------------------------- the call
def mine_texts(model, queries, corpus, qrels, out, *, k: int = 200, n: int = 15,
               a: float = 0.5, b: float = 0.0, kernel: str = "gaussian", score_scale=None,
               seed: int = 0, positive_choice: str = "random", fallback: str = "lowest",
               metric: str = "ip", backend: str = "auto", prefilter=None,
               all_queries: bool = False,
               skip_missing_qrels: bool = False, query_prompt=None, query_prompt_name=None,
               doc_prompt=None, doc_prompt_name=None, batch_size: int = 32, device=None,
               embedding_dtype: str = "float32", normalize_embeddings: bool = True,
               cache_folder=None, query_block=None, resume: bool = False,
               overwrite: bool = False, progress: bool = False, callback=None):
    """Encode query and document texts with a model, mine every query's candidates and save
    them, resumably, in ``out``: ``simans-fast mine --model`` as one call.

    Parameters
    ----------
    model : str, os.PathLike or SentenceTransformer
        A model object, or a local directory / a name in the Hugging Face cache
        (:func:`simans_fast.load_model`; ``HF_HUB_OFFLINE=1`` never downloads).
    queries, corpus : str or os.PathLike
        Texts files: JSONL (``_id``, ``text``, optional ``title``: BEIR's ``queries.jsonl`` and
        ``corpus.jsonl``) or TSV ``id<TAB>text``. Every record is kept, in file order; ids are
        single tokens, none twice, no text empty.
    qrels : str or os.PathLike
        TREC ``qid 0 docid rel`` or TSV ``qid<TAB>docid[<TAB>rel]``; ``rel > 0`` counts.
    out : str or os.PathLike
        Output directory: ``embeddings/``, then ``candidates/`` (the layout of
        :func:`simans_fast.save_candidates`, with the job's identity in its provenance).
    k : int, default=200
        Candidates per query, positives excluded.
    n, a, b, kernel, seed, positive_choice, fallback
        The SimANS parameter set recorded with the candidates (see :func:`simans_fast.mine`);
        draw any epoch later with ``sf.epoch_negatives(cand, epoch, cand.parameters)``.
    score_scale : float, optional
        Multiplier of the scores before the kernel; ``None``: 20 on normalised embeddings
        (cosines, the scale of MultipleNegativesRankingLoss, so ``a = 0.5`` is meaningful), 1
        otherwise.
    metric, backend : str
        Similarity and top-k backend (:func:`simans_fast.topk`).
    prefilter : {None, "none", "auto", "bfloat16"}, default=None
        First pass of the exact top-k (:func:`simans_fast.topk`), resolved once for the
        encoded corpus and recorded in the run's identity.
    all_queries : bool, default=False
        Mine every query of ``queries`` (default: only those with a positive in ``qrels``;
        queries without one get the ``fallback`` negatives).
    skip_missing_qrels : bool, default=False
        Drop judgements whose ids have no text instead of failing.
    query_prompt, query_prompt_name, doc_prompt, doc_prompt_name : str, optional
        A prompt text or a key of the model's prompts per role (not both); default: the
        model's query / document prompt, as sentence-transformers resolves it.
    batch_size, device, embedding_dtype, normalize_embeddings, cache_folder
        Encoding (:func:`simans_fast.encode_texts`); ``device`` a list encodes through
        sentence-transformers' multi-process pool.
    query_block : int, optional
        Queries per checkpointed block (results do not depend on it); ``None``: 4096.
    resume, overwrite : bool, default=False
        A run in ``out`` is continued or reused with ``resume=True`` (same inputs and
        parameters, checked), deleted first with ``overwrite=True``; otherwise refused.
    progress : bool, default=False
        Progress bars (texts/s while encoding, queries while mining).
    callback : callable, optional
        ``callback(point, info)`` at the job's points (:data:`pipeline.CALLBACK_POINTS` and
        ``"encoded"``).

    Returns
    -------
    CandidatesFile
        The saved candidates (memory-mapped): ``candidate_ids``, ``candidate_scores``,
        ``positive_ids``, ``positive_scores``, ``query_ids``, ``doc_ids``, ``parameters``.

    Raises
    ------
    ParameterError
        A bad value, named by its parameter (also ``n`` larger than ``k``).
    InputError
        A file that cannot be read as asked (naming the file, the line and the parameter), a
        qrels id with no text, or an ``out`` that holds another run.
    """
    from .candidates import resolve_prefilter
    from .diagnostics import default_score_scale, rank_room
    from .encode import load_model
    from .formats.texts import read_text_records
    from .formats.trec import read_qrels
    from .pipeline import (CANDIDATES_DIR, WORK_DIR, MiningJob, check_inputs_not_outputs,
                           job_identity, parameter_set, positive_matrix)
    from .store.candidates import load_candidates

    k = _validate.validate("k", k)
    query_block = _validate.validate("query_block", query_block)
    if query_block is None:  # recorded as given: the command line records its default too
        query_block = DEFAULT_QUERY_BLOCK
    for name, v in (("embedding_dtype", embedding_dtype), ("n", n), ("a", a), ("b", b), ("kernel", kernel), ("seed", seed),
                    ("positive_choice", positive_choice), ("fallback", fallback),
                    ("metric", metric), ("backend", backend), ("prefilter", prefilter)):
        _validate.validate(name, v)
    resolve_prefilter(prefilter, metric, backend)  # a combination it refuses fails here
    for name, v in (("all_queries", all_queries), ("skip_missing_qrels", skip_missing_qrels),
                    ("normalize_embeddings", normalize_embeddings), ("resume", resume),
                    ("overwrite", overwrite), ("progress", progress)):
        _validate.check_bool(v, name)
    if resume and overwrite:
        raise ParameterError("resume", "resume=True and overwrite=True: give one of them, not "
                                       "both")
    batch_size = _validate.check_int(batch_size, "batch_size", min=1)
    if score_scale is None:
        score_scale = default_score_scale(encoded=True, normalized=normalize_embeddings)
    _validate.check_real(score_scale, "score_scale", min=0.0, min_exclusive=True)
    params = parameter_set(n=n, a=a, b=b, kernel=kernel, seed=seed,
                           positive_choice=positive_choice, fallback=fallback,
                           score_scale=score_scale)
    if n > rank_room(params, k):
        raise ParameterError("n", f"n={n}: more negatives than the {k} candidates per query "
                                  f"(k={k}); lower n or raise k")
    out = os.fspath(out)
    qrels = os.fspath(qrels)
    check_inputs_not_outputs({"queries": queries, "corpus": corpus, "qrels": qrels,
                              "model": model},
                             [os.path.join(out, d) for d in (CANDIDATES_DIR, WORK_DIR,
                                                             EMBEDDINGS_DIR)])
    # ---- read and check every input before anything is written
    qids_all, qtexts_all = read_text_records(queries, what="query", parameter="queries")
    dids, dtexts = read_text_records(corpus, what="document", parameter="corpus")
    if k > len(dids):
        raise ParameterError("k", f"k={k}: larger than the corpus ({os.fspath(corpus)} holds "
                                  f"{len(dids)} documents); lower k")
    qindex = {s: i for i, s in enumerate(qids_all)}
    dindex = {s: i for i, s in enumerate(dids)}
    indptr, pids, qinfo = read_qrels(
        qrels, qindex, dindex, skip_missing=skip_missing_qrels, parameter="qrels",
        sources=(f"queries {os.fspath(queries)}", f"corpus {os.fspath(corpus)}"),
        skip_parameter="skip_missing_qrels")
    rows, indptr = queries_with_positives(indptr, all_queries=all_queries)
    qids = [qids_all[int(i)] for i in rows]
    qtexts = [qtexts_all[int(i)] for i in rows]
    del qtexts_all
    pos = positive_matrix(indptr, pids)
    if isinstance(model, (str, os.PathLike)) or model is None:  # a name or a directory
        model = load_model(model, device=device if isinstance(device, str) else None)
    qprompt, dprompt = resolve_prompts(model, query_prompt_name=query_prompt_name,
                                       query_prompt=query_prompt,
                                       doc_prompt_name=doc_prompt_name, doc_prompt=doc_prompt)
    extra = {"encode": encoding_identity(model, qprompt, dprompt, qtexts, dtexts,
                                         normalize_embeddings=normalize_embeddings,
                                         embedding_dtype=embedding_dtype,
                                         all_queries=all_queries)}

    def identity(q_emb, d_emb):
        first = None if d_emb is None else resolve_prefilter(prefilter, metric, backend, d_emb)
        return job_identity(queries=q_emb, corpus=d_emb, query_ids=qids, doc_ids=dids,
                            qrels=qrels, qrels_info=qinfo, skip_missing_qrels=skip_missing_qrels,
                            k=k, metric=metric, backend=backend, query_block=query_block,
                            parameters=params, extra=extra, prefilter=first)

    def make_job(ident):
        return MiningJob(out, ident, query_ids=qids, doc_ids=dids, positives=pos, k=k,
                         metric=metric, parameters=params, query_block=query_block,
                         callback=callback)

    partial = identity(None, None)
    job = make_job(partial)
    check_out_for_encoding(job, partial, resume=resume, overwrite=overwrite)
    q_emb, d_emb = encode_inputs(job, partial, model, qtexts, dtexts,
                                 query_prompt_name=query_prompt_name, query_prompt=query_prompt,
                                 doc_prompt_name=doc_prompt_name, doc_prompt=doc_prompt,
                                 batch_size=batch_size, device=device,
                                 normalize_embeddings=normalize_embeddings,
                                 embedding_dtype=embedding_dtype, cache_folder=cache_folder,
                                 overwrite=overwrite, progress=progress)
    del qtexts, dtexts, model
    job = make_job(identity(q_emb, d_emb))
    state = job.prepare(resume=resume, overwrite=overwrite)
    if state == "candidates":
        job.verify()
    else:
        job.scan()
        job.mine(q_emb, d_emb, (indptr, pids), backend=backend, progress=progress)
        job.assemble()
    job.remove_work()
    return load_candidates(job.candidates_path)

"""``simans-fast mine``: candidates (exact top-k, a run file, or texts encoded with a model)
and the negatives of epoch 0, resumable (:class:`simans_fast.pipeline.MiningJob`)."""

from __future__ import annotations

import argparse
import os
import time

from . import _encoding, _lib, _negatives, _sampling
from . import flags as _flags
from ._common import check_out_dir, fmt_time, note, note_compiling, say, want_progress
from .errors import CLIError, reading

NAME = "mine"
HELP = "candidates + epoch-0 negatives from embeddings, texts and a model, or a run file"

_NEG_BASE = "negatives.epoch0"
# every file name mine may write its epoch-0 negatives to (temp files of all are cleaned)
_NEG_NAMES = tuple(_NEG_BASE + e for e in (".jsonl", ".parquet", ".trec", ".tsv",
                                           ".corpus.jsonl"))


# --------------------------------------------------------------------------------- parser
def add_arguments(p, common) -> None:
    p.description = ("Mine candidates (exact top-k, positives removed, exact positive scores) "
                     "and write the negatives of epoch 0. Inputs: embeddings (--queries/"
                     "--corpus), or texts and a model (--model with --texts), or a run file "
                     "(--run).")
    p.add_argument("--queries", default=None, metavar="Q.npy",
                   help="query embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--corpus", default=None, metavar="C.npy",
                   help="document embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--query-ids", dest="query_ids", default=None, metavar="FILE",
                   help="one query id per line, row order of --queries")
    p.add_argument("--doc-ids", dest="doc_ids", default=None, metavar="FILE",
                   help="one document id per line, row order of --corpus")
    p.add_argument("--qrels", required=True, metavar="FILE",
                   help="TREC 'qid 0 docid rel' or TSV 'qid<TAB>docid[<TAB>rel]'; rel > 0 counts")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--k", type=int, default=200, help="candidates per query (default 200)")
    common.add_sampling(p, defaults=True)
    p.add_argument("--metric", choices=_flags.METRICS, default="ip",
                   help="similarity (default ip)")
    p.add_argument("--backend", choices=_flags.BACKENDS, default="auto",
                   help="top-k backend (default auto)")
    p.add_argument("--prefilter", choices=_flags.PREFILTERS, default="none",
                   help="first pass of the exact top-k: bfloat16 screens the corpus in "
                        "bfloat16, proves per query that nothing else reaches the top k and "
                        "rescores the rest exactly (faster on CPUs with AVX512-BF16 or AMX); "
                        "auto: bfloat16 on such CPUs; recorded in the run (default none)")
    p.add_argument("--format", choices=_flags.negatives_formats(), default=None,
                   help="format of the epoch-0 negatives file (default tevatron, which needs "
                        "texts or --ids-only)")
    common.add_texts(p)
    p.add_argument("--query-block", "--chunk-size", dest="query_block", type=int,
                   default=None, metavar="Q", action=_RenamedFlag, old=("--chunk-size",),
                   help="queries per checkpointed block (default "
                        f"{_default_block()}; results do not depend on it); --chunk-size is its "
                        "old name (deprecated)")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse) a run in --out made with the same arguments")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous run in --out first")
    p.add_argument("--skip-missing-qrels", dest="skip_missing_qrels", action="store_true",
                   help="drop qrels lines whose ids are not in the id lists instead of failing")
    g = p.add_argument_group(
        "from texts and a model (instead of --queries/--corpus; needs sentence-transformers)")
    g.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model (local directory, or a name in the Hugging "
                        "Face cache; HF_HUB_OFFLINE=1 never downloads): encodes the texts into "
                        "OUT/embeddings (resumable, reused by --resume); the ids come from the "
                        "texts")
    g.add_argument("--query-prompt", dest="query_prompt", default=None, metavar="TEXT",
                   help="prompt put before every query")
    g.add_argument("--query-prompt-name", dest="query_prompt_name", default=None,
                   metavar="NAME", help="a key of the model's prompts for the queries "
                                        "(default: the model's query prompt)")
    g.add_argument("--doc-prompt", dest="doc_prompt", default=None, metavar="TEXT",
                   help="prompt put before every document")
    g.add_argument("--doc-prompt-name", dest="doc_prompt_name", default=None, metavar="NAME",
                   help="a key of the model's prompts for the documents (default: the "
                        "model's document prompt)")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=None, metavar="B",
                   help="texts per forward pass (default 32)")
    g.add_argument("--device", nargs="+", default=None, metavar="DEV",
                   help="encoding device: cpu, cuda, cuda:N, mps; several run "
                        "sentence-transformers' multi-process pool")
    g.add_argument("--embedding-dtype", dest="embedding_dtype",
                   choices=_flags.EMBEDDING_DTYPES, default=None,
                   help="stored embeddings (default float32)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="unit-length embeddings, so scores are cosines (default: on)")
    g.add_argument("--cache-folder", dest="cache_folder", default=None, metavar="DIR",
                   help="also keep the embeddings in this cache (keyed by model weights, "
                        "prompt and texts; never stale)")
    g.add_argument("--all-queries", dest="all_queries", action="store_true",
                   help="when the query ids come from the texts, mine every query (default: "
                        "only those with a positive in --qrels)")
    g = p.add_argument_group("candidates from a run file (instead of top-k)")
    g.add_argument("--run", default=None, metavar="FILE",
                   help="TREC run 'qid Q0 docid rank score tag' or 'qid<TAB>docid<TAB>score' "
                        "(BM25, pyserini, Tevatron): its candidates, positives removed, each "
                        "query's --k best")
    g.add_argument("--run-format", dest="run_format", choices=("auto",) + _run_formats(),
                   default="auto", help="layout of --run (default: from its first line)")
    g.add_argument("--rescore", action="store_true",
                   help="score the run's candidates and the positives exactly with --model "
                        "(texts) or --queries/--corpus, and re-sort by those scores (default: "
                        "the run's own scores; a positive the run does not list has no score "
                        "and gets the --fallback)")
    common.add_common(p)


class _RenamedFlag(argparse.Action):
    """A flag with a deprecated old spelling: remembers which one was given (messages name it;
    a note says the new name once the run's checks have passed)."""

    def __init__(self, option_strings, dest, old=(), **kw):
        self.old = tuple(old)
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_flag", option_string)


def _deprecated_flags(args) -> None:
    flag = getattr(args, "query_block_flag", None)
    if flag == "--chunk-size":
        note("--chunk-size is deprecated and will be removed in the next release; use "
             "--query-block (same meaning)")


def _run_formats():
    from ..formats.runfile import RUN_FORMATS

    return tuple(RUN_FORMATS)


def _default_block() -> int:
    from .._config import DEFAULT_QUERY_BLOCK

    return DEFAULT_QUERY_BLOCK


# --------------------------------------------------------------------------------- checks
def validate(args) -> None:
    """The flags' values, before any file is read (the library's rules, said with flags)."""
    from .. import _validate

    for key, flag in (("k", "--k"),
                      ("query_block", getattr(args, "query_block_flag", None) or "--query-block")):
        v = getattr(args, key)
        if v is None:
            continue
        try:
            _validate.check_int(v, key, min=1)
        except _validate.ParameterError as e:
            raise CLIError(_flags.render(e, f"{flag} {v}")) from None
    if args.resume and args.overwrite:
        raise CLIError("--resume/--overwrite: give one of them, not both")
    if args.score_scale is None:
        model = args.model is not None and (args.run is None or args.rescore)
        args.score_scale = _default_score_scale(args, "texts" if model else "other")
    params = _sampling.sampling_params(args)
    _sampling.check_sampling_values(params)
    _sampling.check_feasible(params, args.k)


def _default_score_scale(args, route: str) -> float:
    """1 for raw scores (given embeddings, a run's own scores); 20 for cosines of a model
    (:func:`simans_fast.diagnostics.default_score_scale`)."""
    from ..diagnostics import default_score_scale

    return default_score_scale(encoded=route == "texts", normalized=args.normalize is not False)


def _route(args) -> str:
    """Check which inputs were given together; returns "embeddings", "texts" or "run".

    Where mine's candidates and scores come from:
    "embeddings": --queries/--corpus (+ --query-ids/--doc-ids), exact top-k (or --run --rescore)
    "texts":      --model + texts: encoded into OUT/embeddings, then as "embeddings"
    "run":        --run FILE alone: the run's candidates and scores (ids from files or texts)
    """
    from ..from_texts import check_prompts

    model = args.model is not None
    emb = args.queries is not None or args.corpus is not None
    run = args.run is not None
    if model and emb:
        raise CLIError("--model: give --model (mine encodes the texts) or --queries/--corpus "
                       "(embeddings you computed), not both")
    if emb:
        for flag, v in (("--queries", args.queries), ("--corpus", args.corpus),
                        ("--query-ids", args.query_ids), ("--doc-ids", args.doc_ids)):
            if v is None:
                raise CLIError(f"{flag}: required with --queries/--corpus (one file per "
                               "embeddings matrix and one id list per matrix); or give "
                               "--model NAME with texts to encode them")
    elif not model and not run:
        raise CLIError("--queries/--corpus: required (embeddings .npy with --query-ids/"
                       "--doc-ids), or --model NAME_OR_PATH with --texts DIR (or --query-texts/"
                       "--doc-texts) to encode texts, or --run FILE for a run's candidates")
    has_texts = _negatives.has_texts(args)
    if model:
        for flag, v in (("--query-ids", args.query_ids), ("--doc-ids", args.doc_ids)):
            if v is not None:
                raise CLIError(f"{flag}: with --model the ids come from the texts (their "
                               "order); drop it")
        if not has_texts:
            raise CLIError(f"--model {args.model}: needs the texts to encode: --texts DIR "
                           "(BEIR queries.jsonl, corpus.jsonl) or --query-texts FILE "
                           "--doc-texts FILE")
    else:
        for attr, flag in _encoding.ENCODE_FLAGS:
            if getattr(args, attr) is not None:
                raise CLIError(f"{flag}: applies when mine encodes texts (--model); drop it")
    try:
        check_prompts(**_encoding.prompt_kwargs(args))
    except _lib.LIBRARY_ERRORS as e:  # "query_prompt" / "doc_prompt"
        which = e.parameter.split("_", 1)[0]
        raise CLIError(f"--{which}-prompt/--{which}-prompt-name: the {which} prompt is "
                       "given twice; pass one of them") from None
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.rescore and not run:
        raise CLIError("--rescore: re-scores the candidates of --run FILE; give --run")
    if run and (model or emb) and not args.rescore:
        what = "--model" if model else "--queries/--corpus"
        raise CLIError(f"--run {args.run}: with {what}, pass --rescore to score the run's "
                       f"candidates with them (or drop {what} to sample on the run's own "
                       "scores)")
    if run and not (model or emb):
        if args.rescore:
            raise CLIError("--rescore: needs --model (with texts) or --queries/--corpus to "
                           "score with")
        if (args.query_ids is None) != (args.doc_ids is None):
            raise CLIError("--query-ids/--doc-ids: give both, or neither (the ids then come "
                           "from the texts)")
        if args.query_ids is None and not has_texts:
            raise CLIError(f"--run {args.run}: needs the query and document id lists "
                           "(--query-ids FILE --doc-ids FILE) or the texts (--texts DIR or "
                           "--query-texts/--doc-texts) that name them")
    if args.all_queries and (args.query_ids is not None or not has_texts):
        raise CLIError("--all-queries: applies when the query ids come from the texts "
                       "(--model, or --run without --query-ids)")
    if model:
        return "texts"
    return "embeddings" if emb else "run"


def _outputs(out: str):
    from ..from_texts import EMBEDDINGS_DIR
    from ..pipeline import CANDIDATES_DIR, WORK_DIR

    return [os.path.join(out, CANDIDATES_DIR), os.path.join(out, WORK_DIR),
            os.path.join(out, EMBEDDINGS_DIR)] + [os.path.join(out, n) for n in _NEG_NAMES]


def _check_inputs_not_outputs(args, out: str) -> None:
    """No input file lies where mine writes or deletes
    (:func:`simans_fast.pipeline.check_inputs_not_outputs`)."""
    from ..pipeline import check_inputs_not_outputs

    inputs = {name: getattr(args, name) for name in (
        "queries", "corpus", "query_ids", "doc_ids", "qrels", "query_texts", "doc_texts",
        "texts", "run", "model")}
    try:
        check_inputs_not_outputs(inputs, _outputs(out))
    except _lib.LIBRARY_ERRORS as e:
        raise CLIError(_flags.render(e)) from None


def _check_finite(arr, arg: str, path: str) -> None:
    with reading(arg):
        _lib.check_finite(arr, path=path)


#: how the run reader's parameters are given on this command line
_RUN_FLAGS = {"format": "--run-format"}
#: where mine's id lists come from, for a run line naming an id not in them
_RUN_ID_SOURCES = {"query": "is not one of the queries (--query-ids or the query texts)",
                   "document": "is not in the corpus (--doc-ids or the document texts)"}


def _run_error(e) -> str:
    unknown = getattr(e, "unknown", None)
    if unknown is not None:  # the reader's own id lists are mine's queries and corpus
        kind, id_ = unknown
        return f"--run {e.path}:{e.line}: {kind} id {id_!r} {_RUN_ID_SOURCES[kind]}"
    return _flags.render(e, "--run", _RUN_FLAGS)


def _read_run_rows(args, qids_all, dids, rows):
    """The run's candidates of query rows ``rows`` of ``qids_all``: (ids, scores), full depth."""
    import numpy as np

    from ..formats.runfile import read_run

    if os.path.isdir(args.run):
        raise CLIError(f"--run {args.run}: is a directory, expected a run file")
    try:
        run = read_run(args.run, dids, query_ids=qids_all, k=None, format=args.run_format)
    except _lib.LIBRARY_ERRORS as e:
        raise CLIError(_run_error(e)) from None
    if run.format is None or run.ids.shape[1] == 0:
        raise CLIError(f"--run {args.run}: holds no run lines; expected 'qid Q0 docid rank "
                       "score tag' or 'qid<TAB>docid<TAB>score'")
    ids = np.ascontiguousarray(run.ids[rows])
    scores = np.ascontiguousarray(run.scores[rows])
    if not (ids >= 0).any():
        raise CLIError(f"--run {args.run}: names none of the mined queries; use the run of "
                       "these queries")
    return ids, scores, run.format


def _job_identity(args, queries, corpus, qids, dids, qrels_info, extra=None):
    """What a run in --out is made from (:func:`simans_fast.pipeline.job_identity`);
    ``--resume`` continues only a run with the same one."""
    from ..pipeline import job_identity

    prefilter = None
    if corpus is not None and args.run is None:  # the first pass as resolved for this corpus
        from ..candidates import resolve_prefilter

        with reading("--prefilter"):
            prefilter = resolve_prefilter(args.prefilter, args.metric, args.backend, corpus)
    return job_identity(queries=queries, corpus=corpus, query_ids=qids, doc_ids=dids,
                        qrels=args.qrels, qrels_info=qrels_info,
                        skip_missing_qrels=args.skip_missing_qrels, k=args.k,
                        metric=args.metric, backend=args.backend, query_block=args.query_block,
                        parameters=_sampling.sampling_params(args), extra=extra,
                        prefilter=prefilter)


# --------------------------------------------------------------------------------- command
def run(args, callback=None) -> int:
    import numpy as np

    from ..from_texts import corpus_rows_to_encode, queries_with_positives
    from ..pipeline import MiningJob, epoch_negatives, positive_matrix, run_candidates

    t_start = time.perf_counter()
    progress = want_progress(args)
    fmt = _negatives.resolve_format(args.format, None)
    # ---- validate everything before writing anything: arguments first, then the files
    route = _route(args)
    _negatives.check_text_args(args)
    _negatives.check_format_options(args, fmt)
    if fmt == "sentence-transformers":
        try:
            import pyarrow.parquet  # noqa: F401

            ext = ".parquet"
        except ImportError:
            ext = ".jsonl"
    else:
        ext = _negatives.EXT[fmt]
    neg_name = _NEG_BASE + ext
    out = args.out
    check_out_dir(out, "--out")
    _check_inputs_not_outputs(args, out)
    if args.prefilter != "none":  # fails before anything is read or written
        if args.run is not None:
            raise CLIError(f"--prefilter {args.prefilter}: the first pass of the exact top-k; "
                           "--run gives the candidates, so there is no top-k: drop --prefilter")
        from ..candidates import resolve_prefilter

        with reading("--prefilter"):
            resolve_prefilter(args.prefilter, args.metric, args.backend)
    if args.backend == "faiss" and args.run is None:
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise CLIError("--backend faiss: faiss is not installed (pip install faiss-cpu); "
                           "or use --backend numba") from None
    queries = corpus = None
    qtexts = dtexts = None
    extra = {}
    if args.query_block is None:
        args.query_block = _default_block()
    if route == "embeddings":
        with reading("--queries"):
            queries = _lib.read_embeddings(args.queries)
        with reading("--corpus"):
            corpus = _lib.read_embeddings(args.corpus)
        if queries.shape[1] != corpus.shape[1]:
            raise CLIError(
                f"--queries {args.queries}: dimension {queries.shape[1]} differs from --corpus "
                f"{args.corpus} ({corpus.shape[1]}); embed queries and corpus with the same "
                "model")
    if args.query_ids is not None:  # ids from id files (embeddings, or a run with id lists)
        with reading("--query-ids"):
            qids = _lib.read_ids(args.query_ids)
        if queries is not None and len(qids) != queries.shape[0]:
            raise CLIError(
                f"--query-ids {args.query_ids}: {len(qids)} ids but --queries {args.queries} "
                f"has {queries.shape[0]} rows; give one id per embedding row, in row order")
        with reading("--doc-ids"):
            dids = _lib.read_ids(args.doc_ids)
        if corpus is not None and len(dids) != corpus.shape[0]:
            raise CLIError(
                f"--doc-ids {args.doc_ids}: {len(dids)} ids but --corpus {args.corpus} has "
                f"{corpus.shape[0]} rows; give one id per embedding row, in row order")
        qids_all = qids
        qlabel, dlabel = f"--query-ids {args.query_ids}", f"--doc-ids {args.doc_ids}"
    else:  # ids (and, with --model, the texts to encode) from the texts
        (qpath, qarg), (dpath, darg) = _negatives.text_sources(args)
        with reading(qarg):
            qids_all, qtexts_all = _lib.read_text_records(qpath, what="query")
        with reading(darg):
            dids, dtexts = _lib.read_text_records(dpath, what="document")
        qlabel, dlabel = f"{qarg} {qpath}", f"{darg} {dpath}"
    n_docs = len(dids)
    if args.run is None and args.k > n_docs:
        src = f"--corpus {args.corpus} has" if corpus is not None else f"{dlabel} holds"
        raise CLIError(f"--k {args.k}: larger than the corpus ({src} {n_docs} "
                       f"{'rows' if corpus is not None else 'documents'}); lower --k")
    qindex = {s: i for i, s in enumerate(qids_all)}
    dindex = {s: i for i, s in enumerate(dids)}
    with reading("--qrels"):  # the id lists are the files (or texts) they came from
        indptr, pids, qinfo = _lib.read_qrels(args.qrels, qindex, dindex,
                                              skip_missing=args.skip_missing_qrels,
                                              sources=(qlabel, dlabel))
    if args.query_ids is None:  # the queries with a positive (or all of them)
        sel, indptr = queries_with_positives(indptr, all_queries=args.all_queries)
        qids = [qids_all[int(i)] for i in sel]
        if route == "texts":
            qtexts = [qtexts_all[int(i)] for i in sel]
        del qtexts_all
    else:
        sel = np.arange(len(qids), dtype=np.int64)
        _negatives.check_text_coverage(args, qids, dids, qindex, dindex)
    if queries is not None:
        _check_finite(queries, "--queries", args.queries)
        _check_finite(corpus, "--corpus", args.corpus)
    pos = positive_matrix(indptr, pids)
    run_rows = None
    if args.run is not None:
        run_ids, run_scores, run_fmt = _read_run_rows(args, qids_all, dids, sel)
        run_rows = (run_ids, run_scores)
        extra["run"] = {"sha256": _lib.file_sha256(args.run), "format": run_fmt,
                        "rescore": bool(args.rescore)}

    def make_job(identity):
        return MiningJob(out, identity, query_ids=qids, doc_ids=dids, positives=pos, k=args.k,
                         metric=args.metric, parameters=identity["parameters"],
                         query_block=args.query_block, outputs=_NEG_NAMES, callback=callback)

    corpus_ids = None
    if route == "texts":
        if run_rows is not None and args.rescore:  # only the run's documents and the positives
            corpus_ids = corpus_rows_to_encode(run_rows[0], pos, dtexts, args.batch_size or 32)
            dtexts = [dtexts[int(j)] for j in corpus_ids]
            say(f"--rescore: encoding {len(dtexts)} of the {n_docs} documents (the batches "
                "that hold the run's documents and the positives)")
        if args.cache_folder is not None:
            check_out_dir(args.cache_folder, "--cache-folder")
        model = _encoding.load_model(args)
        qprompt, dprompt = _encoding.resolve_prompts(args, model)
        extra["encode"] = _encoding.encode_identity(args, model, qprompt, dprompt, qtexts,
                                                    dtexts)
        partial = _job_identity(args, None, None, qids, dids, qinfo, extra)
        job = make_job(partial)
        _encoding.precheck_out(job, partial, resume=args.resume, overwrite=args.overwrite)
        queries, corpus = _encoding.encode_all(args, model, job, partial, qtexts, dtexts,
                                               progress)
        del model
    qtexts = dtexts = None
    job = make_job(_job_identity(args, queries, corpus, qids, dids, qinfo, extra))
    with reading("--out"):
        state = job.prepare(resume=args.resume, overwrite=args.overwrite)
    if job.job_file_discarded:
        note(f"--resume: {os.path.join(job.work, 'job.json')} is unreadable; the unfinished "
             "run's checkpoints are discarded and mined again")
    cand = job.candidates_path
    cf = None
    if state == "candidates":
        with reading("--out"):
            cf = job.verify()
    if qinfo["n_skipped"]:
        note(f"--skip-missing-qrels: dropped {qinfo['n_skipped']} judgement(s) with unknown ids")
    n_q = len(qids)
    if args.query_ids is None and not args.all_queries and n_q < len(qids_all):
        note(f"{n_q} of the {len(qids_all)} queries of {qlabel} have a positive in --qrels; "
             "mining those (--all-queries mines every query)")
    counts = np.diff(indptr)
    no_pos = int(np.count_nonzero(counts == 0))
    if no_pos:
        note(f"{no_pos} of {n_q} queries have no positive in --qrels; they get the "
             f"'{args.fallback}' fallback negatives")
    block = None
    if run_rows is not None:
        no_cand = int(np.count_nonzero(~(run_rows[0] >= 0).any(axis=1)))
        if no_cand:
            note(f"--run {args.run}: {no_cand} of {n_q} queries have no candidate in it")
        block = run_candidates(run_rows[0], run_rows[1], pos, args.k,
                               queries=queries if args.rescore else None,
                               corpus=corpus if args.rescore else None, metric=args.metric,
                               corpus_ids=corpus_ids)
    _deprecated_flags(args)
    note_compiling()
    t_mine = t_asm = 0.0
    if state in ("fresh", "chunks"):
        t0 = time.perf_counter()
        job.scan()
        if job.chunks_reused:
            note(f"resuming: {job.chunks_reused} of {job.n_chunks} chunks already mined")
        if job.chunks_discarded:
            note(f"resuming: {job.chunks_discarded} damaged chunk checkpoint(s) discarded; "
                 "mining them again")
        job.mine(queries, corpus, (indptr, pids), backend=args.backend, block=block,
                 progress=progress, desc="run" if block is not None else "top-k")
        t_mine = time.perf_counter() - t0
        t0 = time.perf_counter()
        with reading("--out"):
            job.assemble()
        t_asm = time.perf_counter() - t0
        with reading("--out"):
            cf = _lib.load_candidates(cand)
    job.remove_work()
    # ---- epoch 0 negatives from the saved candidates (same code path as `sample`)
    t0 = time.perf_counter()
    neg = epoch_negatives(cf, 0, cf.parameters)
    t_draw = time.perf_counter() - t0
    _negatives.load_texts(args, neg)
    neg_path = os.path.join(out, neg_name)
    t0 = time.perf_counter()
    _negatives.write_epoch(neg_path, neg, fmt, args, progress)
    t_write = time.perf_counter() - t0
    if callback is not None:
        callback("negatives_written", {"path": neg_path})
    total = time.perf_counter() - t_start
    if state == "candidates":
        say(f"candidates already complete in {cand} (verified and reused)")
    elif run_rows is not None:
        how = (f"re-scored with {'--model' if route == 'texts' else '--queries/--corpus'}"
               if args.rescore else "with the run's scores")
        say(f"took {n_q} queries' candidates from --run {args.run} ({how}, positives "
            f"removed, k={args.k}) in {fmt_time(t_mine)} (assembly {fmt_time(t_asm)}) -> "
            f"{cand}")
    else:
        say(f"mined {n_q} queries x k={args.k} candidates over {n_docs} documents "
            f"in {fmt_time(t_mine)} (assembly {fmt_time(t_asm)}) -> {cand}")
    say(f"epoch 0: {neg.n} negatives per query drawn in {fmt_time(t_draw)}, written in "
        f"{fmt_time(t_write)} -> {neg_path} ({fmt})")
    _sampling.report_effective(cf, cf.parameters, "  ")
    say(f"total {fmt_time(total)}; other epochs: simans-fast sample --candidates {cand} "
        f"--epoch 1 --out FILE")
    return 0

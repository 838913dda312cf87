"""Writing one epoch's negatives: the format, the texts (--texts, --query-texts, --doc-texts,
--ids-only, --on-short) and the file (shared by ``mine`` and ``sample``)."""

from __future__ import annotations

import os

from . import _lib
from . import flags as _flags
from ._common import note
from .errors import CLIError, reading

#: file extension of each negatives format
EXT = {"tevatron": ".jsonl", "tevatron-legacy": ".jsonl", "sentence-transformers": ".parquet",
       "trec": ".trec", "simxns": ".tsv"}


def resolve_format(fmt: str | None, path: str | None) -> str:
    if fmt:
        return fmt
    if path:
        f = _lib.format_from_extension(path)
        if f:
            return f
    return "tevatron"


def check_parquet(path: str, arg: str) -> None:
    if path.lower().endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise CLIError(f"{arg} {path}: writing Parquet needs pyarrow (pip install pyarrow); "
                           "or name the file .jsonl") from None


def has_texts(args) -> bool:
    return any(x is not None for x in (args.texts, args.query_texts, args.doc_texts))


def check_text_args(args) -> None:
    for arg, path in (("--query-texts", args.query_texts), ("--doc-texts", args.doc_texts)):
        if path is None:
            continue
        if not os.path.exists(path):
            raise CLIError(f"{arg} {path}: file not found; check the path")
        if os.path.isdir(path):
            raise CLIError(f"{arg} {path}: is a directory, expected a file")
    if args.texts is not None:
        if not os.path.isdir(args.texts):
            raise CLIError(f"--texts {args.texts}: not a directory; pass a BEIR-style "
                           "folder with queries.jsonl and corpus.jsonl, or use "
                           "--query-texts/--doc-texts")
        for name in ("queries.jsonl", "corpus.jsonl"):
            if not os.path.isfile(os.path.join(args.texts, name)):
                raise CLIError(f"--texts {args.texts}: {name} not found in it; pass a "
                               "BEIR-style folder or use --query-texts/--doc-texts")
        if args.query_texts is not None or args.doc_texts is not None:
            raise CLIError("--texts: give either --texts DIR or --query-texts/--doc-texts, "
                           "not both")
    has_q = args.query_texts is not None or args.texts is not None
    has_d = args.doc_texts is not None or args.texts is not None
    if has_q != has_d:
        raise CLIError("--query-texts/--doc-texts: give both (or --texts DIR); texts are "
                       "written only when queries and documents both have them")


def check_format_options(args, fmt: str) -> None:
    """Texts / --ids-only / --on-short against the format, before anything is read or written."""
    has = has_texts(args)
    if args.on_short is not None and fmt != "sentence-transformers":
        raise CLIError(f"--on-short {args.on_short}: applies to --format "
                       f"sentence-transformers only (this run writes {fmt})")
    if args.ids_only:
        if has:
            raise CLIError("--ids-only: texts were given too (--texts/--query-texts/"
                           "--doc-texts); drop one or the other")
        if fmt == "tevatron-legacy":
            raise CLIError("--ids-only: --format tevatron-legacy holds passages (texts); for "
                           "id-only Tevatron records use --format tevatron --ids-only")
        if fmt not in ("tevatron", "sentence-transformers"):
            raise CLIError(f"--ids-only: applies to --format tevatron and "
                           f"sentence-transformers; --format {fmt} needs no texts")
        return
    if fmt in _lib.TEXT_FORMATS and not has:
        why = {"tevatron": "Tevatron 2.x trains on query_text and reads documents from a corpus "
                           "file; without them it trains on empty queries",
               "tevatron-legacy": "its passages hold texts",
               "sentence-transformers": "its trainer encodes the columns as texts"}[fmt]
        default = " (the default --format)" if args.format is None else ""
        alt = ("--format tevatron --ids-only" if fmt == "tevatron-legacy" else "--ids-only")
        raise CLIError(f"--format {fmt}{default}: needs query and document texts ({why}); "
                       f"pass --texts DIR or --query-texts FILE --doc-texts FILE, or {alt} to "
                       "write ids in their place, or --format trec|simxns")


def text_sources(args):
    """((path, flag) of the query texts, (path, flag) of the document texts), or None."""
    if not has_texts(args):
        return None
    if args.texts is not None:
        return ((os.path.join(args.texts, "queries.jsonl"), "--texts"),
                (os.path.join(args.texts, "corpus.jsonl"), "--texts"))
    return (args.query_texts, "--query-texts"), (args.doc_texts, "--doc-texts")


def check_text_coverage(args, qids, dids, qindex, dindex) -> None:
    """Every query and document id has a text (read and checked before anything is mined)."""
    import numpy as np

    src = text_sources(args)
    if src is None:
        return
    for (path, arg), ids, index, what, idflag in ((src[0], qids, qindex, "query", "--query-ids"),
                                                  (src[1], dids, dindex, "document",
                                                   "--doc-ids")):
        with reading(arg):
            found = _lib.text_coverage(path, index)
        if not found.all():
            miss = np.flatnonzero(~found)
            raise CLIError(
                f"{arg} {path}: no text for {miss.size} of the {len(ids)} {what} ids of "
                f"{idflag} (first: {ids[int(miss[0])]!r}); every {what} may be written, so each "
                "needs a text: use the texts of the same collection")


def load_texts(args, neg) -> None:
    """Attach the texts of the ids ``neg`` refers to (only those are kept in memory)."""
    src = text_sources(args)
    if src is None:
        return
    want_q, want_d = neg.needed_ids()
    (qpath, qarg), (dpath, darg) = src
    with reading(qarg):
        qt = _lib.read_texts(qpath, want_q)
    with reading(darg):
        dt = _lib.read_texts(dpath, want_d)
    for arg, path, want, got, what in ((qarg, qpath, want_q, qt, "query"),
                                       (darg, dpath, want_d, dt, "document")):
        missing = want - got.keys()
        if missing:
            first = sorted(missing)[0]
            raise CLIError(f"{arg} {path}: no text for {len(missing)} {what} id(s) "
                           f"(first: {first!r}); use the texts of the same collection")
    neg.query_texts = qt
    neg.doc_texts = dt


def write_epoch(path: str, neg, fmt: str, args, progress: bool) -> dict:
    """Write one epoch's negatives (remove the temp files an earlier kill left first)."""
    import warnings

    from ..store.atomic import remove_stale_temp_files

    on_short = args.on_short or "repeat"
    corpus = (_lib.tevatron_corpus_path(path) if fmt == "tevatron" and not args.ids_only
              else None)
    for p in (path, corpus):
        if p is not None:
            remove_stale_temp_files(p)
    with warnings.catch_warnings():  # the counts are reported below, in one line
        warnings.simplefilter("ignore", UserWarning)
        try:
            stats = _lib.write_negatives(path, neg, fmt, progress=progress,
                                         ids_only=args.ids_only, on_short=on_short,
                                         corpus_path=corpus)
        except (ValueError, TypeError) as e:  # checked before writing: said with the flags
            param = getattr(e, "parameter", None)
            if param is not None and param in _flags.FLAGS and param != "out":
                raise CLIError(f"--out {path}: {_flags.render(e)}") from None  # --on-short ...
            raise CLIError(_flags.render(e, "--out") if param is not None
                           else f"--out {path}: {_flags.to_flags(str(e))}") from None
    dropped = [f"{stats[k]} {what}" for k, what in (
        ("dropped_no_positive", "without a positive"),
        ("dropped_no_negative", "without any negative"),
        ("dropped_short", f"with fewer than n={neg.n} negatives (--on-short drop)")) if stats[k]]
    if dropped:
        note(f"{path}: {stats['rows']} of {stats['queries']} queries written; dropped "
             f"{', '.join(dropped)} ({fmt} rows need both)")
    if stats["short"] and fmt == "sentence-transformers":
        note(f"{path}: {stats['short']} row(s) had fewer than n={neg.n} negatives and were "
             "filled by repeating their own negatives (--on-short repeat)")
    return stats

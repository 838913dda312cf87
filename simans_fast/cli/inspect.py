"""``simans-fast inspect``: describe a candidates directory, a saved sampler or a negatives
file (with the effective number of SimANS candidates)."""

from __future__ import annotations

import json
import os

from . import _lib, _sampling
from ._common import note_compiling, resolve_candidates, say, short
from .errors import CLIError, reading

NAME = "inspect"
HELP = "describe a candidates directory or negatives file"


def add_arguments(p, common) -> None:
    p.add_argument("path", metavar="FILE_OR_DIR")
    p.add_argument("--rows", type=int, default=3, help="rows to show (default 3)")
    p.set_defaults(threads=None)


def _candidates(path: str, rows: int) -> None:
    import numpy as np

    with reading("inspect"):
        cf = _lib.load_candidates(path, verify=True)
    h = cf.header
    say(f"{path}: {h['format']} version {h['version']} (written by simans_fast "
        f"{h.get('simans_fast_version', '?')}; sha256 of every file verified)")
    say(f"  queries: {h['n_queries']}   candidates per query (k): {h['k']}   "
        f"max positives per query: {h['max_positives']}   corpus: {h['n_docs']} documents")
    params = h.get("parameters", {})
    say("  parameters: " + " ".join(f"{k}={params[k]}" for k in sorted(params)))
    for name, spec in h["arrays"].items():
        say(f"  {spec['file']}: shape {tuple(spec['shape'])} dtype {np.dtype(spec['dtype'])}")
    pos = np.asarray(cf.positive_ids)
    no_pos = int(np.count_nonzero((pos >= 0).sum(axis=1) == 0))
    n_short = int(np.count_nonzero((np.asarray(cf.candidate_ids) < 0).any(axis=1)))
    say(f"  queries without positives: {no_pos}   rows with fewer than k candidates: {n_short}")
    note_compiling()
    _sampling.report_effective(cf, params, "  ")
    for i in range(min(rows, cf.candidate_ids.shape[0])):
        p = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.positive_ids[i], cf.positive_scores[i]) if d >= 0]
        c = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.candidate_ids[i][:5], cf.candidate_scores[i][:5]) if d >= 0]
        say(f"  query {cf.query_ids[i]}: positives {', '.join(p) or '-'}; "
            f"top candidates {', '.join(c)}, ...")


def _sampler(path: str) -> None:
    mp = os.path.join(path, "meta.json")
    try:
        with open(mp, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise CLIError(f"inspect {mp}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError):
        raise CLIError(f"inspect {mp}: not valid UTF-8 JSON; the saved sampler is "
                       "damaged") from None
    if not isinstance(meta, dict):
        raise CLIError(f"inspect {mp}: not a JSON object; the saved sampler is damaged")
    say(f"{path}: {meta.get('format')} version {meta.get('version')} (a saved SimANSSampler)")
    say("  " + " ".join(f"{k}={short(meta[k])}" for k in sorted(meta, key=str)
                        if k not in ("format", "version")))


def _negatives(path: str, rows: int) -> None:
    with reading("inspect"):
        fmt = _lib.detect_format(path)
        if fmt == "tevatron-corpus":
            n = _lib.count_corpus_records(path)
            say(f"{path}: Tevatron corpus JSONL (docid, title, text): {n} documents")
            return
        recs = _lib.read_negatives(path, fmt)
    counts = [len(r["negatives"]) for r in recs]
    layout = ("Parquet" if path.lower().endswith(".parquet")
              else {"tevatron": "JSONL", "tevatron-legacy": "JSONL",
                    "sentence-transformers": "JSONL", "trec": "TREC run",
                    "simxns": "TSV"}[fmt])
    if fmt == "sentence-transformers":
        texts = "ids or texts (see rows)"
    elif fmt == "trec":
        texts = "no"
    else:
        texts = "yes" if any(r.get("query") for r in recs) else "no"
    say(f"{path}: {_lib.NEGATIVES_FORMAT_NAME} in format {fmt} ({layout})")
    say(f"  queries: {len(recs)}   negatives per query: "
        f"{'min ' + str(min(counts)) + ', max ' + str(max(counts)) if counts else '-'}   "
        f"texts: {texts}")
    for r in recs[:rows]:
        q = r["query_id"] if r["query_id"] is not None else short(r["query"], 40)
        pos = r["positives"]
        negs = r["negatives"]
        if fmt == "sentence-transformers":
            pos = [short(x, 30) for x in pos] if pos else pos
            negs = [short(x, 30) for x in negs]
        line = f"  query {q}:"
        if pos is not None:
            line += f" positives {pos};"
        line += f" negatives {negs[:6]}{' ...' if len(negs) > 6 else ''}"
        if r.get("negative_scores"):
            line += f" scores {[round(s, 4) for s in r['negative_scores'][:6]]}"
        say(line)


def run(args, callback=None) -> int:
    path = args.path
    if args.rows < 0:
        raise CLIError(f"--rows {args.rows}: must be >= 0")
    if not os.path.exists(path):
        raise CLIError(f"inspect {path}: not found; check the path")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "meta.json")) and not os.path.isfile(
                os.path.join(path, "header.json")):
            _sampler(path)
            return 0
        cand = resolve_candidates(path)
        _candidates(cand, args.rows)
        if cand != path:
            for name in sorted(os.listdir(path)):
                if name.startswith("negatives.") and os.path.isfile(os.path.join(path, name)):
                    say("")
                    _negatives(os.path.join(path, name), args.rows)
        return 0
    _negatives(path, args.rows)
    return 0

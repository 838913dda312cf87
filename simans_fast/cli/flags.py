"""The one table from a Python parameter name to its ``simans-fast`` flag, and the choices.

Library errors name the Python parameter (``ParameterError.parameter``) and speak Python
(``resume=True``, ``on_short='raise'``); the command line shows them with its flags
(``--resume``, ``--on-short raise``). Every message the CLI prints from a library error goes
through :func:`render`, which uses :data:`FLAGS` (or, for ``hn-mine``, :data:`HN_MINE_FLAGS`)
and nothing else. The choices of the flags come from the library's constants.
"""

from __future__ import annotations

import re

from .. import _config

#: Python parameter -> flag of simans-fast mine / sample / inspect / demo
FLAGS = {
    # sampling (sf.SimANSSampler, sf.select_negatives)
    "n": "--n", "a": "--a", "b": "--b", "kernel": "--kernel", "seed": "--seed",
    "positive_choice": "--positive-choice", "fallback": "--fallback",
    "score_scale": "--score-scale", "epoch": "--epoch",
    "strategy": "--strategy", "skip": "--skip", "window": "--window",
    "max_score": "--max-score", "margin": "--margin", "perc": "--perc",
    # mining (sf.mine_candidates, pipeline.MiningJob)
    "k": "--k", "metric": "--metric", "backend": "--backend", "prefilter": "--prefilter",
    "query_block": "--query-block", "chunk_size": "--query-block",
    "n_threads": "--threads", "threads": "--threads",
    "out": "--out", "resume": "--resume", "overwrite": "--overwrite",
    "skip_missing": "--skip-missing-qrels", "skip_missing_qrels": "--skip-missing-qrels",
    # inputs
    "queries": "--queries", "corpus": "--corpus", "query_ids": "--query-ids",
    "doc_ids": "--doc-ids", "qrels": "--qrels", "texts": "--texts",
    "query_texts": "--query-texts", "doc_texts": "--doc-texts", "candidates": "--candidates",
    "run": "--run", "run_format": "--run-format", "rescore": "--rescore",
    # outputs
    "format": "--format", "fmt": "--format", "ids_only": "--ids-only", "on_short": "--on-short",
    # encoding (simans_fast.encode)
    "model": "--model", "query_prompt": "--query-prompt",
    "query_prompt_name": "--query-prompt-name", "doc_prompt": "--doc-prompt",
    "doc_prompt_name": "--doc-prompt-name", "batch_size": "--batch-size", "device": "--device",
    "embedding_dtype": "--embedding-dtype", "normalize": "--normalize",
    "cache_folder": "--cache-folder", "all_queries": "--all-queries",
    # inspect, demo
    "rows": "--rows", "max_docs": "--max-docs",
}

#: Python parameter of simans_fast.hn_mine -> FlagEmbedding's hn_mine.py flag
HN_MINE_FLAGS = {
    "input_file": "--input_file", "output_file": "--output_file",
    "candidate_pool": "--candidate_pool", "model": "--embedder_name_or_path",
    "range_for_sampling": "--range_for_sampling", "negative_number": "--negative_number",
    "score_scale": "--score_scale", "search_device": "--devices", "device": "--devices",
    "cache_folder": "--cache_folder", "batch_size": "--batch_size",
    "pooling_method": "--pooling_method", "prefilter": "--prefilter",
}

# ---------------------------------------------------------------------------- choices
KERNELS = _config.KERNELS
FALLBACKS = _config.FALLBACKS
POSITIVE_CHOICES = _config.POSITIVE_CHOICES
STRATEGIES = _config.STRATEGIES
METRICS = _config.METRICS
BACKENDS = _config.BACKENDS
PREFILTERS = _config.PREFILTERS
#: stored embedding dtypes of simans_fast.encode
EMBEDDING_DTYPES = _config.EMBEDDING_DTYPES


def negatives_formats():
    """Formats of the negatives files (the library's registry)."""
    from . import _lib

    return _lib.NEGATIVES_FORMATS


def flag(parameter: str, table=None) -> str:
    """The flag of a Python parameter (``--`` + the name with dashes when not in the table)."""
    table = FLAGS if table is None else table
    return table.get(parameter) or "--" + parameter.replace("_", "-")


def to_flags(message: str, table=None) -> str:
    """Say the flags where a library message names Python settings of the table's parameters:
    ``resume=True`` -> ``--resume``, ``on_short='raise'`` -> ``--on-short raise``,
    ``k=30`` -> ``--k 30``."""
    table = FLAGS if table is None else table
    names = "|".join(sorted((re.escape(p) for p in table), key=len, reverse=True))
    pat = re.compile(r"(?<![\w.\-])(" + names + r")=('[^']*'|\"[^\"]*\"|[^\s,;:)\]]+)")

    def sub(m):
        f = table[m.group(1)]
        v = m.group(2)
        if v == "True":
            return f
        if v[:1] in "'\"":
            v = v[1:-1]
        return f"{f} {v}"

    return pat.sub(sub, message)


def render(err, flag_name: str | None = None, table=None) -> str:
    """One line for a library error in the CLI's terms: ``--flag <message>``.

    ``flag_name`` is the flag the CLI passed the value (a file) through; without it the flag
    of ``err.parameter`` is used. A message that begins with the file's path reads
    ``--flag PATH: ...``; any other ``--flag: ...``; one that names the flag already is kept.
    """
    table = FLAGS if table is None else table
    msg = " ".join(str(err).split())
    param = getattr(err, "parameter", None)
    if flag_name is None:
        if param is None or param not in table:
            return to_flags(msg, table)
        flag_name = table[param]
    msg = to_flags(msg, table)
    if msg.startswith(flag_name):
        return msg
    if param is not None and msg.startswith(param + " must "):  # "n must be >= 1, got 0"
        msg = msg[len(param) + 1:]
    path = getattr(err, "path", None)
    if (path and msg.startswith(str(path))) or _starts_with_token(msg):
        return f"{flag_name} {msg}"  # "--queries Q.npy: ...", "--window 'x': ..."
    return f"{flag_name}: {msg}"


def _starts_with_token(msg: str) -> bool:
    """``msg`` reads ``<one token>: ...`` (a path or a value, then what is wrong)."""
    head, sep, _ = msg.partition(": ")
    return bool(sep) and bool(head) and " " not in head

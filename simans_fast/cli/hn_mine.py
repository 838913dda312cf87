"""``simans-fast hn-mine``: :func:`simans_fast.hn_mine.hn_mine` with FlagEmbedding's
``hn_mine.py`` flags (both ``--flag_name`` and ``--flag-name``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .. import _config
from . import flags as _flags
from ._common import NoLoadBars, fmt_time, note_compiling, say, want_progress
from .errors import TRACEBACK_ENV, CLIError, one_line

NAME = "hn-mine"
HELP = "FlagEmbedding's hn_mine.py: JSONL in, the same JSONL with new 'neg' out"
#: hn-mine's errors name hn_mine's Python parameters; these are their flags
FLAG_TABLE = _flags.HN_MINE_FLAGS


def add_arguments(p, common) -> None:
    p.description = ("Mine hard negatives for a FlagEmbedding training file, with hn_mine.py's "
                     "flags (both --flag_name and --flag-name) and meaning (range_for_sampling "
                     "on raw retrieval ranks, candidate_pool), plus --strategy simans|top and a "
                     "seed.")
    add_hn_mine_arguments(p)
    common.add_common(p)


def _message(e) -> str:
    """hn_mine's errors name Python parameters; say the flag instead where it leads."""
    msg = one_line(str(e))
    param = getattr(e, "parameter", None)
    if param in FLAG_TABLE:
        return _flags.render(e, table=FLAG_TABLE)
    for param, flag in FLAG_TABLE.items():
        for sep in (" ", "="):
            if msg.startswith(param + sep) and not msg.startswith(flag):
                return flag + msg[len(param):]
    return _flags.to_flags(msg, FLAG_TABLE)


def run(args, callback=None) -> int:
    import warnings

    from ..diagnostics import FlatWeightsWarning
    from ..hn_mine import hn_mine

    t0 = time.perf_counter()
    try:
        kwargs = hn_mine_kwargs(args)
    except ValueError as e:
        raise CLIError(_message(e)) from None
    kwargs["progress"] = want_progress(args)
    say(f"hn-mine: {kwargs['input_file']} -> {kwargs['output_file']} with "
        f"{kwargs['model']} (strategy {kwargs['strategy']}, range {kwargs['range_for_sampling']},"
        f" {kwargs['negative_number']} negatives); loading the model and encoding ...")
    note_compiling()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlatWeightsWarning)
        try:
            with NoLoadBars():
                res = hn_mine(**kwargs)
        except (ValueError, TypeError) as e:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise CLIError(_message(e)) from None
    for w in caught:
        if issubclass(w.category, FlatWeightsWarning):
            print(f"simans-fast: warning: {one_line(w.message)} (--score_scale, --a)",
                  file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    say(f"{res.n_records} records, {res.n_corpus} corpus texts searched, "
        f"{res.mean_window:.1f} candidates per record in the window on average")
    say(f"padded {res.padded_records} record(s) with {res.padded_negatives} random "
        f"negative(s); {res.short_records} record(s) have fewer than "
        f"{kwargs['negative_number']} negatives (corpus too small)")
    if res.effective:
        e = res.effective
        say(f"SimANS effective candidates per record (exp entropy): mean "
            f"{e['mean_effective']:.1f}, median {e['median_effective']:.1f} of "
            f"{e['mean_valid']:.1f} valid (score_scale {kwargs['score_scale']:g})")
    say(f"wrote {res.output_file} in {fmt_time(time.perf_counter() - t0)}")
    return 0


# ----------------------------------------------------------------------------- command line
_MODEL_CLASSES = ("encoder-only-base", "encoder-only-m3", "decoder-only-base", "decoder-only-icl")
_SUPPORTED_CLASSES = ("encoder-only-base", "decoder-only-base")


def _str2bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {v!r}")


def _names(name):
    out = [f"--{name}"]
    if "_" in name:
        out.append(f"--{name.replace('_', '-')}")
    return out


def add_hn_mine_arguments(parser):
    """Add FlagEmbedding ``hn_mine.py``'s flags (and simans-fast's own) to an argparse parser.

    Flag names, spellings (``--input_file`` and ``--input-file``), boolean forms (``--flag``,
    ``--flag false``, ``--no_flag`` for those that default to true) and defaults follow
    FlagEmbedding 1.4's ``HfArgumentParser`` dataclasses, except where noted in the help:
    ``--pooling_method`` (the model's own pooling), ``--batch_size`` (256), and the maximum
    lengths (the model's own unless given). Returns the parser.
    """
    from ..hn_mine import DEFAULT_SCORE_SCALE, STRATEGIES

    def add(name, *extra, **kw):
        parser.add_argument(*_names(name), *extra, **kw)

    def add_bool(name, default, help):
        add(name, type=_str2bool, nargs="?", const=True, default=default, help=help)
        if default is True:
            parser.add_argument(f"--no_{name}", action="store_false", dest=name,
                                help=f"set {name} to false")

    add("input_file", required=True, help="FlagEmbedding JSONL: query, pos, neg, other keys")
    add("output_file", required=True, help="output JSONL: the same records with new 'neg'")
    add("candidate_pool", default=None, help='JSONL of {"text": ...} to search instead of the '
        "input's pos + neg texts")
    add("range_for_sampling", default="10-210", help="raw retrieval ranks lo-hi (0-based, hi "
        "exclusive; positives and the query's text count, then are dropped)")
    add("negative_number", type=int, default=15, help="negatives per record")
    add_bool("use_gpu_for_searching", False, "exact top-k with PyTorch on CUDA")
    add("search_batch_size", type=int, default=64, help="queries per top-k block")
    add("prefilter", default="none", choices=_config.PREFILTERS,
        help="first pass of the CPU top-k (simans_fast's; not FlagEmbedding's): bfloat16 "
        "screens in bfloat16 and rescores exactly (faster on CPUs with AVX512-BF16 or AMX); "
        "auto: bfloat16 on such CPUs")

    add("embedder_name_or_path", "--model_name_or_path", dest="embedder_name_or_path",
        required=True, help="sentence-transformers model name or directory")
    add("embedder_model_class", default=None, choices=_MODEL_CLASSES,
        help="accepted: encoder-only-base, decoder-only-base (the model loads through "
        "sentence-transformers with its own configuration); m3 / icl are not supported")
    add_bool("normalize_embeddings", True, "unit-length embeddings (cosine scores)")
    add("pooling_method", default=None, help="only the model's own pooling is supported; "
        "another value is an error (FlagEmbedding's default 'cls' is not assumed)")
    add_bool("use_fp16", True, "float16 model on CUDA (not applied on CPU, as FlagEmbedding)")
    add("devices", nargs="+", default=None, help="encoding device(s); several: multi-process")
    add("query_instruction_for_retrieval", default=None, help="instruction put before queries")
    add("query_instruction_format_for_retrieval", default="{}{}",
        help="format(instruction, query); '\\n' is read as a line break")
    add("examples_for_task", default=None, help="not supported (decoder-only-icl)")
    add("examples_instruction_format", default="{}{}", help="not supported (decoder-only-icl)")
    add_bool("trust_remote_code", False, "trust the model's remote code")
    add("cache_dir", default=None, help="model cache directory")
    add("batch_size", type=int, default=256, help="texts per forward pass (FlagEmbedding: 3000)")
    add("embedder_query_max_length", type=int, default=None,
        help="max tokens of a query (default: the model's max_seq_length)")
    add("embedder_passage_max_length", type=int, default=None,
        help="max tokens of a text (default: the model's max_seq_length)")

    add("strategy", default="random", choices=STRATEGIES,
        help="random (FlagEmbedding's), top, or simans inside the window")
    add("seed", type=int, default=0, help="seed of every random choice")
    add("a", type=float, default=0.5, help="SimANS a (on score_scale * cosine)")
    add("b", type=float, default=0.0, help="SimANS b (in scaled units)")
    add("kernel", default="gaussian", choices=_config.KERNELS, help="SimANS kernel")
    add("score_scale", type=float, default=DEFAULT_SCORE_SCALE,
        help="scores are multiplied by this before the SimANS kernel (20: MNRL's scale)")
    add_bool("output_scores", False, "write neg_scores and pos_scores (embedder scores)")
    add("cache_folder", default=None, help="embedding cache folder")
    return parser


def hn_mine_kwargs(args) -> dict:
    """Parsed flags (from :func:`add_hn_mine_arguments`) -> :func:`hn_mine` keyword arguments.

    Raises ValueError naming the flag for what cannot be honoured: ``--examples_for_task``,
    ``--embedder_model_class`` m3 / icl, non-positive sizes.
    """
    if args.examples_for_task is not None:
        raise ValueError("--examples_for_task: in-context examples (decoder-only-icl) are not "
                         "supported")
    if args.embedder_model_class not in (None,) + _SUPPORTED_CLASSES:
        raise ValueError(f"--embedder_model_class {args.embedder_model_class}: not supported "
                         f"(the model is loaded through sentence-transformers; accepted: "
                         f"{', '.join(_SUPPORTED_CLASSES)})")
    for flag in ("negative_number", "search_batch_size", "batch_size",
                 "embedder_query_max_length", "embedder_passage_max_length"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValueError(f"--{flag} {v}: must be a positive integer")
    fmt = args.query_instruction_format_for_retrieval
    if "\\n" in fmt:  # as FlagEmbedding's ModelArgs.__post_init__
        fmt = fmt.replace("\\n", "\n")
    devices = args.devices
    if devices is not None and len(devices) == 1:
        devices = devices[0]
    return dict(
        input_file=args.input_file, output_file=args.output_file,
        model=args.embedder_name_or_path, candidate_pool=args.candidate_pool,
        range_for_sampling=args.range_for_sampling, negative_number=args.negative_number,
        strategy=args.strategy, seed=args.seed, a=args.a, b=args.b, kernel=args.kernel,
        score_scale=args.score_scale,
        query_instruction_for_retrieval=args.query_instruction_for_retrieval,
        query_instruction_format=fmt, batch_size=args.batch_size,
        search_batch_size=args.search_batch_size,
        use_gpu_for_searching=args.use_gpu_for_searching, device=devices,
        normalize_embeddings=args.normalize_embeddings, use_fp16=args.use_fp16,
        pooling_method=args.pooling_method, query_max_length=args.embedder_query_max_length,
        passage_max_length=args.embedder_passage_max_length,
        trust_remote_code=args.trust_remote_code, cache_dir=args.cache_dir,
        cache_folder=args.cache_folder, output_scores=args.output_scores,
        prefilter=args.prefilter)

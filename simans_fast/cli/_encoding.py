"""``mine --model``: load a sentence-transformers model and encode the texts into
OUT/embeddings (resumable; reused when complete)."""

from __future__ import annotations

import time

from ._common import NoLoadBars, fmt_time, say
from . import _lib
from . import flags as _flags
from .errors import CLIError, reading

#: encoding flags (attribute of the parsed arguments, flag)
ENCODE_FLAGS = (("query_prompt", "--query-prompt"), ("query_prompt_name", "--query-prompt-name"),
                ("doc_prompt", "--doc-prompt"), ("doc_prompt_name", "--doc-prompt-name"),
                ("batch_size", "--batch-size"), ("device", "--device"),
                ("embedding_dtype", "--embedding-dtype"), ("normalize", "--normalize"),
                ("cache_folder", "--cache-folder"))


def devices(args):
    dev = args.device
    if dev is None:
        return None
    return dev[0] if len(dev) == 1 else list(dev)


def check_devices(args) -> None:
    for d in args.device or ():
        if d.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise CLIError(f"--device {d}: no CUDA device is available here; use "
                               "--device cpu")
            if ":" in d:
                idx = d.split(":", 1)[1]
                if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                    raise CLIError(f"--device {d}: there are {torch.cuda.device_count()} "
                                   "CUDA device(s)")
        elif d == "mps":
            import torch

            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                raise CLIError("--device mps: not available here; use --device cpu")
        elif d != "cpu":
            raise CLIError(f"--device {d}: expected cpu, cuda, cuda:N or mps")


def load_model(args):
    """Load --model (prints first: it can take a while); errors name the flag."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise CLIError(f"--model {args.model}: encoding needs sentence-transformers: "
                       'pip install "simans_fast[st]"') from None
    check_devices(args)
    from ..encode import load_model as _load

    dev = devices(args)
    say(f"loading model {args.model} ...")
    t0 = time.perf_counter()
    try:
        with NoLoadBars():
            model = _load(args.model, device=dev if isinstance(dev, str) else None)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("model "):
            msg = msg.split(": ", 1)[1] if ": " in msg else msg
        raise CLIError(f"--model {args.model}: {msg}") from None
    say(f"  loaded in {fmt_time(time.perf_counter() - t0)}")
    return model


def prompt_kwargs(args) -> dict:
    """The prompt flags as the library's keyword arguments."""
    return {key: getattr(args, key) for key in ("query_prompt", "query_prompt_name",
                                                "doc_prompt", "doc_prompt_name")}


def resolve_prompts(args, model):
    """The query and document prompt texts (:func:`simans_fast.from_texts.resolve_prompts`)."""
    from ..from_texts import resolve_prompts as _resolve

    try:
        return _resolve(model, **prompt_kwargs(args))
    except _lib.LIBRARY_ERRORS as e:
        raise CLIError(_flags.render(e)) from None


def encode_identity(args, model, qprompt, dprompt, qtexts, dtexts) -> dict:
    from ..from_texts import encoding_identity

    return encoding_identity(model, qprompt, dprompt, qtexts, dtexts,
                             normalize_embeddings=args.normalize is not False,
                             embedding_dtype=args.embedding_dtype or "float32",
                             all_queries=bool(args.all_queries))


def precheck_out(job, partial: dict, *, resume: bool, overwrite: bool) -> None:
    """A job that encodes checks --out before its first write
    (:func:`simans_fast.from_texts.check_out_for_encoding`)."""
    from ..from_texts import check_out_for_encoding

    with reading("--out"):
        check_out_for_encoding(job, partial, resume=resume, overwrite=overwrite)


def encode_all(args, model, job, partial, qtexts, dtexts, progress):
    """Encode queries and documents into OUT/embeddings (resumable; reused when complete):
    :func:`simans_fast.from_texts.encode_inputs`."""
    from ..from_texts import encode_inputs

    with reading("--model"):
        return encode_inputs(job, partial, model, qtexts, dtexts, **prompt_kwargs(args),
                             batch_size=args.batch_size or 32, device=devices(args),
                             normalize_embeddings=args.normalize is not False,
                             embedding_dtype=args.embedding_dtype or "float32",
                             cache_folder=args.cache_folder, overwrite=args.overwrite,
                             progress=progress, log=say)

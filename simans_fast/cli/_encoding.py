"""``mine --model``: load a sentence-transformers model and encode the texts into
OUT/embeddings (resumable; reused when complete)."""

from __future__ import annotations

import os
import time

from ._common import NoLoadBars, fmt_time, say
from . import _lib
from .errors import CLIError, reading

EMBEDDINGS_DIR = "embeddings"

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


def resolve_prompts(args, model):
    """The query and document prompt texts (resolved as sentence-transformers does)."""
    from ..encode import resolve_prompt

    prompts = dict(getattr(model, "prompts", None) or {})
    out = {}
    for which, role in (("query", "query"), ("doc", "document")):
        name = getattr(args, f"{which}_prompt_name")
        if name is not None and name not in prompts:
            raise CLIError(f"--{which}-prompt-name {name}: not one of the model's prompts "
                           f"({', '.join(sorted(prompts)) or 'it has none'}); use "
                           f"--{which}-prompt TEXT for a prompt of your own")
        out[which] = resolve_prompt(model, role, name, getattr(args, f"{which}_prompt"))
    return out["query"], out["doc"]


def encode_identity(args, model, qprompt, dprompt, qtexts, dtexts) -> dict:
    from ..encode import model_identity, texts_sha256

    return {
        "model": model_identity(model),
        "query_prompt": qprompt,
        "doc_prompt": dprompt,
        "normalize_embeddings": args.normalize is not False,
        "embedding_dtype": args.embedding_dtype or "float32",
        "query_texts_sha256": texts_sha256(qtexts),
        "doc_texts_sha256": texts_sha256(dtexts),
        "all_queries": bool(args.all_queries),
    }


def without_embeddings(job):
    """A job identity minus the embedding fingerprints (known only once a job has encoded)."""
    if not isinstance(job, dict):
        return {}
    out = dict(job)
    inputs = out.get("inputs")
    if isinstance(inputs, dict):
        out["inputs"] = {k: v for k, v in inputs.items() if k not in ("queries", "corpus")}
    return out


def precheck_out(job, partial: dict, *, resume: bool, overwrite: bool) -> None:
    """A job that encodes checks --out before its first write (as MiningJob.prepare does
    later): a run there (candidates, checkpoints or embeddings) needs --resume or --overwrite;
    --resume needs the same model identity, prompts, texts and parameters."""
    from ..pipeline import identity_diff, read_job_file

    out = job.out
    emb = os.path.join(out, EMBEDDINGS_DIR)
    with reading("--out"):
        job.check_out()
    if os.path.lexists(emb) and not os.path.isdir(emb):
        raise CLIError(f"--out {out}: {emb} (the embeddings directory) is not a directory; "
                       "move it away or choose another --out")
    if not (job.holds_run() or os.path.lexists(emb)):
        return
    if not resume and not overwrite:
        raise CLIError(f"--out {out}: already holds a run; pass --resume to continue or reuse "
                       "it, --overwrite to start again, or choose another --out")
    if overwrite:
        return
    with reading("--out"):
        old = job.recorded_identity()
    if old is None:
        old = read_job_file(os.path.join(emb, "job.json"))
    if old is None:
        return
    diff = identity_diff(without_embeddings(old), without_embeddings(partial))
    if diff:
        raise CLIError(f"--out {out}: holds a run made with a different model, prompts, texts "
                       f"or parameters ({', '.join(diff[:4])}); re-run with the same "
                       "arguments, use another --out, or --overwrite")


def _stat_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def encode_all(args, model, job, partial, qtexts, dtexts, progress):
    """Encode queries and documents into OUT/embeddings (resumable; reused when complete)."""
    import numpy as np

    from ..encode import encode
    from ..store.atomic import atomic_write_text, json_dumps, remove_stale_temp_files

    edir = os.path.join(job.out, EMBEDDINGS_DIR)
    # ---- the first change to the disk
    if args.overwrite:
        job.remove_outputs()
    os.makedirs(edir, exist_ok=True)
    remove_stale_temp_files(os.path.join(edir, "job.json"))
    atomic_write_text(os.path.join(edir, "job.json"), json_dumps(partial))
    common = dict(batch_size=args.batch_size or 32, device=devices(args),
                  normalize_embeddings=args.normalize is not False,
                  dtype=args.embedding_dtype or "float32", cache_folder=args.cache_folder,
                  progress=progress)
    arrays = {}
    for name, texts, role, pname, ptext in (
            ("corpus", dtexts, "document", args.doc_prompt_name, args.doc_prompt),
            ("queries", qtexts, "query", args.query_prompt_name, args.query_prompt)):
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
        with reading("--model"):
            _lib.check_finite(arr, path=path)
        arrays[name] = arr
    if job.callback is not None:
        job.callback("encoded", {"path": edir})
    return arrays["queries"], arrays["corpus"]

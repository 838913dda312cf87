"""Texts to embeddings with sentence-transformers: offline, chunked to disk, resumable, cached.

sentence-transformers (and torch) are an optional extra (``pip install "simans_fast[st]"``) and
are imported only inside the functions here: ``import simans_fast.encode`` imports numpy only.

* :func:`load_model` loads a model by name or local directory, offline when ``HF_HUB_OFFLINE=1``
  (an unknown name or a missing path is a ``ValueError`` naming ``model``).
* :func:`model_identity` describes a model: its name or path, revision / commit, and sha256
  digests of its weights (every tensor of its ``state_dict``) and of its configuration
  (module configs, tokenizer), so that a changed model never matches an old one.
* :func:`encode` encodes queries (``model.encode_query``) or documents
  (``model.encode_document``) with prompts, in batches, on one device or through
  sentence-transformers' own multi-process pool, into memory, into a memory-mapped ``.npy``
  (``out``; resumable after a kill) and/or into a cache (``cache_folder``) keyed by everything
  the embeddings depend on.

Batches are formed once over all the texts, longest first (a stable sort by character length,
as sentence-transformers does inside one ``encode`` call), and every batch is encoded on its
own. The embedding of a text therefore depends only on the texts and ``batch_size``, never on
``chunk_size``, on where a run was interrupted, or on the number of processes (up to the
floating-point effect of the per-process thread count on the matrix products).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings

import numpy as np

from ._config import EMBEDDING_DTYPES
from ._progress import progress_bar
from ._validate import ParameterTypeError
from .store.atomic import AtomicFile, atomic_save_npy, atomic_write_text, commit_file

__all__ = [
    "load_model",
    "model_identity",
    "encode",
    "encode_texts",
    "encode_chunks",
    "batch_order",
    "embedding_key",
    "texts_sha256",
    "ENCODE_FORMAT",
    "ENCODE_VERSION",
]

ENCODE_FORMAT = "simans-fast-embeddings"
CHECKPOINT_FORMAT = "simans-fast-embeddings-checkpoint"
ENCODE_VERSION = 1
ROLES = ("query", "document", None)
_DTYPES = {name: np.dtype(name).type for name in EMBEDDING_DTYPES}
_DEFAULT_CHUNK_BATCHES = 16  # default chunk_size = 16 batches (per process)

_ST_HINT = 'sentence-transformers is needed: pip install "simans_fast[st]"'


def _import_st():
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - the extra is installed in CI
        raise ImportError(_ST_HINT) from e
    return sentence_transformers


# --------------------------------------------------------------------------- models
def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or os.path.exists(name)
    )


def load_model(model_name_or_path, *, device=None, trust_remote_code=False, revision=None,
               cache_folder=None, local_files_only=None, **model_kwargs):
    """Load a sentence-transformers model by Hub name or local directory.

    Parameters
    ----------
    model_name_or_path : str, os.PathLike or model
        A local model directory, or a Hub name found in the local Hugging Face cache (nothing
        is downloaded when ``HF_HUB_OFFLINE=1``). A model object is returned unchanged.
    device : str, optional
        Passed to ``SentenceTransformer`` (``None``: its default, a GPU when there is one).
    trust_remote_code, revision, cache_folder : optional
        Passed to ``SentenceTransformer``.
    local_files_only : bool, optional
        Passed to ``SentenceTransformer`` when given (``None``: follow ``HF_HUB_OFFLINE``).
    **model_kwargs
        Other ``SentenceTransformer`` keyword arguments (``prompts``, ``truncate_dim``,
        ``model_kwargs={"torch_dtype": ...}``, ``backend``, ...).

    Returns
    -------
    sentence_transformers.SentenceTransformer

    Raises
    ------
    ValueError
        ``model``: a path that is missing or not a model directory, or a name that is neither
        a local directory nor in the Hugging Face cache.
    """
    if not isinstance(model_name_or_path, (str, os.PathLike)):
        if model_name_or_path is None or not (
            hasattr(model_name_or_path, "encode") or hasattr(model_name_or_path, "encode_document")
        ):
            raise TypeError(
                f"model: expected a model name, a model directory or a model object, got "
                f"{type(model_name_or_path).__name__}"
            )
        return model_name_or_path
    name = os.fspath(model_name_or_path)
    if not name:
        raise ValueError("model: an empty model name")
    path = os.path.expanduser(name)
    if _looks_like_path(name):
        if not os.path.exists(path):
            raise ValueError(f"model {name!r}: no such model directory")
        if not os.path.isdir(path):
            raise ValueError(f"model {name!r}: is a file, expected a model directory")
        if not any(os.path.exists(os.path.join(path, f)) for f in ("modules.json", "config.json")):
            raise ValueError(
                f"model {name!r}: not a model directory (neither modules.json nor config.json)")
        path = os.path.abspath(path)
    _import_st()
    from sentence_transformers import SentenceTransformer

    kwargs = dict(model_kwargs)
    if local_files_only is not None:
        kwargs["local_files_only"] = bool(local_files_only)
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code,
                                    revision=revision, cache_folder=cache_folder, **kwargs)
    except OSError as e:  # includes FileNotFoundError and huggingface_hub's lookup errors
        offline = os.environ.get("HF_HUB_OFFLINE", "")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"model {name!r}: not a local model directory and not found in the Hugging Face "
            f"cache (HF_HUB_OFFLINE={offline or 'unset'}): {first}"
        ) from e
    model._simans_fast_source = {"name_or_path": path, "revision": revision}
    return model


def _sha256_json(obj) -> str:
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def _weights_sha256(model) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor of ``model.state_dict()``."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            h.update(repr((name, t)).encode("utf-8"))
            continue
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode("utf-8"))
        t = t.contiguous().cpu().reshape(-1)
        try:
            b = t.view(torch.uint8).numpy()
        except (RuntimeError, TypeError):  # pragma: no cover - exotic (e.g. quantized) tensors
            b = np.frombuffer(bytes(t.untyped_storage()), np.uint8)
        h.update(memoryview(b))
    return h.hexdigest()


def _config_sha256(model) -> str:
    """sha256 of what else shapes the embeddings: module classes and configs, the tokenizer."""
    parts = [f"{type(model).__module__}.{type(model).__qualname__}"]
    try:
        modules = list(model)
    except TypeError:
        modules = []
    for m in modules:
        cfg = None
        if hasattr(m, "get_config_dict"):
            try:
                cfg = m.get_config_dict()
            except Exception:  # pragma: no cover - a module without a serialisable config
                cfg = None
        parts.append([f"{type(m).__module__}.{type(m).__qualname__}", cfg])
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "to_str"):
            tj = json.loads(backend.to_str())
            # truncation / padding are runtime state (set on each call from max_seq_length,
            # which is keyed on its own): leaving them in would change the digest after use
            tj.pop("truncation", None)
            tj.pop("padding", None)
            parts.append(["tokenizer", _sha256_json(tj)])
        elif hasattr(tok, "get_vocab"):
            parts.append(["vocab", sorted(tok.get_vocab().items())])
        parts.append(["tokenizer_class", type(tok).__name__])
    config = getattr(model, "config", None) if not modules else _hf_config(model)
    if config is not None and hasattr(config, "to_dict"):
        d = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "_commit_hash")}
        parts.append(["hf_config", d])
    return _sha256_json(parts)


def _hf_config(model):
    try:
        tm = getattr(model, "transformers_model", None)
    except Exception:  # pragma: no cover
        tm = None
    return getattr(tm, "config", None)


def model_identity(model) -> dict:
    """What identifies a model's embeddings.

    Returns
    -------
    dict
        ``class``, ``name_or_path``, ``revision`` (as requested), ``commit`` (the Hub commit when
        known), ``weights_sha256`` (every tensor of the ``state_dict``, so a perturbed or
        re-trained model saved over the same directory differs), ``config_sha256`` (module
        configs, tokenizer, transformers config), ``max_seq_length``, ``truncate_dim``.

    Raises
    ------
    TypeError
        ``model`` is not a torch module (its weights cannot be digested).
    """
    if not hasattr(model, "state_dict"):
        raise TypeError(
            f"model: cannot identify a {type(model).__name__} (no state_dict); out= and "
            "cache_folder= need a sentence-transformers (torch) model")
    src = getattr(model, "_simans_fast_source", None) or {}
    config = _hf_config(model)
    name = src.get("name_or_path")
    if name is None and config is not None:
        name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    if name is None:
        card = getattr(model, "model_card_data", None)
        name = getattr(card, "model_id", None) or getattr(card, "base_model", None)
    commit = getattr(config, "_commit_hash", None) if config is not None else None
    if commit is None and name:
        m = re.search(r"snapshots[/\\]([0-9a-f]{40})", str(name))
        commit = m.group(1) if m else None
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "name_or_path": None if name is None else str(name),
        "revision": src.get("revision"),
        "commit": commit,
        "weights_sha256": _weights_sha256(model),
        "config_sha256": _config_sha256(model),
        "max_seq_length": getattr(model, "max_seq_length", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }


def _embedding_dim(model):
    for meth in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        f = getattr(model, meth, None)
        if f is not None:
            try:
                d = f()
            except Exception:  # pragma: no cover
                d = None
            if d is not None:
                return int(d)
    return None


# --------------------------------------------------------------------------- texts
def _check_texts(texts, *, digest: bool):
    """Validate ``texts``; return (list, lengths, sha256 or None)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts: expected a sequence of str, got a single string; wrap it in a list")
    if not isinstance(texts, list):
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"texts: expected a sequence of str, got {type(texts).__name__}") from None
    h = hashlib.sha256() if digest else None
    ok = all(isinstance(t, str) for t in texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) if ok else None
    if not ok or (lengths.size and not lengths.min()):
        for i, t in enumerate(texts):      # the first bad text, for the message
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}]: expected a non-empty str, got {type(t).__name__}")
            if not t:
                raise ValueError(f"texts[{i}]: an empty string (every text must be non-empty)")
    if h is not None:
        for t in texts:
            b = t.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return texts, lengths, (h.hexdigest() if h is not None else None)


def texts_sha256(texts) -> str:
    """sha256 of a list of texts (length-prefixed UTF-8, in order): the texts part of the key."""
    return _check_texts(texts, digest=True)[2]


# --------------------------------------------------------------------------- arguments
def check_prompt_choice(prompt_name, prompt, *, names=("prompt_name", "prompt")) -> None:
    """A prompt is given as a text or as a name of the model's prompts, not both; each a str.
    ``names``: the caller's parameters for the two (errors name them)."""
    from ._validate import ParameterError

    pn, pt = names
    if prompt is not None and prompt_name is not None:
        raise ParameterError(pt, f"{pt} and {pn}: give one of them, not both (the prompt is "
                                 "given twice)")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"{pt}: expected a str, got {type(prompt).__name__}")
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise TypeError(f"{pn}: expected a str, got {type(prompt_name).__name__}")


def resolve_prompt(model, role, prompt_name, prompt, *, names=("prompt_name", "prompt")):
    """The prompt text that will be prepended, resolved as sentence-transformers does.

    ``names``: the caller's parameters for ``prompt_name`` and ``prompt`` (errors name them).
    """
    from ._validate import ParameterError

    check_prompt_choice(prompt_name, prompt, names=names)
    prompts = dict(getattr(model, "prompts", None) or {})
    if prompt_name is not None and prompt_name not in prompts:
        pn, pt = names
        raise ParameterError(
            pn, f"{pn}={prompt_name!r}: not one of the model's prompts "
                f"({', '.join(sorted(prompts)) or 'it has none'}); use {pt}=TEXT for a prompt "
                "of your own")
    if prompt is None and prompt_name is None:
        if role == "query" and "query" in prompts:
            prompt_name = "query"
        elif role == "document":
            prompt_name = next((p for p in ("document", "passage", "corpus") if p in prompts), None)
    if prompt is None:
        if prompt_name is not None:
            prompt = prompts[prompt_name]
        else:
            default = getattr(model, "default_prompt_name", None)
            prompt = prompts.get(default) if default is not None else None
    return prompt


def _check_args(role, dtype, batch_size, chunk_size, device, pool, normalize_embeddings, out):
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected 'query', 'document' or None")
    from ._validate import check_bool, check_int, validate

    key = np.dtype(dtype).name if isinstance(dtype, (type, np.dtype)) else dtype
    validate("embedding_dtype", key, parameter="dtype")

    batch_size = check_int(batch_size, "batch_size", min=1)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", min=1, allow_none=True)
        if chunk_size % batch_size:
            raise ValueError(
                f"chunk_size {chunk_size}: must be a multiple of batch_size {batch_size} "
                "(batches never straddle chunks, so results do not depend on the chunking)")
        chunk_size = int(chunk_size)
    check_bool(normalize_embeddings, "normalize_embeddings")
    if isinstance(device, (list, tuple)):
        if not device:
            raise ValueError("device: an empty list of devices")
        if pool is not None:
            raise ValueError("device and pool: give a list of devices or a pool, not both")
        for d in device:
            if not isinstance(d, str) and type(d).__name__ != "device":
                raise TypeError(f"device: expected str or torch.device entries, got {type(d).__name__}")
        device = [str(d) for d in device]
    elif device is not None and not isinstance(device, str) and type(device).__name__ != "device":
        raise TypeError(f"device: expected a str, a torch.device or a list of them, got {type(device).__name__}")
    if out is not None:
        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out: expected a path, got {type(out).__name__}")
        out = os.fspath(out)
        if not out.endswith(".npy"):
            raise ValueError(f"out {out!r}: expected a path ending in .npy")
        if os.path.isdir(out):
            raise ValueError(f"out {out!r}: is a directory")
    return key, batch_size, chunk_size, device, out


def embedding_key(model, texts, *, role="document", prompt_name=None, prompt=None,
                  normalize_embeddings=True, dtype="float32") -> dict:
    """The cache key of :func:`encode`: every input the stored embeddings depend on.

    ``{"format", "version", "model": model_identity(model), "role", "prompt" (the resolved
    prompt text), "normalize_embeddings", "dtype", "max_seq_length", "n_texts",
    "texts_sha256"}``; ``batch_size`` is not part of it (it only changes the last bits).
    """
    dkey, *_ = _check_args(role, dtype, 1, None, None, None, normalize_embeddings, None)
    texts, _, digest = _check_texts(texts, digest=True)
    model = load_model(model)
    return _key(model, len(texts), digest, role, resolve_prompt(model, role, prompt_name, prompt),
                bool(normalize_embeddings), dkey)


def _key(model, n, digest, role, prompt, normalize, dkey):
    return {
        "format": ENCODE_FORMAT,
        "version": ENCODE_VERSION,
        "model": model_identity(model),
        "role": role,
        "prompt": prompt,
        "normalize_embeddings": bool(normalize),
        "dtype": dkey,
        "max_seq_length": getattr(model, "max_seq_length", None),
        "n_texts": int(n),
        "texts_sha256": digest,
    }


# --------------------------------------------------------------------------- encoding
def _batch_order(lengths):
    """The global batch order: longest first, ties in input order."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable").astype(np.int64)


def batch_order(texts):
    """Row numbers of ``texts`` in the order :func:`encode` batches them (longest first by
    character count, ties in input order): the order :func:`encode_chunks` yields rows in."""
    return _batch_order(_check_texts(texts, digest=False)[1])


class _Job:
    """One encode call: model method, resolved arguments, the global batch order."""

    def __init__(self, model, texts, lengths, role, prompt, batch_size, chunk_size, device, pool,
                 normalize, dkey, progress):
        self.model = model
        self.texts = texts
        self.n = len(texts)
        # longest first, ties in input order: the batches are fixed by the texts and batch_size
        self.lengths = lengths
        self.order = _batch_order(lengths)
        self.role = role
        self.prompt = prompt
        self.batch_size = batch_size
        self.device = device
        self.pool = pool
        self.normalize = bool(normalize)
        self.dtype = np.dtype(_DTYPES[dkey])
        self.progress = progress
        n_proc = len(device) if isinstance(device, list) else (
            len(pool["processes"]) if pool is not None else 1)
        self.multi = isinstance(device, list) or pool is not None
        self.chunk_size = chunk_size or batch_size * _DEFAULT_CHUNK_BATCHES * max(1, n_proc)
        self._own_pool = None
        self.dim = _embedding_dim(model)

    # the model call --------------------------------------------------------------------
    def _method(self):
        if self.role == "query" and hasattr(self.model, "encode_query"):
            return self.model.encode_query
        if self.role == "document" and hasattr(self.model, "encode_document"):
            return self.model.encode_document
        return self.model.encode

    def _call(self, batch_texts, **kw):
        emb = self._method()(batch_texts, prompt=self.prompt, batch_size=self.batch_size,
                             show_progress_bar=False, convert_to_numpy=True,
                             normalize_embeddings=self.normalize, **kw)
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape[0] != len(batch_texts):
            raise RuntimeError(
                f"model returned embeddings of shape {emb.shape} for {len(batch_texts)} texts")
        return emb

    def encode_rows(self, pos, end, bar):
        """Embeddings (float32/16 as returned) of the texts order[pos:end] (whole batches)."""
        texts = self.texts
        chunk = [texts[i] for i in self.order[pos:end].tolist()]
        if self.multi:
            pool = self.pool if self.pool is not None else self._start_pool()
            emb = self._call(chunk, pool=pool, chunk_size=self.batch_size)
            bar.update(len(chunk))
            return emb
        kw = {} if self.device is None else {"device": self.device}
        perm = self._model_sort(chunk, pos, end)
        if perm is not None:
            # one call for the whole chunk: handed over so that the model's own length sort
            # lines the texts up in our order, i.e. it forms exactly our batches
            arranged = [None] * len(chunk)
            for j, t in zip(perm.tolist(), chunk):
                arranged[j] = t
            emb = self._call(arranged, **kw)
            bar.update(len(chunk))
            return emb[perm]
        parts = []
        for s in range(0, len(chunk), self.batch_size):
            part = self._call(chunk[s:s + self.batch_size], **kw)
            parts.append(part)
            bar.update(len(part))
        return np.concatenate(parts, axis=0)

    def _model_sort(self, chunk, pos, end):
        """``P`` such that the model, handed ``arranged`` with ``arranged[P[i]] = chunk[i]``,
        encodes ``chunk`` in our batches in one call; None when that cannot be arranged.

        A sentence-transformers model sorts each call's inputs by
        ``np.argsort([-model._input_length(x) for x in inputs])`` and batches them in that
        order. ``chunk`` is already longest first, so that sort ``P`` only permutes texts of
        equal length; ``arranged`` has the same length sequence, so the model computes the same
        ``P`` for it and its sorted sequence ``arranged[P[i]]`` is ``chunk[i]``: its batches are
        ours, and the embedding of a text still depends only on the texts and batch_size. Only
        for models with that sort and without interleaved batches (``_can_flatten_inputs``);
        any other model gets one call per batch."""
        if len(chunk) <= self.batch_size:
            return None
        m = self.model
        length = getattr(m, "_input_length", None)
        flatten = getattr(m, "_can_flatten_inputs", None)
        if not (callable(length) and callable(flatten)):
            return None
        try:
            if flatten():
                return None
            if (getattr(length, "__module__", None) == "sentence_transformers.base.model"
                    and getattr(length, "__qualname__", None) == "BaseModel._input_length"):
                # sentence-transformers' own helper: len() of a str, as our lengths
                neg = (-self.lengths[self.order[pos:end]]).tolist()
            else:
                neg = [-length(t) for t in chunk]
        except Exception:  # pragma: no cover - a model whose private helpers changed
            return None
        perm = np.argsort(neg)          # the very expression sentence-transformers evaluates
        key = np.asarray(neg, dtype=np.int64)
        if perm.shape != key.shape or not np.array_equal(key[perm], key):
            return None                 # its length is not ours: batches would differ
        return perm.astype(np.int64, copy=False)

    def _start_pool(self):
        if self._own_pool is None:
            self._own_pool = self.model.start_multi_process_pool(self.device)
        return self._own_pool

    def close(self):
        if self._own_pool is not None:
            pool, self._own_pool = self._own_pool, None
            self.model.stop_multi_process_pool(pool)

    def probe_dim(self):
        if self.dim is None:
            self.dim = int(self._call([self.texts[int(self.order[0])]],
                                      **({} if self.multi or self.device is None
                                         else {"device": self.device})).shape[1])
        return self.dim

    def store(self, target, pos, end, emb):
        if emb.shape[1] != target.shape[1]:
            raise RuntimeError(f"model returned {emb.shape[1]}-dim embeddings, expected {target.shape[1]}")
        target[self.order[pos:end]] = emb.astype(self.dtype, copy=False)

    def bar(self, initial=0):
        desc = {"query": "encoding queries", "document": "encoding documents"}.get(self.role,
                                                                                  "encoding texts")
        return progress_bar(total=self.n, desc=desc, enable=self.progress, unit="texts",
                            initial=initial)


# --------------------------------------------------------------------------- files
def _meta_path(path):
    return path + ".json"


def _partial_path(path):
    return path + ".partial"


def _ckpt_path(path):
    return path + ".partial.json"


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _dumps(obj):
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _npy_header(path):
    """(shape, dtype, data offset) of a .npy file, or None when it is not a valid one."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
        if fortran:
            return None
        return tuple(shape), np.dtype(dtype), offset
    except (OSError, ValueError):
        return None


def _file_matches(path, shape, dtype):
    h = _npy_header(path)
    if h is None or h[0] != tuple(shape) or h[1] != np.dtype(dtype):
        return False
    expected = h[2] + int(np.prod(shape)) * np.dtype(dtype).itemsize
    return os.path.getsize(path) == expected


def _complete(path, key):
    """Whether ``path`` is a finished embeddings file for ``key`` (its sidecar says so)."""
    meta = _read_json(_meta_path(path))
    if not meta or meta.get("format") != ENCODE_FORMAT or meta.get("key") != key:
        return False
    if not os.path.isfile(path):
        return False
    return _file_matches(path, meta.get("shape", ()), key["dtype"])


def _write_meta(path, key, shape, batch_size):
    meta = {"format": ENCODE_FORMAT, "version": ENCODE_VERSION, "key": key,
            "key_sha256": _sha256_json(key), "shape": list(shape), "dtype": key["dtype"],
            "batch_size": batch_size}
    atomic_write_text(_meta_path(path), _dumps(meta))


class _Lock:
    """An exclusive advisory lock (fcntl.flock) on ``path + '.lock'``; no-op where unsupported."""

    def __init__(self, path):
        self.path = path + ".lock"
        self.f = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.f = open(self.path, "a+b")
        fcntl.flock(self.f.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            import fcntl

            fcntl.flock(self.f.fileno(), fcntl.LOCK_UN)
            self.f.close()
            self.f = None
        return False


def _load_result(path, n):
    return np.load(path, mmap_mode="r" if n else None, allow_pickle=False)


def _copy_file(src, dst, key, shape, batch_size):
    """Copy a finished embeddings file to ``dst`` atomically, then its sidecar."""
    _remove(_meta_path(dst))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(src, "rb") as fsrc, AtomicFile(dst, "wb") as fdst:  # store.atomic's writer
        shutil.copyfileobj(fsrc, fdst, 1 << 22)
    _write_meta(dst, key, shape, batch_size)


def _encode_to_file(job, path, key, resume, callback=None):
    """Encode into ``path`` (a .npy), resumably. Caller holds the lock. Returns the shape."""
    n = job.n
    ckpt_file, partial = _ckpt_path(path), _partial_path(path)
    if resume and _complete(path, key):
        _remove(ckpt_file)
        _remove(partial)
        return _read_json(_meta_path(path))["shape"]

    ckpt = _read_json(ckpt_file) if resume else None
    start, target = None, None
    if ckpt is not None:
        ok = (ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("key") == key
              and ckpt.get("batch_size") == job.batch_size
              and isinstance(ckpt.get("rows_done"), int) and isinstance(ckpt.get("shape"), list)
              and len(ckpt["shape"]) == 2 and ckpt["shape"][0] == n)
        rows = ckpt.get("rows_done") if ok else None
        ok = ok and 0 <= rows <= n and (rows % job.batch_size == 0 or rows == n)
        shape = tuple(ckpt["shape"]) if ok else None
        if ok and rows == n and not os.path.exists(partial) and _file_matches(path, shape, job.dtype):
            # killed between the final rename and the sidecar: the file is finished
            _write_meta(path, key, shape, job.batch_size)
            _remove(ckpt_file)
            return list(shape)
        if ok and os.path.isfile(partial) and _file_matches(partial, shape, job.dtype):
            start = rows
            target = np.lib.format.open_memmap(partial, mode="r+")
        else:
            warnings.warn(f"out {path}: discarding an interrupted run that does not match these "
                          "inputs (texts, model, prompt, dtype or batch_size changed); starting over",
                          RuntimeWarning, stacklevel=3)
    if target is None:
        # a fresh run: the old sidecar (if any) no longer describes what will be written
        _remove(_meta_path(path))
        _remove(ckpt_file)
        _remove(partial)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        shape = (n, job.probe_dim())
        target = np.lib.format.open_memmap(partial, mode="w+", dtype=job.dtype, shape=shape)
        start = 0

    def checkpoint(rows):
        target.flush()
        atomic_write_text(ckpt_file, _dumps({
            "format": CHECKPOINT_FORMAT, "version": ENCODE_VERSION, "key": key,
            "batch_size": job.batch_size, "shape": list(shape), "dtype": key["dtype"],
            "rows_done": int(rows)}))

    if start == 0:
        checkpoint(0)
    bar = job.bar(initial=start)
    try:
        pos, chunks = start, 0
        while pos < n:
            end = min(pos + job.chunk_size, n)
            job.store(target, pos, end, job.encode_rows(pos, end, bar))
            chunks += 1
            target.flush()
            if callback is not None:
                callback("chunk_written", {"chunks": chunks, "rows_done": int(pos)})
            checkpoint(end)
            if callback is not None:
                callback("checkpoint_written", {"chunks": chunks, "rows_done": int(end)})
            pos = end
    finally:
        bar.close()
    target.flush()
    del target
    commit_file(partial, path)  # fsync, rename, fsync the directory (store.atomic)
    _write_meta(path, key, shape, job.batch_size)
    _remove(ckpt_file)
    return list(shape)


def _make_job(model, texts, lengths, role, prompt_name, prompt, batch_size, chunk_size, device,
              pool, normalize_embeddings, dkey, progress):
    """Load the model (a name or path on ``device`` when that is one device), resolve the
    prompt and build the encoding job: ``(model, prompt, job)``."""
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device=device if isinstance(device, str) else None)
    else:
        model = load_model(model)
    prompt = resolve_prompt(model, role, prompt_name, prompt)
    job = _Job(model, texts, lengths, role, prompt, batch_size, chunk_size, device, pool,
               normalize_embeddings, dkey, progress)
    return model, prompt, job


def encode(model, texts, *, role="document", prompt_name=None, prompt=None, batch_size=32,
           device=None, normalize_embeddings=True, dtype="float32", out=None, cache_folder=None,
           progress=True, chunk_size=None, pool=None, resume=True, callback=None):
    """Encode texts into an ``(n, dim)`` embedding matrix.

    Parameters
    ----------
    model : str, os.PathLike or SentenceTransformer
        A model object, or a name / directory passed to :func:`load_model` (loaded on
        ``device`` when that is a single device).
    texts : sequence of str
        Non-empty strings. An empty sequence gives a ``(0, dim)`` array.
    role : {"document", "query", None}, default="document"
        ``"query"`` calls ``model.encode_query``, ``"document"`` ``model.encode_document`` (their
        default prompts and Router task), ``None`` plain ``model.encode``.
    prompt_name, prompt : str, optional
        A key of ``model.prompts`` or a prompt text (not both). Without either, the role's
        prompt is used as sentence-transformers resolves it.
    batch_size : int, default=32
        Texts per forward pass. Batches are formed over all texts, longest first.
    device : str, torch.device or list, optional
        One device, or a list (``["cuda:0", "cuda:1"]``, ``["cpu", "cpu"]``) to encode through
        sentence-transformers' multi-process pool (started and stopped here; it moves the model
        to the CPU, as ``start_multi_process_pool`` does).
    normalize_embeddings : bool, default=True
        Unit-length embeddings (cosine scores as dot products).
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the result.
    out : str or os.PathLike, optional
        A ``.npy`` path: embeddings are written in chunks into a memory-mapped ``out +
        ".partial"`` with a checkpoint ``out + ".partial.json"`` after each chunk, renamed to
        ``out`` at the end, with a sidecar ``out + ".json"`` holding the key. A killed run
        (SIGKILL included) called again with the same inputs continues after its last finished
        chunk and writes the same bytes as an uninterrupted run; a finished ``out`` with the
        same key is returned without encoding.
    cache_folder : str or os.PathLike, optional
        A folder of finished embeddings files named by the sha256 of :func:`embedding_key`
        (model identity with weights digest, role, resolved prompt, normalisation, dtype,
        max_seq_length, texts digest). A hit is returned (copied to ``out`` when given) without
        calling the model; anything that changes the embeddings misses.
    progress : bool, default=True
        A progress bar in texts/s on stderr (tqdm, when installed).
    chunk_size : int, optional
        Texts per chunk (a multiple of ``batch_size``; default 16 batches per process): the
        unit of checkpointing and of work handed to the model in one call (a
        sentence-transformers model batches inside it, in exactly these batches) or to the
        pool. Results do not depend on it.
    pool : dict, optional
        A pool from ``model.start_multi_process_pool(...)`` to use (not stopped here).
    resume : bool, default=True
        ``False`` ignores a finished or interrupted ``out`` and encodes from scratch.
    callback : callable, optional
        ``callback(point, info)`` while writing ``out`` (or the cache file): at
        ``"chunk_written"`` (the chunk's rows are in the memory map, its checkpoint not yet
        written) and ``"checkpoint_written"``, with ``info = {"chunks": chunks done in this
        call, "rows_done": rows}``. For progress reporting and for tests that kill the process
        at a named point.

    Returns
    -------
    numpy.ndarray
        ``(n, dim)`` of ``dtype``; a read-only memory map of ``out`` or of the cache file when
        one is used, else an in-memory array.
    """
    dkey, batch_size, chunk_size, device, out = _check_args(
        role, dtype, batch_size, chunk_size, device, pool, normalize_embeddings, out)
    if callback is not None and not callable(callback):
        raise ParameterTypeError("callback", "callback: expected a callable(point, info) or "
                                 f"None, got {type(callback).__name__}")
    if cache_folder is not None:
        if not isinstance(cache_folder, (str, os.PathLike)):
            raise TypeError(f"cache_folder: expected a path, got {type(cache_folder).__name__}")
        cache_folder = os.fspath(cache_folder)
        if os.path.exists(cache_folder) and not os.path.isdir(cache_folder):
            raise ValueError(f"cache_folder {cache_folder!r}: is not a directory")
    on_disk = out is not None or cache_folder is not None
    texts, lengths, digest = _check_texts(texts, digest=on_disk)
    model, prompt, job = _make_job(model, texts, lengths, role, prompt_name, prompt, batch_size,
                                   chunk_size, device, pool, normalize_embeddings, dkey, progress)
    n = job.n

    if n == 0:
        dim = job.dim
        if dim is None:
            dim = int(np.asarray(job._call(["dimension probe"])).shape[1])
        empty = np.zeros((0, dim), dtype=job.dtype)
        if out is not None:
            key = _key(model, 0, digest, role, prompt, normalize_embeddings, dkey)
            with _Lock(out):
                _remove(_meta_path(out))
                atomic_save_npy(out, empty)
                _write_meta(out, key, empty.shape, batch_size)
            return np.load(out, allow_pickle=False)
        return empty

    try:
        if not on_disk:
            target = np.empty((n, job.probe_dim()), dtype=job.dtype)
            bar = job.bar()
            try:
                for pos in range(0, n, job.chunk_size):
                    end = min(pos + job.chunk_size, n)
                    job.store(target, pos, end, job.encode_rows(pos, end, bar))
            finally:
                bar.close()
            return target

        key = _key(model, n, digest, role, prompt, normalize_embeddings, dkey)
        cpath = None
        if cache_folder is not None:
            cpath = os.path.join(cache_folder, _sha256_json(key) + ".npy")
            os.makedirs(cache_folder, exist_ok=True)
            with _Lock(cpath):
                hit = _complete(cpath, key)
                if hit and out is None:
                    return _load_result(cpath, n)
                if hit:
                    shape = _read_json(_meta_path(cpath))["shape"]
                    with _Lock(out):
                        if not _complete(out, key):
                            _copy_file(cpath, out, key, shape, batch_size)
                            _remove(_ckpt_path(out))
                            _remove(_partial_path(out))
                    return _load_result(out, n)
        if out is None:
            with _Lock(cpath):
                _encode_to_file(job, cpath, key, True, callback)
            return _load_result(cpath, n)
        with _Lock(out):
            shape = _encode_to_file(job, out, key, resume, callback)
        if cpath is not None:
            with _Lock(cpath):
                if not _complete(cpath, key):
                    _copy_file(out, cpath, key, shape, batch_size)
        return _load_result(out, n)
    finally:
        job.close()


def encode_chunks(model, texts, *, role="document", prompt_name=None, prompt=None,
                  batch_size=32, device=None, normalize_embeddings=True, dtype="float32",
                  progress=True, chunk_size=None, pool=None):
    """Encode texts chunk by chunk without holding all the embeddings.

    The same arguments, batches and embeddings as :func:`encode` (bit for bit: row ``r`` of a
    chunk is row ``rows[r]`` of ``encode(model, texts, ...)`` with the same ``batch_size``),
    handed over one chunk at a time so that a caller can consume them (search, write) with
    memory for one chunk only. Arguments are checked and the model is loaded at the call; the
    encoding runs as the returned iterator is consumed.

    Returns
    -------
    iterator of (rows, emb)
        ``rows``: int64 row numbers into ``texts`` (consecutive slices of
        :func:`batch_order`); ``emb``: ``(len(rows), dim)`` of ``dtype``. Nothing for empty
        ``texts``.
    """
    dkey, batch_size, chunk_size, device, _ = _check_args(
        role, dtype, batch_size, chunk_size, device, pool, normalize_embeddings, None)
    texts, lengths, _ = _check_texts(texts, digest=False)
    _, _, job = _make_job(model, texts, lengths, role, prompt_name, prompt, batch_size,
                          chunk_size, device, pool, normalize_embeddings, dkey, progress)
    if chunk_size is None:      # nothing to checkpoint: 4x encode's default chunks
        job.chunk_size *= 4
    return _chunks(job)


def _chunks(job):
    n = job.n
    if n == 0:
        job.close()
        return
    try:
        dim = job.probe_dim()
        bar = job.bar()
        try:
            for pos in range(0, n, job.chunk_size):
                end = min(pos + job.chunk_size, n)
                emb = job.encode_rows(pos, end, bar)
                if emb.shape[1] != dim:
                    raise RuntimeError(f"model returned {emb.shape[1]}-dim embeddings, expected "
                                       f"{dim}")
                yield job.order[pos:end], np.ascontiguousarray(emb, dtype=job.dtype)
        finally:
            bar.close()
    finally:
        job.close()


# the name under which the package namespace can expose encode (``simans_fast.encode`` is this
# module, so ``sf.encode`` would be ambiguous)
encode_texts = encode

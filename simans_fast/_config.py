"""Floor 0: the package's defaults, the registry of RNG stream domains and the thread policy.

One place for the numbers that used to be retyped in several modules (the query block of the
API and the CLI, the rows per scratch chunk of the kernels, the constants XOR-ed into the seed
to give each consumer of random numbers its own stream) and for the one way to limit threads.

This module imports only the standard library (Numba and threadpoolctl lazily, inside
:func:`thread_limits`). Kernels may import it (floor 0).
"""

from __future__ import annotations

import contextlib

__all__ = ["DEFAULT_QUERY_BLOCK", "CHUNK", "RNG_DOMAINS", "POS_DOMAIN", "TORCH_DOMAIN",
           "SHUFFLE_DOMAIN", "HN_PAD_DOMAIN", "rng_domain", "thread_limits", "set_threads",
           "PARALLEL_MIN_ROWS", "resolve_parallel"]

#: queries per block: the exact top-k backend's query block, the mining pipeline's and the
#: CLI's chunk of queries (one number for the API and the command line)
DEFAULT_QUERY_BLOCK = 4096

#: rows per scratch-buffer chunk of the sampling and strategy kernels (one thread owns one chunk
#: at a time); results never depend on it
CHUNK = 1024


def _ascii_word(text: str) -> int:
    """The ASCII bytes of ``text`` read as a big-endian integer (the domains' mnemonic)."""
    return int.from_bytes(text.encode("ascii"), "big")


#: name -> uint64 constant XOR-ed into the seed to give a consumer of random numbers its own
#: counter-based stream ``(seed ^ domain, epoch, key)``. The main sampling stream (the draws of
#: every sampler and strategy) uses the seed itself (domain 0). Values are the ASCII of the
#: mnemonic; they are part of the reproducibility contract: never change one, add new names.
RNG_DOMAINS = {
    "sampling": 0,                                   # the draws themselves (seed unchanged)
    "positive": _ascii_word("POSITIVE"),             # which positive, with several per query
    "torch": _ascii_word("TORCHKEY"),                # torch backend's on-device draws
    "shuffle": _ascii_word("SHUFFLE"),               # torch adapters' query shuffle
    "hn_pad": _ascii_word("hn_pad"),                 # hn-mine's padding draws
}

POS_DOMAIN = RNG_DOMAINS["positive"]
TORCH_DOMAIN = RNG_DOMAINS["torch"]
SHUFFLE_DOMAIN = RNG_DOMAINS["shuffle"]
HN_PAD_DOMAIN = RNG_DOMAINS["hn_pad"]


def rng_domain(name: str) -> int:
    """The domain constant registered under ``name`` (KeyError naming the known ones)."""
    try:
        return RNG_DOMAINS[name]
    except KeyError:
        raise KeyError(f"unknown RNG domain {name!r}; registered: {sorted(RNG_DOMAINS)}") from None


def set_threads(n_threads) -> int:
    """Set Numba's thread count to ``min(n_threads, NUMBA_NUM_THREADS)``; return the previous
    count. (BLAS is limited by :func:`thread_limits`, which also restores both.)"""
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    return prev


#: below this many rows the serial kernels are used by default (``parallel=None``): waking a
#: thread pool costs more than drawing a training batch (and much more on a busy machine)
PARALLEL_MIN_ROWS = 8192


def resolve_parallel(parallel, n_rows=None, *, in_worker: bool = False) -> bool:
    """The one rule for ``parallel=None`` (the adapters' default): multi-threaded kernels only
    outside DataLoader workers (``in_worker``: a forked worker must not enter Numba's OpenMP
    pool) and for at least :data:`PARALLEL_MIN_ROWS` rows. ``True``/``False`` are kept.
    ``parallel`` is the on/off switch; ``n_threads`` (:func:`thread_limits`) is how many."""
    if parallel is None:
        if n_rows is not None and n_rows < PARALLEL_MIN_ROWS:
            return False
        return not in_worker
    return bool(parallel)


@contextlib.contextmanager
def thread_limits(n_threads):
    """The one thread policy: inside the ``with`` block Numba uses ``n_threads`` threads (at
    most ``NUMBA_NUM_THREADS``), BLAS libraries ``n_threads`` (through threadpoolctl, when
    installed), and faiss and torch, when already imported, ``n_threads`` too; all are restored
    on exit, also after an exception. ``None`` changes nothing. Pools that start later are
    limited by :func:`thread_env`.

    Results of the package never depend on the thread count; this is a resource limit only.
    """
    if n_threads is None:
        yield None
        return
    import sys

    import numba

    n = int(n_threads)
    prev = set_threads(n)
    ctl = None
    restore = []
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            threadpool_limits = None
        if threadpool_limits is not None:
            ctl = threadpool_limits(limits=n, user_api="blas")
        # faiss and torch keep pools of their own (threadpoolctl does not reach them)
        for name, getter, setter in (("faiss", "omp_get_max_threads", "omp_set_num_threads"),
                                     ("torch", "get_num_threads", "set_num_threads")):
            mod = sys.modules.get(name)
            if mod is not None and hasattr(mod, getter) and hasattr(mod, setter):
                try:
                    old = getattr(mod, getter)()
                    getattr(mod, setter)(n)
                    restore.append((getattr(mod, setter), old))
                except Exception:  # pragma: no cover - a broken build of either library
                    pass
        yield n
    finally:
        for setter, old in reversed(restore):
            try:
                setter(old)
            except Exception:  # pragma: no cover
                pass
        if ctl is not None:
            ctl.restore_original_limits()
        numba.set_num_threads(prev)


#: environment variables read by the thread pools of BLAS/OpenMP builds when they start
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(n_threads) -> None:
    """Process-wide part of the thread policy, for pools that have not started yet: sets the
    BLAS/OpenMP environment variables (and ``NUMBA_NUM_THREADS`` while Numba is not imported)
    to ``n_threads``. Call it before importing NumPy/torch/faiss (the command line does);
    ``None`` changes nothing."""
    if n_threads is None:
        return
    import os
    import sys

    for var in THREAD_ENV_VARS:
        os.environ[var] = str(int(n_threads))
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(int(n_threads))


# ------------------------------------------------------------------------------------------
# the lists of choices (the CLI, the constraint table and the modules all import these)
# ------------------------------------------------------------------------------------------
#: SimANS weight kernels (core maps them to kernel codes)
KERNELS = ("gaussian", "laplace")
#: what a row whose positive score is unknown gets
FALLBACKS = ("lowest", "uniform", "raise")
#: which positive is used when a query has several
POSITIVE_CHOICES = ("random", "highest", "lowest")
#: negative-selection strategies of :func:`simans_fast.select_negatives`
STRATEGIES = ("simans", "top", "uniform")
#: rank rules and threshold rules of :func:`simans_fast.filter_candidates`
RANK_RULES = ("candidates", "flagembedding", "sentence-transformers")
THRESHOLD_RULES = ("strict", "sentence-transformers")
#: top-k similarity metrics and backends
METRICS = ("ip", "cosine", "l2")
#: default multiplier of a model's (cosine) scores before the SimANS kernel: the scale of
#: sentence-transformers' MultipleNegativesRankingLoss (temperature 0.05), i.e. the logits the
#: model was trained on. Raw scores (given embeddings, a run's own scores) default to 1.
DEFAULT_SCORE_SCALE = 20.0
BACKENDS = ("auto", "numba", "faiss", "torch")
#: first passes of the exact top-k (:func:`simans_fast.topk`'s ``prefilter``; None means "none")
PREFILTERS = ("none", "auto", "bfloat16")
#: dtypes :func:`simans_fast.encode.encode` stores embeddings in (the model computes float32)
EMBEDDING_DTYPES = ("float32", "float16")

__all__ += ["thread_env", "THREAD_ENV_VARS"]
__all__ += ["KERNELS", "FALLBACKS", "POSITIVE_CHOICES", "STRATEGIES", "RANK_RULES",
            "THRESHOLD_RULES", "METRICS", "BACKENDS", "PREFILTERS", "EMBEDDING_DTYPES"]

"""simans_fast: fast, exact and reproducible SimANS negative sampling.

SimANS (Zhou et al., EMNLP 2022) samples negatives for a query without replacement with
probability proportional to ``exp(-a * (s_i - s_pos - b)**2)``: candidates scored close to the
positive are informative and rarely false negatives.

Sign convention for ``b``: this package uses the paper's sign, ``-a * (s - s_pos - b)**2``.
The paper's released code adds ``b``; to reproduce its NQ run (``b = 1.0`` in the code) pass
``b = -1.0`` here.

Importing this package imports neither torch nor faiss; the public names are loaded lazily.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_LAZY = {
    # core (weights, alias tables, sampling)
    "ambiguity_log_weights": "simans_fast.core",
    "build_alias": "simans_fast.core",
    "AliasTables": "simans_fast.core",
    "sample": "simans_fast.core",
    "simans_negatives": "simans_fast.core",
    "SimANSSampler": "simans_fast.sampler",
    "rng": "simans_fast.rng",
    "configure_threads": "simans_fast._numba",
    # candidates (top-k, rescoring)
    "topk": "simans_fast.candidates",
    "rescore": "simans_fast.candidates",
    "Candidates": "simans_fast.candidates",
    # pipeline and files
    "mine": "simans_fast.pipeline",
    "mine_candidates": "simans_fast.pipeline",
    "MinedCandidates": "simans_fast.pipeline",
    "MiningJob": "simans_fast.pipeline",
    "epoch_negatives": "simans_fast.pipeline",
    "EpochNegatives": "simans_fast.pipeline",
    "load_candidates": "simans_fast.store.candidates",
    "save_candidates": "simans_fast.store.candidates",
    # PyTorch adapters (torch is imported only when one of these is used)
    "simans_negatives_torch": "simans_fast.torch",
    "SimANSDataset": "simans_fast.torch",
    "SimANSIterableDataset": "simans_fast.torch",
    "collate_simans": "simans_fast.torch",
    "negatives_for": "simans_fast.torch",
    "RefreshSchedule": "simans_fast.torch",
    "SimANSRefresher": "simans_fast.torch",
    "to_sentence_transformers": "simans_fast.torch",
    # strategies
    "select_negatives": "simans_fast.strategies",
    "filter_candidates": "simans_fast.strategies",
    "FilteredCandidates": "simans_fast.strategies",
    # texts and models in, trainers' datasets out
    "load_model": "simans_fast.encode",
    "encode_texts": "simans_fast.encode",
    "mine_hard_negatives": "simans_fast.hard_negatives",
    "mine_texts": "simans_fast.from_texts",
    # diagnostics and errors
    "effective_candidates": "simans_fast.diagnostics",
    "simans_effective_candidates": "simans_fast.diagnostics",
    "FlatWeightsWarning": "simans_fast.diagnostics",
    "SamplerFileError": "simans_fast.sampler",
    "ParameterError": "simans_fast._validate",
    "InputError": "simans_fast._validate",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'simans_fast' has no attribute {name!r}")
    module = _import_module(mod)
    if name == "rng" and mod == "simans_fast.rng":
        value = module
    else:
        value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__

"""PyTorch adapters for simans_fast (imports torch; ``import simans_fast`` never does).

* :func:`simans_negatives_torch` -- SimANS negatives from tensors on any device.
* :class:`SimANSDataset`, :class:`SimANSIterableDataset`, :func:`collate_simans`,
  :func:`negatives_for` -- DataLoader integration (identical batches for any number of workers
  and either start method; serial kernels inside workers).
* :class:`RefreshSchedule`, :func:`refresh`, :class:`SimANSRefresher` -- re-mine or re-score
  the candidates with the model being trained.
* :mod:`simans_fast.torch.distributed` -- sharded exact top-k and sharded sampling with
  ``torch.distributed``.
* :func:`to_sentence_transformers` -- a ``datasets.Dataset`` for sentence-transformers losses.
* :func:`topk_torch` -- exact top-k on the tensors' device (``sf.topk(..., backend="torch")``).
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("simans_fast.torch needs PyTorch: pip install 'simans_fast[torch]' "
                      "(the core package works without it)") from exc

from .data import (SimANSDataset, SimANSIterableDataset, collate_simans, negatives_for,
                   shard_indices)
from .refresh import RefreshSchedule, SimANSRefresher, refresh
from .sampling import in_worker, simans_negatives_torch
from .topk import topk_torch

__all__ = [
    "RefreshSchedule",
    "SimANSDataset",
    "SimANSIterableDataset",
    "SimANSRefresher",
    "collate_simans",
    "in_worker",
    "negatives_for",
    "refresh",
    "shard_indices",
    "simans_negatives_torch",
    "to_sentence_transformers",
    "topk_torch",
]


def __getattr__(name):
    # sentence-transformers/datasets are imported only when this is used
    if name == "to_sentence_transformers":
        from .st import to_sentence_transformers

        return to_sentence_transformers
    if name == "distributed":
        from importlib import import_module

        return import_module(__name__ + ".distributed")
    raise AttributeError(f"module 'simans_fast.torch' has no attribute {name!r}")

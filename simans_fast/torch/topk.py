"""Exact top-k with PyTorch on any device: moved to :mod:`simans_fast.candidates_torch`.

This module re-exports it (``from simans_fast.torch.topk import topk_torch`` keeps working), so
the library's ``sf.topk(backend="torch")`` no longer imports upward into ``simans_fast.torch``.
Its internals (``_TILES``, ``_scores``) live on :mod:`simans_fast.candidates_torch`.
"""

from __future__ import annotations

from ..candidates_torch import (CORPUS_BLOCK_BYTES, DEFAULT_QUERY_BLOCK,  # noqa: F401
                                Candidates, tile_shape, topk_torch)

__all__ = ["topk_torch", "tile_shape", "DEFAULT_QUERY_BLOCK", "CORPUS_BLOCK_BYTES"]

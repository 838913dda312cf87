"""The library names the command line uses, in one place.

Readers take no flag: the CLI prefixes their errors with the flag it read the file through
(:func:`simans_fast.cli.errors.reading`). Nothing here imports ``simans_fast.io`` (a
deprecated shim).
"""

from __future__ import annotations

from .._validate import InputError, ParameterError
from ..formats.embeddings import check_finite, read_embeddings
from ..formats.negatives import (NEGATIVES_FORMAT_NAME, NEGATIVES_FORMATS, ST_ON_SHORT,
                                 TEXT_FORMATS, detect_format, format_from_extension,
                                 read_negatives, tevatron_corpus_path, write_negatives)
from ..formats.tevatron import count_corpus_records
from ..formats.texts import read_text_records, read_texts, text_coverage
from ..formats.trec import read_qrels
from ..store.atomic import file_sha256
from ..store.candidates import load_candidates, read_header
from ..store.ids import ids_sha256, read_ids

#: the errors of the library's checks and readers (shown as the flag's by errors.reading)
LIBRARY_ERRORS = (ParameterError,)

__all__ = ["InputError", "LIBRARY_ERRORS", "NEGATIVES_FORMAT_NAME", "NEGATIVES_FORMATS",
           "ST_ON_SHORT", "TEXT_FORMATS", "check_finite", "count_corpus_records",
           "detect_format", "file_sha256", "format_from_extension", "ids_sha256",
           "load_candidates", "read_embeddings", "read_header", "read_ids", "read_negatives",
           "read_qrels", "read_text_records", "read_texts", "tevatron_corpus_path",
           "text_coverage", "write_negatives"]

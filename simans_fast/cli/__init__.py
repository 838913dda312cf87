"""The ``simans-fast`` command line tool (also ``python -m simans_fast``).

Sub-commands::

    simans-fast mine    --queries Q.npy --corpus C.npy --query-ids qids.txt --doc-ids dids.txt
                        --qrels qrels.txt --out DIR (--texts BEIR_DIR | --ids-only | --format F)
                        [--k 200 --n 15 --a 0.5 --b 0 --score-scale C ...]
    simans-fast mine    --model NAME_OR_PATH --texts BEIR_DIR --qrels qrels.txt --out DIR ...
                        (encodes the texts into DIR/embeddings, resumable; ids from the texts)
    simans-fast mine    --run RUN_FILE [--rescore] ...   (candidates from a TREC / TSV run)
    simans-fast sample  --candidates DIR/candidates --epoch 1 --out FILE [--format ...]
    simans-fast inspect FILE_OR_DIR       (with the effective number of SimANS candidates)
    simans-fast hn-mine --input_file X.jsonl --output_file Y.jsonl --embedder_name_or_path M
                        (FlagEmbedding's hn_mine.py flags; simans_fast.hn_mine)
    simans-fast demo    [--out DIR] [--texts]

``simans-fast`` without a sub-command runs the demo.

Layout: one module a command (``mine``, ``sample``, ``inspect``, ``hn_mine``, ``demo``),
registered by name in ``_main.COMMANDS``; :mod:`.flags` is the one table from a Python
parameter to its flag (every library error is shown through it); :mod:`.errors` holds the exit
statuses and the one-line error policy. The command line holds no logic the library lacks: the
mining job (chunks, checkpoints, resume, assembly) is :class:`simans_fast.pipeline.MiningJob`,
an epoch's draw :func:`simans_fast.pipeline.epoch_negatives`.

SimANS weights are ``exp(-a (c s - c s_pos - b)^2)`` with ``c = --score-scale`` (default 1 for
raw scores: given embeddings, a run's own scores; 20 when mine encodes with a normalizing
--model). ``c`` is recorded in the candidates header; c = 1 is not recorded (older headers).

Errors in the user's input (a missing, unreadable, non-UTF-8, truncated or pickled file, a wrong
shape or dtype, unknown ids, missing texts, an impossible parameter, an output location that
cannot be written) print one line on stderr naming the file or flag and the fix, exit with
status 2, and are found before the first byte is written. No input makes it print a traceback
(an unexpected failure prints one line too, exit status 1; ``SIMANS_FAST_TRACEBACK=1`` shows the
traceback).
"""

from ._main import build_parser, main

__all__ = ["main", "build_parser"]

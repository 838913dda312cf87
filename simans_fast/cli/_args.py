"""Flags shared by several commands (threads and progress, texts, sampling)."""

from __future__ import annotations

import argparse

from . import flags as _flags

#: most threads --threads accepts
MAX_THREADS = 1024


def add_common(p) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"threads for Numba, BLAS and faiss, 1..{MAX_THREADS} (default: all "
                        "cores); results do not depend on it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal; needs tqdm)")


def add_texts(p) -> None:
    from . import _lib

    p.add_argument("--texts", metavar="DIR", default=None,
                   help="BEIR-style folder with queries.jsonl and corpus.jsonl")
    p.add_argument("--query-texts", metavar="FILE", default=None,
                   help="query texts: TSV 'id<TAB>text' or JSONL {_id, text}")
    p.add_argument("--doc-texts", metavar="FILE", default=None,
                   help="document texts: TSV 'id<TAB>text[<TAB>title]' or JSONL {_id, title, text}")
    p.add_argument("--ids-only", dest="ids_only", action="store_true",
                   help="tevatron / sentence-transformers without texts: write ids where the "
                        "trainer expects texts (Tevatron: no query_text, no corpus file)")
    p.add_argument("--on-short", dest="on_short", choices=_lib.ST_ON_SHORT, default=None,
                   help="sentence-transformers rows with fewer than n negatives: repeat their "
                        "own negatives (default), drop the row (sentence-transformers' own "
                        "rule) or fail")


def add_sampling(p, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--n", type=int, default=d(15), help="negatives per query (default 15)")
    p.add_argument("--a", type=float, default=d(0.5),
                   help="SimANS sharpness a (default 0.5), applied to scaled scores: weights "
                        "exp(-a (c s - c s_pos - b)^2), c = --score-scale")
    p.add_argument("--b", type=float, default=d(0.0),
                   help="SimANS shift b, paper's sign, in scaled units: exp(-a (c s - c s_pos - "
                        "b)^2) (default 0)")
    p.add_argument("--kernel", choices=_flags.KERNELS, default=d("gaussian"),
                   help="gaussian exp(-a (c s - c s_pos - b)^2) or laplace "
                        "exp(-a |c s - c s_pos - b|)")
    p.add_argument("--score-scale", dest="score_scale", type=float, default=None, metavar="C",
                   help="multiply every score by C before the SimANS kernel, so --a and --b "
                        "refer to C x score. Default: 1 for raw scores (--queries/--corpus "
                        "embeddings, as the paper's dot products, or a --run's own scores); 20 "
                        "when mine encodes with --model (cosines x 20: the logits of "
                        "MultipleNegativesRankingLoss, where the paper's a = 0.5 keeps its "
                        "meaning; a = 0.5 on raw cosines is nearly uniform sampling)"
                   + ("" if defaults else "; default: the value saved by mine"))
    p.add_argument("--seed", type=int, default=d(0),
                   help="seed of the sampling stream, 0 <= seed < 2**64")
    p.add_argument("--positive-choice", dest="positive_choice",
                   choices=_flags.POSITIVE_CHOICES, default=d("random"),
                   help="queries with several positives: one drawn per epoch, or the "
                        "highest/lowest-scored one")
    p.add_argument("--fallback", choices=_flags.FALLBACKS, default=d("lowest"),
                   help="queries without a positive: the n lowest-ranked candidates, uniform, "
                        "or fail")
    g = p.add_argument_group("strategy (sf.select_negatives; default: SimANS on all candidates)")
    g.add_argument("--strategy", choices=_flags.STRATEGIES, default=None,
                   help="simans (default), top (the n best), or uniform over the kept ranks")
    g.add_argument("--skip", type=int, default=None, help="drop the R best-ranked candidates")
    g.add_argument("--window", default=None, metavar="LO-HI",
                   help="keep 0-based ranks LO <= rank < HI (FlagEmbedding's 10-210; LO- for no "
                        "bound)")
    g.add_argument("--max-score", dest="max_score", type=float, default=None,
                   help="TopK-Abs: keep scores < T")
    g.add_argument("--margin", type=float, default=None,
                   help="TopK-MarginPos: keep scores < s_pos - M (0 is a threshold too)")
    g.add_argument("--perc", type=float, default=None,
                   help="TopK-PercPos: keep scores < s_pos - (1 - F) |s_pos|, 0 <= F <= 1")

"""simans_fast._validate (the one place for the rules) and simans_fast._config (defaults, RNG
stream domains, the thread policy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simans_fast as sf
from simans_fast import _config, _validate
from simans_fast._validate import (CONSTRAINTS, ParameterError, ParameterTypeError,
                                   normalize_csr, validate)

U64 = 2**64 - 1

# every constraint: values that pass (with the normalised value) and values that fail
GOOD = {
    "n": [(1, 1), (np.int64(7), 7), (np.uint8(3), 3)],
    "k": [(1, 1), (np.int32(200), 200)],
    "a": [(0, 0.0), (0.5, 0.5), (np.float32(2.0), 2.0), (np.int64(3), 3.0)],
    "b": [(-1.5, -1.5), (0, 0.0), (np.float64(2.5), 2.5)],
    "kernel": [(c, c) for c in _config.KERNELS],
    "fallback": [(c, c) for c in _config.FALLBACKS],
    "positive_choice": [(c, c) for c in _config.POSITIVE_CHOICES],
    "strategy": [(c, c) for c in _config.STRATEGIES],
    "metric": [(c, c) for c in _config.METRICS],
    "backend": [(c, c) for c in _config.BACKENDS],
    "embedding_dtype": [(c, c) for c in _config.EMBEDDING_DTYPES],
    "prefilter": [(None, None)] + [(c, c) for c in _config.PREFILTERS],
    "epoch": [(0, 0), (np.int64(5), 5), (np.uint64(U64), U64), (U64, U64)],
    "seed": [(0, 0), (np.uint64(2**63 + 5), 2**63 + 5), (U64, U64)],
    "query_block": [(None, None), (1, 1), (np.int64(4096), 4096)],
    "n_threads": [(None, None), (1, 1), (np.int16(2), 2)],
}
BAD = {
    "n": [(0, ParameterError), (-3, ParameterError), (1.0, ParameterTypeError),
          (True, ParameterTypeError), (np.True_, ParameterTypeError), ("3", ParameterTypeError),
          (None, ParameterTypeError)],
    "k": [(0, ParameterError), (2.5, ParameterTypeError), (False, ParameterTypeError),
          (None, ParameterTypeError)],
    "a": [(-0.1, ParameterError), (float("nan"), ParameterError), (float("inf"), ParameterError),
          (True, ParameterTypeError), ("0.5", ParameterTypeError), (None, ParameterTypeError)],
    "b": [(float("-inf"), ParameterError), (np.bool_(False), ParameterTypeError),
          (None, ParameterTypeError)],
    "kernel": [("cauchy", ParameterError), (None, ParameterError), (0, ParameterError)],
    "fallback": [("skip", ParameterError), (True, ParameterError)],
    "positive_choice": [("first", ParameterError)],
    "strategy": [("hard", ParameterError)],
    "metric": [("dot", ParameterError)],
    "backend": [("gpu", ParameterError)],
    "prefilter": [("bf16", ParameterError), ("None", ParameterError), (True, ParameterError)],
    "embedding_dtype": [("bfloat16", ParameterError), ("float64", ParameterError),
                        (None, ParameterError)],
    "epoch": [(-1, ParameterError), (U64 + 1, ParameterError), (1.0, ParameterTypeError),
              (True, ParameterTypeError), (np.int64(-2), ParameterError)],
    "seed": [(-1, ParameterError), (2**64, ParameterError), (np.bool_(True), ParameterTypeError),
             (0.0, ParameterTypeError)],
    "query_block": [(0, ParameterError), (True, ParameterTypeError), (64.0, ParameterTypeError)],
    "n_threads": [(0, ParameterError), (False, ParameterTypeError)],
}


def test_the_table_covers_the_public_parameters():
    assert set(CONSTRAINTS) == {"n", "k", "a", "b", "kernel", "fallback", "positive_choice",
                                "strategy", "metric", "backend", "prefilter", "embedding_dtype",
                                "epoch",
                                "seed", "query_block", "n_threads"}
    assert set(GOOD) == set(CONSTRAINTS) == set(BAD)


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_each_constraint_good_values_pass_normalised(name):
    for value, want in GOOD[name]:
        got = validate(name, value)
        assert got == want and type(got) is type(want), (name, value, got)


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_each_constraint_bad_values_raise_naming_the_parameter(name):
    for value, exc in BAD[name]:
        with pytest.raises(exc) as info:
            validate(name, value)
        err = info.value
        assert isinstance(err, ValueError)  # old `pytest.raises(ValueError)` keep passing
        assert err.parameter == name
        assert str(err).startswith(f"{name} must be"), str(err)  # the one message format
        if exc is ParameterTypeError:
            assert isinstance(err, TypeError)
    # the parameter name of the caller, when it is spelled differently
    with pytest.raises(ParameterError, match="max_reject must be >= 1") as info:
        validate("n", 0, parameter="max_reject")
    assert info.value.parameter == "max_reject"


def test_choices_come_from_the_library_constants():
    from simans_fast import candidates, core, strategies

    assert strategies.STRATEGIES is _config.STRATEGIES
    assert strategies.RANK_RULES is _config.RANK_RULES
    assert core._FALLBACKS is _config.FALLBACKS
    assert core._POSITIVE_CHOICES is _config.POSITIVE_CHOICES
    assert tuple(core._KERNELS) == _config.KERNELS
    assert candidates._METRICS is _config.METRICS and candidates._BACKENDS is _config.BACKENDS
    assert CONSTRAINTS["strategy"].choices == _config.STRATEGIES
    assert candidates.DEFAULT_QUERY_BLOCK == _config.DEFAULT_QUERY_BLOCK == 4096
    assert core._CHUNK == strategies._CHUNK == _config.CHUNK == 1024


def test_core_check_functions_are_thin_reexports():
    from simans_fast import core

    assert core.check_float_matrix is _validate.check_float_matrix
    assert core.check_ids is _validate.check_ids
    with pytest.raises(ParameterError, match="n must be >= 1") as info:
        core.check_n(0)
    assert info.value.parameter == "n"
    with pytest.raises(ParameterError, match="a must be >= 0"):
        core.check_param(-1, "a", nonneg=True)
    with pytest.raises(ParameterTypeError):
        core.check_param(True, "b")
    assert core.check_kernel("laplace") == core._KERNELS["laplace"]


@pytest.mark.parametrize("fn", ["check_int", "check_real", "check_seed", "check_epoch"])
def test_numpy_scalars_accepted_bools_refused(fn):
    check = getattr(_validate, fn)
    kw = {"name": "x"}
    for v in (np.int8(3), np.int64(3), np.uint32(3), 3):
        assert check(v, **kw) == 3
    for v in (True, False, np.True_, np.bool_(False)):
        with pytest.raises(ParameterTypeError, match="x must be") as info:
            check(v, **kw)
        assert info.value.parameter == "x"


def test_check_bool_and_choice():
    assert _validate.check_bool(np.True_, "flag") is True
    for v in (0, 1, "yes", None):
        with pytest.raises(ParameterTypeError, match="flag must be True or False"):
            _validate.check_bool(v, "flag")
    with pytest.raises(ParameterError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        _validate.check_choice("c", "mode", ("a", "b"))


def test_negative_epoch_is_refused_everywhere():
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    scores = -np.arange(12, dtype=np.float32).reshape(3, 4)
    pos = np.zeros(3)
    for call in (lambda: sf.simans_negatives(ids, scores, pos, 2, epoch=-1),
                 lambda: sf.sample(sf.ambiguity_log_weights(scores, pos), 2, epoch=-1),
                 lambda: sf.SimANSSampler(ids, scores, pos, n=2).sample(epoch=-1),
                 lambda: sf.select_negatives(ids, scores, pos, 2, strategy="uniform",
                                             epoch=-1)):
        with pytest.raises(ParameterError, match="epoch must be an integer >= 0") as info:
            call()
        assert info.value.parameter == "epoch"
    with pytest.raises(ParameterError, match="seed must be") as info:
        sf.simans_negatives(ids, scores, pos, 2, seed=-1)
    assert info.value.parameter == "seed"
    # the largest epoch and seed are fine, and numpy integers equal Python ones
    a = sf.simans_negatives(ids, scores, pos, 2, seed=np.uint64(U64), epoch=np.uint64(U64))
    b = sf.simans_negatives(ids, scores, pos, 2, seed=U64, epoch=U64)
    assert np.array_equal(a, b)


def test_check_k_rule():
    assert _validate.check_k(np.int64(5)) == 5
    assert _validate.check_k(5, 5) == 5
    with pytest.raises(ParameterError, match="larger than the corpus"):
        _validate.check_k(6, 5)
    # the primitive pads when k exceeds the corpus (a shard may be smaller than k)
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    out = sf.topk(q, c, 8)
    assert (out.ids[:, 5:] == -1).all() and np.isneginf(out.scores[:, 5:]).all()


def test_check_embeddings_rule():
    x64 = np.ones((2, 3))
    assert _validate.check_embeddings(x64, "corpus") is x64  # float64 accepted, no copy
    for dt in (np.float32, np.float16):
        x = np.ones((2, 3), dt)
        assert _validate.check_embeddings(x, "corpus") is x
    for bad, exc in ((np.ones((2, 3), np.int32), ParameterTypeError),
                     (np.ones((2, 3), np.longdouble), ParameterTypeError),
                     (np.ones(3, np.float32), ParameterError),
                     (np.ones((2, 0), np.float32), ParameterError)):
        if bad.dtype == np.longdouble and np.dtype(np.longdouble) == np.float64:
            continue
        with pytest.raises(exc) as info:
            _validate.check_embeddings(bad, "corpus")
        assert info.value.parameter == "corpus"


# ------------------------------------------------------------------------------ normalize_csr
def _reference_csr(rows, n_cols, sort, unique):
    """Plain-Python reference: per-row lists -> (indptr, ids)."""
    indptr, ids = [0], []
    for row in rows:
        vals = [int(v) for v in row]
        for v in vals:
            if not 0 <= v < n_cols:
                return v
        if unique:
            seen, kept = set(), []
            for v in vals:
                if v not in seen:
                    seen.add(v)
                    kept.append(v)
            vals = kept
        if sort:
            vals = sorted(vals)
        ids.extend(vals)
        indptr.append(len(ids))
    return indptr, ids


def _forms(rows, n_rows, n_cols):
    """The same per-row lists in every accepted input form."""
    import scipy.sparse as sps

    lens = [len(r) for r in rows]
    ptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    flat = np.array([v for r in rows for v in r], np.int64)
    yield "list", [np.array(r, np.int64) for r in rows]
    yield "lists", [list(r) for r in rows]
    yield "csr-tuple", (ptr, flat)
    yield "mapping", {i: r for i, r in enumerate(rows) if r}
    yield "generator", (np.array(r, np.int32) for r in rows)
    if all(0 <= v < n_cols for v in flat) and all(len(set(r)) == len(r) for r in rows):
        # scipy sums duplicates and sorts nothing; only unique in-range entries map 1:1
        yield "scipy", sps.csr_matrix((np.ones(flat.size), flat, ptr), shape=(n_rows, n_cols))


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), st.integers(1, 8), st.booleans(), st.booleans(), st.data())
def test_normalize_csr_matches_reference(n_rows, n_cols, sort, unique, data):
    rows = data.draw(st.lists(st.lists(st.integers(-2, n_cols + 1), max_size=6),
                              min_size=n_rows, max_size=n_rows))
    want = _reference_csr(rows, n_cols, sort, unique)
    for form, value in _forms(rows, n_rows, n_cols):
        if form == "scipy" and not sort:
            continue  # scipy's canonical form sorts the row's indices already
        if isinstance(want, int):
            with pytest.raises(ParameterError, match=f"holds document id {want}, outside") as e:
                normalize_csr(value, n_rows, n_cols, name="qrels", sort=sort, unique=unique)
            assert e.value.parameter == "qrels"
            continue
        indptr, ids = normalize_csr(value, n_rows, n_cols, sort=sort, unique=unique)
        assert indptr.dtype == np.int64 and ids.dtype == np.int64, form
        assert indptr.flags.c_contiguous and ids.flags.c_contiguous
        assert indptr.tolist() == want[0], form
        assert ids.tolist() == want[1], form


def test_normalize_csr_errors_name_the_parameter():
    bad = [
        (lambda: normalize_csr([[1]], 2, 5, name="qrels"), "one entry per query"),
        (lambda: normalize_csr((np.array([0, 1]), np.array([1, 2])), 2, 5, name="qrels"),
         "indptr"),
        (lambda: normalize_csr([[1], [2.5]], 2, 5, name="exclude"),
         r"exclude\[1\] must hold integers"),
        (lambda: normalize_csr({5: [1]}, 2, 5, name="qrels"), "query row 5 outside"),
        (lambda: normalize_csr({True: [1]}, 2, 5, name="qrels"), "mapping keys"),
        (lambda: normalize_csr("01", 2, 5, name="qrels"), "must be a CSR pair"),
        (lambda: normalize_csr(3, 2, 5, name="qrels"), "must be a CSR pair"),
        (lambda: normalize_csr(None, 2, 5, name="qrels"), "must be given"),
    ]
    for call, match in bad:
        with pytest.raises(ParameterError, match=match) as info:
            call()
        assert info.value.parameter in ("qrels", "exclude")
    assert normalize_csr(None, 2, 5, allow_none=True) is None


def test_one_normaliser_behind_every_caller():
    from simans_fast import candidates, candidates_torch
    from simans_fast.torch import distributed

    ex = [[3, 1, 3], [], [2]]
    want = normalize_csr(ex, 3, 5, name="exclude", sort=True, unique=False)
    for fn in (candidates._normalize_exclude, candidates_torch._normalize_exclude,
               distributed._exclude_csr):
        got = fn(ex, 3, 5)
        assert got[0].tolist() == want[0].tolist() == [0, 3, 3, 4]
        assert got[1].tolist() == want[1].tolist() == [1, 3, 3, 2]
    with pytest.raises(ParameterError, match="exclude holds document id 9") as info:
        candidates._normalize_exclude([[9], [], []], 3, 5)
    assert info.value.parameter == "exclude"


# -------------------------------------------------------------------------------- _config
def test_rng_domains_are_distinct_and_wired():
    from simans_fast import hn_mine, sampler
    from simans_fast.kernels import sampling as ks

    vals = list(_config.RNG_DOMAINS.values())
    assert len(set(vals)) == len(vals)
    assert all(0 <= v < 2**64 for v in vals)
    # values are part of the reproducibility contract: the mnemonics' ASCII
    assert _config.RNG_DOMAINS["positive"] == 0x504F534954495645
    assert _config.RNG_DOMAINS["torch"] == 0x544F5243484B4559
    assert _config.RNG_DOMAINS["shuffle"] == 0x53485546464C45
    assert _config.RNG_DOMAINS["hn_pad"] == 0x686E5F706164
    assert ks.POS_DOMAIN == sampler._POS_DOMAIN == _config.POS_DOMAIN
    assert hn_mine._PAD_STREAM == _config.HN_PAD_DOMAIN
    with pytest.raises(KeyError, match="registered"):
        _config.rng_domain("nope")


def test_rng_domains_used_by_torch_modules():
    pytest.importorskip("torch")
    from simans_fast.torch import data, sampling

    assert sampling._TORCH_DOMAIN == _config.TORCH_DOMAIN
    assert data._SHUFFLE_DOMAIN == _config.SHUFFLE_DOMAIN


def test_thread_limits_sets_and_restores():
    import numba

    before = numba.get_num_threads()
    with _config.thread_limits(None):
        assert numba.get_num_threads() == before
    with _config.thread_limits(1):
        assert numba.get_num_threads() == 1
        try:
            from threadpoolctl import threadpool_info
        except ImportError:  # pragma: no cover
            threadpool_info = None
        if threadpool_info is not None:
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert all(i["num_threads"] == 1 for i in blas)
    assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with _config.thread_limits(1):
            raise RuntimeError("restored after an exception too")
    assert numba.get_num_threads() == before


def test_resolve_parallel_policy():
    rp = _config.resolve_parallel
    assert rp(True, 1) is True and rp(False, 10**6) is False
    assert rp(None, _config.PARALLEL_MIN_ROWS - 1) is False
    assert rp(None, _config.PARALLEL_MIN_ROWS) is True
    assert rp(None, 10**6, in_worker=True) is False
    assert rp(None) is True


def test_leaves_import_nothing_of_the_package_above_them():
    import ast
    import pathlib

    root = pathlib.Path(_validate.__file__).parent
    for leaf, allowed in (("_validate.py", {"_config"}), ("_config.py", set())):
        tree = ast.parse((root / leaf).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                mods = {node.module} if node.module else {a.name for a in node.names}
                assert mods <= allowed, (leaf, mods)


def test_check_window_is_the_one_rank_window_rule():
    """Pairs everywhere, ``LO-HI`` text only where asked (saved parameter sets): the rule
    strategies' ``window=`` and the saved sets' parser share."""
    import numpy as np

    from simans_fast._validate import ParameterError, check_window
    from simans_fast.diagnostics import parse_window
    from simans_fast.strategies import filter_candidates

    assert check_window(None) is None
    assert check_window((np.int64(2), None)) == (2, None) and check_window([0, 5]) == (0, 5)
    assert check_window("10-210", text=True) == (10, 210) == parse_window("10-210")
    assert parse_window("7-") == (7, None) == parse_window((7, None))
    for bad in [(True, 3), (3, 3), (-1, 4), (1.0, 3), [1], 5, "10-210"]:
        with pytest.raises(ParameterError) as e:
            check_window(bad)
        assert e.value.parameter == "window"
    for bad in ["10-5", "x-3", "3", "-3", "1-2-3", (2, 1)]:
        with pytest.raises(ParameterError) as e:
            parse_window(bad, "range_for_sampling")
        assert e.value.parameter == "range_for_sampling"
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    scores = -np.arange(12, dtype=np.float32).reshape(2, 6)
    with pytest.raises(ParameterError, match="lo < hi"):
        filter_candidates(ids, scores, window=(4, 2))

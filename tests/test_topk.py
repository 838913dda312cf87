"""Tests of exact top-k retrieval, rescoring and the faiss backend (owner: topk engineer).

Exactness is checked against the NumPy brute force of tests/naive_topk.py. Data built from small
integers makes every score exactly representable, so ids (including the order of many equal
scores) must match bit for bit; random float data is checked up to float32 rounding.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simans_fast as sf
from simans_fast.candidates import rescore, topk
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from naive_topk import check_topk_close, naive_rescore, naive_topk  # noqa: E402


def int_data(n_q, n_d, d, seed, lo=-2, hi=3, dtype=np.float32):
    """Small-integer embeddings: exact float32 scores with many ties."""
    rng = np.random.default_rng(seed)
    q = rng.integers(lo, hi, size=(n_q, d)).astype(dtype)
    c = rng.integers(lo, hi, size=(n_d, d)).astype(dtype)
    return q, c


def float_data(n_q, n_d, d, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_q, d), dtype=np.float32),
            rng.standard_normal((n_d, d), dtype=np.float32))


def random_exclude(n_q, n_d, seed, max_len=6):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_d, size=rng.integers(0, max_len + 1)) for _ in range(n_q)]


def assert_same(c, ids, scores):
    np.testing.assert_array_equal(c.ids, ids)
    np.testing.assert_array_equal(c.scores, scores)


# ------------------------------------------------------------------------- exact backend


@pytest.mark.parametrize("k", [1, 5, 64, 300])
def test_exact_ties_odd_blocks(k):
    # d=4 and values in {-1,0,1}: only 9 distinct scores -> huge tie groups broken by id
    q, c = int_data(37, 301, 4, seed=k, lo=-1, hi=2)
    ref = naive_topk(q, c, k)
    for qb, cb in [(None, None), (7, 13), (2, 7), (37, 301), (5, 64)]:
        assert_same(topk(q, c, k, backend="numba", query_block=qb, corpus_block=cb), *ref)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_fused_and_blocked_paths_agree(monkeypatch, metric):
    # tiny odd thread tasks / GEMM tiles so every path crosses many boundaries
    import simans_fast.candidates as cand

    monkeypatch.setattr(cand, "_SUB", 3)
    monkeypatch.setattr(cand, "_TILE", 5)
    q, c = int_data(23, 211, 6, seed=4)
    excl = random_exclude(23, 211, seed=9, max_len=12)
    ref = naive_topk(q, c, 17, metric=metric, exclude=excl) if metric != "cosine" else None
    outs = []
    for fused in (True, False):
        for qb, cb in [(None, None), (10, 37)]:
            ids, scores = cand._topk_numba(q, c, 17, metric, cand._normalize_exclude(excl, 23, 211),
                                           False, qb, cb, fused=fused)
            outs.append((ids, scores))
            if ref is not None:
                np.testing.assert_array_equal(ids, ref[0])
                np.testing.assert_array_equal(scores, ref[1])
            else:
                check_topk_close(ids, scores, q, c, 17, metric="cosine", exclude=excl)
    for ids, scores in outs[1:]:
        np.testing.assert_array_equal(ids, outs[0][0])
        np.testing.assert_array_equal(scores, outs[0][1])


@pytest.mark.parametrize("z", [0.0, 0.3, 1.0, 5.0])
def test_threshold_guess_is_verified(monkeypatch, caplog, z):
    # z = 0.3 guesses too high on purpose, z = 1 often, z = 0 never guesses; adversarial order
    # (documents sorted by score, best last) defeats the random-order estimate: every row must
    # still be exact, rows with a wrong guess being recomputed without guessing
    import simans_fast.candidates as cand

    monkeypatch.setattr(cand, "_GUESS_Z", z)
    caplog.set_level(logging.DEBUG, logger="simans_fast.candidates")
    q, c = int_data(30, 3000, 6, seed=21, lo=-3, hi=4)
    excl = random_exclude(30, 3000, seed=2, max_len=40)
    ref = naive_topk(q, c, 40, exclude=excl)
    for fused in (True, False):
        ids, scores = cand._topk_numba(q, c, 40, "ip", cand._normalize_exclude(excl, 30, 3000),
                                       False, 16, 700, fused=fused)
        np.testing.assert_array_equal(ids, ref[0])
        np.testing.assert_array_equal(scores, ref[1])
    order = np.argsort(c @ q[0])  # best documents of query 0 last
    cs = c[order]
    ref = naive_topk(q, cs, 40)
    out = topk(q, cs, 40, corpus_block=512)
    assert_same(out, *ref)
    redone = any("recomputed without threshold guessing" in r.getMessage() for r in caplog.records)
    assert redone == (z > 0)


def test_all_scores_equal():
    q = np.ones((5, 3), np.float32)
    c = np.ones((100, 3), np.float32)
    out = topk(q, c, 10, corpus_block=7)
    np.testing.assert_array_equal(out.ids, np.tile(np.arange(10), (5, 1)))
    assert np.all(out.scores == 3.0)


@pytest.mark.parametrize("k_extra", [0, 1, 17])
def test_k_equal_and_larger_than_corpus(k_extra):
    q, c = int_data(9, 23, 5, seed=3)
    k = 23 + k_extra
    ids, scores = naive_topk(q, c, k)
    out = topk(q, c, k, corpus_block=4, query_block=2)
    assert_same(out, ids, scores)
    assert np.all(out.ids[:, 23:] == -1) and np.all(np.isneginf(out.scores[:, 23:]))
    assert np.all(np.sort(out.ids[:, :23], axis=1) == np.arange(23))


def test_exclusions_formats_and_everything_excluded():
    n_q, n_d = 12, 40
    q, c = int_data(n_q, n_d, 6, seed=5)
    excl = random_exclude(n_q, n_d, seed=1)
    excl[3] = np.arange(n_d)  # everything excluded
    excl[4] = np.array([7, 7, 7, 2])  # duplicates
    excl[5] = np.arange(n_d - 3)  # only 3 left, fewer than k
    ref = naive_topk(q, c, 10, exclude=excl)
    indptr = np.zeros(n_q + 1, np.int64)
    indptr[1:] = np.cumsum([len(e) for e in excl])
    csr = (indptr, np.concatenate(excl))
    import scipy.sparse as sp

    m = sp.csr_matrix((np.ones(len(csr[1])), csr[1], indptr), shape=(n_q, n_d))
    for ex in (excl, csr, m):
        for qb, cb in [(None, None), (5, 9)]:
            out = topk(q, c, 10, exclude=ex, query_block=qb, corpus_block=cb)
            assert_same(out, *ref)
    out = topk(q, c, 10, exclude=excl)
    assert np.all(out.ids[3] == -1) and np.all(np.isneginf(out.scores[3]))
    assert np.all(out.ids[5, 3:] == -1) and set(out.ids[5, :3]) == {n_d - 3, n_d - 2, n_d - 1}


def test_float_data_close_to_reference():
    q, c = float_data(50, 3000, 24, seed=2)
    excl = random_exclude(50, 3000, seed=2, max_len=30)
    for metric in ("ip", "cosine", "l2"):
        out = topk(q, c, 40, metric=metric, exclude=excl, query_block=16, corpus_block=500)
        check_topk_close(out.ids, out.scores, q, c, 40, metric=metric, exclude=excl)


def test_cosine_zero_rows_and_scale_invariance():
    q, c = float_data(20, 500, 16, seed=4)
    c[10] = 0.0
    q[3] = 0.0
    out = topk(q, c, 30, metric="cosine", corpus_block=77)
    check_topk_close(out.ids, out.scores, q, c, 30, metric="cosine")
    # cosine does not depend on row norms
    scale = np.random.default_rng(0).uniform(0.5, 4.0, size=(500, 1)).astype(np.float32)
    out2 = topk(q, c * scale, 30, metric="cosine", corpus_block=77)
    np.testing.assert_allclose(out2.scores, out.scores, rtol=1e-5, atol=1e-6)
    assert np.all(out.scores[3] == 0.0)  # zero query: every score 0, ties by id
    np.testing.assert_array_equal(out.ids[3], np.arange(30))


def test_threads_1_vs_2_identical():
    q, c = int_data(64, 2000, 16, seed=8)
    a = topk(q, c, 50, n_threads=1, query_block=20, corpus_block=300)
    b = topk(q, c, 50, n_threads=2, query_block=20, corpus_block=300)
    assert_same(a, b.ids, b.scores)
    assert_same(a, *naive_topk(q, c, 50))
    # random float data: the same bits, not merely close (the case of issue 8: 90 queries x
    # 600 docs x 16 dims, k = 30; the BLAS call shape used to follow the thread count)
    qf, cf = float_data(90, 600, 16, seed=8)
    for kw in ({}, {"query_block": 30}, {"metric": "l2"}, {"metric": "cosine"}):
        a = topk(qf, cf, 30, n_threads=1, **kw)
        b = topk(qf, cf, 30, n_threads=2, **kw)
        assert_same(a, b.ids, b.scores)
        check_topk_close(a.ids, a.scores, qf, cf, 30, metric=kw.get("metric", "ip"))


def test_float16_memmap(tmp_path):
    q, c = int_data(30, 257, 8, seed=9, dtype=np.float16)
    path = tmp_path / "corpus.npy"
    np.save(path, c)
    qpath = tmp_path / "queries.npy"
    np.save(qpath, q)
    cm = np.load(path, mmap_mode="r")
    qm = np.load(qpath, mmap_mode="r")
    assert isinstance(cm, np.memmap) and cm.dtype == np.float16
    ref = naive_topk(q.astype(np.float32), c.astype(np.float32), 20)
    for qb, cb in [(None, None), (7, 31)]:
        assert_same(topk(qm, cm, 20, query_block=qb, corpus_block=cb), *ref)
    # float16 random data: computed in float32 from the exact float16 values
    qf, cf = float_data(10, 400, 32, seed=1)
    cf16 = cf.astype(np.float16)
    np.save(path, cf16)
    cm = np.load(path, mmap_mode="r")
    out = topk(qf, cm, 15, corpus_block=64)
    check_topk_close(out.ids, out.scores, qf, cf16.astype(np.float32), 15)
    # the memory map is still readable after pages were released
    np.testing.assert_array_equal(np.asarray(cm[:5]), cf16[:5])
    # float32 memmap, no copy path
    np.save(path, cf)
    cm = np.load(path, mmap_mode="r")
    out2 = topk(qf, cm, 15, corpus_block=64)
    check_topk_close(out2.ids, out2.scores, qf, cf, 15)


@pytest.mark.parametrize("backend", ["numba", "faiss"])
def test_empty_inputs(backend):
    q, c = float_data(4, 10, 3, seed=0)
    out = topk(q[:0], c, 3, backend=backend)
    assert out.ids.shape == (0, 3) and out.scores.shape == (0, 3)
    out = topk(q, c[:0], 3, backend=backend)
    assert np.all(out.ids == -1) and np.all(np.isneginf(out.scores))
    assert rescore(q, c, np.zeros((4, 0), np.int64)).shape == (4, 0)


def test_nonfinite_embeddings_are_errors(tmp_path):
    # a NaN or infinite value is an error naming the array and its first bad row, for topk
    # (every path) and rescore; nothing is silently dropped
    q, c = int_data(6, 3000, 4, seed=3)
    for bad_rows, val in (([3, 17], np.nan), ([2500], np.inf), ([1200, 40], -np.inf)):
        cb = c.copy()
        cb[bad_rows, 1] = val
        first = min(bad_rows)
        for kw in ({}, {"corpus_block": 1024}, {"metric": "cosine"}, {"metric": "l2"}):
            with pytest.raises(ValueError, match=rf"corpus row {first} is not finite"):
                topk(q, cb, 5, **kw)
        with pytest.raises(ValueError, match=rf"corpus row {first} is not finite"):
            topk(q, cb, 5, exclude=[[first]] * 6)  # excluded or not, it is bad input
        with pytest.raises(ValueError, match=rf"corpus row {first} is not finite"):
            topk(q, cb, 5, backend="faiss")
    qb = q.copy()
    qb[4, 0] = np.inf
    with pytest.raises(ValueError, match="queries row 4 is not finite"):
        topk(qb, c, 5, query_block=2)
    with pytest.raises(ValueError, match="queries row 4 is not finite"):
        topk(qb, c, 5, backend="faiss")
    with pytest.raises(ValueError, match="queries row 4 is not finite"):
        rescore(qb, c, np.zeros((6, 2), np.int64))
    # float64 beyond the float32 range becomes inf once converted: also an error
    with pytest.raises(ValueError, match="queries row 0 is not finite"):
        topk(np.full((1, 4), 1e300), c, 5)
    # a float16 memory map: the bad row is found in a late block (the file is streamed)
    c16 = c.astype(np.float16)
    c16[2999, 3] = np.inf
    path = tmp_path / "c16.npy"
    np.save(path, c16)
    cm = np.load(path, mmap_mode="r")
    with pytest.raises(ValueError, match="corpus row 2999 is not finite"):
        topk(q, cm, 5, corpus_block=1024)
    # rescore reads only the rows named in ids: a bad row not named is not an error
    ids = np.tile(np.arange(4), (6, 1))
    np.testing.assert_array_equal(rescore(q, cm, ids), rescore(q, c, ids))
    ids[5, 2] = 2999
    with pytest.raises(ValueError, match=r"corpus row 2999 \(named in ids\) is not finite"):
        rescore(q, cm, ids)


def test_noncontiguous_and_float64_inputs():
    q, c = int_data(11, 90, 6, seed=12)
    cf = np.asfortranarray(c)
    qs = np.repeat(q, 2, axis=0)[::2]
    ref = naive_topk(q, c, 8)
    assert_same(topk(qs, cf, 8, corpus_block=16), *ref)
    assert_same(topk(q.astype(np.float64), c.astype(np.float64), 8), *ref)


@settings(deadline=None, max_examples=25)
@given(
    n_q=st.integers(1, 12),
    n_d=st.integers(1, 60),
    d=st.integers(1, 5),
    k=st.integers(1, 70),
    qb=st.integers(2, 13),
    cb=st.integers(3, 61),
    seed=st.integers(0, 2**16),
    with_excl=st.booleans(),
)
def test_hypothesis_against_reference(n_q, n_d, d, k, qb, cb, seed, with_excl):
    q, c = int_data(n_q, n_d, d, seed=seed, lo=-1, hi=2)
    excl = random_exclude(n_q, n_d, seed, max_len=n_d) if with_excl else None
    out = topk(q, c, k, exclude=excl, query_block=qb, corpus_block=cb)
    assert_same(out, *naive_topk(q, c, k, exclude=excl))


def test_candidates_dataclass_auto_backend_and_progress(caplog):
    q, c = float_data(6, 100, 8, seed=0)
    with caplog.at_level(logging.INFO, logger="simans_fast.candidates"):
        out = sf.topk(q, c, 5, progress=True)
    assert isinstance(out, sf.Candidates) and out.backend == "numba"
    assert any("backend='numba'" in r.getMessage() for r in caplog.records)
    assert out.n_queries == 6 and out.k == 5
    ids, scores = out
    assert ids is out.ids and scores is out.scores
    assert topk(q, c, 5, backend="numba").backend == "numba"


def test_import_does_not_load_torch_or_faiss():
    code = ("import sys, numpy as np, simans_fast as sf; "
            "q = np.ones((2, 3), np.float32); sf.topk(q, q, 1); "
            "sf.rescore(q, q, np.zeros((2, 1), int)); "
            "assert 'faiss' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in sys.modules if m in ('faiss', 'torch')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_root(), env=_env())


# ------------------------------------------------------- bit-identical for any threads/blocks
#
# Every score comes from BLAS calls of one fixed shape in which each query / document keeps a
# place set by its global row number, computed single-threaded: the bits may not depend on the
# Numba or BLAS thread count, threadpoolctl, the fused or unfused path, block sizes, chunking
# (with query_offset), corpus shards (with corpus_offset) or float16 memory maps. The children
# below run _bit_digests() under each configuration and must all print the same digests.


def _digest(*arrays):
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _bit_digests(tmpdir):
    """Digests of ids + scores for k = 200 / 1000 and each metric; every variant of the same
    query must give identical bits (asserted here, in whatever process runs it)."""
    from simans_fast import candidates as cand

    n_q, n_d = 300, 3000
    q, c = float_data(n_q, n_d, 32, seed=7)
    excl = random_exclude(n_q, n_d, seed=5, max_len=5)
    csr = cand._normalize_exclude(excl, n_q, n_d)
    path = os.path.join(tmpdir, "c16.npy")
    np.save(path, c.astype(np.float16))
    c16 = np.load(path, mmap_mode="r")
    c16_as_f32 = c.astype(np.float16).astype(np.float32)
    out = {}
    for k, metric in ((200, "ip"), (200, "l2"), (200, "cosine"), (1000, "ip"), (1000, "l2"),
                      (1000, "cosine")):
        base = topk(q, c, k, metric=metric, exclude=excl)
        ref = _digest(base.ids, base.scores)
        variants = {
            "qb7": topk(q, c, k, metric=metric, exclude=excl, query_block=7),
            "qb1000_cb1000": topk(q, c, k, metric=metric, exclude=excl, query_block=1000,
                                  corpus_block=1000),
            "unfused": cand._topk_numba(q, c, k, metric, csr, False, None, None,
                                        fused=False),
            "no_guess": cand._topk_numba(q, c, k, metric, csr, False, 300, 2048, z=0.0),
        }
        parts = [topk(q[a:b], c, k, metric=metric, exclude=excl[a:b], query_offset=a,
                      query_block=qb)
                 for (a, b), qb in zip(((0, 37), (37, 290), (290, 300)), (None, 100, 3))]
        variants["chunks"] = (np.concatenate([x.ids for x in parts]),
                              np.concatenate([x.scores for x in parts]))
        for name, (i, s) in variants.items():
            assert _digest(i, s) == ref, f"k={k} {metric}: {name} differs from the default"
        out[f"{metric}_k{k}"] = ref
        # float16 memory map: the same bits as the float32 corpus of its values
        a16 = topk(q, c16, k, metric=metric, exclude=excl)
        b16 = topk(q, c16_as_f32, k, metric=metric, exclude=excl, corpus_block=1024)
        assert _digest(a16.ids, a16.scores) == _digest(b16.ids, b16.scores), "float16"
        out[f"{metric}_k{k}_f16"] = _digest(a16.ids, a16.scores)
    # a corpus shard placed at its global offset scores every pair as the whole corpus does
    rest = topk(q, c, 200, exclude=(np.arange(n_q + 1) * 1000, np.tile(np.arange(1000), n_q)))
    shard = topk(q, c[1000:], 200, corpus_offset=1000)
    assert np.array_equal(rest.ids - 1000, shard.ids)
    assert np.array_equal(rest.scores, shard.scores)
    out["shard"] = _digest(shard.ids, shard.scores)
    ids = np.random.default_rng(1).integers(-1, n_d, size=(n_q, 50))
    r = rescore(q, c16, ids, metric="cosine")
    assert _digest(r) == _digest(rescore(q, c16_as_f32, ids, metric="cosine", query_block=7))
    out["rescore"] = _digest(rescore(q, c, ids), r)
    return out


_CHILD = """
import json, os, sys, tempfile
if os.environ["SIMANS_TEST_TPC"] == "absent":
    sys.modules["threadpoolctl"] = None  # import threadpoolctl -> ImportError
sys.path.insert(0, {tests!r})
import numba
import test_topk
from simans_fast import candidates as cand
if os.environ["SIMANS_TEST_BLAS_API"] == "absent":
    cand._blas_thread_api = lambda: None  # and no threadpoolctl: the unfused serial path
try:
    import threadpoolctl  # noqa: F401
    has_tpc = True
except ImportError:
    has_tpc = False
assert has_tpc == (os.environ["SIMANS_TEST_TPC"] == "present")
with tempfile.TemporaryDirectory() as tmp:
    d = test_topk._bit_digests(tmp)
print("DIGESTS " + json.dumps(d, sort_keys=True))
print("CONFIG", numba.get_num_threads(), cand._BlasOneThread.available())
"""


@pytest.fixture(scope="module")
def reference_digests(tmp_path_factory):
    return _bit_digests(str(tmp_path_factory.mktemp("digests")))


@pytest.mark.parametrize("threads,tpc,blas_api", [
    ("1", "present", "present"),
    ("2", "present", "present"),
    ("2", "absent", "present"),
    ("1", "absent", "present"),
    ("2", "absent", "absent"),  # no way to limit the BLAS: serial calls (1 BLAS thread here)
])
def test_bits_identical_across_threads_and_threadpoolctl(reference_digests, threads, tpc,
                                                         blas_api):
    import json

    env = _env()
    env.update(NUMBA_NUM_THREADS=threads, SIMANS_TEST_TPC=tpc, SIMANS_TEST_BLAS_API=blas_api)
    if blas_api == "absent":
        env["OPENBLAS_NUM_THREADS"] = "1"
    code = _CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=_root(), env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    got = json.loads([x for x in lines if x.startswith("DIGESTS ")][-1][len("DIGESTS "):])
    config = [x for x in lines if x.startswith("CONFIG ")][-1].split()
    assert config[1] == threads and config[2] == str(blas_api == "present")
    assert got == reference_digests


def test_chunks_and_shards_are_exact():
    # offsets change no result beyond float rounding: every chunk / shard is an exact top-k,
    # and with the offsets the pieces are bit-identical to the whole
    q, c = float_data(70, 2500, 24, seed=3)
    excl = random_exclude(70, 2500, seed=4, max_len=8)
    whole = topk(q, c, 40, exclude=excl, metric="l2")
    check_topk_close(whole.ids, whole.scores, q, c, 40, metric="l2", exclude=excl)
    for a, b in ((0, 1), (1, 33), (33, 70)):
        part = topk(q[a:b], c, 40, exclude=excl[a:b], metric="l2", query_offset=a)
        assert_same(part, whole.ids[a:b], whole.scores[a:b])
        plain = topk(q[a:b], c, 40, exclude=excl[a:b], metric="l2")
        check_topk_close(plain.ids, plain.scores, q[a:b], c, 40, metric="l2",
                         exclude=excl[a:b])
    qi, ci = int_data(20, 900, 5, seed=6)
    for off in (0, 1, 700, 1023, 5000):
        sh = topk(qi, ci[300:], 30, corpus_offset=off)
        assert_same(sh, *naive_topk(qi, ci[300:], 30))  # integer data: exact


def test_blas_thread_control_restores_the_setting():
    # the kernels' BLAS is single-threaded inside the call and back to its setting after it
    from simans_fast import candidates as cand

    api = cand._blas_thread_api()
    assert api is not None, "SciPy's OpenBLAS thread API was not found"
    get, set_ = api
    before = get()
    try:
        set_(2)
        with cand._BlasOneThread() as ctl:
            assert ctl.active and get() == 1
        assert get() == 2
    finally:
        set_(before)


# ------------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    q, c = float_data(3, 10, 4, seed=0)
    with pytest.raises(ValueError, match="dimension"):
        topk(q, c[:, :3], 2)
    for bad_k in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="k must"):
            topk(q, c, bad_k)
    with pytest.raises(ValueError, match="queries must be float32"):
        topk(q.astype(np.int32), c, 2)
    with pytest.raises(ValueError, match="corpus must be float32"):
        topk(q, c.astype(np.int64), 2)
    with pytest.raises(ValueError, match="corpus must be 2-D"):
        topk(q, c[0], 2)
    with pytest.raises(ValueError, match="exclude holds document id 10"):
        topk(q, c, 2, exclude=[[1], [10], []])
    with pytest.raises(ValueError, match="exclude holds document id -1"):
        topk(q, c, 2, exclude=[[1], [-1], []])
    with pytest.raises(ValueError, match="one entry per query"):
        topk(q, c, 2, exclude=[[1], [2]])
    with pytest.raises(ValueError, match="indptr"):
        topk(q, c, 2, exclude=(np.array([0, 1, 2]), np.array([1, 2])))
    with pytest.raises(ValueError, match=r"exclude\[1\] must hold integers"):
        topk(q, c, 2, exclude=[[1], [2.5], []])
    with pytest.raises(ValueError, match="metric"):
        topk(q, c, 2, metric="dot")
    with pytest.raises(ValueError, match="backend"):
        topk(q, c, 2, backend="gpu")
    with pytest.raises(ValueError, match="index"):
        topk(q, c, 2, backend="numba", index="Flat")
    with pytest.raises(ValueError, match="corpus_block"):
        topk(q, c, 2, corpus_block=0)
    with pytest.raises(ValueError, match="n_threads"):
        topk(q, c, 2, n_threads=0)
    for name in ("query_offset", "corpus_offset"):
        for bad in (-1, 1.0, True, None):
            with pytest.raises(ValueError, match=f"{name} must be a non-negative int"):
                topk(q, c, 2, **{name: bad})
    ids = np.zeros((3, 2), np.int64)
    with pytest.raises(ValueError, match="ids holds 10"):
        rescore(q, c, ids + 10)
    with pytest.raises(ValueError, match="ids holds -2"):
        rescore(q, c, ids - 2)
    with pytest.raises(ValueError, match="ids must be an integer"):
        rescore(q, c, ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"ids must have shape"):
        rescore(q, c, ids[:2])
    with pytest.raises(ValueError, match="dimension"):
        rescore(q, c[:, :2], ids)


# ------------------------------------------------------------------------------ rescore


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_rescore_matches_numpy(metric, tmp_path):
    q, c = float_data(40, 300, 20, seed=6)
    c[5] = 0.0
    ids = np.random.default_rng(0).integers(-1, 300, size=(40, 17))
    ids[:, 0] = 5
    ref = naive_rescore(q, c, ids, metric)
    out = rescore(q, c, ids, metric=metric, query_block=7)
    assert out.dtype == np.float32 and out.shape == ids.shape
    np.testing.assert_array_equal(np.isneginf(out), ids < 0)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
    # float16 memory-mapped corpus: same as the float32 corpus of its values
    path = tmp_path / "c16.npy"
    np.save(path, c.astype(np.float16))
    c16 = np.load(path, mmap_mode="r")
    ref16 = naive_rescore(q, c.astype(np.float16).astype(np.float32), ids, metric)
    np.testing.assert_allclose(rescore(q, c16, ids, metric=metric), ref16, rtol=1e-6, atol=1e-5)
    # consistent with topk's scores
    cand = topk(q, c, 10, metric=metric)
    np.testing.assert_allclose(rescore(q, c, cand.ids, metric=metric), cand.scores,
                               rtol=1e-5, atol=1e-5)


def test_float16_conversion_is_exact_for_every_bit_pattern():
    from simans_fast.kernels.topk import block_f16_to_f32

    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    out = np.empty((256, 256), np.float32)
    block_f16_to_f32(bits, out, False)
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(out.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])


# -------------------------------------------------------------------------------- faiss

# faiss and torch are test requirements (extras "faiss", "torch"): these tests fail, not skip,
# without them. faiss is imported inside the tests so that collecting this module does not put
# faiss into sys.modules of the whole test session.
def _faiss():
    import faiss

    return faiss


def clustered(n_q, n_d, d, seed, n_clusters=50):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32) * 3
    c = centers[rng.integers(0, n_clusters, n_d)] + rng.standard_normal((n_d, d), np.float32)
    q = centers[rng.integers(0, n_clusters, n_q)] + rng.standard_normal((n_q, d), np.float32)
    return q.astype(np.float32), c.astype(np.float32)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_faiss_flat_equals_exact(metric):
    q, c = float_data(80, 4000, 32, seed=11)
    excl = random_exclude(80, 4000, seed=3, max_len=20)
    # make the exclusions bite: exclude each query's current best
    best = topk(q, c, 3, metric=metric).ids
    excl = [np.concatenate([e, b]) for e, b in zip(excl, best)]
    a = topk(q, c, 25, metric=metric, exclude=excl, backend="numba")
    b = topk(q, c, 25, metric=metric, exclude=excl, backend="faiss", n_threads=1)
    assert b.backend == "faiss"
    check_topk_close(b.ids, b.scores, q, c, 25, metric=metric, exclude=excl)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-4)
    # random float data has no exact ties: ids agree except where scores are within rounding
    diff = a.ids != b.ids
    assert diff.mean() < 0.01


def test_faiss_ties_and_padding():
    q, c = int_data(10, 30, 4, seed=2, lo=-1, hi=2)
    excl = random_exclude(10, 30, seed=4)
    excl[0] = np.arange(30)
    ref = naive_topk(q, c, 40, exclude=excl)
    out = topk(q, c, 40, exclude=excl, backend="faiss")
    # all 30 docs fit into k, so the canonical order (score desc, id asc) is fully determined
    assert_same(out, *ref)


def recall(approx, exact):
    hits = [len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum())
            for a, e in zip(approx, exact)]
    return float(np.mean(hits))


def test_faiss_ivf_and_hnsw_recall(capsys):
    faiss = _faiss()
    q, c = clustered(200, 20000, 32, seed=5)
    k = 20
    exact = topk(q, c, k).ids
    ivf = faiss.index_factory(32, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(c)
    ivf.add(c)
    ivf.nprobe = 16
    r_ivf = recall(topk(q, c, k, backend="faiss", index=ivf).ids, exact)
    r_ivf_str = recall(topk(q, c, k, index=("IVF64,Flat", "nprobe=16")).ids, exact)
    hnsw = faiss.IndexHNSWFlat(32, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(c)
    hnsw.hnsw.efSearch = 128
    r_hnsw = recall(topk(q, c, k, index=hnsw).ids, exact)
    with capsys.disabled():
        print(f"\n[topk] recall@{k} vs exact: IVF64,Flat nprobe=16 {r_ivf:.3f} "
              f"(factory string {r_ivf_str:.3f}), HNSW32 efSearch=128 {r_hnsw:.3f}")
    assert r_ivf >= 0.8 and r_ivf_str >= 0.8 and r_hnsw >= 0.8


def test_faiss_index_checks():
    faiss = _faiss()
    q, c = float_data(4, 50, 8, seed=0)
    idx = faiss.IndexFlatIP(8)
    idx.add(c[:40])
    with pytest.raises(ValueError, match="index holds 40 vectors"):
        topk(q, c, 3, index=idx)
    l2 = faiss.IndexFlatL2(8)
    l2.add(c)
    with pytest.raises(ValueError, match="metric"):
        topk(q, c, 3, index=l2)
    with pytest.raises(ValueError, match="dimension"):
        topk(q, c, 3, index=faiss.IndexFlatIP(4))
    with pytest.raises(ValueError, match="could not build"):
        topk(q, c, 3, index="NotAnIndex")
    with pytest.raises(ValueError, match="must be a faiss index"):
        topk(q, c, 3, index=object())


def test_faiss_threads_restored():
    faiss = _faiss()
    q, c = float_data(4, 50, 8, seed=0)
    before = faiss.omp_get_max_threads()
    topk(q, c, 3, backend="faiss", n_threads=1)
    assert faiss.omp_get_max_threads() == before


def test_torch_then_faiss_in_one_process():
    code = textwrap.dedent("""
        import numpy as np, torch
        import simans_fast as sf
        t = torch.randn(64, 16) @ torch.randn(16, 64)  # torch's thread pool is live
        rng = np.random.default_rng(0)
        q = rng.standard_normal((50, 16), dtype=np.float32)
        c = rng.standard_normal((2000, 16), dtype=np.float32)
        a = sf.topk(q, c, 10, backend="faiss")
        b = sf.topk(q, c, 10, backend="numba")
        assert np.allclose(a.scores, b.scores, atol=1e-4), "faiss != exact"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=_root(), env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")


def _root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = _root() + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env

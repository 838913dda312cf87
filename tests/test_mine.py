"""sf.mine / mine_candidates against a dense NumPy pipeline (tests/naive_mine.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import simans_fast as sf
from simans_fast.pipeline import (
    MinedCandidates,
    mine,
    mine_candidates,
    normalize_qrels,
    positive_matrix,
)

from naive_mine import brute_force_mine, dense_scores, simans_probabilities


def _data(n_docs=400, n_q=30, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n_docs, dim)).astype(np.float32)
    queries = rng.standard_normal((n_q, dim)).astype(np.float32)
    return queries, corpus


def _check_against_reference(mined: MinedCandidates, ref, tol=1e-4):
    cand_ids, cand_scores, pos_ids, pos_scores = ref
    n_q, k = cand_ids.shape
    assert mined.candidate_ids.shape == (n_q, k)
    assert mined.candidate_ids.dtype == np.int64
    assert mined.candidate_scores.dtype == np.float32
    np.testing.assert_array_equal(mined.positive_ids, pos_ids)
    # exact positive scores (also for positives far outside the top-k)
    np.testing.assert_allclose(mined.positive_scores, pos_scores, rtol=1e-5, atol=tol)
    assert np.array_equal(np.isnan(mined.positive_scores), np.isnan(pos_scores))
    for i in range(n_q):
        got = mined.candidate_ids[i]
        valid = got >= 0
        assert valid.sum() == (cand_ids[i] >= 0).sum()
        assert len(set(got[valid].tolist())) == valid.sum()  # no repeats
        assert not set(got[valid].tolist()) & set(pos_ids[i][pos_ids[i] >= 0].tolist())
        # same ranked scores as the reference (robust to float32 near-ties)
        np.testing.assert_allclose(mined.candidate_scores[i][valid], cand_scores[i][valid],
                                   rtol=1e-5, atol=tol)
        # ids equal wherever the reference scores are not tied within tolerance
        ref_s = cand_scores[i][valid]
        gaps = np.diff(ref_s)
        clear = np.ones(valid.sum(), bool)
        clear[:-1] &= np.abs(gaps) > 10 * tol
        clear[1:] &= np.abs(gaps) > 10 * tol
        np.testing.assert_array_equal(got[valid][clear], cand_ids[i][valid][clear])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_mine_candidates_equals_brute_force(metric):
    queries, corpus = _data(seed=1)
    n_q = queries.shape[0]
    rng = np.random.default_rng(5)
    positives = []
    for i in range(n_q):
        if i % 6 == 5:
            positives.append([])  # query without positives
        elif i % 3 == 0:
            positives.append(list(rng.choice(400, size=3, replace=False)))
        else:
            positives.append([int(rng.integers(400))])
    # a positive that is surely outside the top-k: the worst document of query 1
    worst = int(np.argmin(dense_scores(queries[1:2], corpus, metric)[0]))
    positives[1] = [worst]
    positives[3] = positives[3] + [positives[3][0]]  # a repeated positive is dropped
    k = 25
    ref = brute_force_mine(queries, corpus, positives, k, metric)
    got = mine_candidates(queries, corpus, positives, k=k, metric=metric)
    _check_against_reference(got, ref)
    assert worst not in got.candidate_ids[1]
    assert got.positive_ids[1, 0] == worst
    assert np.isnan(got.positive_scores[5]).all() and (got.positive_ids[5] == -1).all()


def test_chunking_and_qrels_forms_give_the_same_candidates():
    queries, corpus = _data(seed=2)
    lists = [[i, (i * 7) % 400] for i in range(30)]
    indptr, ids = normalize_qrels(lists, 30, 400)
    mapping = {i: np.array(v) for i, v in enumerate(lists)}
    a = mine_candidates(queries, corpus, lists, k=20)
    b = mine_candidates(queries, corpus, (indptr, ids), k=20, query_block=7)
    c = mine_candidates(queries, corpus, mapping, k=20, query_block=1)
    for x in (b, c):
        np.testing.assert_array_equal(a.candidate_ids, x.candidate_ids)
        np.testing.assert_array_equal(a.positive_ids, x.positive_ids)
        # BLAS may round the top-k scores of a query differently in another block size
        np.testing.assert_allclose(a.candidate_scores, x.candidate_scores, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(a.positive_scores, x.positive_scores, rtol=1e-6, atol=1e-5)
    # the same chunking twice gives the same bits
    d = mine_candidates(queries, corpus, lists, k=20, query_block=7)
    np.testing.assert_array_equal(b.candidate_scores, d.candidate_scores)


def test_float16_corpus_memmap(tmp_path):
    queries, corpus = _data(seed=3)
    path = tmp_path / "c.npy"
    np.save(path, corpus.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    positives = [[i] for i in range(30)]
    got = mine_candidates(queries, mm, positives, k=15)
    ref = brute_force_mine(queries, corpus.astype(np.float16).astype(np.float32), positives, 15)
    _check_against_reference(got, ref, tol=1e-3)


def test_mine_returns_sampler_matching_its_candidates():
    queries, corpus = _data(seed=4)
    positives = [[i, i + 50] if i % 2 else [i] for i in range(30)]
    sampler = mine(queries, corpus, positives, k=30, n=6, a=0.7, b=-0.5, seed=11,
                   positive_choice="highest")
    assert isinstance(sampler, sf.SimANSSampler)
    mined = mine_candidates(queries, corpus, positives, k=30)
    ref = sf.SimANSSampler(mined.candidate_ids, mined.candidate_scores, mined.positive_scores,
                           n=6, a=0.7, b=-0.5, seed=11, positive_choice="highest")
    for epoch in (0, 3):
        got = sampler.sample(epoch=epoch)
        np.testing.assert_array_equal(got, ref.sample(epoch=epoch))
        assert got.shape == (30, 6)
        for i in range(30):
            assert set(got[i].tolist()) <= set(mined.candidate_ids[i].tolist())
            assert not set(got[i].tolist()) & set(positives[i])
    # "highest": the positive with the larger exact score is used every epoch
    col = sampler.positive_index(epoch=5)
    best = np.nanargmax(np.where(mined.positive_ids >= 0, mined.positive_scores, -np.inf), axis=1)
    np.testing.assert_array_equal(col, best)


@pytest.mark.parametrize("kernel,a,b", [("gaussian", 0.5, 0.0), ("gaussian", 2.0, -1.0),
                                        ("laplace", 3.0, 0.5)])
def test_mine_draws_follow_simans_distribution(kernel, a, b):
    """First draws of the mined sampler follow p ∝ exp(-a (s - s_pos - b)^2) (chi-square)."""
    rng = np.random.default_rng(7)
    dim = 8
    corpus = rng.standard_normal((60, dim)).astype(np.float32) * 1.5
    q = rng.standard_normal((1, dim)).astype(np.float32)
    n_rep = 4000
    queries = np.repeat(q, n_rep, axis=0)  # identical rows: independent draws of one query
    positives = [[3]] * n_rep
    k = 12
    sampler = mine(queries, corpus, positives, k=k, n=3, a=a, b=b, kernel=kernel, seed=2024)
    cols = sampler.sample_columns(epoch=0)[:, 0]
    ref_ids, ref_scores, _, ref_pos = brute_force_mine(q, corpus, [[3]], k)
    p = simans_probabilities(ref_scores[0], ref_pos[0, 0], a, b, kernel)
    np.testing.assert_array_equal(sampler.candidate_ids[0], ref_ids[0])
    counts = np.bincount(cols, minlength=k)
    keep = p * n_rep >= 5
    expected = p[keep] * n_rep
    obs = counts[keep]
    # pool the rare columns into one cell
    obs = np.append(obs, counts[~keep].sum())
    expected = np.append(expected, p[~keep].sum() * n_rep)
    if expected[-1] == 0:
        obs, expected = obs[:-1], expected[:-1]
    expected *= obs.sum() / expected.sum()
    assert stats.chisquare(obs, expected).pvalue > 1e-3


def test_normalize_qrels_and_positive_matrix():
    indptr, ids = normalize_qrels([[3, 1, 3], [], [2]], 3, 5)
    np.testing.assert_array_equal(indptr, [0, 2, 2, 3])
    np.testing.assert_array_equal(ids, [3, 1, 2])
    np.testing.assert_array_equal(positive_matrix(indptr, ids), [[3, 1], [-1, -1], [2, -1]])
    np.testing.assert_array_equal(positive_matrix(np.zeros(3, np.int64), np.zeros(0, np.int64)),
                                  [[-1], [-1]])
    i2, d2 = normalize_qrels({2: [2], 0: [3, 1]}, 3, 5)
    np.testing.assert_array_equal(i2, indptr)
    np.testing.assert_array_equal(d2, ids)
    with pytest.raises(ValueError, match="outside"):
        normalize_qrels([[5]], 1, 5)
    with pytest.raises(ValueError, match="one entry per query"):
        normalize_qrels([[1]], 2, 5)
    with pytest.raises(ValueError, match="indptr"):
        normalize_qrels((np.array([0, 1]), np.array([1, 2])), 2, 5)
    with pytest.raises(ValueError, match="integer"):
        normalize_qrels([[1.5]], 1, 5)


def test_mine_input_errors():
    queries, corpus = _data()
    with pytest.raises(ValueError, match="larger than the corpus"):
        mine_candidates(queries, corpus, [[0]] * 30, k=401)
    with pytest.raises(ValueError, match="dimension"):
        mine_candidates(queries[:, :5], corpus, [[0]] * 30, k=5)
    with pytest.raises(ValueError, match="2-D"):
        mine_candidates(queries[0], corpus, [[0]], k=5)
    with pytest.raises(ValueError, match="query_block"):
        mine_candidates(queries, corpus, [[0]] * 30, k=5, query_block=0)
    # the old name still works for one release, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        old = mine_candidates(queries, corpus, [[0]] * 30, k=5, chunk_size=7)
    new = mine_candidates(queries, corpus, [[0]] * 30, k=5, query_block=7)
    np.testing.assert_array_equal(old.candidate_ids, new.candidate_ids)
    with pytest.raises(TypeError, match="query_block"):
        mine_candidates(queries, corpus, [[0]] * 30, k=5, chunk_size=7, query_block=7)


def test_sf_mine_is_the_function_after_importing_the_pipeline_module():
    import importlib

    importlib.import_module("simans_fast.pipeline")  # must not shadow the function sf.mine
    assert callable(sf.mine) and sf.mine.__name__ == "mine"
    queries, corpus = _data(n_docs=50, n_q=4, dim=4)
    sampler = sf.mine(queries, corpus, [[0], [1], [2], [3]], k=10, n=2)
    assert isinstance(sampler, sf.SimANSSampler)
    assert sampler.sample(epoch=0).shape == (4, 2)


# ------------------------------------------------------------------ the resumable MiningJob
def _job_inputs(n_q=23, n_docs=300):
    queries, corpus = _data(n_docs=n_docs, n_q=n_q, seed=7)
    qrels = [[i % n_docs, (3 * i + 1) % n_docs] if i % 5 else [] for i in range(n_q)]
    indptr, ids = normalize_qrels(qrels, n_q, n_docs)
    pos = positive_matrix(indptr, ids)
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"d{j}" for j in range(n_docs)]
    return queries, corpus, qrels, (indptr, ids), pos, qids, dids


def _job(out, pos, qids, dids, *, query_block, callback=None, identity=None):
    from simans_fast.pipeline import MiningJob

    params = {"n": 4, "a": 0.5, "b": 0.0, "kernel": "gaussian", "seed": 1,
              "positive_choice": "random", "fallback": "lowest"}
    identity = identity or {"what": "test", "parameters": params}
    return MiningJob(out, identity, query_ids=qids, doc_ids=dids, positives=pos, k=9,
                     parameters=params, query_block=query_block, callback=callback)


def _dir_bytes(d):
    import os

    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_mining_job_matches_mine_candidates_and_calls_back_in_order(tmp_path):
    from simans_fast.pipeline import CALLBACK_POINTS

    queries, corpus, qrels, csr, pos, qids, dids = _job_inputs()
    seen = []
    job = _job(tmp_path / "a", pos, qids, dids, query_block=5,
               callback=lambda point, info: seen.append((point, info.get("chunk"))))
    cf = job.run(queries, corpus, csr)
    ref = mine_candidates(queries, corpus, qrels, k=9)
    np.testing.assert_array_equal(np.asarray(cf.candidate_ids), ref.candidate_ids)
    np.testing.assert_array_equal(np.asarray(cf.candidate_scores), ref.candidate_scores)
    np.testing.assert_array_equal(np.asarray(cf.positive_ids), ref.positive_ids)
    np.testing.assert_array_equal(np.asarray(cf.positive_scores), ref.positive_scores)
    assert cf.query_ids == qids and cf.doc_ids == dids
    assert cf.parameters["k"] == 9 and cf.header["provenance"]["job"] == job.identity
    assert job.n_chunks == 5
    want = [p for c in range(5) for p in (("chunk_ready", c), ("chunk_written", c))]
    want += [("assembled", None), ("candidates_written", None), ("work_removed", None)]
    assert seen == want and {p for p, _ in seen} == set(CALLBACK_POINTS)
    assert not (tmp_path / "a" / ".simans-work").exists()
    # the block size changes nothing in the files
    other = _job(tmp_path / "b", pos, qids, dids, query_block=1000)
    other.run(queries, corpus, csr)
    assert _dir_bytes(tmp_path / "a" / "candidates") == _dir_bytes(tmp_path / "b" / "candidates")


class _Crash(Exception):
    pass


@pytest.mark.parametrize("point,chunk", [("chunk_ready", 2), ("chunk_written", 1),
                                         ("assembled", None)])
def test_mining_job_resumes_after_a_crash_byte_identical(tmp_path, point, chunk):
    from simans_fast._validate import InputError

    queries, corpus, qrels, csr, pos, qids, dids = _job_inputs()
    ref = _job(tmp_path / "ref", pos, qids, dids, query_block=4)
    ref.run(queries, corpus, csr)

    def crash(p, info):
        if p == point and info.get("chunk") == chunk:
            raise _Crash(p)

    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _job(out, pos, qids, dids, query_block=4, callback=crash).run(queries, corpus, csr)
    assert not (out / "candidates").exists()
    # a run is there: it needs resume (or overwrite); the error names the output parameter
    with pytest.raises(InputError, match="resume=True") as e:
        _job(out, pos, qids, dids, query_block=4).run(queries, corpus, csr)
    assert e.value.parameter == "out"
    # another identity is refused, nothing touched
    with pytest.raises(InputError, match="different"):
        _job(out, pos, qids, dids, query_block=4, identity={"other": 1}).run(
            queries, corpus, csr, resume=True)
    job = _job(out, pos, qids, dids, query_block=4)
    job.run(queries, corpus, csr, resume=True)
    if point.startswith("chunk"):
        assert job.chunks_reused == chunk + (1 if point == "chunk_written" else 0)
    assert _dir_bytes(out / "candidates") == _dir_bytes(tmp_path / "ref" / "candidates")
    assert sorted(p.name for p in out.iterdir()) == ["candidates"]  # no debris left


def test_mining_job_verifies_finished_candidates_it_reuses(tmp_path):
    import json

    from simans_fast._validate import InputError

    queries, corpus, qrels, csr, pos, qids, dids = _job_inputs()
    out = tmp_path / "run"
    _job(out, pos, qids, dids, query_block=6).run(queries, corpus, csr)
    job = _job(out, pos, qids, dids, query_block=6)
    assert job.prepare(resume=True) == "candidates"
    cf = job.verify()
    assert cf.query_ids == qids
    # other positives than the job's: refused, naming the file
    pos2 = pos.copy()
    pos2[0, 0] = (pos2[0, 0] + 1) % len(dids)
    with pytest.raises(InputError, match="positive_ids.npy"):
        _job(out, pos2, qids, dids, query_block=6).verify()
    # a header edited behind the job's back (digests still fine): refused, naming the key
    hp = out / "candidates" / "header.json"
    h = json.loads(hp.read_text())
    h["parameters"]["a"] = 2.0
    hp.write_text(json.dumps(h))
    with pytest.raises(InputError, match="parameters.a") as e:
        _job(out, pos, qids, dids, query_block=6).verify()
    assert e.value.parameter == "out" and e.value.path == str(hp)


def test_mining_job_redoes_damaged_checkpoints(tmp_path):
    queries, corpus, qrels, csr, pos, qids, dids = _job_inputs()
    ref = _job(tmp_path / "ref", pos, qids, dids, query_block=4)
    ref.run(queries, corpus, csr)

    def crash(p, info):
        if p == "assembled":
            raise _Crash(p)

    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _job(out, pos, qids, dids, query_block=4, callback=crash).run(queries, corpus, csr)
    chunks = out / ".simans-work" / "chunks"
    f = chunks / "c0000001" / "candidate_scores.npy"
    f.write_bytes(f.read_bytes()[:-8])
    (chunks / "c0000003" / "manifest.json").write_text("{")
    job = _job(out, pos, qids, dids, query_block=4)
    assert job.prepare(resume=True) == "chunks"
    done = job.scan()
    assert job.chunks_discarded == 2 and done == {0, 2, 4, 5}
    job.mine(queries, corpus, csr)
    job.assemble()
    job.remove_work()
    assert _dir_bytes(out / "candidates") == _dir_bytes(tmp_path / "ref" / "candidates")


def test_epoch_negatives_default_simans_equals_the_sampler():
    from simans_fast.pipeline import MinedCandidates, epoch_negatives

    queries, corpus, qrels, csr, pos, qids, dids = _job_inputs()
    mined = mine_candidates(queries, corpus, qrels, k=9)

    class Cands:
        candidate_ids, candidate_scores = mined.candidate_ids, mined.candidate_scores
        positive_ids, positive_scores = mined.positive_ids, mined.positive_scores
        query_ids, doc_ids = qids, dids

    params = {"n": 4, "a": 0.5, "b": 0.0, "kernel": "gaussian", "seed": 1,
              "positive_choice": "random", "fallback": "lowest"}
    neg = epoch_negatives(Cands, 3, params)
    smp = sf.SimANSSampler(mined.candidate_ids, mined.candidate_scores, mined.positive_scores,
                           n=4, a=0.5, b=0.0, seed=1)
    np.testing.assert_array_equal(neg.negative_rows, smp.sample(epoch=3))
    # the positive of the epoch first
    pi = smp.positive_index(epoch=3)
    rows = np.arange(len(qids))
    ok = pi >= 0
    np.testing.assert_array_equal(neg.positive_rows[ok, 0], mined.positive_ids[rows[ok], pi[ok]])
    assert isinstance(mined, MinedCandidates)

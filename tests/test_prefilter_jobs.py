"""``prefilter`` in the jobs: sf.mine_candidates / sf.mine, MiningJob, ``simans-fast mine
--prefilter`` and ``hn-mine --prefilter``. The first pass is resolved once per run
(``candidates.resolve_prefilter``), recorded in the job's identity and used by every block."""

from __future__ import annotations

import json

import numpy as np
import pytest

import simans_fast as sf
from simans_fast import candidates as C
from simans_fast._validate import ParameterError
from simans_fast.cli import main
from simans_fast.store.candidates import load_candidates

pytest.importorskip("torch")

N_Q, N_D, DIM, K = 40, 700, 24, 30


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("prefilter_data")
    rng = np.random.default_rng(11)
    corpus = rng.standard_normal((N_D, DIM)).astype(np.float32)
    pos = rng.choice(N_D, size=N_Q, replace=False)
    queries = (corpus[pos] + 0.7 * rng.standard_normal((N_Q, DIM))).astype(np.float32)
    np.save(d / "Q.npy", queries)
    np.save(d / "C.npy", corpus)
    (d / "qids.txt").write_text("".join(f"q{i}\n" for i in range(N_Q)))
    (d / "dids.txt").write_text("".join(f"d{j}\n" for j in range(N_D)))
    lines = [f"q{i} 0 d{p} 1" for i, p in enumerate(pos)]
    lines += [f"q{i} 0 d{(pos[i] + 1) % N_D} 1" for i in range(0, N_Q, 3)]  # second positives
    (d / "qrels.txt").write_text("\n".join(lines) + "\n")
    qrels = [[p] + ([(p + 1) % N_D] if i % 3 == 0 else []) for i, p in enumerate(pos)]
    return d, queries, corpus, qrels


def _reference(queries, corpus, qrels, k):
    """Plain NumPy: every pair scored by sf.rescore, positives left out, best k by score then
    lower id; positive scores by sf.rescore."""
    all_ids = np.broadcast_to(np.arange(N_D), (len(queries), N_D))
    s = np.asarray(sf.rescore(queries, corpus, np.ascontiguousarray(all_ids)), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    for i, p in enumerate(qrels):
        row = s[i].astype(np.float64)
        row[p] = -np.inf
        order = np.lexsort((np.arange(N_D), -row))[:k]
        ids[i] = order
    return ids, np.take_along_axis(s, ids, axis=1)


def test_mine_candidates_bfloat16_is_the_exact_top_k_of_rescored_scores(data):
    _, queries, corpus, qrels = data
    ids, scores = _reference(queries, corpus, qrels, K)
    for qb in (7, 4096):
        got = sf.mine_candidates(queries, corpus, qrels, k=K, prefilter="bfloat16",
                                 query_block=qb)
        np.testing.assert_array_equal(got.candidate_ids, ids)
        np.testing.assert_array_equal(got.candidate_scores, scores)
        # candidate and positive scores come from the same arithmetic
        pos_ref = sf.rescore(queries, corpus, got.positive_ids)
        ok = got.positive_ids >= 0
        np.testing.assert_array_equal(got.positive_scores[ok], np.asarray(pos_ref)[ok])
    s = sf.mine(queries, corpus, qrels, k=K, n=5, prefilter="bfloat16")
    np.testing.assert_array_equal(s.candidate_ids, ids)
    # None keeps the float32 BLAS scores (and its ids equal the reference's away from ties)
    f32 = sf.mine_candidates(queries, corpus, qrels, k=K)
    np.testing.assert_allclose(f32.candidate_scores, scores, rtol=0, atol=1e-5)
    assert not np.array_equal(f32.candidate_scores, scores)  # not silently the same path


def test_resolve_prefilter_rules(data):
    _, queries, corpus, qrels = data
    native = "bfloat16" if sf.candidates_bf16.native_bf16() else None
    assert C.resolve_prefilter(None) is None and C.resolve_prefilter("none") is None
    assert C.resolve_prefilter("auto", "cosine", "auto", corpus) == native
    assert C.resolve_prefilter("auto", "l2") is None
    assert C.resolve_prefilter("auto", "ip", "auto", corpus, index="Flat") is None
    assert C.resolve_prefilter("bfloat16", "ip", "auto", corpus) == "bfloat16"
    for kw, msg in ((dict(metric="l2"), "supports metric 'ip' and 'cosine'"),
                    (dict(backend="faiss"), "runs with the numba backend"),
                    (dict(backend="auto", index="Flat"), "runs with the numba backend")):
        with pytest.raises(ParameterError, match=msg) as e:
            C.resolve_prefilter("bfloat16", **kw)
        assert e.value.parameter == "prefilter"
    with pytest.raises(ParameterError, match="backend") as e:  # the backend's own rule first
        C.resolve_prefilter("bfloat16", backend="gpu")
    assert e.value.parameter == "backend"
    with pytest.raises(ParameterError, match="prefilter must be None, 'none', 'auto' or") as e:
        sf.mine_candidates(queries, corpus, qrels, k=K, prefilter="fp8")
    assert e.value.parameter == "prefilter"


def _job(out):
    """The job identity recorded in the candidates header."""
    return json.loads((out / "candidates" / "header.json").read_text())["provenance"]["job"]


def _args(d, out, *extra):
    return ["mine", "--queries", str(d / "Q.npy"), "--corpus", str(d / "C.npy"),
            "--query-ids", str(d / "qids.txt"), "--doc-ids", str(d / "dids.txt"),
            "--qrels", str(d / "qrels.txt"), "--out", str(out), "--k", str(K), "--n", "5",
            "--query-block", "16", "--no-progress", "--ids-only", *extra]


def test_cli_mine_prefilter_is_recorded_and_resumed_only_as_recorded(data, tmp_path, capsys):
    d, queries, corpus, qrels = data
    ids, scores = _reference(queries, corpus, qrels, K)
    out = tmp_path / "bf16"
    assert main(_args(d, out, "--prefilter", "bfloat16")) == 0
    cf = load_candidates(str(out / "candidates"), mmap=False)
    np.testing.assert_array_equal(cf.candidate_ids, ids)
    np.testing.assert_array_equal(cf.candidate_scores, scores)
    assert _job(out)["prefilter"] == "bfloat16"
    # the same run again is reused; asking for another first pass is refused, nothing touched
    before = (out / "candidates" / "header.json").read_bytes()
    assert main(_args(d, out, "--prefilter", "bfloat16", "--resume")) == 0
    capsys.readouterr()
    assert main(_args(d, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "different" in err and "prefilter" in err
    assert (out / "candidates" / "header.json").read_bytes() == before
    # the default records nothing (runs made before the flag existed stay resumable) and
    # gives the float32 path's candidates
    out2 = tmp_path / "none"
    assert main(_args(d, out2)) == 0
    cf2 = load_candidates(str(out2 / "candidates"), mmap=False)
    assert "prefilter" not in _job(out2)
    ref = sf.mine_candidates(queries, corpus, qrels, k=K, query_block=16)
    np.testing.assert_array_equal(cf2.candidate_scores, ref.candidate_scores)
    # auto resolves to this machine's choice (the .npy is a small memory map)
    out3 = tmp_path / "auto"
    assert main(_args(d, out3, "--prefilter", "auto")) == 0
    cf3 = load_candidates(str(out3 / "candidates"), mmap=False)
    native = "bfloat16" if sf.candidates_bf16.native_bf16() else None
    assert _job(out3).get("prefilter") == native
    want = cf if native else cf2
    np.testing.assert_array_equal(cf3.candidate_scores, want.candidate_scores)


@pytest.mark.parametrize("extra, msg", [
    (("--prefilter", "bfloat16", "--metric", "l2"),
     "--prefilter bfloat16 supports metric 'ip' and 'cosine', not 'l2': pass --prefilter none"),
    (("--prefilter", "bfloat16", "--backend", "faiss"),
     "--prefilter bfloat16 runs with the numba backend, not --backend faiss: pass --backend "
     "numba or --prefilter none"),
    (("--prefilter", "fast"), "invalid choice: 'fast'"),
])
def test_cli_prefilter_errors_name_the_flag_and_write_nothing(data, tmp_path, capsys, extra,
                                                              msg):
    d = data[0]
    out = tmp_path / "run"
    assert main(_args(d, out, *extra)) == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert err.count("error:") == 1
    assert not out.exists()


def test_cli_prefilter_with_a_run_file_is_refused(data, tmp_path, capsys):
    d = data[0]
    run = tmp_path / "run.tsv"
    run.write_text("q0\td1\t0.5\n")
    out = tmp_path / "run"
    assert main(_args(d, out, "--run", str(run), "--rescore", "--prefilter", "bfloat16")) == 2
    err = capsys.readouterr().err
    assert "--prefilter bfloat16: the first pass of the exact top-k; --run gives" in err
    assert not out.exists()


def test_hn_mine_prefilter_checks_come_first(tmp_path):
    from simans_fast.hn_mine import hn_mine

    missing = tmp_path / "absent.jsonl"  # never read: the checks fail first
    with pytest.raises(ParameterError, match="prefilter must be") as e:
        hn_mine(missing, tmp_path / "o.jsonl", "no-model", prefilter="bf16")
    assert e.value.parameter == "prefilter"
    with pytest.raises(ValueError, match="prefilter is the first pass of the CPU top-k"):
        hn_mine(missing, tmp_path / "o.jsonl", "no-model", prefilter="bfloat16",
                use_gpu_for_searching=True)
    # auto with the GPU search is simply none: what fails next is the GPU check (no CUDA)
    # or the missing input file, never the prefilter
    with pytest.raises(ValueError) as e:
        hn_mine(missing, tmp_path / "o.jsonl", "no-model", prefilter="auto",
                use_gpu_for_searching=True)
    assert "prefilter" not in str(e.value) and ("CUDA" in str(e.value) or "absent" in str(e.value))


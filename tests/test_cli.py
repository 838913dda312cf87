"""The simans-fast command line: end to end in subprocesses, errors, kill-and-resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import simans_fast
import simans_fast as sf
from simans_fast import io as sio
from simans_fast.cli import main
from simans_fast.pipeline import mine_candidates

REPO = os.path.dirname(os.path.dirname(os.path.abspath(simans_fast.__file__)))
N_Q, N_D, DIM, K, N, CHUNK = 90, 600, 16, 30, 5, 20


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NUMBA_NUM_THREADS", "2")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("SIMANS_FAST_TEST_KILL_AT", None)
    env.pop("SIMANS_FAST_TEST_CHUNK_SLEEP", None)
    env.update(extra)
    return env


def _run(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "simans_fast", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_data")
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((N_D, DIM)).astype(np.float32) * 2
    pos = rng.choice(N_D, size=N_Q, replace=False)
    queries = (corpus[pos] + rng.standard_normal((N_Q, DIM)).astype(np.float32)).astype(np.float32)
    np.save(d / "Q.npy", queries)
    np.save(d / "C.npy", corpus)  # float16 corpora: tests/test_mine.py, tests/test_io.py
    qids = [f"q{i}" for i in range(N_Q)]
    dids = [f"doc{j}" for j in range(N_D)]
    (d / "qids.txt").write_text("\n".join(qids) + "\n")
    (d / "dids.txt").write_text("\n".join(dids) + "\n")
    lines = []
    for i, p in enumerate(pos):
        lines.append(f"q{i} 0 doc{p} 1")
        if i % 4 == 0:
            lines.append(f"q{i} 0 doc{(p + 1) % N_D} 2")  # a second positive
        if i % 5 == 0:
            lines.append(f"q{i} 0 doc{(p + 2) % N_D} 0")  # not relevant: ignored
    lines = [ln for ln in lines if not ln.startswith("q7 ")]  # q7: no positive (fallback)
    (d / "qrels.txt").write_text("\n".join(lines) + "\n")
    beir = d / "beir"
    beir.mkdir()
    with open(beir / "queries.jsonl", "w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": f"question {q}"}) + "\n")
    with open(beir / "corpus.jsonl", "w") as f:
        for j, x in enumerate(dids):
            f.write(json.dumps({"_id": x, "title": f"title {j}", "text": f"passage {x}"}) + "\n")
    return d


def _mine_args(d, out, *extra):
    return ["mine", "--queries", str(d / "Q.npy"), "--corpus", str(d / "C.npy"),
            "--query-ids", str(d / "qids.txt"), "--doc-ids", str(d / "dids.txt"),
            "--qrels", str(d / "qrels.txt"), "--out", str(out), "--k", str(K), "--n", str(N),
            "--chunk-size", str(CHUNK), "--seed", "3", "--no-progress", *extra]


def _hashes(root):
    out = {}
    for base, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "run"
    r = _run(_mine_args(data, out, "--threads", "1"), cwd=data)
    assert r.returncode == 0, r.stderr
    return out, _hashes(out)


# ------------------------------------------------------------------------------ end to end
def test_mine_sample_inspect_end_to_end(data, baseline, tmp_path):
    out, hashes = baseline
    assert sorted(hashes) == sorted([
        "negatives.epoch0.jsonl", "candidates/header.json", "candidates/candidate_ids.npy",
        "candidates/candidate_scores.npy", "candidates/positive_ids.npy",
        "candidates/positive_scores.npy", "candidates/query_ids.txt", "candidates/doc_ids.txt"])
    cf = sio.load_candidates(str(out / "candidates"), verify=True)
    # the candidates equal the Python pipeline's (same query chunks)
    queries = np.load(data / "Q.npy")
    corpus = np.load(data / "C.npy")
    pos_lists = [list(r[r >= 0]) for r in np.asarray(cf.positive_ids)]
    ref = mine_candidates(queries, corpus, pos_lists, k=K, chunk_size=CHUNK)
    np.testing.assert_array_equal(cf.candidate_ids, ref.candidate_ids)
    np.testing.assert_allclose(cf.candidate_scores, ref.candidate_scores, rtol=1e-6)
    np.testing.assert_allclose(cf.positive_scores, ref.positive_scores, rtol=1e-6)
    assert cf.header["parameters"] == {"n": N, "a": 0.5, "b": 0.0, "kernel": "gaussian",
                                       "seed": 3, "positive_choice": "random",
                                       "fallback": "lowest", "k": K, "metric": "ip"}
    assert (np.asarray(cf.positive_ids[7]) == -1).all()
    assert (np.asarray(cf.positive_ids)[::4, 1] >= 0).all()  # second positives kept
    e0 = sio.read_negatives(str(out / "negatives.epoch0.jsonl"))
    doc_row = {d: j for j, d in enumerate(cf.doc_ids)}
    for i, rec in enumerate(e0):
        assert rec["query_id"] == cf.query_ids[i] and len(rec["negatives"]) == N
        rows = {doc_row[d] for d in rec["negatives"]}
        assert rows <= set(np.asarray(cf.candidate_ids[i]).tolist())
        assert not rows & set(np.asarray(cf.positive_ids[i]).tolist())
    # q7 has no positive: the fallback takes the lowest-ranked candidates
    assert [doc_row[d] for d in e0[7]["negatives"]] == list(cf.candidate_ids[7][-N:])

    # sample: epoch 0 again gives the same bytes; epoch 1 differs
    r = _run(["sample", "--candidates", str(out), "--epoch", "0", "--out",
              str(tmp_path / "e0.jsonl")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e0.jsonl").read_bytes() == (out / "negatives.epoch0.jsonl").read_bytes()
    r = _run(["sample", "--candidates", str(out / "candidates"), "--epoch", "1", "--out",
              str(tmp_path / "e1.tsv")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    e1 = sio.read_negatives(str(tmp_path / "e1.tsv"))
    assert [x["negatives"] for x in e1] != [x["negatives"] for x in e0]
    for rec in e1:
        assert len(rec["negatives"]) == N and len(rec["negative_scores"]) == N

    r = _run(["inspect", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "simans-fast-candidates version 1" in r.stdout
    assert f"queries: {N_Q}" in r.stdout and f"(k): {K}" in r.stdout
    assert "format tevatron" in r.stdout
    r = _run(["inspect", str(tmp_path / "e1.tsv")], cwd=tmp_path)
    assert r.returncode == 0 and "format simxns" in r.stdout


@pytest.mark.parametrize("fmt,name", [("sentence-transformers", "st.parquet"),
                                      ("sentence-transformers", "st.jsonl"),
                                      ("trec", "run.trec"), ("tevatron", "tev.jsonl")])
def test_sample_formats_with_texts(data, baseline, tmp_path, capsys, fmt, name):
    out, _ = baseline
    dest = tmp_path / name
    rc = main(["sample", "--candidates", str(out), "--epoch", "2", "--out", str(dest),
               "--format", fmt, "--texts", str(data / "beir"), "--no-progress"])
    assert rc == 0
    recs = sio.read_negatives(str(dest))
    assert len(recs) == N_Q
    if fmt == "sentence-transformers":
        assert recs[0]["query"] == "question q0"
        assert all(x.startswith("title ") and " passage doc" in x for x in recs[0]["negatives"])
    elif fmt == "tevatron":
        assert recs[0]["query"] == "question q0"
        assert recs[0]["negative_passages"][0]["text"].startswith("passage doc")
    # the same epoch drawn in-process and by `sample` agree
    cf = sio.load_candidates(str(out / "candidates"))
    from simans_fast.cli import epoch_negatives

    e = epoch_negatives(cf, 2, cf.parameters)
    got = [r["negatives"] for r in recs]
    if fmt == "trec":  # TREC lists the negatives by rank
        want = [[cf.doc_ids[j] for j in row[np.argsort(rk, kind="stable")] if j >= 0]
                for row, rk in zip(e.negative_rows, e.negative_ranks)]
    elif fmt == "tevatron":
        want = [[cf.doc_ids[j] for j in row if j >= 0] for row in e.negative_rows]
    else:
        want = None
    if want is not None:
        assert got == want


def test_demo_writes_png(tmp_path):
    r = _run(["demo", "--out", str(tmp_path / "demo")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "demo" / "ranks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("false-negative rate", "time per stage", "SimANS", "top-n", "uniform",
                 "rank distribution"):
        assert text in r.stdout


# ------------------------------------------------------------------------------ errors
def _write(tmp, name, arr):
    p = tmp / name
    np.save(p, arr)
    return str(p)


@pytest.mark.parametrize("case", ["missing_file", "float64", "1d", "dim_mismatch",
                                  "qids_length", "dids_length", "qrels_unknown_query",
                                  "qrels_unknown_doc", "k_too_large", "missing_ids_file"])
def test_user_errors_exit_2_with_one_line(data, tmp_path, capsys, case):
    args = _mine_args(data, tmp_path / "out")
    culprit = None

    def setarg(flag, value):
        args[args.index(flag) + 1] = value

    if case == "missing_file":
        culprit = str(tmp_path / "nope.npy")
        setarg("--queries", culprit)
    elif case == "float64":
        culprit = _write(tmp_path, "q64.npy", np.zeros((N_Q, DIM)))
        setarg("--queries", culprit)
    elif case == "1d":
        culprit = _write(tmp_path, "c1d.npy", np.zeros(N_D, np.float32))
        setarg("--corpus", culprit)
    elif case == "dim_mismatch":
        culprit = _write(tmp_path, "q8.npy", np.zeros((N_Q, 8), np.float32))
        setarg("--queries", culprit)
    elif case == "qids_length":
        culprit = str(tmp_path / "qids.txt")
        (tmp_path / "qids.txt").write_text("".join(f"q{i}\n" for i in range(N_Q - 1)))
        setarg("--query-ids", culprit)
    elif case == "dids_length":
        culprit = str(tmp_path / "dids.txt")
        (tmp_path / "dids.txt").write_text("".join(f"doc{i}\n" for i in range(N_D + 3)))
        setarg("--doc-ids", culprit)
    elif case in ("qrels_unknown_query", "qrels_unknown_doc"):
        culprit = str(tmp_path / "qrels.txt")
        extra = "qX 0 doc1 1\n" if case == "qrels_unknown_query" else "q1 0 docX 1\n"
        (tmp_path / "qrels.txt").write_text((data / "qrels.txt").read_text() + extra)
        setarg("--qrels", culprit)
    elif case == "k_too_large":
        culprit = "--k"
        setarg("--k", str(N_D + 1))
    elif case == "missing_ids_file":
        culprit = str(tmp_path / "none.txt")
        setarg("--doc-ids", culprit)
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("simans-fast: error:") and culprit in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written


def test_error_exit_code_in_subprocess(data, tmp_path):
    r = _run(_mine_args(data, tmp_path / "out", "--k", "100000"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "--k 100000" in r.stderr and not (tmp_path / "out").exists()
    r = _run(["sample", "--candidates", str(tmp_path / "nothing"), "--epoch", "1", "--out",
              str(tmp_path / "x.jsonl")], cwd=tmp_path)
    assert r.returncode == 2 and "nothing" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_existing_run_needs_resume_or_overwrite(data, baseline, tmp_path, capsys):
    out, hashes = baseline
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(out, copy)
    assert main(_mine_args(data, copy)) == 2
    assert "--resume" in capsys.readouterr().err
    # resuming a finished run with other parameters is refused, nothing is touched
    assert main(_mine_args(data, copy, "--resume", "--a", "1.5")) == 2
    assert "different" in capsys.readouterr().err
    assert _hashes(copy) == hashes
    # resuming it with the same parameters reuses the candidates, same bytes
    assert main(_mine_args(data, copy, "--resume")) == 0
    assert _hashes(copy) == hashes
    assert main(_mine_args(data, copy, "--overwrite", "--n", "3")) == 0
    assert sio.load_candidates(str(copy / "candidates")).parameters["n"] == 3


# ------------------------------------------------------------------------------ kill + resume
@pytest.mark.parametrize("point", ["chunk-tmp:1", "chunk:2", "assemble", "candidates",
                                   "negatives"])
def test_sigkill_then_resume_is_byte_identical(data, baseline, tmp_path, point):
    _, want = baseline
    out = tmp_path / "run"
    r = _run(_mine_args(data, out, "--threads", "2"), cwd=tmp_path,
             SIMANS_FAST_TEST_KILL_AT=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    neg = out / "negatives.epoch0.jsonl"
    if point != "negatives":
        assert not neg.exists()  # never a half-written output
    if point in ("chunk-tmp:1", "chunk:2"):
        done = [n for n in os.listdir(out / ".simans-work" / "chunks") if not n.startswith(".")]
        assert len(done) == int(point[-1]) + (0 if point.startswith("chunk-tmp") else 1)
    r = _run(_mine_args(data, out, "--resume"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _hashes(out) == want


def test_external_sigkill_at_random_moments_then_resume(data, baseline, tmp_path):
    """Killed from outside after N chunk directories appear, twice, then resumed."""
    _, want = baseline
    out = tmp_path / "run"
    chunks = out / ".simans-work" / "chunks"
    for n_chunks in (1, 3):
        args = _mine_args(data, out, "--resume")
        p = subprocess.Popen([sys.executable, "-m", "simans_fast", *args], cwd=tmp_path,
                             env=_env(SIMANS_FAST_TEST_CHUNK_SLEEP="0.25"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if chunks.is_dir() and len([n for n in os.listdir(chunks)
                                        if n.startswith("c")]) >= n_chunks:
                break
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=60) == -signal.SIGKILL
        assert not (out / "negatives.epoch0.jsonl").exists()
    r = _run(_mine_args(data, out, "--resume"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert _hashes(out) == want


@pytest.mark.parametrize("flags", [["--strategy", "top", "--skip", "2"],
                                   ["--strategy", "uniform", "--window", "3-12"],
                                   ["--margin", "0.5"]])
def test_sample_with_strategy_flags(data, baseline, tmp_path, flags):
    """The CLI exposes sf.select_negatives: same negatives as the Python call on the candidates."""
    out, _ = baseline
    dest = tmp_path / "neg.jsonl"
    rc = main(["sample", "--candidates", str(out), "--epoch", "1", "--out", str(dest),
               "--format", "tevatron", "--no-progress", *flags])
    assert rc == 0
    cf = sio.load_candidates(str(out / "candidates"))
    cids = np.asarray(cf.candidate_ids)
    pscores = np.asarray(cf.positive_scores)
    opts = {"strategy": "simans", "skip": 0, "window": None, "margin": None}
    it = iter(flags)
    for f, v in zip(it, it):
        key = f[2:]
        opts[key] = {"skip": int, "margin": float}.get(key, str)(v)
    if opts["window"]:
        lo, hi = opts["window"].split("-")
        opts["window"] = (int(lo), int(hi))
    want = sf.select_negatives(cids, np.asarray(cf.candidate_scores),
                               pscores[:, 0] if pscores.shape[1] == 1 else pscores, N,
                               seed=3, epoch=1, **opts)
    recs = sio.read_negatives(str(dest))
    got = [r["negatives"] for r in recs]
    assert got == [[cf.doc_ids[j] for j in row if j >= 0] for row in want]
    if opts["strategy"] == "top":
        # the n best after skipping 2: candidate columns 2..2+N (rows are in rank order)
        assert [r["negatives"] for r in recs][0] == [cf.doc_ids[j] for j in cids[0, 2:2 + N]]
    bad = main(["sample", "--candidates", str(out), "--epoch", "1", "--out",
                str(tmp_path / "bad.jsonl"), "--format", "tevatron", "--window", "x"])
    assert bad == 2 and not (tmp_path / "bad.jsonl").exists()

"""The simans-fast command line: end to end in subprocesses, errors, kill-and-resume."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from _files import tree_hashes
import pytest

import simans_fast
import simans_fast as sf
from simans_fast.store.atomic import file_sha256
from simans_fast.store.candidates import load_candidates
from simans_fast.formats.negatives import read_negatives
from simans_fast.formats.texts import read_texts
from simans_fast.cli import main
from simans_fast.pipeline import mine_candidates

REPO = os.path.dirname(os.path.dirname(os.path.abspath(simans_fast.__file__)))
N_Q, N_D, DIM, K, N, CHUNK = 90, 600, 16, 30, 5, 20


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NUMBA_NUM_THREADS", "2")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("SIMANS_FAST_TRACEBACK", None)
    env.update(extra)
    return env


def _run(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "simans_fast", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


KILL_DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cli_kill.py")


def _driver(args, kill_at=None, sleep=None):
    """The command line run by tests/_cli_kill.py (SIGKILLs itself at ``kill_at``)."""
    opts = (["--kill-at", kill_at] if kill_at else []) + (
        ["--sleep-after-chunk", str(sleep)] if sleep else [])
    return [sys.executable, KILL_DRIVER, *opts, "--", *args]


def _run_killed(args, cwd, kill_at, **env):
    return subprocess.run(_driver(args, kill_at), cwd=cwd, env=_env(**env),
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


IDS = ("--ids-only",)  # the default format is tevatron, which needs texts or --ids-only


def _mine_args(d, out, *extra, fmt=IDS):
    return ["mine", "--queries", str(d / "Q.npy"), "--corpus", str(d / "C.npy"),
            "--query-ids", str(d / "qids.txt"), "--doc-ids", str(d / "dids.txt"),
            "--qrels", str(d / "qrels.txt"), "--out", str(out), "--k", str(K), "--n", str(N),
            "--query-block", str(CHUNK), "--seed", "3", "--no-progress", *fmt, *extra]


_hashes = tree_hashes


def _snapshot(*roots):
    """Every file and directory under ``roots`` with its content hash (hidden ones included)."""
    out = {}
    for root in roots:
        for base, dirs, files in os.walk(root):
            for x in dirs:
                out[os.path.join(base, x)] = "dir"
            for x in files:
                p = os.path.join(base, x)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "run"
    r = _run(_mine_args(data, out, "--threads", "1"), cwd=data)
    assert r.returncode == 0, r.stderr
    return out, _hashes(out)


def test_float64_queries_are_computed_in_float32_like_the_python_api(data, baseline, tmp_path):
    """One rule for float64 (docs/vocabulary.md): the CLI accepts a float64 .npy as sf.mine
    does and gives the float32 file's candidates."""
    from simans_fast.store.candidates import load_candidates

    q64 = tmp_path / "Q64.npy"
    np.save(q64, np.load(data / "Q.npy").astype(np.float64))
    out = tmp_path / "run64"
    args = _mine_args(data, out, "--threads", "1")
    args[args.index("--queries") + 1] = str(q64)
    r = _run(args, cwd=data)
    assert r.returncode == 0, r.stderr
    ref_out, _ = baseline
    got = load_candidates(str(out / "candidates"), mmap=False)
    ref = load_candidates(str(ref_out / "candidates"), mmap=False)
    for name in ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


# ------------------------------------------------------------------------------ end to end
def test_mine_sample_inspect_end_to_end(data, baseline, tmp_path):
    out, hashes = baseline
    assert sorted(hashes) == sorted([
        "negatives.epoch0.jsonl", "candidates/header.json", "candidates/candidate_ids.npy",
        "candidates/candidate_scores.npy", "candidates/positive_ids.npy",
        "candidates/positive_scores.npy", "candidates/query_ids.txt", "candidates/doc_ids.txt"])
    cf = load_candidates(str(out / "candidates"), verify=True)
    # the candidates equal the Python pipeline's (same query chunks)
    queries = np.load(data / "Q.npy")
    corpus = np.load(data / "C.npy")
    pos_lists = [list(r[r >= 0]) for r in np.asarray(cf.positive_ids)]
    ref = mine_candidates(queries, corpus, pos_lists, k=K, query_block=CHUNK)
    np.testing.assert_array_equal(cf.candidate_ids, ref.candidate_ids)
    np.testing.assert_allclose(cf.candidate_scores, ref.candidate_scores, rtol=1e-6)
    np.testing.assert_allclose(cf.positive_scores, ref.positive_scores, rtol=1e-6)
    assert cf.header["parameters"] == {"n": N, "a": 0.5, "b": 0.0, "kernel": "gaussian",
                                       "seed": 3, "positive_choice": "random",
                                       "fallback": "lowest", "k": K, "metric": "ip"}
    assert (np.asarray(cf.positive_ids[7]) == -1).all()
    assert (np.asarray(cf.positive_ids)[::4, 1] >= 0).all()  # second positives kept
    e0 = read_negatives(str(out / "negatives.epoch0.jsonl"))
    doc_row = {d: j for j, d in enumerate(cf.doc_ids)}
    # Tevatron records need a positive: q7 (none) is not written, every other query is
    assert [r["query_id"] for r in e0] == [q for q in cf.query_ids if q != "q7"]
    for rec in e0:
        i = cf.query_ids.index(rec["query_id"])
        assert rec["query"] is None and len(rec["negatives"]) == N
        rows = {doc_row[d] for d in rec["negatives"]}
        assert rows <= set(np.asarray(cf.candidate_ids[i]).tolist())
        assert not rows & set(np.asarray(cf.positive_ids[i]).tolist())
        assert set(rec["positives"]) == {cf.doc_ids[j] for j in cf.positive_ids[i] if j >= 0}

    # sample: epoch 0 again gives the same bytes; epoch 1 differs
    r = _run(["sample", "--candidates", str(out), "--epoch", "0", "--out",
              str(tmp_path / "e0.jsonl"), "--ids-only"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 without a positive" in r.stderr  # the dropped query is reported
    assert (tmp_path / "e0.jsonl").read_bytes() == (out / "negatives.epoch0.jsonl").read_bytes()
    r = _run(["sample", "--candidates", str(out / "candidates"), "--epoch", "1", "--out",
              str(tmp_path / "e1.tsv")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    e1 = read_negatives(str(tmp_path / "e1.tsv"))
    assert len(e1) == N_Q  # simxns lists every query
    assert [x["negatives"] for x in e1 if x["query_id"] != "q7"] != [x["negatives"] for x in e0]
    for rec in e1:
        assert len(rec["negatives"]) == N and len(rec["negative_scores"]) == N
    # q7 has no positive: the fallback takes the lowest-ranked candidates
    assert [doc_row[d] for d in e1[7]["negatives"]] == list(cf.candidate_ids[7][-N:])

    r = _run(["inspect", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "simans-fast-candidates version 1" in r.stdout
    assert f"queries: {N_Q}" in r.stdout and f"(k): {K}" in r.stdout
    assert "format tevatron" in r.stdout
    r = _run(["inspect", str(tmp_path / "e1.tsv")], cwd=tmp_path)
    assert r.returncode == 0 and "format simxns" in r.stdout


@pytest.mark.parametrize("fmt,name", [("sentence-transformers", "st.parquet"),
                                      ("sentence-transformers", "st.jsonl"),
                                      ("trec", "run.trec"), ("tevatron", "tev.jsonl"),
                                      ("tevatron-legacy", "legacy.jsonl")])
def test_sample_formats_with_texts(data, baseline, tmp_path, capsys, fmt, name):
    out, _ = baseline
    dest = tmp_path / name
    rc = main(["sample", "--candidates", str(out), "--epoch", "2", "--out", str(dest),
               "--format", fmt, "--texts", str(data / "beir"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    recs = read_negatives(str(dest))
    written = [q for q in (f"q{i}" for i in range(N_Q)) if fmt == "trec" or q != "q7"]
    assert len(recs) == len(written)
    if fmt == "sentence-transformers":
        assert recs[0]["query"] == "question q0"
        assert all(x.startswith("title ") and " passage doc" in x for x in recs[0]["negatives"])
    elif fmt in ("tevatron", "tevatron-legacy"):
        assert recs[0]["query"] == "question q0"
        if fmt == "tevatron-legacy":
            assert recs[0]["negative_passages"][0]["text"].startswith("passage doc")
        else:  # Tevatron 2.x: the texts are in the corpus file beside it
            corpus = read_texts(str(tmp_path / "tev.corpus.jsonl"))
            named = {d for r in recs for d in r["positives"] + r["negatives"]}
            assert set(corpus) == named
            assert all(corpus[d] == (f"title {d[3:]}", f"passage {d}") for d in named)
    # the same epoch drawn in-process and by `sample` agree
    cf = load_candidates(str(out / "candidates"))
    from simans_fast.pipeline import epoch_negatives

    e = epoch_negatives(cf, 2, cf.parameters)
    got = [r["negatives"] for r in recs]
    keep = [i for i in range(N_Q) if f"q{i}" in written]
    if fmt == "trec":  # TREC lists the negatives by rank
        want = [[cf.doc_ids[j] for j in row[np.argsort(rk, kind="stable")] if j >= 0]
                for row, rk in zip(e.negative_rows, e.negative_ranks)]
    elif fmt.startswith("tevatron"):
        want = [[cf.doc_ids[j] for j in e.negative_rows[i] if j >= 0] for i in keep]
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


def test_run_demo_checks_its_output_directory_first(tmp_path):
    from simans_fast.demo import run_demo

    f = tmp_path / "f"
    f.write_text("x")
    lines = []
    for out in (f, f / "sub"):
        with pytest.raises(ValueError, match="out"):
            run_demo(out=str(out), print_fn=lines.append)
    assert lines == []  # refused before any work
    assert os.listdir(tmp_path) == ["f"]


# ------------------------------------------------------------------------------ strategy flags
# every strategy flag at 0 and at its boundaries (K = 30 candidates, N = 5 negatives)
STRATEGY_FLAGS = [
    ["--margin", "0"], ["--margin", "-0.5"], ["--max-score", "0"], ["--perc", "0"],
    ["--perc", "1"], ["--max-score", "-1000000"], ["--a", "0"], ["--b", "0"],
    ["--strategy", "top", "--skip", "0"], ["--strategy", "top", "--skip", str(K - N)],
    ["--strategy", "uniform", "--window", f"0-{N}"],
    ["--strategy", "uniform", "--window", f"{K - N}-"],
    ["--strategy", "uniform", "--window", f"{K - N}-{10 * K}"],
    ["--strategy", "simans", "--window", "0-"], ["--skip", "1", "--margin", "0"],
    ["--strategy", "top", "--perc", "0", "--max-score", "0"],
]


def _reference(cf, flags, epoch):
    """The negatives (corpus rows) the Python API gives for these flags, from the flags."""
    opts = dict(zip(flags[::2], flags[1::2]))
    cids = np.asarray(cf.candidate_ids)
    cscores = np.asarray(cf.candidate_scores)
    ps = np.asarray(cf.positive_scores)
    ps = ps[:, 0] if ps.shape[1] == 1 else ps
    a, b = float(opts.get("--a", 0.5)), float(opts.get("--b", 0.0))
    kw = {"strategy": opts.get("--strategy", "simans"), "skip": int(opts.get("--skip", 0))}
    if "--window" in opts:
        lo, hi = opts["--window"].split("-")
        kw["window"] = (int(lo), int(hi) if hi else None)
    for flag, key in (("--max-score", "max_score"), ("--margin", "margin"), ("--perc", "perc")):
        if flag in opts:
            kw[key] = float(opts[flag])
    if kw["strategy"] == "simans" and kw["skip"] == 0 and len(kw) == 2:
        # plain SimANS: the alias-table sampler (select_negatives draws with the row CDFs)
        return sf.SimANSSampler(cids, cscores, ps, n=N, a=a, b=b, seed=3).sample(epoch=epoch)
    return sf.select_negatives(cids, cscores, ps, N, a=a, b=b, seed=3, epoch=epoch, **kw)


@pytest.mark.parametrize("flags", STRATEGY_FLAGS, ids=" ".join)
def test_strategy_flags_mine_epoch0_equals_sample_equals_python(data, tmp_path, capsys, flags):
    """0 is a threshold like any other: mine's epoch 0 == sample --epoch 0 == the Python call."""
    out = tmp_path / "run"
    assert main(_mine_args(data, out, *flags, fmt=("--format", "simxns"))) == 0, \
        capsys.readouterr().err
    cf = load_candidates(str(out / "candidates"))
    params = cf.parameters
    for flag, v in zip(flags[::2], flags[1::2]):
        key = flag[2:].replace("-", "_")
        if key in ("a", "b", "max_score", "margin", "perc"):
            assert params[key] == float(v), key  # recorded, 0 included
        elif key == "skip" and v != "0":
            assert params[key] == int(v)
    mined = (out / "negatives.epoch0.tsv").read_bytes()
    dest = tmp_path / "s0.tsv"
    assert main(["sample", "--candidates", str(out), "--epoch", "0", "--out", str(dest),
                 "--no-progress"]) == 0
    assert dest.read_bytes() == mined
    want = _reference(cf, flags, 0)
    got = [r["negatives"] for r in read_negatives(str(dest))]
    assert got == [[cf.doc_ids[j] for j in row if j >= 0] for row in want]
    # sample with the flags given again (over the header's values) draws the same
    dest2 = tmp_path / "s0b.tsv"
    assert main(["sample", "--candidates", str(out), "--epoch", "0", "--out", str(dest2),
                 "--no-progress", *flags]) == 0
    assert dest2.read_bytes() == mined
    # and epoch 1 follows the Python call too
    dest3 = tmp_path / "s1.tsv"
    assert main(["sample", "--candidates", str(out), "--epoch", "1", "--out", str(dest3),
                 "--no-progress"]) == 0
    want1 = _reference(cf, flags, 1)
    assert [r["negatives"] for r in read_negatives(str(dest3))] == \
        [[cf.doc_ids[j] for j in row if j >= 0] for row in want1]


def test_margin_zero_actually_filters(data, tmp_path):
    """--margin 0 removes every candidate scored at or above the positive (old bug: ignored)."""
    out = tmp_path / "run"
    assert main(_mine_args(data, out, "--margin", "0", fmt=("--format", "simxns"))) == 0
    cf = load_candidates(str(out / "candidates"))
    score = {(cf.query_ids[i], cf.doc_ids[j]): s for i in range(N_Q)
             for j, s in zip(cf.candidate_ids[i], cf.candidate_scores[i]) if j >= 0}
    ps = np.asarray(cf.positive_scores)
    lowest_pos = np.array([np.nanmin(r) if np.isfinite(r).any() else np.nan for r in ps])
    above = 0
    for i, r in enumerate(read_negatives(str(out / "negatives.epoch0.tsv"))):
        if np.isfinite(lowest_pos[i]):
            for d in r["negatives"]:
                assert score[(r["query_id"], d)] < lowest_pos[i]
        above += int((np.asarray(cf.candidate_scores[i]) >= lowest_pos[i]).sum())
    assert above > 0  # the filter had something to remove


# ------------------------------------------------------------------------------ bad input
class _Ctx:
    def __init__(self, data, baseline, tmp):
        self.d = data
        self.run = baseline[0]
        self.t = tmp
        self.out = tmp / "out"

    def npy(self, name, arr, **kw):
        p = self.t / name
        np.save(p, arr, **kw)
        return str(p)

    def file(self, name, content):
        p = self.t / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(p)

    def cand(self):
        """A copy of the baseline's candidates directory, to damage."""
        c = self.t / "cand"
        if not c.exists():
            shutil.copytree(self.run / "candidates", c)
        return c

    def mine(self, *extra, fmt=IDS, **repl):
        args = _mine_args(self.d, self.out, *extra, fmt=fmt)
        for flag, value in repl.items():
            args[args.index("--" + flag.replace("_", "-"))] = "--" + flag.replace("_", "-")
            args[args.index("--" + flag.replace("_", "-")) + 1] = value
        return args

    def sample(self, *extra, cand=None, out=None):
        return ["sample", "--candidates", str(cand or self.run), "--epoch", "1", "--out",
                str(out or self.t / "e1.tsv"), "--no-progress", *extra]


def _q():
    rng = np.random.default_rng(1)
    return rng.standard_normal((N_Q, DIM)).astype(np.float32)


def _with_qrels_line(c, line):
    return c.file("qrels.txt", (c.d / "qrels.txt").read_text() + line)


def _edit_json(path, fn):
    h = json.loads(open(path).read())
    fn(h)
    open(path, "w").write(json.dumps(h))


def _npy_cut(c):
    raw = (c.d / "Q.npy").read_bytes()
    return c.file("cut.npy", raw[:-100])


def _tamper(c, fn):
    d = c.cand()
    fn(d)
    return d


def _shift_scores(d):
    a = np.load(d / "candidate_scores.npy")
    np.save(d / "candidate_scores.npy", np.roll(a, 1, axis=0))


def _ids_out_of_range_with_fixed_digest(d):
    a = np.load(d / "candidate_ids.npy")
    a[3, 3] = N_D + 5
    np.save(d / "candidate_ids.npy", a)
    _edit_json(d / "header.json", lambda h: h["arrays"]["candidate_ids"].update(
        sha256=file_sha256(str(d / "candidate_ids.npy"))))


def _without(args, flag):
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def _bad_cases():
    """name -> builder(ctx) -> (argv, text the one error line must contain)."""
    c = {}
    q = "--queries"
    # ---- mine: embeddings
    c["queries missing"] = lambda x: (x.mine(queries=str(x.t / "nope.npy")), "nope.npy")
    c["queries int64"] = lambda x: (x.mine(queries=x.npy("q64.npy", _q().astype(np.int64))),
                                    "q64.npy")
    c["queries 1-D"] = lambda x: (x.mine(queries=x.npy("q1.npy", _q()[:, 0])), "q1.npy")
    c["queries pickle"] = lambda x: (x.mine(queries=x.npy(
        "qp.npy", np.array([[None]] * N_Q, dtype=object), allow_pickle=True)), "qp.npy")
    c["queries truncated"] = lambda x: (x.mine(queries=_npy_cut(x)), "cut.npy")
    c["queries text"] = lambda x: (x.mine(queries=x.file("q.npy", "1 2 3\n")), "q.npy")
    c["queries npz"] = lambda x: (x.mine(queries=x.file("q.npz", b"PK\x03\x04rest")), "q.npz")
    c["queries empty"] = lambda x: (x.mine(queries=x.npy("q0.npy", np.zeros((0, DIM),
                                                                          np.float32))), "q0.npy")
    c["queries nan row"] = lambda x: (x.mine(queries=x.npy(
        "qn.npy", np.where(np.arange(N_Q)[:, None] == 11, np.nan, _q()).astype(np.float32))),
        "row 11")
    c["corpus inf"] = lambda x: (x.mine(corpus=x.npy("ci.npy", np.where(
        np.arange(N_D)[:, None] == 5, np.inf, np.load(x.d / "C.npy")).astype(np.float32))),
        "ci.npy")
    c["dim mismatch"] = lambda x: (x.mine(queries=x.npy("q8.npy", _q()[:, :8])), "q8.npy")
    c["queries is a directory"] = lambda x: (x.mine(queries=str(x.d / "beir")), "beir")
    # ---- mine: id lists and qrels
    c["query ids not utf-8"] = lambda x: (x.mine(query_ids=x.file(
        "qids.txt", "\n".join(f"q{i}" for i in range(N_Q - 1)).encode() + b"\nq\xe9\n")),
        "line 90")
    c["query ids short"] = lambda x: (x.mine(query_ids=x.file(
        "qids.txt", "".join(f"q{i}\n" for i in range(N_Q - 1)))), "qids.txt")
    c["doc ids duplicate"] = lambda x: (x.mine(doc_ids=x.file(
        "dids.txt", "".join(f"doc{min(j, N_D - 2)}\n" for j in range(N_D)))), "appears twice")
    c["doc ids space"] = lambda x: (x.mine(doc_ids=x.file(
        "dids.txt", "doc 0\n" + "".join(f"doc{j}\n" for j in range(1, N_D)))), "whitespace")
    c["doc ids empty"] = lambda x: (x.mine(doc_ids=x.file("dids.txt", "")), "empty")
    c["doc ids missing"] = lambda x: (x.mine(doc_ids=str(x.t / "none.txt")), "none.txt")
    c["qrels not utf-8"] = lambda x: (x.mine(qrels=x.file("qrels.txt", b"q1 0 doc\xff 1\n")),
                                      "not UTF-8")
    c["qrels unknown query"] = lambda x: (x.mine(qrels=_with_qrels_line(x, "qX 0 doc1 1\n")),
                                          "'qX'")
    c["qrels unknown doc"] = lambda x: (x.mine(qrels=_with_qrels_line(x, "q1 0 docX 1\n")),
                                        "'docX'")
    c["qrels five fields"] = lambda x: (x.mine(qrels=_with_qrels_line(x, "q1 0 doc1 1 x\n")),
                                        "5 fields")
    c["qrels relevance nan"] = lambda x: (x.mine(qrels=_with_qrels_line(x, "q1 0 doc1 nan\n")),
                                          "finite")
    c["qrels relevance word"] = lambda x: (x.mine(qrels=_with_qrels_line(x, "q1 0 doc1 yes\n")),
                                           "'yes'")
    c["qrels nothing relevant"] = lambda x: (x.mine(qrels=x.file("qrels.txt", "q1 0 doc1 0\n")),
                                             "no judgement")
    c["qrels binary"] = lambda x: (x.mine(qrels=x.file("qrels.txt", bytes(range(256)))),
                                   "qrels.txt")
    # ---- mine: numbers
    c["k too large"] = lambda x: (x.mine(k=str(N_D + 1)), "--k")
    c["k zero"] = lambda x: (x.mine(k="0"), "--k 0")
    c["n zero"] = lambda x: (x.mine(n="0"), "--n 0")
    c["n above k"] = lambda x: (x.mine(n=str(K + 1)), f"--n {K + 1}")
    c["a negative"] = lambda x: (x.mine("--a", "-1"), "--a")
    c["a nan"] = lambda x: (x.mine("--a", "nan"), "--a")
    c["b inf"] = lambda x: (x.mine("--b", "inf"), "--b")
    c["seed negative"] = lambda x: (x.mine(seed="-1"), "--seed")
    c["seed 2**64"] = lambda x: (x.mine(seed=str(2 ** 64)), "--seed")
    c["threads zero"] = lambda x: (x.mine("--threads", "0"), "--threads")
    c["threads huge"] = lambda x: (x.mine("--threads", "100000"), "--threads")
    c["query block zero"] = lambda x: (x.mine(query_block="0"), "--query-block 0")
    c["chunk size zero (old flag)"] = lambda x: (x.mine("--chunk-size", "0"), "--chunk-size 0")
    c["perc above 1"] = lambda x: (x.mine("--perc", "1.5"), "--perc")
    c["perc nan"] = lambda x: (x.mine("--perc", "nan"), "--perc")
    c["margin inf"] = lambda x: (x.mine("--margin", "inf"), "--margin")
    c["max-score nan"] = lambda x: (x.mine("--max-score", "nan"), "--max-score")
    c["skip negative"] = lambda x: (x.mine("--skip", "-1"), "--skip")
    c["skip leaves too few"] = lambda x: (x.mine("--skip", str(K - N + 1)), "--skip")
    c["window word"] = lambda x: (x.mine("--window", "x"), "--window")
    c["window empty range"] = lambda x: (x.mine("--window", "5-5"), "--window")
    c["window reversed"] = lambda x: (x.mine("--window", "10-5"), "--window")
    c["window negative"] = lambda x: (x.mine("--window", "-5"), "--window")
    c["window unicode digits"] = lambda x: (x.mine("--window", "\u0663-9"), "--window")
    c["window narrower than n"] = lambda x: (x.mine("--window", "0-3"), "--window")
    c["window beyond k"] = lambda x: (x.mine("--window", f"{K}-"), "--window")
    c["strategy unknown"] = lambda x: (x.mine("--strategy", "best"), "--strategy")
    c["kernel unknown"] = lambda x: (x.mine("--kernel", "cauchy"), "--kernel")
    c["format unknown"] = lambda x: (x.mine(fmt=("--format", "csv")), "--format")
    c["backend unknown"] = lambda x: (x.mine("--backend", "gpu"), "--backend")
    c["n not a number"] = lambda x: (x.mine(n="abc"), "--n")
    c["missing --queries"] = lambda x: (_without(x.mine(), q), q)
    c["unknown flag"] = lambda x: (x.mine("--bogus"), "--bogus")
    c["resume and overwrite"] = lambda x: (x.mine("--resume", "--overwrite"), "--resume")
    # ---- mine: formats and texts
    c["tevatron without texts"] = lambda x: (x.mine(fmt=()), "--ids-only")
    c["st without texts"] = lambda x: (x.mine(fmt=("--format", "sentence-transformers")),
                                       "--format sentence-transformers")
    c["legacy ids only"] = lambda x: (x.mine(fmt=("--format", "tevatron-legacy", "--ids-only")),
                                      "tevatron-legacy")
    c["ids only with texts"] = lambda x: (x.mine("--texts", str(x.d / "beir")), "--ids-only")
    c["ids only with trec"] = lambda x: (x.mine(fmt=("--format", "trec", "--ids-only")),
                                         "--ids-only")
    c["on-short with trec"] = lambda x: (x.mine(fmt=("--format", "trec", "--on-short", "drop")),
                                         "--on-short")
    c["texts not a dir"] = lambda x: (x.mine(fmt=("--texts", str(x.d / "qids.txt"))), "--texts")
    c["texts without corpus"] = lambda x: (x.mine(fmt=("--texts", os.path.dirname(x.file(
        "b/queries.jsonl", "{}\n")))), "corpus.jsonl")
    c["query texts alone"] = lambda x: (x.mine(fmt=("--query-texts", str(x.d / "beir" /
                                                                         "queries.jsonl"))),
                                        "--doc-texts")
    c["texts and query texts"] = lambda x: (x.mine(fmt=(
        "--texts", str(x.d / "beir"), "--query-texts", str(x.d / "beir" / "queries.jsonl"),
        "--doc-texts", str(x.d / "beir" / "corpus.jsonl"))), "--texts")
    c["doc texts not utf-8"] = lambda x: (x.mine(fmt=(
        "--query-texts", str(x.d / "beir" / "queries.jsonl"), "--doc-texts",
        x.file("docs.tsv", b"doc0\tcaf\xe9\n")), ), "not UTF-8")
    c["doc texts bad json"] = lambda x: (x.mine(fmt=(
        "--query-texts", str(x.d / "beir" / "queries.jsonl"), "--doc-texts",
        x.file("docs.jsonl", '{"_id": "doc0", "text": "a"}\n{"_id": \n'))), "line 2")
    c["doc texts missing ids"] = lambda x: (x.mine(fmt=(
        "--query-texts", str(x.d / "beir" / "queries.jsonl"), "--doc-texts",
        x.file("docs.tsv", "".join(f"doc{j}\tt\n" for j in range(N_D) if j != 321)))),
        "'doc321'")
    c["query texts duplicate"] = lambda x: (x.mine(fmt=(
        "--query-texts", x.file("qt.tsv", "".join(f"q{i}\tt\n" for i in range(N_Q)) + "q3\tx\n"),
        "--doc-texts", str(x.d / "beir" / "corpus.jsonl"))), "second time")
    c["doc texts null text"] = lambda x: (x.mine(fmt=(
        "--query-texts", str(x.d / "beir" / "queries.jsonl"), "--doc-texts",
        x.file("docs.jsonl", '{"_id": "doc0", "text": null}\n'))), "'text' must be a string")
    # ---- mine: output location
    c["out under a file"] = lambda x: (x.mine(out=x.file("f.txt", "x") + "/run"), "f.txt")
    c["out is a file"] = lambda x: (x.mine(out=x.file("f.txt", "x")), "f.txt")
    c["out in /proc"] = lambda x: (x.mine(out="/proc/simans-fast-test/run"), "/proc")
    c["out in /sys"] = lambda x: (x.mine(out="/sys/simans-fast-test"), "/sys")
    c["out holds a run"] = lambda x: (x.mine(out=str(shutil.copytree(x.run, x.t / "r"))),
                                      "--resume")
    c["input inside out"] = lambda x: (x.mine(out=str(x.t / "r2"), queries=(
        lambda p: (os.makedirs(os.path.dirname(p)), shutil.copy(x.d / "Q.npy", p), p)[-1])(
        str(x.t / "r2" / "candidates" / "Q.npy"))), "--queries")
    # ---- sample
    c["sample candidates missing"] = lambda x: (x.sample(cand=x.t / "nothing"), "nothing")
    c["sample candidates is a file"] = lambda x: (x.sample(cand=x.file("c.txt", "x")), "c.txt")
    c["sample header cut"] = lambda x: (x.sample(cand=_tamper(x, lambda d: (
        d / "header.json").write_bytes((d / "header.json").read_bytes()[:50]))), "header.json")
    c["sample header n zero"] = lambda x: (x.sample(cand=_tamper(x, lambda d: _edit_json(
        d / "header.json", lambda h: h["parameters"].update(n=0)))), "parameters.n")
    c["sample header kernel odd"] = lambda x: (x.sample(cand=_tamper(x, lambda d: _edit_json(
        d / "header.json", lambda h: h["parameters"].update(kernel=None)))), "parameters.kernel")
    c["sample array pickle"] = lambda x: (x.sample(cand=_tamper(x, lambda d: np.save(
        d / "positive_scores.npy", np.array([None], dtype=object), allow_pickle=True))),
        "positive_scores.npy")
    c["sample array truncated"] = lambda x: (x.sample(cand=_tamper(x, lambda d: (
        d / "candidate_ids.npy").write_bytes((d / "candidate_ids.npy").read_bytes()[:-40]))),
        "candidate_ids.npy")
    c["sample array shifted"] = lambda x: (x.sample(cand=_tamper(x, _shift_scores)), "sha256")
    c["sample ids out of range"] = lambda x: (x.sample(cand=_tamper(
        x, _ids_out_of_range_with_fixed_digest)), "candidate_ids.npy")
    c["sample epoch negative"] = lambda x: (["sample", "--candidates", str(x.run), "--epoch",
                                             "-1", "--out", str(x.t / "e.tsv")], "--epoch")
    c["sample epoch 2**64"] = lambda x: (["sample", "--candidates", str(x.run), "--epoch",
                                          str(2 ** 64), "--out", str(x.t / "e.tsv")], "--epoch")
    c["sample out is a dir"] = lambda x: (x.sample("--format", "simxns", out=x.t), "directory")
    c["sample out parent missing"] = lambda x: (x.sample(out=x.t / "no" / "e.tsv"), "create it")
    c["sample out under a file"] = lambda x: (x.sample(out=x.file("f", "x") + "/e.tsv"), "is a file")
    c["sample out in /proc"] = lambda x: (x.sample(out="/proc/e.tsv"), "/proc")
    c["sample out inside candidates"] = lambda x: (x.sample(
        cand=x.cand(), out=x.t / "cand" / "header.tsv"), "inside the candidates")
    c["sample out replaces texts"] = lambda x: (x.sample(
        "--format", "tevatron-legacy", "--query-texts", x.file("qt.jsonl", (
            x.d / "beir" / "queries.jsonl").read_text()),
        "--doc-texts", str(x.d / "beir" / "corpus.jsonl"), out=x.t / "qt.jsonl"), "qt.jsonl")
    c["sample ext mismatch"] = lambda x: (x.sample("--format", "trec",
                                                   out=x.t / "e.parquet"), "--format trec")
    c["sample st without texts"] = lambda x: (x.sample(out=x.t / "e.parquet"), "--ids-only")
    c["sample tevatron jsonl no texts"] = lambda x: (x.sample(out=x.t / "e.jsonl"), "--ids-only")
    c["sample texts not utf-8"] = lambda x: (x.sample(
        "--query-texts", x.file("qt.tsv", b"q0\t\xff\n"), "--doc-texts",
        str(x.d / "beir" / "corpus.jsonl"), "--format", "simxns"), "not UTF-8")
    c["sample doc texts missing"] = lambda x: (x.sample(
        "--query-texts", str(x.d / "beir" / "queries.jsonl"), "--doc-texts",
        x.file("dt.tsv", "doc0\tonly one\n"), out=x.t / "e.jsonl"), "no text for")
    c["sample window bad"] = lambda x: (x.sample("--window", "3-"  "x"), "--window")
    c["sample n zero"] = lambda x: (x.sample("--n", "0"), "--n 0")
    c["sample n above k"] = lambda x: (x.sample("--n", str(K + 1)), f"--n {K + 1}")
    c["sample on-short raise"] = lambda x: (x.sample(
        "--texts", str(x.d / "beir"), "--format", "sentence-transformers", "--on-short",
        "raise", "--strategy", "top", "--max-score", "30", out=x.t / "e.parquet"),
        "--on-short raise")
    # ---- inspect and demo
    c["inspect rows negative"] = lambda x: (["inspect", str(x.run), "--rows", "-1"], "--rows")
    c["inspect missing"] = lambda x: (["inspect", str(x.t / "nope")], "nope")
    c["inspect not utf-8"] = lambda x: (["inspect", x.file("n.jsonl", b'{"a": "\xff"}\n')],
                                        "not UTF-8")
    c["inspect garbage jsonl"] = lambda x: (["inspect", x.file("n.jsonl", "{oops\n")], "n.jsonl")
    c["inspect bad tevatron"] = lambda x: (["inspect", x.file(
        "n.jsonl", '{"query_id": "q", "positive_document_ids": 3, '
                   '"negative_document_ids": []}\n')], "n.jsonl")
    c["inspect bad parquet"] = lambda x: (["inspect", x.file("n.parquet", b"PAR1xxxx")],
                                          "n.parquet")
    c["inspect bad trec"] = lambda x: (["inspect", x.file("n.trec", "q Q0 d x 1 t\n")],
                                       "n.trec")
    c["inspect sampler meta cut"] = lambda x: (["inspect", os.path.dirname(x.file(
        "smp/meta.json", '{"format": "simans'))], "meta.json")
    c["inspect candidates pickle"] = lambda x: (["inspect", str(_tamper(x, lambda d: np.save(
        d / "candidate_ids.npy", np.array([None], dtype=object), allow_pickle=True)))],
        "candidate_ids.npy")
    c["demo out under a file"] = lambda x: (["demo", "--out", x.file("f", "x") + "/d"], "--out")
    c["out/candidates is a file"] = lambda x: (x.mine("--resume", out=os.path.dirname(x.file(
        "r3/candidates", "x"))), "candidates")
    c["demo seed negative"] = lambda x: (["demo", "--seed", "-1", "--no-plot"], "--seed")
    return c


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_input_is_one_line_exit_2_and_writes_nothing(data, baseline, tmp_path, capsys,
                                                               case):
    ctx = _Ctx(data, baseline, tmp_path / "w")
    ctx.t.mkdir()
    argv, culprit = BAD[case](ctx)
    argv = [str(a) for a in argv]
    before = _snapshot(tmp_path, data, baseline[0])
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2, (rc, cap.err)
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("simans-fast: error:"), lines[0]
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in cap.err + cap.out
    assert _snapshot(tmp_path, data, baseline[0]) == before  # nothing written, nothing removed


@pytest.mark.parametrize("case", ["queries pickle", "qrels not utf-8", "out under a file",
                                  "sample array truncated", "n not a number",
                                  "inspect bad parquet"])
def test_malformed_input_in_a_subprocess_has_no_traceback(data, baseline, tmp_path, case):
    ctx = _Ctx(data, baseline, tmp_path / "w")
    ctx.t.mkdir()
    argv, culprit = BAD[case](ctx)
    r = _run([str(a) for a in argv], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert culprit in r.stderr


def test_existing_run_needs_resume_or_overwrite(data, baseline, tmp_path, capsys):
    out, hashes = baseline
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    assert main(_mine_args(data, copy)) == 2
    assert "--resume" in capsys.readouterr().err
    # resuming a finished run with other parameters is refused, nothing is touched
    assert main(_mine_args(data, copy, "--resume", "--a", "1.5")) == 2
    assert "different" in capsys.readouterr().err
    assert _hashes(copy) == hashes
    # resuming it with the same parameters reuses the candidates, same bytes
    assert main(_mine_args(data, copy, "--resume")) == 0
    assert "verified and reused" in capsys.readouterr().out
    assert _hashes(copy) == hashes
    assert main(_mine_args(data, copy, "--overwrite", "--n", "3")) == 0
    assert load_candidates(str(copy / "candidates")).parameters["n"] == 3


# ------------------------------------------------------------------------------ resume verifies
def _truncate(p):
    p.write_bytes(p.read_bytes()[:-64])


def _roll(p):
    a = np.load(p)
    np.save(p, np.roll(a, 1, axis=0))


RESUME_DAMAGE = {
    "scores truncated": (lambda c: _truncate(c / "candidate_scores.npy"), "candidate_scores"),
    "scores shifted": (lambda c: _roll(c / "candidate_scores.npy"), "sha256"),
    "ids shifted": (lambda c: _roll(c / "candidate_ids.npy"), "sha256"),
    "positives shifted, digest fixed": (lambda c: (_roll(c / "positive_ids.npy"), _edit_json(
        c / "header.json", lambda h: h["arrays"]["positive_ids"].update(
            sha256=file_sha256(str(c / "positive_ids.npy"))))), "positive_ids"),
    "parameter a edited": (lambda c: _edit_json(c / "header.json", lambda h: h[
        "parameters"].update(a=2.0)), "parameters.a"),
    "parameter margin added": (lambda c: _edit_json(c / "header.json", lambda h: h[
        "parameters"].update(margin=0.0)), "parameters.margin"),
    "n as a float": (lambda c: _edit_json(c / "header.json", lambda h: h[
        "parameters"].update(n=float(N))), "parameters.n"),
    "job edited": (lambda c: _edit_json(c / "header.json", lambda h: h["provenance"]["job"][
        "parameters"].update(seed=4)), "different"),
    "header cut": (lambda c: (c / "header.json").write_text('{"format": "simans-fast-can'),
                   "header.json"),
    "array pickled": (lambda c: np.save(c / "candidate_ids.npy", np.array(
        [None], dtype=object), allow_pickle=True), "candidate_ids.npy"),
    "doc ids edited": (lambda c: (c / "doc_ids.txt").write_text(
        "".join(f"doc{j}\n" for j in range(N_D - 1)) + "other\n"), "doc_ids.txt"),
}


@pytest.mark.parametrize("case", list(RESUME_DAMAGE))
def test_resume_verifies_the_candidates_it_reuses(data, baseline, tmp_path, capsys, case):
    out, _ = baseline
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    os.unlink(copy / "negatives.epoch0.jsonl")  # as if killed after the candidates were done
    damage, culprit = RESUME_DAMAGE[case]
    damage(copy / "candidates")
    before = _snapshot(copy)
    capsys.readouterr()
    assert main(_mine_args(data, copy, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err
    assert _snapshot(copy) == before  # nothing reused, nothing written


def test_resume_redoes_damaged_chunk_checkpoints(data, baseline, tmp_path):
    _, want = baseline
    out = tmp_path / "run"
    r = _run_killed(_mine_args(data, out, "--threads", "2"), cwd=tmp_path,
                    kill_at="chunk_written:3")
    assert r.returncode == -signal.SIGKILL, r.stderr
    chunks = out / ".simans-work" / "chunks"
    _truncate(chunks / "c0000000" / "candidate_scores.npy")
    _roll(chunks / "c0000001" / "candidate_ids.npy")  # same shape: only the digest tells
    np.save(chunks / "c0000002" / "positive_scores.npy", np.array([None], dtype=object),
            allow_pickle=True)
    (chunks / "c0000003" / "manifest.json").write_text("{")
    r = _run(_mine_args(data, out, "--resume", "--threads", "1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 damaged chunk checkpoint(s) discarded" in r.stderr
    assert _hashes(out) == want


def test_resume_with_an_unreadable_job_file_starts_over(data, baseline, tmp_path):
    _, want = baseline
    out = tmp_path / "run"
    r = _run_killed(_mine_args(data, out, "--threads", "1"), cwd=tmp_path,
                    kill_at="chunk_written:1")
    assert r.returncode == -signal.SIGKILL, r.stderr
    (out / ".simans-work" / "job.json").write_bytes(b'{"k": 3\xff')
    r = _run(_mine_args(data, out, "--resume", "--threads", "1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "unreadable" in r.stderr
    assert _hashes(out) == want


# ------------------------------------------------------------------------------ kill + resume
@pytest.mark.parametrize("point,kill_threads,resume_threads", [
    ("chunk_ready:1", "2", None), ("chunk_written:2", "2", None), ("assembled", "2", None),
    ("candidates_written", "2", None), ("negatives_written", "2", None),
    ("commit:negatives.epoch0.jsonl", "2", None),  # killed while the negatives file is written
    ("commit:negatives.epoch0.jsonl", "1", None),  # the temp file only: any thread count
    ("chunk_written:2", "1", "2"),  # another --threads after the kill
])
def test_sigkill_then_resume_is_byte_identical(data, baseline, tmp_path, point, kill_threads,
                                               resume_threads):
    _, want = baseline
    out = tmp_path / "run"
    r = _run_killed(_mine_args(data, out, "--threads", kill_threads), cwd=tmp_path,
                    kill_at=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    neg = out / "negatives.epoch0.jsonl"
    if point != "negatives_written":
        assert not neg.exists()  # never a half-written output
    if point in ("chunk_ready:1", "chunk_written:2"):
        done = [n for n in os.listdir(out / ".simans-work" / "chunks") if not n.startswith(".")]
        assert len(done) == int(point[-1]) + (0 if point.startswith("chunk_ready") else 1)
    if point.startswith("commit:"):  # the full temp file is there, not yet renamed
        assert [n for n in os.listdir(out) if n.startswith(".negatives.epoch0.jsonl.")]
    extra = ["--threads", resume_threads] if resume_threads else []
    r = _run(_mine_args(data, out, "--resume", *extra), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _hashes(out) == want  # same bytes, no temp file left behind


def test_external_sigkill_at_random_moments_then_resume(data, baseline, tmp_path):
    """Killed from outside after N chunk directories appear, twice, then resumed."""
    _, want = baseline
    out = tmp_path / "run"
    chunks = out / ".simans-work" / "chunks"
    for n_chunks in (1, 3):
        args = _mine_args(data, out, "--resume")
        p = subprocess.Popen(_driver(args, sleep=0.25), cwd=tmp_path, env=_env(),
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


def test_tevatron_with_texts_killed_while_writing_its_corpus(data, tmp_path):
    """Two files (training records + corpus): a kill at either rename leaves no debris."""
    texts = ("--texts", str(data / "beir"))
    ref = tmp_path / "ref"
    assert main(_mine_args(data, ref, *texts, fmt=())) == 0
    want = _hashes(ref)
    assert "negatives.epoch0.corpus.jsonl" in want
    for point in ("commit:negatives.epoch0.corpus.jsonl", "commit:negatives.epoch0.jsonl"):
        out = tmp_path / point.replace(":", "_")
        r = _run_killed(_mine_args(data, out, *texts, fmt=()), cwd=tmp_path, kill_at=point)
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert [n for n in os.listdir(out) if n.endswith(".tmp")]
        assert main(_mine_args(data, out, "--resume", *texts, fmt=())) == 0
        assert _hashes(out) == want


def test_sample_killed_while_writing_then_rerun_cleans_up(baseline, tmp_path):
    out, _ = baseline
    dest = tmp_path / "e3.tsv"
    args = ["sample", "--candidates", str(out), "--epoch", "3", "--out", str(dest)]
    r = _run_killed(args, cwd=tmp_path, kill_at="commit:e3.tsv")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not dest.exists() and len(os.listdir(tmp_path)) == 1  # only the temp file
    r = _run(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["e3.tsv"]


@pytest.mark.parametrize("flags", [["--strategy", "top", "--skip", "2"],
                                   ["--strategy", "uniform", "--window", "3-12"],
                                   ["--margin", "0.5"]])
def test_sample_with_strategy_flags(data, baseline, tmp_path, flags):
    """The CLI exposes sf.select_negatives: same negatives as the Python call on the candidates."""
    out, _ = baseline
    dest = tmp_path / "neg.tsv"
    rc = main(["sample", "--candidates", str(out), "--epoch", "1", "--out", str(dest),
               "--format", "simxns", "--no-progress", *flags])
    assert rc == 0
    cf = load_candidates(str(out / "candidates"))
    cids = np.asarray(cf.candidate_ids)
    want = _reference(cf, flags, 1)
    recs = read_negatives(str(dest))
    got = [r["negatives"] for r in recs]
    assert got == [[cf.doc_ids[j] for j in row if j >= 0] for row in want]
    if flags[:2] == ["--strategy", "top"]:
        # the n best after skipping 2: candidate columns 2..2+N (rows are in rank order)
        assert got[0] == [cf.doc_ids[j] for j in cids[0, 2:2 + N]]


# ------------------------------------------------------------------------------ the package
def test_flags_table_and_choices_come_from_the_library():
    from simans_fast import _config
    from simans_fast.cli import build_parser, flags
    from simans_fast.formats.negatives import NEGATIVES_FORMATS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["mine", "sample", "inspect", "hn-mine", "demo", "warmup"]
    mine = {a.dest: a for a in sub.choices["mine"]._actions}
    assert tuple(mine["kernel"].choices) == _config.KERNELS
    assert tuple(mine["fallback"].choices) == _config.FALLBACKS
    assert tuple(mine["positive_choice"].choices) == _config.POSITIVE_CHOICES
    assert tuple(mine["strategy"].choices) == _config.STRATEGIES
    assert tuple(mine["metric"].choices) == _config.METRICS
    assert tuple(mine["backend"].choices) == _config.BACKENDS
    assert tuple(mine["format"].choices) == NEGATIVES_FORMATS
    # every flag of mine and sample that stands for a Python parameter is in the one table
    for cmd in ("mine", "sample"):
        for a in sub.choices[cmd]._actions:
            if a.option_strings and a.dest in flags.FLAGS:
                assert flags.FLAGS[a.dest] in a.option_strings, (cmd, a.dest)


def test_library_errors_are_said_with_their_flags():
    from simans_fast._validate import InputError, ParameterError
    from simans_fast.cli.flags import HN_MINE_FLAGS, render, to_flags

    assert to_flags("pass resume=True, or overwrite=True") == "pass --resume, or --overwrite"
    assert to_flags("use on_short='repeat' (k=30, query_block=8)") == \
        "use --on-short repeat (--k 30, --query-block 8)"
    assert to_flags("parameters.n=3 and seed_u=2 stay") == "parameters.n=3 and seed_u=2 stay"
    e = InputError("/x/Q.npy: not a .npy file", parameter="queries", path="/x/Q.npy")
    assert render(e) == "--queries /x/Q.npy: not a .npy file"
    assert render(e, "--corpus") == "--corpus /x/Q.npy: not a .npy file"
    assert render(ParameterError("n", "n must be >= 1, got 0"), "--n 0") == \
        "--n 0: must be >= 1, got 0"
    assert render(ParameterError("resume", "resume=True and overwrite=True: give one")) == \
        "--resume and --overwrite: give one"
    assert render(ParameterError("a", "a and b disagree")) == "--a: a and b disagree"
    assert render(ParameterError("model", "model x: not found"), table=HN_MINE_FLAGS) == \
        "--embedder_name_or_path: model x: not found"


def test_cold_numba_cache_note(tmp_path, monkeypatch, baseline, capsys):
    from simans_fast.cli import _common

    out, _ = baseline
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    assert _common.numba_cache_is_cold()
    monkeypatch.setattr(_common, "_COLD_NOTED", False)
    args = ["sample", "--candidates", str(out), "--epoch", "1", "--format", "simxns",
            "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "e1.tsv")]) == 0
    err = capsys.readouterr().err
    assert "compiling kernels on first use (cached afterwards)" in err
    # once per process
    assert main(args + ["--out", str(tmp_path / "e2.tsv")]) == 0
    assert "compiling" not in capsys.readouterr().err
    # a warm cache says nothing
    (tmp_path / "cache" / "sub").mkdir()
    (tmp_path / "cache" / "sub" / "sampling.f-1.py311.nbi").write_bytes(b"")
    assert not _common.numba_cache_is_cold()
    monkeypatch.setattr(_common, "_COLD_NOTED", False)
    assert main(args + ["--out", str(tmp_path / "e3.tsv")]) == 0
    assert "compiling" not in capsys.readouterr().err
    # errors come before the note: a bad value prints only its one error line
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(_common, "numba_cache_is_cold", lambda: True)
    monkeypatch.setattr(_common, "_COLD_NOTED", False)
    assert main(args + ["--out", str(tmp_path / "e4.tsv"), "--n", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_package_holds_no_test_hooks():
    """Kills in the resume tests come from tests/_cli_kill.py's callback, not from env vars."""
    pkg = os.path.dirname(os.path.abspath(simans_fast.__file__))
    files = [os.path.join(root, f) for root, _dirs, names in os.walk(pkg)
             for f in names if f.endswith(".py")]  # the whole package, encode.py and io.py too
    assert not os.path.exists(os.path.join(pkg, "cli.py"))
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        for hook in ("SIMANS_FAST_TEST_", "_test_hook", "_test_kill_point", "os.kill("):
            assert hook not in text, (f, hook)


def test_the_command_line_imports_no_deprecated_module():
    code = ("import sys, simans_fast.cli, simans_fast.cli.mine, simans_fast.cli.sample, "
            "simans_fast.cli.inspect, simans_fast.cli.demo, simans_fast.cli.hn_mine; "
            "print('simans_fast.io' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_old_chunk_size_flag_still_works_with_a_note(data, baseline, tmp_path):
    _, want = baseline
    out = tmp_path / "run"
    args = _mine_args(data, out, "--threads", "1")
    args[args.index("--query-block")] = "--chunk-size"
    r = _run(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--chunk-size is deprecated" in r.stderr and "--query-block" in r.stderr
    assert _hashes(out) == want  # same run, same bytes (and resumable by either spelling)

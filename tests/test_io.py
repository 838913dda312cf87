"""Readers and writers (simans_fast.store, simans_fast.formats; formerly simans_fast.io): round
trips, determinism, atomicity, clear errors."""

from __future__ import annotations

import json
import os
import stat
import warnings

import numpy as np
import pytest

from simans_fast._validate import InputError
from simans_fast.formats import embeddings as emb
from simans_fast.formats import negatives as fneg
from simans_fast.formats import texts as ftexts
from simans_fast.formats import trec as ftrec
from simans_fast.store import atomic
from simans_fast.store import candidates as cand


# ------------------------------------------------------------------------------ inputs
def test_read_embeddings_memmaps_float32_float16_and_float64(tmp_path):
    # float64 is accepted like the Python API accepts it (docs/vocabulary.md): one rule
    for dt in (np.float32, np.float16, np.float64):
        x = np.arange(12, dtype=dt).reshape(3, 4)
        p = tmp_path / f"e_{np.dtype(dt).name}.npy"
        np.save(p, x)
        got = emb.read_embeddings(str(p), parameter="corpus")
        assert isinstance(got, np.memmap) and got.dtype == dt
        np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("case,match", [
    ("missing", "file not found"),
    ("int", "dtype int64"),
    ("complex", "dtype complex64"),
    ("1d", "2-D"),
    ("3d", "2-D"),
    ("npz", "npz"),
    ("text", "not a .npy"),
    ("object", "Python objects"),
    ("empty", "empty"),
])
def test_read_embeddings_errors_name_the_file(tmp_path, case, match):
    p = tmp_path / "bad.npy"
    if case == "complex":
        np.save(p, np.zeros((2, 3), np.complex64))
    elif case == "int":
        np.save(p, np.zeros((2, 3), np.int64))
    elif case == "1d":
        np.save(p, np.zeros(3, np.float32))
    elif case == "3d":
        np.save(p, np.zeros((2, 3, 4), np.float32))
    elif case == "npz":
        with open(p, "wb") as f:
            np.savez(f, a=np.zeros((2, 3), np.float32))
    elif case == "text":
        p.write_text("hello")
    elif case == "object":
        np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    elif case == "empty":
        np.save(p, np.zeros((0, 3), np.float32))
    with pytest.raises(InputError, match=match) as e:
        emb.read_embeddings(str(p), parameter="queries")
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg  # the file first, no CLI flag
    assert e.value.parameter == "queries" and e.value.path == str(p)


def test_read_ids(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_bytes(b"a\r\nb\nc")  # CRLF and no final newline
    assert emb.read_ids(str(p)) == ["a", "b", "c"]
    p.write_text("a\nb\n")
    assert emb.read_ids(str(p)) == ["a", "b"]
    assert cand.ids_sha256(["a", "b"]) == atomic.file_sha256(str(p))
    for text, match in [("a\na\n", "twice"), ("a\n\nb\n", "empty"), ("a b\n", "whitespace"),
                        ("", "empty")]:
        p.write_text(text)
        with pytest.raises(InputError, match=match):
            emb.read_ids(str(p))


def _index(ids):
    return {s: i for i, s in enumerate(ids)}


def test_read_qrels_trec_and_tsv(tmp_path):
    q = _index(["q1", "q2", "q3"])
    d = _index(["d1", "d2", "d3", "d4"])
    trec = tmp_path / "qrels.trec"
    trec.write_text("q2 0 d3 1\nq1 0 d2 2\nq1 0 d4 0\nq1 0 d1 1\nq1 0 d2 1\n\n# comment\n")
    indptr, ids, info = ftrec.read_qrels(str(trec), q, d)
    np.testing.assert_array_equal(indptr, [0, 2, 3, 3])
    np.testing.assert_array_equal(ids, [1, 0, 2])  # file order, rel 0 dropped, repeat dropped
    assert info["n_queries_with_positives"] == 2
    tsv = tmp_path / "qrels.tsv"
    tsv.write_text("query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td2\t1\nq1\td4\t0\nq1\td1\t1\n")
    i2, d2, _ = ftrec.read_qrels(str(tsv), q, d)
    np.testing.assert_array_equal(i2, indptr)
    np.testing.assert_array_equal(d2, ids)
    tsv2 = tmp_path / "pairs.tsv"
    tsv2.write_text("q2\td3\nq1\td2\nq1\td1\n")
    i3, d3, _ = ftrec.read_qrels(str(tsv2), q, d)
    np.testing.assert_array_equal(i3, indptr)
    np.testing.assert_array_equal(d3, ids)


def test_read_qrels_errors_and_skip_missing(tmp_path):
    q = _index(["q1", "q2"])
    d = _index(["d1", "d2"])
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq9 0 d1 1\nq2 0 d7 1\n")
    with pytest.raises(InputError) as e:
        ftrec.read_qrels(str(p), q, d, parameter="qrels")
    msg = str(e.value)
    assert str(p) in msg and "'q9'" in msg and "line 2" in msg and "skip_missing=True" in msg
    assert "not in query_index" in msg and "\n" not in msg  # the Python names, no CLI flag
    assert msg.startswith(f"{p}: ") and "--" not in msg
    assert (e.value.parameter, e.value.path, e.value.line) == ("qrels", str(p), 2)
    indptr, ids, info = ftrec.read_qrels(str(p), q, d, skip_missing=True)
    np.testing.assert_array_equal(indptr, [0, 1, 1])
    assert info["n_skipped"] == 2
    p.write_text("q1 0 d1 1\nq1 d1\tx y z\n")
    with pytest.raises(InputError, match="line 2"):
        ftrec.read_qrels(str(p), q, d)
    p.write_text("q1 0 d1 0\n")
    with pytest.raises(InputError, match="no judgement"):
        ftrec.read_qrels(str(p), q, d)


def test_read_texts(tmp_path):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tfirst text\tT1\n2\tsecond\tT2\n")
    assert ftexts.read_texts(str(tsv)) == {"1": ("T1", "first text"), "2": ("T2", "second")}
    tsv.write_text("1\tplain\n2\tother\n")
    assert ftexts.read_texts(str(tsv), {"2"}) == {"2": ("", "other")}
    tsv.write_text("D1\thttp://x\tTitle\tBody text\n")
    assert ftexts.read_texts(str(tsv)) == {"D1": ("Title", "Body text")}
    jl = tmp_path / "corpus.jsonl"
    jl.write_text('{"_id": "a", "title": "t", "text": "x"}\n{"_id": "b", "text": "y"}\n')
    assert ftexts.read_texts(str(jl)) == {"a": ("t", "x"), "b": ("", "y")}
    jl.write_text('{"name": "a"}\n')
    with pytest.raises(InputError, match="id field"):
        ftexts.read_texts(str(jl))


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic.AtomicFile(str(target), "w") as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    atomic.atomic_write_text(str(target), "done\n")
    assert target.read_text() == "done\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    # same permissions an ordinary open() would give
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~mask
    with pytest.raises(ValueError, match="object"):
        atomic.atomic_save_npy(str(tmp_path / "x.npy"), np.array([None], dtype=object))


# ------------------------------------------------------------------------------ candidates
def _candidates(n_q=4, k=5, m=2, n_docs=12, seed=0):
    rng = np.random.default_rng(seed)
    cids = np.stack([rng.permutation(n_docs)[:k] for _ in range(n_q)]).astype(np.int64)
    cs = -np.sort(-rng.standard_normal((n_q, k)), axis=1).astype(np.float32)
    cids[0, -1] = -1
    cs[0, -1] = -np.inf
    pids = np.full((n_q, m), -1, np.int64)
    ps = np.full((n_q, m), np.nan, np.float32)
    pids[:, 0] = 11
    ps[:, 0] = 1.5
    pids[1, 1] = 10
    ps[1, 1] = 0.25
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"doc-{j}" for j in range(n_docs)]
    return cids, cs, pids, ps, qids, dids


def test_candidates_round_trip_and_determinism(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    params = {"n": 3, "a": 0.5, "b": 0.0, "kernel": "gaussian", "seed": 1,
              "positive_choice": "random", "fallback": "lowest", "k": 5, "metric": "ip"}
    for name in ("c1", "c2"):
        cand.save_candidates(str(tmp_path / name), cids, cs, pids, ps, qids, dids,
                            parameters=params)
    files = sorted(os.listdir(tmp_path / "c1"))
    assert files == ["candidate_ids.npy", "candidate_scores.npy", "doc_ids.txt", "header.json",
                     "positive_ids.npy", "positive_scores.npy", "query_ids.txt"]
    for f in files:  # deterministic bytes
        assert (tmp_path / "c1" / f).read_bytes() == (tmp_path / "c2" / f).read_bytes()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    cf = cand.load_candidates(str(tmp_path / "c1"), verify=True)
    np.testing.assert_array_equal(cf.candidate_ids, cids)
    np.testing.assert_array_equal(cf.candidate_scores, cs)
    np.testing.assert_array_equal(cf.positive_ids, pids)
    np.testing.assert_array_equal(cf.positive_scores, ps)
    assert cf.query_ids == qids and cf.doc_ids == dids
    assert cf.parameters == params
    h = cf.header
    assert h["format"] == cand.CANDIDATES_FORMAT and h["version"] == cand.CANDIDATES_VERSION
    assert h["ids"]["doc_ids"]["sha256"] == cand.ids_sha256(dids)
    assert h["arrays"]["positive_scores"]["shape"] == [4, 2]
    # tampering is detected by verify=True
    np.save(tmp_path / "c1" / "candidate_scores.npy", cs + 1)
    with pytest.raises(InputError, match="sha256"):
        cand.load_candidates(str(tmp_path / "c1"), verify=True)


def test_candidates_header_errors(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    d = tmp_path / "c"
    cand.save_candidates(str(d), cids, cs, pids, ps, qids, dids)
    hp = d / "header.json"
    h = json.loads(hp.read_text())
    h["version"] = cand.CANDIDATES_VERSION + 1
    hp.write_text(json.dumps(h))
    with pytest.raises(InputError, match="newer"):
        cand.load_candidates(str(d))
    h["format"] = "something-else"
    hp.write_text(json.dumps(h))
    with pytest.raises(InputError, match="format"):
        cand.load_candidates(str(d))
    with pytest.raises(InputError, match="not found"):
        cand.load_candidates(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="header.json"):
        cand.load_candidates(str(tmp_path / "empty"))


# ------------------------------------------------------------------------------ negatives
def _epoch(texts=False):
    """3 queries: q1 two positives and 3 negatives, q2 one positive and 2 negatives (short),
    q3 no positive (3 fallback negatives)."""
    qids = ["q1", "q2", "q3"]
    dids = [f"d{j}" for j in range(10)]
    pos = np.array([[4, 7], [5, -1], [-1, -1]], np.int64)
    pos_s = np.array([[1.25, 0.5], [2.0, np.nan], [np.nan, np.nan]], np.float32)
    neg = np.array([[0, 2, 1], [3, 8, -1], [9, 6, 0]], np.int64)
    neg_s = np.array([[3.5, 1.0, 2.0], [0.1, -0.3, np.nan], [0.7, 0.2, 0.1]], np.float32)
    neg_r = np.array([[1, 3, 2], [1, 4, 0], [7, 8, 9]], np.int64)
    e = fneg.EpochNegatives(qids, dids, pos, pos_s, neg, neg_s, neg_r)
    if texts:
        e.query_texts = {q: ("", f"what is {q}?\twith tab") for q in qids}
        e.doc_texts = {d: (f"T{d}" if d != "d3" else "", f"text of {d} ü") for d in dids}
    return e


def _expected(e, training=False):
    out = []
    for i, q in enumerate(e.query_ids):
        pos = [e.doc_ids[r] for r in e.positive_rows[i] if r >= 0]
        negs = [e.doc_ids[r] for r in e.negative_rows[i] if r >= 0]
        if training and not (pos and negs):
            continue  # a training record needs a positive and a negative
        out.append((q, pos, negs))
    return out


def _jsonl(p):
    return [json.loads(x) for x in open(p, encoding="utf-8").read().splitlines()]


def test_tevatron_2x_records_and_corpus_follow_its_schema(tmp_path):
    """Tevatron 2.x (tevatron/retriever/dataset.py, TrainDataset): a training record is
    {query_id, query_text, positive_document_ids, negative_document_ids}; documents come from a
    corpus of {docid, title, text} looked up by docid; it picks positive_document_ids[x % len]
    (so the list must not be empty) and draws negatives from negative_document_ids."""
    import datasets

    e = _epoch(texts=True)
    p = str(tmp_path / "train.jsonl")
    with pytest.warns(UserWarning, match="1 without a positive"):
        stats = fneg.write_negatives(p, e, "tevatron")
    corpus = str(tmp_path / "train.corpus.jsonl")
    assert stats["corpus_path"] == corpus == fneg.tevatron_corpus_path(p)
    assert stats["rows"] == 2 and stats["dropped_no_positive"] == 1
    recs = _jsonl(p)
    docs = _jsonl(corpus)
    for r in recs:
        assert list(r) == ["query_id", "query_text", "positive_document_ids",
                           "negative_document_ids"]
        assert isinstance(r["query_text"], str) and r["query_text"]
        assert r["positive_document_ids"] and r["negative_document_ids"]
        assert all(isinstance(x, str) for x in r["positive_document_ids"]
                   + r["negative_document_ids"])
    for d in docs:
        assert list(d) == ["docid", "title", "text"]
        assert all(isinstance(v, str) for v in d.values())
    want = _expected(e, training=True)
    assert [(r["query_id"], r["positive_document_ids"], r["negative_document_ids"])
            for r in recs] == want
    assert [r["query_text"] for r in recs] == [e.query_texts[q][1] for q, _, _ in want]
    named = {x for _, pos, negs in want for x in pos + negs}
    assert [d["docid"] for d in docs] == sorted(named, key=e.doc_ids.index)  # corpus row order
    # read both back the way Tevatron does: datasets' json loader, docid -> row of the corpus
    train = datasets.load_dataset("json", data_files=p, split="train")
    cor = datasets.load_dataset("json", data_files=corpus, split="train")
    index = {d: i for i, d in enumerate(cor["docid"])}
    for g in train:
        q = g.get("query_text", "") or ""
        assert q == e.query_texts[g["query_id"]][1]
        for epoch in range(3):
            did = g["positive_document_ids"][(7 + epoch) % len(g["positive_document_ids"])]
            assert cor[index[did]]["text"] == e.doc_texts[did][1]
        for did in g["negative_document_ids"]:
            assert (cor[index[did]]["title"], cor[index[did]]["text"]) == e.doc_texts[did]
    # read back by this package too
    assert fneg.detect_format(p) == "tevatron" and fneg.detect_format(corpus) == "tevatron-corpus"
    back = fneg.read_negatives(p)
    assert [(r["query_id"], r["positives"], r["negatives"]) for r in back] == want
    assert [r["query"] for r in back] == [r["query_text"] for r in recs]
    with pytest.raises(InputError, match="corpus file"):
        fneg.read_negatives(corpus)


def test_tevatron_needs_texts_unless_ids_only(tmp_path):
    e = _epoch(texts=False)
    p = str(tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match="query_text.*ids_only=True"):
        fneg.write_negatives(p, e, "tevatron")
    for fmt in ("tevatron-legacy", "sentence-transformers"):
        with pytest.raises(ValueError, match="needs query and document texts"):
            fneg.write_negatives(p, e, fmt)
    assert os.listdir(tmp_path) == []
    with pytest.warns(UserWarning):
        stats = fneg.write_negatives(p, e, "tevatron", ids_only=True)
    assert "corpus_path" not in stats and os.listdir(tmp_path) == ["t.jsonl"]
    recs = _jsonl(p)
    assert all(list(r) == ["query_id", "positive_document_ids", "negative_document_ids"]
               for r in recs)
    assert [(r["query_id"], r["positive_document_ids"], r["negative_document_ids"])
            for r in recs] == _expected(e, training=True)
    with pytest.raises(ValueError, match="tevatron-legacy"):
        fneg.write_negatives(p, _epoch(True), "tevatron-legacy", ids_only=True)
    with pytest.raises(ValueError, match="corpus_path"):
        fneg.write_negatives(p, _epoch(True), "tevatron", corpus_path=p)


def test_tevatron_legacy_round_trip(tmp_path):
    e = _epoch(texts=True)
    p = str(tmp_path / "neg.jsonl")
    with pytest.warns(UserWarning):
        fneg.write_negatives(p, e, "tevatron-legacy")
    assert fneg.detect_format(p) == "tevatron-legacy"
    recs = fneg.read_negatives(p)
    assert [(r["query_id"], r["positives"], r["negatives"]) for r in recs] == \
        _expected(e, training=True)
    for rec in recs:
        assert rec["query"] == e.query_texts[rec["query_id"]][1]
        for psg in rec["positive_passages"] + rec["negative_passages"]:
            assert (psg["title"], psg["text"]) == e.doc_texts[psg["docid"]]
    first = json.loads(open(p, encoding="utf-8").readline())
    assert list(first) == ["query_id", "query", "positive_passages", "negative_passages"]


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
@pytest.mark.parametrize("texts", [False, True])
def test_sentence_transformers_rows_follow_the_one_policy(tmp_path, ext, texts):
    """No null anywhere: rows without a positive are dropped, short rows cycle their own
    negatives (st_fill_negatives, shared with to_sentence_transformers)."""
    e = _epoch(texts)
    p = str(tmp_path / ("neg" + ext))
    with pytest.warns(UserWarning, match="1 without a positive"):
        stats = fneg.write_negatives(p, e, "sentence-transformers", ids_only=not texts)
    assert stats["rows"] == 2 and stats["short"] == 1
    assert fneg.detect_format(p) == "sentence-transformers"

    def tx(d):
        if not texts:
            return d
        t, x = e.doc_texts[d]
        return f"{t} {x}" if t else x

    want = [((e.query_texts[q][1] if texts else q), tx(pos[0]),
             [tx(negs[j % len(negs)]) for j in range(e.n)])
            for q, pos, negs in _expected(e, training=True)]
    if ext == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        assert t.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
        rows = t.to_pylist()
    else:
        rows = _jsonl(p)
    assert all(v is not None for r in rows for v in r.values())
    assert [(r["anchor"], r["positive"], [r[f"negative_{j + 1}"] for j in range(e.n)])
            for r in rows] == want
    assert want[1][2][2] == want[1][2][0]  # q2 had 2 negatives: the first one repeats


def test_sentence_transformers_on_short_drop_and_raise(tmp_path):
    e = _epoch(texts=True)
    p = str(tmp_path / "neg.jsonl")
    with pytest.warns(UserWarning, match="fewer than n=3"):
        stats = fneg.write_negatives(p, e, "sentence-transformers", on_short="drop")
    assert stats["rows"] == 1 and stats["dropped_short"] == 1
    assert [r["anchor"] for r in _jsonl(p)] == [e.query_texts["q1"][1]]
    os.unlink(p)
    with pytest.raises(ValueError, match="on_short='raise'.*'q2'"):
        fneg.write_negatives(p, e, "sentence-transformers", on_short="raise")
    with pytest.raises(ValueError, match="on_short must be"):
        fneg.write_negatives(p, e, "sentence-transformers", on_short="pad")
    e.positive_rows[:] = -1  # nothing left to write: an error, not an empty training file
    with pytest.raises(ValueError, match="would be empty"):
        fneg.write_negatives(p, e, "sentence-transformers")
    assert os.listdir(tmp_path) == []
    assert fneg.st_fill_negatives(["a", "b"], 5) == ["a", "b", "a", "b", "a"]
    assert fneg.st_fill_negatives(["a", "b"], 5, "drop") is None
    assert fneg.st_fill_negatives([], 2) is None
    assert fneg.st_fill_negatives(["a", "b", "c"], 2) == ["a", "b"]


def test_trec_run_round_trip(tmp_path):
    e = _epoch()
    p = str(tmp_path / "neg.trec")
    fneg.write_negatives(p, e, "trec", tag="mytag")
    lines = open(p).read().splitlines()
    assert lines[0] == "q1 Q0 d0 1 3.5 mytag"
    assert all(len(ln.split()) == 6 for ln in lines)
    recs = fneg.read_negatives(p)
    assert fneg.detect_format(p) == "trec"
    for rec, i in zip(recs, range(3), strict=True):
        sel = e.negative_rows[i] >= 0
        order = np.argsort(e.negative_ranks[i][sel], kind="stable")
        assert rec["negatives"] == [e.doc_ids[r] for r in e.negative_rows[i][sel][order]]
        assert rec["negative_ranks"] == e.negative_ranks[i][sel][order].tolist()
        np.testing.assert_array_equal(np.float32(rec["negative_scores"]),
                                      e.negative_scores[i][sel][order])
    with pytest.raises(ValueError, match="tag"):
        fneg.write_negatives(p, e, "trec", tag="two words")


@pytest.mark.parametrize("texts", [False, True])
def test_simxns_round_trip(tmp_path, texts):
    e = _epoch(texts)
    p = str(tmp_path / "neg.tsv")
    fneg.write_negatives(p, e, "simxns")
    assert fneg.detect_format(p) == "simxns"
    recs = fneg.read_negatives(p)
    for i, (rec, (q, pos, negs)) in enumerate(zip(recs, _expected(e), strict=True)):
        assert rec["query_id"] == q and rec["positives"] == pos and rec["negatives"] == negs
        np.testing.assert_array_equal(np.float32(rec["negative_scores"]),
                                      e.negative_scores[i][e.negative_rows[i] >= 0])
        np.testing.assert_array_equal(np.float32(rec["positive_scores"]),
                                      e.positive_scores[i][e.positive_rows[i] >= 0])
        assert rec["query"] == ("what is %s? with tab" % q if texts else "")
    assert open(p).readline() == "q1\t%s\td4 1.25,d7 0.5\td0 3.5,d2 1.0,d1 2.0\n" % (
        "what is q1? with tab" if texts else "")


@pytest.mark.parametrize("fmt,ext", [("tevatron", ".jsonl"), ("tevatron-legacy", ".jsonl"),
                                     ("sentence-transformers", ".parquet"),
                                     ("trec", ".trec"), ("simxns", ".tsv")])
def test_writers_are_deterministic_and_atomic(tmp_path, fmt, ext):
    e = _epoch(texts=fmt != "trec")
    a, b = str(tmp_path / ("a" + ext)), str(tmp_path / ("b" + ext))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fneg.write_negatives(a, e, fmt)
        fneg.write_negatives(b, e, fmt)
    assert open(a, "rb").read() == open(b, "rb").read()
    written = sorted(os.listdir(tmp_path))
    if fmt == "tevatron":
        assert written == ["a.corpus.jsonl", "a.jsonl", "b.corpus.jsonl", "b.jsonl"]
    else:
        assert written == sorted(["a" + ext, "b" + ext])
    # a missing text is found before anything is written: no file, no temp file
    if fmt != "trec":
        del e.doc_texts["d2"]
        del e.query_texts["q2"]
        c = str(tmp_path / ("c" + ext))
        with pytest.raises(ValueError, match=r"neg\.(query|doc)_texts has no text"):
            fneg.write_negatives(c, e, fmt)
        assert sorted(os.listdir(tmp_path)) == written


def test_kill_mid_write_leaves_a_temp_that_is_found_and_removed(tmp_path):
    """A writer killed before its rename leaves `.name.XXXXXXXX.tmp`; remove_stale_temp_files
    finds exactly those (files and directories) and nothing else."""
    target = tmp_path / "neg.jsonl"
    stale = [tmp_path / ".neg.jsonl.ab_c1234.tmp", tmp_path / ".neg.jsonl.zzzzzzzz.tmp"]
    for s in stale:
        s.write_text("half")
    (tmp_path / ".neg.jsonl.dir45678.tmp").mkdir()
    keep = [tmp_path / ".neg.jsonl.short.tmp", tmp_path / ".other.jsonl.abcdefgh.tmp",
            tmp_path / "neg.jsonl.abcdefgh.tmp", tmp_path / ".neg.jsonl.abcdefgh.tmpx"]
    for k in keep:
        k.write_text("keep")
    removed = atomic.remove_stale_temp_files(str(target))
    assert sorted(removed) == sorted([s.name for s in stale] + [".neg.jsonl.dir45678.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted(k.name for k in keep)
    # the writer's own temp names match the pattern
    tmp = atomic.tmp_path(str(target))
    assert atomic.remove_stale_temp_files(str(target)) == [os.path.basename(tmp)]


def test_format_from_extension_and_detect(tmp_path):
    assert fneg.format_from_extension("x.parquet") == "sentence-transformers"
    assert fneg.format_from_extension("x.run") == "trec"
    assert fneg.format_from_extension("x.tsv") == "simxns"
    assert fneg.format_from_extension("x.jsonl") == "tevatron"
    assert fneg.format_from_extension("x.bin") is None
    assert fneg.tevatron_corpus_path("a/x.jsonl") == "a/x.corpus.jsonl"
    assert fneg.tevatron_corpus_path("a/x.txt") == "a/x.txt.corpus.jsonl"
    p = tmp_path / "odd.txt"
    p.write_text("a b c\n")
    with pytest.raises(InputError, match="not a negatives file"):
        fneg.detect_format(str(p))


@pytest.mark.parametrize("name,content", [
    ("bad.jsonl", b'{"query_id": "q1", "positive_document_ids": ["d1"]}\n'),  # no negatives
    ("bad2.jsonl", b'{"query_id": "q1", "query_text": "x", "positive_document_ids": "d1", '
                   b'"negative_document_ids": []}\n'),
    ("bad3.jsonl", b'{"query_id": "q1", "positive_document_ids": [], '
                   b'"negative_document_ids": []}\n{not json\n'),
    ("bad4.jsonl", b'{"anchor": "a"}\n'),
    ("bad5.jsonl", b'{"query_id": "q", "query": "x", "positive_passages": [{"title": "t"}], '
                   b'"negative_passages": []}\n'),
    ("bad6.jsonl", b'[1, 2]\n'),
    ("bad7.jsonl", b'{"query_id": "q\xff"}\n'),
    ("bad.trec", b"q1 Q0 d1 one 0.5 tag\n"),
    ("bad2.trec", b"q1 Q0 d1 1 0.5 tag\nq1 Q0 d2\n"),
    ("bad.tsv", b"q1\tx\td1 0.5\td2 zero\n"),
    ("bad2.tsv", b"q1\tx\td1 0.5\td2 0.1\nq2\tx\n"),
    ("bad.parquet", b"PAR1 this is not parquet"),
    ("bad.txt", b"\xff\xfe\x00"),
])
def test_reading_malformed_negatives_is_an_input_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        fneg.read_negatives(str(p))
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg


# ------------------------------------------------------------------------------ bad input files
def test_text_files_must_be_utf8_and_name_the_line(tmp_path):
    q = _index(["q1", "q2"])
    d = _index(["d1", "d2"])
    bad = b"\xe9t\xe9"  # latin-1
    cases = [
        ("ids.txt", b"q1\n" + bad + b"\n", lambda p: emb.read_ids(p)),
        ("qrels.txt", b"q1 0 d1 1\nq2 0 " + bad + b" 1\n",
         lambda p: ftrec.read_qrels(p, q, d)),
        ("texts.tsv", b"d1\tok\nd2\t" + bad + b"\n",
         lambda p: ftexts.read_texts(p)),
        ("texts.jsonl", b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "' + bad + b'"}\n',
         lambda p: ftexts.read_texts(p)),
        ("cov.jsonl", b'{"_id": "d1", "text": "' + bad + b'"}\n',
         lambda p: ftexts.text_coverage(p, d)),
    ]
    for name, data, fn in cases:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError, match="not UTF-8") as e:
            fn(str(p))
        msg = str(e.value)
        assert str(p) in msg and ("line 2" in msg or "line 1" in msg)
        assert "\n" not in msg
    # a byte-order mark is not part of the first id
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfq1\r\nq2\n")
    assert emb.read_ids(str(p)) == ["q1", "q2"]
    p.write_bytes(b"q1\nq\x002\n")
    with pytest.raises(InputError, match="control"):
        emb.read_ids(str(p))


@pytest.mark.parametrize("line,match", [
    ('{"_id": "d1", "text": null}', "'text' must be a string"),
    ('{"_id": "d1", "text": 5}', "'text' must be a string"),
    ('{"_id": "d1", "text": "x", "title": ["t"]}', "'title' must be a string"),
    ('{"_id": null, "text": "x"}', "'_id' must be a non-empty string"),
    ('{"_id": true, "text": "x"}', "'_id' must be a non-empty string"),
    ('{"_id": "", "text": "x"}', "'_id' must be a non-empty string"),
    ('{"_id": "d1", "text": "\\ud800"}', "surrogate"),
    ('{"_id": "d1"}', "text field"),
    ('"just a string"', "JSON object"),
    ('{"_id": "d1", "text": "x"', "not JSON"),
    ('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}', "second time"),
])
def test_read_texts_jsonl_refuses_what_it_would_guess_at(tmp_path, line, match):
    p = tmp_path / "c.jsonl"
    p.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=match) as e:
        ftexts.read_texts(str(p))
    assert str(e.value).startswith(f"{p}: line ")
    with pytest.raises(InputError, match=match):
        ftexts.text_coverage(str(p), {"d1": 0})


def test_text_coverage_and_tsv_errors(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text("id\ttext\nd1\tone\nd3\tthree\tT3\nx\tnot wanted\n")
    np.testing.assert_array_equal(ftexts.text_coverage(str(p), _index(["d1", "d2", "d3"])),
                                  [True, False, True])
    for text, match in [("d1\tone\td\te\tf\n", "5 field"), ("\tno id\n", "empty"),
                        ("d1\tone\nd1\ttwo\n", "second time")]:
        p.write_text(text)
        with pytest.raises(InputError, match=match):
            ftexts.read_texts(str(p))


def test_qrels_relevance_must_be_finite(tmp_path):
    p = tmp_path / "q.txt"
    for rel in ("nan", "inf", "-inf"):
        p.write_text(f"q1 0 d1 1\nq1 0 d2 {rel}\n")
        with pytest.raises(InputError, match="line 2: relevance .* finite"):
            ftrec.read_qrels(str(p), _index(["q1"]), _index(["d1", "d2"]))


def test_read_embeddings_truncated_and_foreign_npy(tmp_path):
    good = tmp_path / "g.npy"
    np.save(good, np.ones((50, 8), np.float32))
    raw = good.read_bytes()
    cases = {"cut.npy": raw[: len(raw) - 17], "header_only.npy": raw[:60],
             "magic.npy": raw[:6], "bigendian.npy": None}
    for name, data in cases.items():
        p = tmp_path / name
        if data is None:
            np.save(p, np.ones((3, 4), ">f4"))
        else:
            p.write_bytes(data)
        with pytest.raises(InputError) as e:
            emb.read_embeddings(str(p), parameter="corpus")
        assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)
        assert e.value.parameter == "corpus"


# ------------------------------------------------------------------------------ damaged candidates
def _saved(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    d = tmp_path / "c"
    cand.save_candidates(str(d), cids, cs, pids, ps, qids, dids, parameters={"n": 2})
    return d


def _edit_header(d, fn):
    h = json.loads((d / "header.json").read_text())
    fn(h)
    (d / "header.json").write_text(json.dumps(h))


def _damage(d, case):
    """Apply one kind of damage to a saved candidates directory; returns (verify needed?)."""
    if case == "header_cut":
        (d / "header.json").write_bytes((d / "header.json").read_bytes()[:100])
    elif case == "header_not_utf8":
        (d / "header.json").write_bytes(b"\xff" + (d / "header.json").read_bytes())
    elif case == "header_list":
        (d / "header.json").write_text("[]")
    elif case == "header_no_arrays":
        _edit_header(d, lambda h: h.pop("arrays"))
    elif case == "header_k_edited":
        _edit_header(d, lambda h: h.update(k=h["k"] + 1))
    elif case == "header_n_queries_str":
        _edit_header(d, lambda h: h.update(n_queries="4"))
    elif case == "header_shape_edited":
        _edit_header(d, lambda h: h["arrays"]["candidate_ids"].update(shape=[4, 4]))
    elif case == "header_dtype_edited":
        _edit_header(d, lambda h: h["arrays"]["candidate_scores"].update(dtype="<f8"))
    elif case == "header_path_escape":
        _edit_header(d, lambda h: h["arrays"]["candidate_ids"].update(file="../x.npy"))
    elif case == "header_same_file_twice":
        _edit_header(d, lambda h: h["arrays"]["positive_ids"].update(file="candidate_ids.npy"))
    elif case == "header_bad_sha":
        _edit_header(d, lambda h: h["arrays"]["candidate_ids"].update(sha256="zz"))
    elif case == "header_doc_count":
        _edit_header(d, lambda h: h["ids"]["doc_ids"].update(count=3))
    elif case == "array_pickle":
        np.save(d / "candidate_scores.npy", np.array([[None] * 5] * 4, dtype=object),
                allow_pickle=True)
    elif case == "array_truncated":
        p = d / "candidate_ids.npy"
        p.write_bytes(p.read_bytes()[:-8])
    elif case == "array_missing":
        os.unlink(d / "positive_scores.npy")
    elif case == "array_wrong_shape":
        np.save(d / "candidate_ids.npy", np.zeros((4, 4), np.int64))
    elif case == "array_wrong_dtype":
        np.save(d / "candidate_ids.npy", np.zeros((4, 5), np.int32))
    elif case == "ids_out_of_range":
        a = np.load(d / "candidate_ids.npy")
        a[2, 1] = 12  # n_docs = 12
        np.save(d / "candidate_ids.npy", a)
    elif case == "ids_below_minus_one":
        a = np.load(d / "positive_ids.npy")
        a[0, 1] = -2
        np.save(d / "positive_ids.npy", a)
    elif case == "id_list_missing":
        os.unlink(d / "doc_ids.txt")
    elif case == "id_list_short":
        (d / "query_ids.txt").write_text("q0\nq1\nq2\n")
    elif case == "id_list_not_utf8":
        (d / "query_ids.txt").write_bytes(b"q0\nq\xff\nq2\nq3\n")
    elif case == "array_shifted":  # same shape and dtype, other values: only the digest tells
        a = np.load(d / "candidate_scores.npy")
        np.save(d / "candidate_scores.npy", np.roll(a, 1, axis=1))
        return True
    elif case == "id_list_edited":
        (d / "doc_ids.txt").write_text("".join(f"doc-{j}\n" for j in range(11)) + "other\n")
        return True
    else:  # pragma: no cover
        raise AssertionError(case)
    return False


DAMAGE = ["header_cut", "header_not_utf8", "header_list", "header_no_arrays", "header_k_edited",
          "header_n_queries_str", "header_shape_edited", "header_dtype_edited",
          "header_path_escape", "header_same_file_twice", "header_bad_sha", "header_doc_count",
          "array_pickle", "array_truncated", "array_missing", "array_wrong_shape",
          "array_wrong_dtype", "ids_out_of_range", "ids_below_minus_one", "id_list_missing",
          "id_list_short", "id_list_not_utf8", "array_shifted", "id_list_edited"]


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_candidates_directory_is_a_clear_error(tmp_path, case):
    d = _saved(tmp_path)
    cand.load_candidates(str(d), verify=True)  # intact: loads
    needs_verify = _damage(d, case)
    if needs_verify:  # without the digests it still loads (shapes and bounds are right)
        cand.load_candidates(str(d))
    for verify in (True, False) if not needs_verify else (True,):
        with pytest.raises(InputError) as e:
            cand.load_candidates(str(d), verify=verify, parameter="candidates")
        msg = str(e.value)
        assert msg.startswith(str(d)) and "\n" not in msg and " --" not in msg
        assert e.value.parameter == "candidates"


def test_negatives_format_keyword_and_its_deprecated_spelling(tmp_path):
    from simans_fast._validate import ParameterError
    from simans_fast.formats import get_format

    e = _epoch(True)
    a, b = str(tmp_path / "a.trec"), str(tmp_path / "b.trec")
    fneg.write_negatives(a, e, format="trec")
    with pytest.warns(DeprecationWarning, match=r"write_negatives\(\): fmt= is deprecated"):
        fneg.write_negatives(b, e, fmt="trec")
    assert open(a, "rb").read() == open(b, "rb").read()
    with pytest.warns(DeprecationWarning):
        assert fneg.read_negatives(b, fmt="trec") == fneg.read_negatives(a, "trec")
    with pytest.raises(ParameterError) as err:
        fneg.write_negatives(a, e, "csv")
    assert err.value.parameter == "format" and "format must be one of" in str(err.value)
    with pytest.raises(TypeError, match="format="):
        fneg.write_negatives(a, e, format="trec", fmt="simxns")
    # the dispatch goes through the registry: each format's own writer and reader
    for name, fname in (("simxns", "x.tsv"), ("trec", "x.trec"), ("tevatron", "x.jsonl"),
                        ("sentence-transformers", "st.jsonl")):
        p = str(tmp_path / fname)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # q3 has no positive: dropped
            fneg.write_negatives(p, e, name, ids_only=name != "simxns")
        direct = get_format(name).read_epoch(p, name)
        assert fneg.read_negatives(p) == direct and len(direct) >= 2

"""simans_fast.formats: FlagEmbedding JSONL, PyLate distillation files, run files.

Each format is read back by the consumer's own reader where it is installed (``datasets``'
JSON loader, which FlagEmbedding and PyLate use; ``ir_measures`` for run files; PyLate's
``KDProcessing`` when pylate is installed), and otherwise checked field by field against what
that reader accesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simans_fast.formats import FORMATS, FormatError, format_names, get_format
from simans_fast.formats import flagembedding as fe
from simans_fast.formats import pylate as pl
from simans_fast.formats import runfile as rf


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    return str(path)


# ============================================================================ registry
def test_registry_is_lazy_and_complete():
    code = ("import sys, simans_fast.formats as f; "
            "bad = [m for m in ('numpy', 'torch', 'datasets', 'sentence_transformers', "
            "'simans_fast.formats.flagembedding', 'simans_fast.formats.sentence_transformers') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert set(format_names()) == {"flagembedding", "pylate", "runfile", "sentence-transformers",
                                   "tevatron", "tevatron-legacy", "trec", "simxns"}
    assert get_format("flagembedding") is fe
    assert get_format("runfile") is rf
    assert get_format("pylate") is pl
    assert get_format("sentence-transformers").__name__ == FORMATS["sentence-transformers"]
    with pytest.raises(ValueError, match="format must be one of"):
        get_format("tevatronn")
    # every negatives format is registered, with its writer and reader side by side
    from simans_fast.formats.negatives import NEGATIVES_FORMATS

    for name in NEGATIVES_FORMATS:
        mod = get_format(name)
        assert callable(mod.write_epoch) and callable(mod.read_epoch)
        assert name in mod.NEGATIVES_FORMATS


def test_format_error_is_an_input_error(tmp_path):
    from simans_fast._validate import InputError, ParameterError

    assert issubclass(FormatError, InputError) and issubclass(FormatError, ParameterError)
    with pytest.raises(InputError) as ei:  # caught as the package's one input-file error
        fe.read_records(str(tmp_path / "missing.jsonl"), parameter="input_file")
    assert type(ei.value) is FormatError and ei.value.parameter == "input_file"
    assert ei.value.path == str(tmp_path / "missing.jsonl") and ei.value.line is None


# ============================================================================ FlagEmbedding
def _fe_records():
    return [
        {"query": "what is a heap?", "pos": ["a heap is a tree", "heapq docs"],
         "neg": ["a list", "bisect docs"], "pos_scores": [0.9, 1], "neg_scores": [0.1, -0.25],
         "prompt": "Represent this query: ", "type": "normal", "id": 7,
         "meta": {"src": "stdlib", "tags": ["a", "b"]}},
        {"query": "çà et là — unicode ✓", "pos": ["ünïcode text"], "neg": ["plain"],
         "pos_scores": [0.5], "neg_scores": [0.25], "prompt": "", "type": "normal", "id": 8,
         "meta": None},
    ]


def test_flagembedding_round_trip_keeps_every_key(tmp_path):
    recs = _fe_records()
    p = str(tmp_path / "fe.jsonl")
    assert fe.write_records(p, recs) == 2
    back = fe.read_records(p)
    assert back == recs  # 1 == 1.0: scores come back as floats
    assert [list(r) for r in back] == [list(r) for r in recs]  # key order kept
    assert all(isinstance(s, float) for r in back for s in r["pos_scores"] + r["neg_scores"])
    raw = open(p, encoding="utf-8").read()
    assert "ünïcode" in raw  # UTF-8, not \u escapes
    before = open(p, "rb").read()
    fe.write_records(p, back)
    assert open(p, "rb").read() == before  # deterministic bytes


def test_flagembedding_file_reads_in_datasets_as_flagembedding_reads_it(tmp_path):
    """FlagEmbedding's AbsEmbedderTrainDataset: datasets.load_dataset('json', ...), then
    query / pos[i] / neg[j] / pos_scores[i] / neg_scores[j] / prompt / type[0]."""
    datasets = pytest.importorskip("datasets")
    recs = _fe_records()
    p = str(tmp_path / "train.jsonl")
    fe.write_records(p, recs)
    ds = datasets.load_dataset("json", data_files=p, split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 2
    for col in ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type", "id", "meta"):
        assert col in ds.column_names
    assert isinstance(ds["type"][0], str)
    for i, data in enumerate(ds):
        assert isinstance(data["query"], str) and data["query"] == recs[i]["query"]
        assert isinstance(data["pos"], list) and isinstance(data["neg"], list)
        assert len(data["neg"]) > 0  # its trainer divides by len(neg)
        assert isinstance(data["pos_scores"], list) and isinstance(data["neg_scores"], list)
        for j in range(len(data["pos"])):
            assert isinstance(data["pos"][j], str)
            assert isinstance(data["pos_scores"][j], (int, float))
        for j in range(len(data["neg"])):
            assert isinstance(data["neg"][j], str)
            assert isinstance(data["neg_scores"][j], (int, float))
            assert data["neg_scores"][j] == recs[i]["neg_scores"][j]
        # the query instruction it builds from 'prompt'
        assert "{}{}".format(data["prompt"], data["query"]) == recs[i]["prompt"] + recs[i]["query"]
    # its non-distillation path removes the score columns
    assert "pos_scores" not in ds.remove_columns(["pos_scores", "neg_scores"]).column_names


@pytest.mark.parametrize("line, message", [
    ('{"query": "q", "pos": ["p"]', "not valid JSON"),
    ('["q", "p"]', "expected a JSON object"),
    ('{"pos": ["p"]}', "missing key 'query'"),
    ('{"query": "q"}', "missing key 'pos'"),
    ('{"query": "q", "pos": []}', "'pos' is empty"),
    ('{"query": "q", "pos": "p"}', "'pos' must be a list of strings, got str"),
    ('{"query": "q", "pos": ["p", 3]}', r"pos\[1\] must be a string, got int"),
    ('{"query": "q", "pos": ["  "]}', r"pos\[0\] is an empty text"),
    ('{"query": 5, "pos": ["p"]}', "'query' must be a string, got int"),
    ('{"query": "", "pos": ["p"]}', "'query' is an empty text"),
    ('{"query": "q", "pos": ["p"], "neg": "n"}', "'neg' must be a list of strings"),
    ('{"query": "q", "pos": ["p"], "neg": [null]}', r"neg\[0\] must be a string, got null"),
    ('{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}', "'pos_scores' has 2 value"),
    ('{"query": "q", "pos": ["p"], "pos_scores": [true]}', r"pos_scores\[0\] must be a number"),
    ('{"query": "q", "pos": ["p"], "pos_scores": ["1"]}', r"pos_scores\[0\] must be a number"),
    ('{"query": "q", "pos": ["p"], "pos_scores": [NaN]}', "NaN is not valid JSON"),
    ('{"query": "q", "pos": ["p"], "pos_scores": [1e999]}', "scores must be finite"),
    ('{"query": "q", "pos": ["p"], "neg_scores": [1.0]}', "'neg_scores' given without 'neg'"),
    ('{"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": 1}', "'neg_scores' must be a list"),
    ('{"query": "q", "pos": ["p"], "prompt": null}', "'prompt' must be a string, got null"),
    ('{"query": "q", "pos": ["p"], "type": 1}', "'type' must be a string, got int"),
    ('{"query": "q", "query": "r", "pos": ["p"]}', "key 'query' appears twice"),
    ("", "blank line"),
])
def test_flagembedding_strict_reader_names_file_and_line(tmp_path, line, message):
    good = '{"query": "fine", "pos": ["ok"]}'
    p = _write_lines(tmp_path / "bad.jsonl", [good, good, line, good])
    with pytest.raises(FormatError, match=message) as ei:
        fe.read_records(p)
    assert str(ei.value).startswith(f"{p}:3: ")
    assert (ei.value.path, ei.value.line) == (p, 3)
    assert isinstance(ei.value, ValueError)


def test_flagembedding_reader_file_errors(tmp_path):
    with pytest.raises(FormatError, match="input_file .*: file not found"):
        fe.read_records(str(tmp_path / "missing.jsonl"), parameter="input_file")
    with pytest.raises(FormatError, match="is a directory"):
        fe.read_records(str(tmp_path))
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"query": "caf\xe9", "pos": ["p"]}\n')
    with pytest.raises(FormatError, match=r":1: not UTF-8"):
        fe.read_records(str(p))
    p.write_bytes(b'\xef\xbb\xbf{"query": "q", "pos": ["p"]}\r\n')  # BOM and CRLF are fine
    assert fe.read_records(str(p)) == [{"query": "q", "pos": ["p"]}]
    with pytest.raises(FormatError, match="missing key 'neg'"):
        fe.read_records(str(p), require_neg=True)


def test_replace_negatives_never_leaves_stale_scores():
    rec = _fe_records()[0]
    new = fe.replace_negatives(rec, ["x", "y", "z"])
    assert new["neg"] == ["x", "y", "z"]
    assert "neg_scores" not in new  # old scores described other texts
    assert new["pos_scores"] == rec["pos_scores"]  # still describe the positives
    assert list(new) == [k for k in rec if k != "neg_scores"]
    assert {k: new[k] for k in ("query", "pos", "prompt", "type", "id", "meta")} == \
        {k: rec[k] for k in ("query", "pos", "prompt", "type", "id", "meta")}
    new = fe.replace_negatives(rec, ["x"], neg_scores=[0.5], pos_scores=[0.7, 0.6])
    assert list(new) == list(rec)
    assert new["neg_scores"] == [0.5] and new["pos_scores"] == [0.7, 0.6]
    # a record without neg: neg goes right after pos, new scores last
    new = fe.replace_negatives({"query": "q", "pos": ["p"], "k": 1}, ["n"], neg_scores=[0.1])
    assert list(new) == ["query", "pos", "neg", "k", "neg_scores"]
    assert rec == _fe_records()[0]  # the input is not modified
    fe.check_record(new)


def test_flagembedding_writer_refuses_and_writes_nothing(tmp_path):
    p = str(tmp_path / "out.jsonl")
    with open(p, "w") as f:
        f.write("previous\n")
    recs = _fe_records()
    mixed = [recs[0], {k: v for k, v in recs[1].items() if k != "neg_scores"}]
    with pytest.raises(FormatError, match=r"records\[1\]: 'neg_scores' is missing here but "
                                          r"present in records\[0\]"):
        fe.write_records(p, mixed)
    with pytest.raises(FormatError, match=r"records\[0\]: missing key 'neg'"):
        fe.write_records(p, [{"query": "q", "pos": ["p"]}])
    with pytest.raises(FormatError, match=r"records\[0\]: 'neg' is empty"):
        fe.write_records(p, [{"query": "q", "pos": ["p"], "neg": []}])
    with pytest.raises(FormatError, match="cannot be written as JSON"):
        fe.write_records(p, [{"query": "q", "pos": ["p"], "neg": ["n"], "x": {1, 2}}])
    with pytest.raises(FormatError, match="scores must be finite"):
        fe.write_records(p, [{"query": "q", "pos": ["p"], "neg": ["n"],
                              "neg_scores": [float("nan")]}])
    assert open(p).read() == "previous\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]  # no temporary file left
    # without require_neg a record without negatives is fine (hn_mine's input side)
    assert fe.write_records(p, [{"query": "q", "pos": ["p"]}], require_neg=False) == 1
    # numpy score arrays are written as floats
    fe.write_records(p, [{"query": "q", "pos": ["p"], "neg": ["n"],
                          "neg_scores": np.array([0.25], np.float32)}])
    assert fe.read_records(p)[0]["neg_scores"] == [0.25]


def test_candidate_pool_reader(tmp_path):
    p = _write_lines(tmp_path / "pool.jsonl", ['{"text": "a"}', '{"text": "b", "id": 2}',
                                               '{"text": "a"}'])
    assert fe.read_candidate_pool(p) == ["a", "b", "a"]
    p = _write_lines(tmp_path / "bad.jsonl", ['{"text": "a"}', '{"txt": "b"}'])
    with pytest.raises(FormatError, match=r"bad.jsonl:2: missing key 'text'"):
        fe.read_candidate_pool(p)
    p = _write_lines(tmp_path / "bad2.jsonl", ['{"text": ["a"]}'])
    with pytest.raises(FormatError, match=r":1: 'text' must be a string, got list"):
        fe.read_candidate_pool(p)


# ============================================================================ PyLate
def _pl_arrays():
    query_ids = ["q1", "q2", "q3"]
    doc_ids = ["d0", "d1", "d2", "d3", "d4"]
    ids = np.array([[0, 3, 1], [2, 4, 0], [1, 2, 3]])
    scores = np.array([[9.5, 3.25, 1.0], [8.0, 2.5, -1.5], [7.0, 6.0, 5.0]], np.float32)
    qt = {q: f"query text {q}" for q in query_ids}
    dt = {d: f"document text {d}" for d in doc_ids}
    return query_ids, doc_ids, ids, scores, qt, dt


def test_pylate_distillation_round_trip(tmp_path):
    query_ids, doc_ids, ids, scores, qt, dt = _pl_arrays()
    paths = [str(tmp_path / f) for f in ("train.jsonl", "queries.jsonl", "documents.jsonl")]
    info = pl.write_distillation(*paths, query_ids=query_ids, doc_ids=doc_ids,
                                 candidate_ids=ids, candidate_scores=scores, query_texts=qt,
                                 doc_texts=dt)
    assert info == {"queries": 3, "documents": 5, "dropped": 0}
    train = pl.read_train(paths[0])
    queries = pl.read_queries(paths[1])
    docs = pl.read_documents(paths[2])
    assert [r["query_id"] for r in train] == query_ids
    for r, rec in enumerate(train):
        assert rec["document_ids"] == [doc_ids[j] for j in ids[r]]
        assert rec["scores"] == [float(x) for x in scores[r]]
    assert queries == qt and docs == dt
    pl.check_references(train, queries, docs)
    # integer ids work the same way
    ip = [str(tmp_path / f"i{f}") for f in ("t", "q", "d")]
    pl.write_distillation(*ip, query_ids=[1, 2, 3], doc_ids=[10, 11, 12, 13, 14],
                          candidate_ids=ids, candidate_scores=scores,
                          query_texts={1: "a", 2: "b", 3: "c"},
                          doc_texts={10 + j: f"d{j}" for j in range(5)})
    assert pl.read_train(ip[0])[0] == {"query_id": 1, "document_ids": [10, 13, 11],
                                       "scores": [9.5, 3.25, 1.0]}


def _kd_lookup(train, queries, documents, n_ways=32):
    """What PyLate's KDProcessing.map does with the three datasets: look ids up by equality in
    the queries' and documents' id columns, truncate to n_ways, pair scores and texts."""
    q_index = {qid: i for i, qid in enumerate(queries["query_id"])}
    d_index = {did: i for i, did in enumerate(documents["document_id"])}
    out = []
    for ex in train:
        docs = [documents[d_index[d]]["text"] for d in ex["document_ids"][:n_ways]]
        out.append((queries[q_index[ex["query_id"]]]["text"], docs, ex["scores"][:n_ways]))
    return out


def test_pylate_files_read_by_datasets_as_pylate_does(tmp_path):
    datasets = pytest.importorskip("datasets")
    query_ids, doc_ids, ids, scores, qt, dt = _pl_arrays()
    paths = [str(tmp_path / f) for f in ("train.jsonl", "queries.jsonl", "documents.jsonl")]
    pl.write_distillation(*paths, query_ids=query_ids, doc_ids=doc_ids, candidate_ids=ids,
                          candidate_scores=scores, query_texts=qt, doc_texts=dt)
    cache = str(tmp_path / "cache")
    train, queries, documents = (datasets.load_dataset("json", data_files=p, split="train",
                                                       cache_dir=cache) for p in paths)
    assert set(train.column_names) == {"query_id", "document_ids", "scores"}
    assert set(queries.column_names) == {"query_id", "text"}
    assert set(documents.column_names) == {"document_id", "text"}
    # lists, not the stringified lists PyLate would have to literal_eval
    assert isinstance(train[0]["document_ids"], list) and isinstance(train[0]["scores"], list)
    got = _kd_lookup(train, queries, documents)
    for r, (q, docs, sc) in enumerate(got):
        assert q == qt[query_ids[r]]
        assert docs == [dt[doc_ids[j]] for j in ids[r]]
        assert sc == pytest.approx(scores[r].tolist())
    # its collator stacks a batch's scores: equal lengths
    assert len({len(x["scores"]) for x in train}) == 1


def _source_module(package, env, modules, required=False):
    """Import ``modules`` of ``package`` without running its top-level ``__init__`` (which pulls
    in optional dependencies): from the installed package, or from the source tree named by the
    environment variable ``env`` (an unpacked wheel). Skips when neither is there."""
    import importlib
    import importlib.util
    import types

    src = os.environ.get(env)
    if src:
        root = os.path.join(src, package)
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            if required:  # a declared test dependency: its absence is a broken install
                pytest.fail(f"{package} is installed by the README's test command but is not installed")
            pytest.skip(f"{package} is not installed (set {env} to an unpacked wheel to run)")
        root = list(spec.submodule_search_locations)[0]
    if not os.path.isdir(root):
        pytest.skip(f"{root} not found")
    saved = {k: v for k, v in sys.modules.items() if k == package or k.startswith(package + ".")}
    for k in saved:
        del sys.modules[k]
    try:
        out = []
        for mod in modules:
            parts = mod.split(".")
            for i in range(1, len(parts)):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    m = types.ModuleType(name)
                    m.__path__ = [os.path.join(os.path.dirname(root), *parts[:i])]
                    sys.modules[name] = m
            out.append(importlib.import_module(mod))
        return out
    finally:
        for k in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_pylate_kdprocessing_reads_our_files(tmp_path):
    """PyLate's own KDProcessing (map and transform) on our three files."""
    datasets = pytest.importorskip("datasets")
    # installed with --no-deps by the README's test command (PyLate pins sentence-transformers 5.3)
    (proc,) = _source_module("pylate", "SIMANS_FAST_PYLATE_SRC", ["pylate.utils.processing"],
                             required=True)
    query_ids, doc_ids, ids, scores, qt, dt = _pl_arrays()
    paths = [str(tmp_path / f) for f in ("train.jsonl", "queries.jsonl", "documents.jsonl")]
    pl.write_distillation(*paths, query_ids=query_ids, doc_ids=doc_ids, candidate_ids=ids,
                          candidate_scores=scores, query_texts=qt, doc_texts=dt)
    train, queries, documents = (datasets.load_dataset("json", data_files=p, split="train",
                                                       cache_dir=str(tmp_path / "c"))
                                 for p in paths)
    kd = proc.KDProcessing(queries=queries, documents=documents, n_ways=32)
    for r in range(len(train)):
        ex = kd.map(train[r])
        assert ex["query"] == qt[query_ids[r]]
        assert ex["documents"] == [dt[doc_ids[j]] for j in ids[r]]
        assert ex["scores"] == scores[r].tolist()
    train.set_transform(kd.transform)
    for r, ex in enumerate(train):
        assert ex["documents"] == [dt[doc_ids[j]] for j in ids[r]]


def test_flagembedding_train_dataset_reads_our_file(tmp_path):
    """FlagEmbedding's own AbsEmbedderTrainDataset, with and without knowledge distillation."""
    pytest.importorskip("datasets")
    pytest.importorskip("transformers")
    ds_mod, args_mod = _source_module(
        "FlagEmbedding", "SIMANS_FAST_FLAGEMBEDDING_SRC",
        ["FlagEmbedding.abc.finetune.embedder.AbsDataset",
         "FlagEmbedding.abc.finetune.embedder.AbsArguments"], required=True)
    from _models import minilm_path
    from transformers import AutoTokenizer

    recs = [dict(r) for r in _fe_records()]
    recs[0]["neg"] = recs[0]["neg"] + ["third"]
    recs[0]["neg_scores"] = recs[0]["neg_scores"] + [0.3]
    p = str(tmp_path / "train.jsonl")
    fe.write_records(p, recs)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    for kd in (True, False):
        args = args_mod.AbsEmbedderDataArguments(
            train_data=[p], train_group_size=4, knowledge_distillation=kd,
            query_instruction_for_retrieval="default: ", query_instruction_format="{}{}",
            cache_path=str(tmp_path / "cache"))
        ds = ds_mod.AbsEmbedderTrainDataset(args, tok)
        assert len(ds) == len(recs)
        for i in range(len(ds)):
            q, passages, teacher = ds[i]
            assert q == recs[i]["prompt"] + recs[i]["query"]  # per-record prompt
            assert passages[0] in recs[i]["pos"]
            assert all(x in recs[i]["neg"] for x in passages[1:]) and len(passages) == 4
            if kd:
                assert len(teacher) == 4 and teacher[0] in recs[i]["pos_scores"]
            else:
                assert teacher is None


def test_pylate_errors(tmp_path):
    query_ids, doc_ids, ids, scores, qt, dt = _pl_arrays()
    paths = [str(tmp_path / f) for f in ("train.jsonl", "queries.jsonl", "documents.jsonl")]
    kw = dict(query_ids=query_ids, doc_ids=doc_ids, candidate_scores=scores, query_texts=qt,
              doc_texts=dt)
    short = ids.copy()
    short[1, 2] = -1
    with pytest.raises(ValueError, match=r"row 1 \(query 'q2'\) has 2 documents instead of 3"):
        pl.write_distillation(*paths, candidate_ids=short, **kw)
    assert not any(os.path.exists(p) for p in paths)  # nothing half-written
    info = pl.write_distillation(*paths, candidate_ids=short, drop_short=True, **kw)
    assert info["dropped"] == 1 and [r["query_id"] for r in pl.read_train(paths[0])] == ["q1", "q3"]
    with pytest.raises(ValueError, match="doc_texts has no text for document id 'd4'"):
        pl.write_distillation(*paths, candidate_ids=ids,
                              **{**kw, "doc_texts": {k: v for k, v in dt.items() if k != "d4"}})
    dup = ids.copy()
    dup[0, 1] = 0
    with pytest.raises(FormatError, match=r"document_ids\[1\] = 'd0' appears twice"):
        pl.write_distillation(*paths, candidate_ids=dup, **kw)
    with pytest.raises(FormatError, match="is a string but earlier query_id values are integers"):
        pl.write_train(paths[0], [{"query_id": 1, "document_ids": ["a"], "scores": [1.0]},
                                  {"query_id": "2", "document_ids": ["a"], "scores": [1.0]}])
    with pytest.raises(FormatError, match="2 documents but records\\[0\\] has 1"):
        pl.write_train(paths[0], [{"query_id": 1, "document_ids": ["a"], "scores": [1.0]},
                                  {"query_id": 2, "document_ids": ["a", "b"], "scores": [1, 2]}])
    bad = [
        ('{"query_id": "q", "document_ids": ["a"]}', "missing key 'scores'"),
        ('{"query_id": "q", "document_ids": ["a"], "scores": [1, 2]}', "'scores' has 2 value"),
        ('{"query_id": true, "document_ids": ["a"], "scores": [1]}',
         "'query_id' must be a string or an integer, got bool"),
        ('{"query_id": "q", "document_ids": [], "scores": []}', "'document_ids' is empty"),
        ('{"query_id": "q", "document_ids": ["a"], "scores": [null]}',
         r"scores\[0\] must be a number"),
    ]
    for line, msg in bad:
        p = _write_lines(tmp_path / "t.jsonl", ['{"query_id": "ok", "document_ids": ["a"], '
                                                '"scores": [1]}', line])
        with pytest.raises(FormatError, match=msg) as ei:
            pl.read_train(p)
        assert str(ei.value).startswith(f"{p}:2: ")
        assert (ei.value.path, ei.value.line) == (p, 2)
    p = _write_lines(tmp_path / "q.jsonl", ['{"query_id": "a", "text": "x"}',
                                            '{"query_id": "a", "text": "y"}'])
    with pytest.raises(FormatError, match=r"q.jsonl:2: query_id 'a' appears a second time"):
        pl.read_queries(p)
    p = _write_lines(tmp_path / "d.jsonl", ['{"document_id": "a", "txt": "x"}'])
    with pytest.raises(FormatError, match=r"d.jsonl:1: missing key 'text'"):
        pl.read_documents(p)
    with pytest.raises(FormatError, match="has no text in the documents"):
        pl.check_references([{"query_id": "q", "document_ids": ["zz"], "scores": [1.0]}],
                            {"q": "t"}, {"a": "x"})


# ============================================================================ run files
def _naive_read(lines, doc_ids, query_ids=None, k=None, fmt="trec"):
    """Reference reader: dicts and sorted(); rows by score desc, then rank, then line."""
    per_q = {}
    order = list(query_ids) if query_ids is not None else []
    for no, line in enumerate(lines, 1):
        if fmt == "trec":
            q, _, d, rank, s, _ = line.split()
            rank = int(rank)
        else:
            q, d, s = line.split("\t")
            rank = 0
        if q not in per_q:
            per_q[q] = []
            if query_ids is None:
                order.append(q)
        per_q[q].append((-float(s), rank, no, d))
    width = k if k is not None else max((len(v) for v in per_q.values()), default=0)
    ids = np.full((len(order), width), -1, np.int64)
    scores = np.full((len(order), width), -np.inf, np.float32)
    pos = {d: j for j, d in enumerate(doc_ids)}
    for r, q in enumerate(order):
        for c, (ns, _, _, d) in enumerate(sorted(per_q.get(q, []))[:width]):
            ids[r, c] = pos[d]
            scores[r, c] = np.float32(-ns)
    return ids, scores, order


def _random_run(rng, fmt, n_q=12, n_d=40, max_depth=9):
    doc_ids = [f"D{j}" for j in range(n_d)]
    lines = []
    for q in range(n_q):
        depth = int(rng.integers(0, max_depth + 1))
        docs = rng.choice(n_d, depth, replace=False)
        # coarse scores so ties occur; ranks in a shuffled order so ties break by rank
        sc = rng.integers(-3, 4, depth) / 2
        ranks = rng.permutation(depth) + 1
        for d, s, r in zip(docs, sc, ranks):
            if fmt == "trec":
                lines.append(f"Q{q} Q0 D{d} {r} {s} run{q % 2}")
            else:
                lines.append(f"Q{q}\tD{d}\t{s}")
    order = rng.permutation(len(lines))
    return [lines[i] for i in order], doc_ids


@pytest.mark.parametrize("fmt", ["trec", "tsv"])
@pytest.mark.parametrize("trial", range(4))
def test_read_run_matches_naive_parser(tmp_path, fmt, trial):
    rng = np.random.default_rng(100 * trial + (fmt == "tsv"))
    lines, doc_ids = _random_run(rng, fmt)
    p = _write_lines(tmp_path / "run.txt", lines)
    run = rf.read_run(p, doc_ids)
    ids, scores, order = _naive_read(lines, doc_ids, fmt=fmt)
    assert run.format == fmt
    assert run.query_ids == order
    np.testing.assert_array_equal(run.ids, ids)
    np.testing.assert_array_equal(run.scores, scores)
    assert run.ids.dtype == np.int64 and run.scores.dtype == np.float32
    # given query order (with a query absent from the run) and k
    qids = [f"Q{q}" for q in reversed(range(14))]  # Q12, Q13 have no line
    for k in (1, 4, 20):
        run = rf.read_run(p, doc_ids, query_ids=qids, k=k, format=fmt)
        ids, scores, _ = _naive_read(lines, doc_ids, qids, k, fmt)
        np.testing.assert_array_equal(run.ids, ids)
        np.testing.assert_array_equal(run.scores, scores)
        assert run.ids.shape == (14, k)
        assert np.all(run.ids[:2] == -1)  # Q13, Q12
    counts = {q: sum(1 for ln in lines if ln.split()[0] == q) for q in qids}
    assert run.counts.tolist() == [counts[q] for q in qids]


def test_read_run_ties_break_by_rank_then_line(tmp_path):
    p = _write_lines(tmp_path / "r.trec", ["q Q0 a 3 1.0 t", "q Q0 b 1 1.0 t", "q Q0 c 2 2.0 t",
                                           "q Q0 d 2 1.0 t"])
    run = rf.read_run(p, ["a", "b", "c", "d"])
    assert run.ids.tolist() == [[2, 1, 3, 0]]
    assert run.scores.tolist() == [[2.0, 1.0, 1.0, 1.0]]


@pytest.mark.parametrize("lines, message, line_no", [
    (["q Q0 a 1 1.0 t", "q Q0 b 2 x t"], "score 'x' is not a number", 2),
    (["q Q0 a 1 1.0 t", "q Q0 b two 1.0 t"], "rank 'two' is not an integer", 2),
    (["q Q0 a 1 1.0 t", "q Q0 b 2 nan t"], "score 'nan' is not finite", 2),
    (["q Q0 a 1 1.0 t", "q Q0 b 2 -inf t"], "score '-inf' is not finite", 2),
    (["q Q0 a 1 1.0 t", "q b 1.0"], "expected 6 fields", 2),
    (["q\ta\t1.0", "q Q0 b 1 1.0 t"], "expected 3 tab-separated fields", 2),
    (["q a 1.0"], "must be separated by tabs", 1),
    (["q Q0 a 1 1.0"], "got 5 field", 1),
    (["q Q0 a 1 1.0 t", "", "q Q0 b 2 1.0 t"], "blank line", 2),
    (["q Q0 a 1 1.0 t", "q Q0 zz 2 1.0 t"], "document id 'zz' is not in doc_ids", 2),
    (["q Q0 a 1 1.0 t", "q Q0 b 2 0.5 t", "q Q0 a 3 0.1 t"],
     "query 'q' and document 'a' repeat line 1", 3),
])
def test_read_run_errors_name_file_and_line(tmp_path, lines, message, line_no):
    p = _write_lines(tmp_path / "bad.run", lines)
    with pytest.raises(FormatError, match=message) as ei:
        rf.read_run(p, ["a", "b", "c"])
    assert str(ei.value).startswith(f"{p}:{line_no}: ")
    assert ei.value.line == line_no


def test_read_run_unknown_ids_skip_and_query_list(tmp_path):
    p = _write_lines(tmp_path / "r.tsv", ["q1\ta\t0.5", "q9\ta\t0.4", "q1\tzz\t0.3",
                                          "q2\tb\t0.2"])
    with pytest.raises(FormatError, match=r"r.tsv:2: query id 'q9' is not in query_ids") as ei:
        rf.read_run(p, ["a", "b"], query_ids=["q1", "q2"])
    assert ei.value.unknown == ("query", "q9") and ei.value.line == 2
    with pytest.raises(FormatError, match=r"r.tsv:3: document id 'zz' is not in doc_ids") as ei:
        rf.read_run(p, ["a", "b"])
    assert ei.value.unknown == ("document", "zz")
    run = rf.read_run(p, ["a", "b"], query_ids=["q2", "q1"], skip_unknown=True)
    assert run.skipped == 2
    assert run.ids.tolist() == [[1], [0]] and run.query_ids == ["q2", "q1"]
    with pytest.raises(ValueError, match=r"doc_ids\[2\] = 'a' repeats doc_ids\[0\]"):
        rf.read_run(p, ["a", "b", "a"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rf.read_run(p, ["a", "b"], k=0)
    with pytest.raises(ValueError, match="format must be"):
        rf.read_run(p, ["a", "b"], format="csv")
    with pytest.raises(FormatError, match="file not found"):
        rf.read_run(str(tmp_path / "nope"), ["a"])


def test_read_run_refuses_msmarco_ranks_in_auto_mode(tmp_path):
    p = _write_lines(tmp_path / "msmarco.tsv", ["1\ta\t1", "1\tb\t2", "2\tb\t1", "1\tc\t3"])
    with pytest.raises(FormatError, match="looks like MS MARCO's qid<TAB>pid<TAB>rank"):
        rf.read_run(p, ["a", "b", "c"])
    run = rf.read_run(p, ["a", "b", "c"], format="tsv")  # the caller says: these are scores
    assert run.ids.tolist() == [[2, 1, 0], [1, -1, -1]]
    # integer scores that do not count 1, 2, 3 are scores
    p = _write_lines(tmp_path / "ints.tsv", ["1\ta\t7", "1\tb\t9"])
    assert rf.read_run(p, ["a", "b"]).ids.tolist() == [[1, 0]]


def test_empty_run(tmp_path):
    p = _write_lines(tmp_path / "empty.run", [])
    run = rf.read_run(p, ["a"])
    assert run.ids.shape == (0, 0) and run.format is None
    run = rf.read_run(p, ["a"], query_ids=["q"], k=3)
    assert run.ids.tolist() == [[-1, -1, -1]] and np.all(np.isneginf(run.scores))


@pytest.mark.parametrize("fmt", ["trec", "tsv"])
def test_write_run_round_trip_and_ir_measures(tmp_path, fmt):
    rng = np.random.default_rng(5)
    n_q, n_d, k = 7, 30, 6
    doc_ids = [f"doc-{j}" for j in range(n_d)]
    query_ids = [f"query-{i}" for i in range(n_q)]
    ids = np.stack([rng.choice(n_d, k, replace=False) for _ in range(n_q)])
    scores = rng.normal(size=(n_q, k)).astype(np.float32)
    ids[2, 4:] = -1
    ids[5, :] = -1
    p = str(tmp_path / f"run.{fmt}")
    n = rf.write_run(p, query_ids, doc_ids, ids, scores, format=fmt, tag="mytag")
    assert n == int((ids >= 0).sum())
    run = rf.read_run(p, doc_ids, query_ids=query_ids, k=k)
    assert run.format == fmt
    for r in range(n_q):
        v = ids[r] >= 0
        o = np.argsort(-scores[r][v].astype(np.float64), kind="stable")
        want_ids = ids[r][v][o]
        assert run.ids[r, :v.sum()].tolist() == want_ids.tolist()
        np.testing.assert_array_equal(run.scores[r, :v.sum()], scores[r][v][o])  # exact float32
        assert np.all(run.ids[r, v.sum():] == -1)
    if fmt == "trec":
        ir_measures = pytest.importorskip("ir_measures")
        got = {(d.query_id, d.doc_id): d.score for d in ir_measures.read_trec_run(p)}
        want = {(query_ids[r], doc_ids[j]): float(scores[r, c]) for r in range(n_q)
                for c, j in enumerate(ids[r]) if j >= 0}
        assert got.keys() == want.keys()
        for key, s in want.items():
            assert np.float32(got[key]) == np.float32(s)
        for line in open(p):
            assert line.split()[1] == "Q0" and line.split()[5] == "mytag"


def test_write_run_refuses(tmp_path):
    p = str(tmp_path / "r.trec")
    ids = np.array([[0, 1]])
    sc = np.array([[1.0, 0.5]], np.float32)
    with pytest.raises(ValueError, match="holds white space"):
        rf.write_run(p, ["q 1"], ["a", "b"], ids, sc)
    rf.write_run(str(tmp_path / "r.tsv"), ["q 1"], ["a", "b"], ids, sc, format="tsv")  # fine
    with pytest.raises(ValueError, match="tab or line break"):
        rf.write_run(str(tmp_path / "r2.tsv"), ["q\t1"], ["a", "b"], ids, sc, format="tsv")
    with pytest.raises(ValueError, match="repeats a document"):
        rf.write_run(p, ["q"], ["a", "b"], np.array([[1, 1]]), sc)
    with pytest.raises(ValueError, match=r"scores\[0, 1\] is nan"):
        rf.write_run(p, ["q"], ["a", "b"], ids, np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="positions 0..1 in doc_ids"):
        rf.write_run(p, ["q"], ["a", "b"], np.array([[0, 2]]), sc)
    with pytest.raises(ValueError, match="tag"):
        rf.write_run(p, ["q"], ["a", "b"], ids, sc, tag="my tag")
    assert not os.path.exists(p)
    assert sorted(os.listdir(tmp_path)) == ["r.tsv"]


def test_read_run_streams_a_larger_file(tmp_path):
    """50,000 lines, read line by line, equal to the naive reader."""
    rng = np.random.default_rng(11)
    n_q, depth, n_d = 500, 100, 5000
    doc_ids = [str(j) for j in range(n_d)]
    p = str(tmp_path / "big.trec")
    lines = []
    for q in range(n_q):
        docs = rng.choice(n_d, depth, replace=False)
        sc = np.round(rng.normal(size=depth), 3)
        lines.extend(f"{q} Q0 {d} {r + 1} {s} bm25" for r, (d, s) in enumerate(zip(docs, sc)))
    _write_lines(p, lines)
    run = rf.read_run(p, doc_ids, k=50)
    ids, scores, order = _naive_read(lines, doc_ids, k=50)
    np.testing.assert_array_equal(run.ids, ids)
    np.testing.assert_array_equal(run.scores, scores)
    assert run.counts.tolist() == [depth] * n_q


def test_run_candidates_feed_the_samplers_and_rescoring(tmp_path):
    """A BM25-style run read into candidates: sampled from directly, or re-scored by a model's
    embeddings (sf.rescore) first."""
    import simans_fast as sf

    rng = np.random.default_rng(2)
    n_q, n_d, dim = 20, 60, 8
    doc_ids = [f"d{j}" for j in range(n_d)]
    lines = []
    for q in range(n_q):
        depth = 12 if q % 5 else 4  # some queries shorter than n
        for r, d in enumerate(rng.choice(n_d, depth, replace=False)):
            lines.append(f"q{q} Q0 d{d} {r + 1} {20.0 - r} bm25")
    p = _write_lines(tmp_path / "bm25.trec", lines)
    run = rf.read_run(p, doc_ids)
    top = sf.select_negatives(run.ids, run.scores, np.full(n_q, np.nan), 6, strategy="top")
    for r in range(n_q):
        valid = run.ids[r][run.ids[r] >= 0]
        assert top[r][top[r] >= 0].tolist() == valid[:6].tolist()
    Q = rng.normal(size=(n_q, dim)).astype(np.float32)
    C = rng.normal(size=(n_d, dim)).astype(np.float32)
    s = sf.rescore(Q, C, run.ids)
    valid = run.ids >= 0
    want = np.einsum("qd,qkd->qk", Q.astype(np.float64), C[np.where(valid, run.ids, 0)])
    np.testing.assert_allclose(s[valid], want[valid], rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(s[~valid]))


# ------------------------------------------------------------------ texts to encode, finiteness
def test_read_text_records_keeps_file_order_and_joins_titles(tmp_path):
    from simans_fast.formats.texts import read_text_records

    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "d2", "title": "T", "text": "two"}\n\n{"_id": 7, "text": "seven"}\n'
                 '{"_id": "d0", "text": "zero"}\n', encoding="utf-8")
    assert read_text_records(str(p), what="document") == (["d2", "7", "d0"],
                                                          ["T two", "seven", "zero"])
    t = tmp_path / "q.tsv"
    t.write_text("id\ttext\nq1\tone\nq0\tnil\n", encoding="utf-8")
    assert read_text_records(t, what="query") == (["q1", "q0"], ["one", "nil"])


@pytest.mark.parametrize("body, line, words", [
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', 2, "first on line 1"),
    ('{"_id": "a", "text": "x"}\n{"_id": "b c", "text": "y"}\n', 2, "single tokens"),
    ('{"_id": "a", "title": " ", "text": " "}\n', 1, "empty text"),
    ("", None, "holds no document texts"),
])
def test_read_text_records_refuses_bad_records(tmp_path, body, line, words):
    from simans_fast._validate import InputError
    from simans_fast.formats.texts import read_text_records

    p = tmp_path / "c.jsonl"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_text_records(str(p), what="document", parameter="doc_texts")
    assert str(e.value).startswith(f"{p}: ") and words in str(e.value)
    assert e.value.parameter == "doc_texts" and e.value.line == line


def test_check_finite_names_the_first_bad_row_of_a_memory_map(tmp_path):
    from simans_fast._validate import InputError
    from simans_fast.formats.embeddings import check_finite, read_embeddings

    x = np.ones((50, 4), np.float32)
    p = tmp_path / "e.npy"
    np.save(p, x)
    check_finite(read_embeddings(str(p)), path=str(p))            # all finite: no error
    x[37, 1], x[41, 0] = np.inf, np.nan
    np.save(p, x)
    with pytest.raises(InputError, match=r"e\.npy: row 37 holds NaN or infinite") as e:
        check_finite(read_embeddings(str(p)), path=str(p), parameter="corpus", block=16)
    assert e.value.parameter == "corpus" and e.value.path == str(p)

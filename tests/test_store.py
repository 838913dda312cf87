"""simans_fast.store: the one atomic writer, the one header/version policy of saved array
directories (candidates and sampler), and the deprecated simans_fast.io shim."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simans_fast._validate import InputError
from simans_fast.sampler import SamplerFileError, SimANSSampler
from simans_fast.store import arrays as sarrays
from simans_fast.store import atomic
from simans_fast.store import candidates as cand


def _candidates(n_q=5, k=4, m=2, n_docs=9, seed=0):
    rng = np.random.default_rng(seed)
    cids = np.stack([rng.permutation(n_docs)[:k] for _ in range(n_q)]).astype(np.int64)
    cs = -np.sort(-rng.standard_normal((n_q, k)), axis=1).astype(np.float32)
    pids = np.full((n_q, m), -1, np.int64)
    ps = np.full((n_q, m), np.nan, np.float32)
    pids[:, 0] = n_docs - 1
    ps[:, 0] = 2.0
    return cids, cs, pids, ps, [f"q{i}" for i in range(n_q)], [f"d{j}" for j in range(n_docs)]


def _sampler(n_q=6, k=5, seed=1):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(30)[:k] for _ in range(n_q)]).astype(np.int64)
    s = -np.sort(-rng.standard_normal((n_q, k)), axis=1).astype(np.float32)
    return SimANSSampler(ids, s, rng.standard_normal((n_q, 1)), n=2, seed=3)


class Boom(Exception):
    pass


# ------------------------------------------------------------------------------ atomic writer
@pytest.mark.parametrize("mode", ["w", "wb"])
def test_atomic_file_leaves_no_temp_and_keeps_the_old_file_on_an_exception(tmp_path, mode):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(Boom):
        with atomic.AtomicFile(target, mode) as f:
            f.write("half" if mode == "w" else b"half")
            assert len(os.listdir(tmp_path)) == 2  # the temp file beside the target
            raise Boom
    assert os.listdir(tmp_path) == ["out.txt"] and target.read_text() == "old\n"
    with pytest.raises(KeyboardInterrupt):  # BaseException too: one policy
        with atomic.AtomicFile(target, mode) as f:
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out.txt"] and target.read_text() == "old\n"
    with pytest.raises(ValueError, match="write mode"):
        atomic.AtomicFile(target, "r+")


def test_atomic_file_failing_rename_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic.atomic_write_bytes(target, b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_dir_removes_the_temp_dir_on_an_exception_and_replaces_on_request(tmp_path):
    dest = tmp_path / "d"
    with pytest.raises(Boom):
        with atomic.atomic_dir(dest) as tmp:
            atomic.write_synced(os.path.join(tmp, "a.txt"), "a\n")
            raise Boom
    assert os.listdir(tmp_path) == []
    with atomic.atomic_dir(dest) as tmp:
        atomic.write_synced(os.path.join(tmp, "a.txt"), "one\n")
    assert (dest / "a.txt").read_text() == "one\n"
    with atomic.atomic_dir(dest, replace=True) as tmp:
        atomic.write_synced(os.path.join(tmp, "b.txt"), b"two\n")
    assert sorted(os.listdir(dest)) == ["b.txt"] and os.listdir(tmp_path) == ["d"]


def test_remove_stale_temp_files_only_touches_temps_of_that_name(tmp_path):
    target = tmp_path / "f.json"
    stale = atomic.tmp_path(str(target))
    stale_dir = atomic.tmp_dir(str(target))
    other = atomic.tmp_path(str(tmp_path / "g.json"))
    (tmp_path / "f.json.keep").write_text("x")
    removed = atomic.remove_stale_temp_files(str(target))
    assert sorted(removed) == sorted([os.path.basename(stale), os.path.basename(stale_dir)])
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(other), "f.json.keep"])


# ------------------------------------------------------------------------------ the policy
def test_array_dir_format_version_policy(tmp_path):
    fmt = sarrays.ArrayDirFormat("toy-format", 3, (2, 3), "head.json")
    hp = tmp_path / "head.json"
    for v in (2, 3):
        hp.write_text(json.dumps({"format": "toy-format", "version": v}))
        assert fmt.read_header(str(hp))["version"] == v
    for v, words in ((4, "newer than this simans_fast reads (versions [2, 3]); upgrade"),
                     (1, "this build reads versions [2, 3] of 'toy-format'"),
                     ("3", "this build reads versions [2, 3]"),
                     (True, "this build reads versions [2, 3]"),
                     (None, "this build reads versions [2, 3]")):
        hp.write_text(json.dumps({"format": "toy-format", "version": v}))
        with pytest.raises(InputError) as e:
            fmt.read_header(str(hp), parameter="saved")
        msg = str(e.value)
        assert msg.startswith(f"{hp}: version {v!r} not supported") and words in msg, msg
        assert e.value.parameter == "saved" and e.value.path == str(hp)
    hp.write_text(json.dumps({"format": "other", "version": 3}))
    with pytest.raises(InputError, match="format 'other' is not 'toy-format'"):
        fmt.read_header(str(hp))
    for raw, words in ((b"[1]", "not a JSON object"), (b'{"format": ', "not valid JSON"),
                       (b"\xff{}", "not UTF-8")):
        hp.write_bytes(raw)
        with pytest.raises(InputError, match=words):
            fmt.read_header(str(hp))


def test_array_entries_hash_while_writing_and_verify_detects_a_changed_file(tmp_path):
    fmt = sarrays.ArrayDirFormat("toy", 1, (1,), "meta.json")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    entry = fmt.write_array(str(tmp_path), "a", a[:, ::-1])  # made C-contiguous
    raw = (tmp_path / "a.npy").read_bytes()
    assert entry == {"dtype": "<f4", "shape": [3, 4], "sha256": hashlib.sha256(raw).hexdigest()}
    files = {"a": str(tmp_path / "a.npy")}
    fmt.verify(files, {"a": entry})  # intact
    back = fmt.load_array(files["a"], shape=(3, 4), dtypes=("<f4",))
    np.testing.assert_array_equal(back, a[:, ::-1])
    np.save(tmp_path / "a.npy", a)  # same shape and dtype, other bytes
    with pytest.raises(InputError, match=r"a\.npy: sha256 .* differs .* recorded in meta\.json"):
        fmt.verify(files, {"a": entry})
    with pytest.raises(InputError, match="shape"):
        fmt.load_array(files["a"], shape=(4, 3), dtypes=("<f4",))
    with pytest.raises(InputError, match="dtype <f4 where <i8 is expected"):
        fmt.load_array(files["a"], dtypes=("<i8",))
    np.save(tmp_path / "a.npy", np.array([None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickle"):
        fmt.load_array(files["a"])
    os.unlink(tmp_path / "a.npy")
    with pytest.raises(InputError, match="missing"):
        fmt.verify(files, {"a": entry})


# ------------------------------------------------------------------ both directories use it
def test_candidates_and_sampler_directories_go_through_the_store(tmp_path, monkeypatch):
    """Both writers write every array through ArrayDirFormat.write_array and build their
    directory with atomic_dir; both loaders read the header through read_header and (on
    request / always) verify the digests through ArrayDirFormat.verify."""
    import simans_fast.sampler as sampler_mod

    calls = []
    for meth in ("write_array", "read_header", "verify", "load_array"):
        orig = getattr(sarrays.ArrayDirFormat, meth)

        def spy(self, *a, _orig=orig, _meth=meth, **kw):
            calls.append((self.name, _meth))
            return _orig(self, *a, **kw)

        monkeypatch.setattr(sarrays.ArrayDirFormat, meth, spy)
    commits = []
    orig_commit = atomic.commit_dir
    monkeypatch.setattr(atomic, "commit_dir",
                        lambda tmp, path, **kw: (commits.append(os.path.basename(path)),
                                                 orig_commit(tmp, path, **kw))[1])
    cids, cs, pids, ps, qids, dids = _candidates()
    cand.save_candidates(tmp_path / "c", cids, cs, pids, ps, qids, dids)
    cand.load_candidates(tmp_path / "c", verify=True)
    smp = _sampler()
    smp.save(tmp_path / "s")
    SimANSSampler.load(tmp_path / "s")
    assert commits == ["c", "s"]
    for name in (cand.CANDIDATES_FORMAT, sampler_mod.FORMAT_NAME):
        seen = {m for n, m in calls if n == name}
        assert seen == {"write_array", "read_header", "verify", "load_array"}, (name, seen)
    assert cand.CANDIDATES_DIR.header_file == "header.json"
    assert sampler_mod._SAMPLER_DIR.readable == (1, 2)


def test_both_directories_refuse_unknown_versions_and_changed_arrays(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    cdir = tmp_path / "c"
    cand.save_candidates(cdir, cids, cs, pids, ps, qids, dids)
    sdir = tmp_path / "s"
    _sampler().save(sdir)
    for d, head, err in ((cdir, "header.json", InputError), (sdir, "meta.json", SamplerFileError)):
        load = (lambda p: cand.load_candidates(p, verify=True)) if err is InputError \
            else SimANSSampler.load
        h = json.loads((d / head).read_text())
        for v, words in ((h["version"] + 7, "newer than this simans_fast reads"),
                         (0, "this build reads versions")):
            (d / head).write_text(json.dumps(dict(h, version=v)))
            with pytest.raises(err) as e:
                load(d)
            assert isinstance(e.value, InputError) and e.value.parameter == "path"
            msg = str(e.value)
            assert msg.startswith(str(d / head)) and f"version {v} not supported" in msg, msg
            assert words in msg and "--" not in msg
        (d / head).write_text(json.dumps(h))
        load(d)  # intact again
        # same shape and dtype, other bytes: only the recorded sha256 tells
        name = "candidate_scores"
        a = np.load(d / f"{name}.npy")
        np.save(d / f"{name}.npy", a[::-1].copy())
        with pytest.raises(err, match=r"candidate_scores\.npy: sha256 .* differs"):
            load(d)


@pytest.mark.parametrize("which", ["candidates", "sampler"])
def test_a_failing_directory_write_leaves_nothing(tmp_path, monkeypatch, which):
    def fail(*a, **kw):
        raise Boom

    monkeypatch.setattr(sarrays, "write_npy", fail)
    dest = tmp_path / "out"
    with pytest.raises(Boom):
        if which == "candidates":
            cids, cs, pids, ps, qids, dids = _candidates()
            cand.save_candidates(dest, cids, cs, pids, ps, qids, dids)
        else:
            _sampler().save(dest)
    assert os.listdir(tmp_path) == []


def test_sampler_save_replaces_an_old_sampler_atomically(tmp_path, monkeypatch):
    a, b = _sampler(seed=1), _sampler(seed=2)
    d = tmp_path / "s"
    a.save(d)
    before = {f: (d / f).read_bytes() for f in os.listdir(d)}
    monkeypatch.setattr(atomic.os, "replace", lambda *x: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        b.save(d)
    assert {f: (d / f).read_bytes() for f in os.listdir(d)} == before  # old one intact
    assert os.listdir(tmp_path) == ["s"]
    monkeypatch.undo()
    b.save(d)
    np.testing.assert_array_equal(SimANSSampler.load(d).sample(epoch=1), b.sample(epoch=1))
    assert os.listdir(tmp_path) == ["s"]


# ------------------------------------------------------------------------------ io shim
SHIM = r"""
import warnings, sys
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as w:
    import simans_fast.io as sio
    import simans_fast.io
    from simans_fast import io as again
print(sum(issubclass(x.category, DeprecationWarning) and "simans_fast.io is deprecated"
          in str(x.message) for x in w))
"""


def test_io_shim_warns_once_and_reexports_the_moved_names(tmp_path):
    out = subprocess.run([sys.executable, "-c", SHIM], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1", out.stdout + out.stderr
    with pytest.warns(DeprecationWarning, match="simans_fast.io is deprecated"):
        sys.modules.pop("simans_fast.io", None)
        import simans_fast.io as sio
    from simans_fast.formats import embeddings, negatives, texts, trec
    from simans_fast.store import negatives as snegatives

    assert sio.InputError is InputError
    assert sio._AtomicFile is atomic.AtomicFile and sio._tmp_path is atomic.tmp_path
    assert sio._json_dumps is atomic.json_dumps and sio.fsync_dir is atomic.fsync_dir
    assert sio.CandidatesFile is cand.CandidatesFile and sio.save_candidates is \
        cand.save_candidates
    assert sio._candidates_header is cand.candidates_header
    assert sio.EpochNegatives is snegatives.EpochNegatives
    assert sio.detect_format is negatives.detect_format
    assert sio.st_fill_negatives is negatives.st_fill_negatives
    for name in ("read_embeddings", "read_ids", "read_qrels", "read_texts", "text_coverage",
                 "read_beir_texts", "load_candidates", "read_header", "write_negatives",
                 "read_negatives", "_iter_lines", "_iter_texts", "_not_ours", "_json_line",
                 "_bad_id", "_check_file", "NEGATIVES_FORMAT_NAME"):
        assert hasattr(sio, name), name
    for name in sio.__all__:
        assert hasattr(sio, name), name
    # the shim still takes the old arg= keyword and words messages the old way
    p = tmp_path / "x.npy"
    p.write_text("hello")
    with pytest.raises(InputError) as e:
        sio.read_embeddings(str(p), arg="--queries")
    assert str(e.value).startswith(f"--queries {p}: not a .npy file")
    with pytest.raises(InputError) as e:
        embeddings.read_embeddings(str(p))
    assert str(e.value).startswith(f"{p}: not a .npy file")
    q = tmp_path / "qrels.txt"
    q.write_text("q1 0 d9 1\n")
    with pytest.raises(InputError, match="pass --skip-missing-qrels to drop them"):
        sio.read_qrels(str(q), {"q1": 0}, {"d1": 0}, arg="--qrels",
                       skip_arg="--skip-missing-qrels")
    with pytest.raises(InputError, match="pass skip_missing=True to drop them"):
        trec.read_qrels(str(q), {"q1": 0}, {"d1": 0})
    assert texts.read_texts is not sio.read_texts  # wrapped, not the new reader itself


def test_no_library_module_imports_the_shim_among_the_moved_modules():
    """The new modules (and the import lines this change owns) never import simans_fast.io."""
    import re

    root = os.path.join(os.path.dirname(__file__), os.pardir, "simans_fast")
    files = [os.path.join(root, "store", f) for f in os.listdir(os.path.join(root, "store"))]
    files += [os.path.join(root, "formats", f) for f in os.listdir(os.path.join(root, "formats"))]
    files += [os.path.join(root, f) for f in ("encode.py", "sampler.py")]
    files += [os.path.join(root, "torch", "st.py")]
    pat = re.compile(r"^\s*(from\s+(\.+|simans_fast\.?)\s*io\b|from\s+\.+\s+import\s+io\b|"
                     r"from\s+simans_fast\s+import\s+io\b|import\s+simans_fast\.io\b)", re.M)
    for f in files:
        if f.endswith(".py"):
            with open(f, encoding="utf-8") as fh:
                assert not pat.search(fh.read()), f


def test_store_imports_only_its_floor():
    """store/ is floor 2: it imports (at top level or lazily) only _validate, _config, _numba,
    _progress, kernels, itself, the standard library and NumPy."""
    import ast

    allowed = {"_validate", "_config", "_numba", "_progress", "kernels", "store"}
    root = os.path.join(os.path.dirname(__file__), os.pardir, "simans_fast", "store")
    for f in sorted(os.listdir(root)):
        if not f.endswith(".py"):
            continue
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    continue  # inside store/
                if node.level == 2:
                    mod = (node.module or "").split(".")[0]
                    assert mod in allowed or (not mod and {a.name for a in node.names}
                                              <= allowed), (f, ast.dump(node))
                    continue
                top = (node.module or "").split(".")[0]
            elif isinstance(node, ast.Import):
                top = node.names[0].name.split(".")[0]
            else:
                continue
            if top == "simans_fast":
                sub = (node.module if isinstance(node, ast.ImportFrom)
                       else node.names[0].name).split(".")[1:2]
                assert sub and sub[0] in allowed, (f, ast.dump(node))
            else:
                assert top == "numpy" or top in sys.stdlib_module_names, (f, top)

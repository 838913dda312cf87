"""Issue 8, core library: one single-shot path for several positives, keyword-only sampler
methods, untrusting SimANSSampler.load, non-finite numbers, empty and degenerate shapes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simans_fast as sf
from simans_fast import core
from simans_fast import sampler as sampler_mod
from simans_fast.rng import to_u64
from simans_fast.sampler import SamplerFileError, SimANSSampler

import naive

def _data(n_q=400, k=40, seed=0, m=3):
    """Sorted scores with NaN / -1 padding, and an (n_q, m) NaN-padded positive matrix."""
    rng = np.random.default_rng(seed)
    s = -np.sort(-rng.normal(0.0, 1.0, (n_q, k)), axis=1)
    ids = rng.permutation(n_q * k * 3)[: n_q * k].reshape(n_q, k).astype(np.int64)
    s[rng.random((n_q, k)) < 0.05] = np.nan
    ids[rng.random((n_q, k)) < 0.05] = -1
    pos = rng.normal(0.3, 1.0, (n_q, m))
    pos[rng.random((n_q, m)) < 0.3] = np.nan
    pos[::37] = np.nan  # rows with no known positive
    return ids, s, pos


def _chosen(pos2, col):
    out = np.full(pos2.shape[0], np.nan)
    has = col >= 0
    out[has] = pos2[np.flatnonzero(has), col[has]]
    return out


# ---------------------------------------------------------------------------------------------
# 1. several positives: one path (the single-shot CDF), the same draws, max_reject honoured
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["random", "highest", "lowest"])
def test_two_d_positives_draw_exactly_like_the_chosen_vector(choice):
    ids, s, pos2 = _data()
    keys = np.arange(ids.shape[0]) * 7 + 3
    smp = SimANSSampler(ids, s, pos2, n=8, a=4.0, seed=3, positive_choice=choice,
                        row_keys=keys)
    for epoch in (0, 1, 5):
        col = smp.positive_index(epoch=epoch)
        if choice == "random":
            assert set(np.unique(col)) == {-1, 0, 1, 2}  # the choice really varies
        chosen = _chosen(pos2, col)
        for fallback, replace in (("lowest", False), ("uniform", False), ("lowest", True)):
            got = sf.simans_negatives(ids, s, pos2, 8, a=4.0, seed=3, epoch=epoch,
                                      fallback=fallback, replace=replace, row_keys=keys,
                                      positive_choice=choice)
            want = sf.simans_negatives(ids, s, chosen, 8, a=4.0, seed=3, epoch=epoch,
                                       fallback=fallback, replace=replace, row_keys=keys)
            np.testing.assert_array_equal(got, want)
            # serial kernel, same answer
            np.testing.assert_array_equal(
                sf.simans_negatives(ids, s, pos2, 8, a=4.0, seed=3, epoch=epoch,
                                    fallback=fallback, replace=replace, row_keys=keys,
                                    positive_choice=choice, parallel=False), want)


def test_one_column_matrix_equals_the_vector():
    ids, s, pos2 = _data(m=1)
    np.testing.assert_array_equal(sf.simans_negatives(ids, s, pos2, 6, seed=2, epoch=4),
                                  sf.simans_negatives(ids, s, pos2[:, 0], 6, seed=2, epoch=4))


def test_two_d_positives_honour_max_reject():
    ids, s, pos2 = _data(n_q=300)
    smp = SimANSSampler(ids, s, pos2, n=10, a=5.0, seed=1)
    chosen = _chosen(pos2, smp.positive_index(epoch=2))
    default = sf.simans_negatives(ids, s, chosen, 10, a=5.0, seed=1, epoch=2)
    for mr in (1, 2, 50):
        got = sf.simans_negatives(ids, s, pos2, 10, a=5.0, seed=1, epoch=2, max_reject=mr)
        np.testing.assert_array_equal(
            got, sf.simans_negatives(ids, s, chosen, 10, a=5.0, seed=1, epoch=2, max_reject=mr))
    one = sf.simans_negatives(ids, s, pos2, 10, a=5.0, seed=1, epoch=2, max_reject=1)
    assert (one != default).any(axis=1).sum() > 50  # max_reject is not ignored
    with pytest.raises(ValueError, match="max_reject must be >= 1"):
        sf.simans_negatives(ids, s, pos2, 10, max_reject=0)
    with pytest.raises(ValueError, match="positive_choice must be one of"):
        sf.simans_negatives(ids, s, pos2, 10, positive_choice="best")


@pytest.mark.parametrize("choice", ["random", "highest", "lowest"])
def test_sampler_positive_index_is_the_shared_choice(choice):
    ids, s, pos2 = _data(n_q=200)
    keys = np.arange(200) + 10_000
    smp = SimANSSampler(ids, s, pos2, n=4, seed=11, positive_choice=choice, row_keys=keys)
    rows = np.array([5, 199, 0, 5, 37])
    for epoch in (0, 3):
        col = core.choose_positive(pos2, choice, to_u64(11), to_u64(epoch), keys.view(np.uint64))
        np.testing.assert_array_equal(smp.positive_index(epoch=epoch), col)
        np.testing.assert_array_equal(smp.positive_index(rows=rows, epoch=epoch), col[rows])


# ---------------------------------------------------------------------------------------------
# 2. keyword-only sampler methods; the sampler returns ids, sf.sample columns
# ---------------------------------------------------------------------------------------------
def test_sampler_methods_are_keyword_only():
    ids, s, pos2 = _data(n_q=50)
    smp = SimANSSampler(ids, s, pos2, n=5, seed=0)
    for name in ("sample", "sample_columns", "positive_index"):
        method = getattr(smp, name)
        with pytest.raises(TypeError, match=rf"{name}\(epoch=3\)"):
            method(3)
        with pytest.raises(TypeError, match="keyword arguments only"):
            method([1, 2], 0)
    e3 = smp.sample(epoch=3)
    assert e3.shape == (50, 5)
    np.testing.assert_array_equal(smp.sample(rows=np.arange(50), epoch=3), e3)
    assert not np.array_equal(smp.sample(epoch=0), e3)
    # ids = candidate_ids[row, column]
    cols = smp.sample_columns(rows=[4, 2], epoch=3)
    np.testing.assert_array_equal(np.where(cols >= 0, ids[[[4], [2]], np.maximum(cols, 0)], -1),
                                  e3[[4, 2]])
    # max_reject is a sampler keyword too, validated
    with pytest.raises(ValueError, match="max_reject must be >= 1"):
        smp.sample(epoch=0, max_reject=0)


# ---------------------------------------------------------------------------------------------
# 3. SimANSSampler.load trusts nothing
# ---------------------------------------------------------------------------------------------
def _saved(tmp_path, n_q=60, k=12, m=2, seed=4):
    ids, s, pos2 = _data(n_q=n_q, k=k, m=m, seed=seed)
    s = s.astype(np.float32)
    smp = SimANSSampler(ids, s, pos2, n=5, a=3.0, b=0.1, seed=9, row_keys=np.arange(n_q) + 100)
    d = tmp_path / "smp"
    smp.save(d)
    return smp, d


def _meta(d):
    with open(d / "meta.json") as f:
        return json.load(f)


def _write_meta(d, meta):
    meta["meta_sha256"] = sampler_mod._meta_digest(meta)
    with open(d / "meta.json", "w") as f:
        json.dump(meta, f)


def _resign(d):
    """Make meta.json agree with the files as they now are (a careful tamperer)."""
    meta = _meta(d)
    for name, entry in meta["arrays"].items():
        with open(d / f"{name}.npy", "rb") as f:
            entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
    _write_meta(d, meta)


def _rewrite(d, name, fn):
    arr = np.load(d / f"{name}.npy")
    out = fn(arr)  # edits in place (returns None) or returns a new array
    np.save(d / f"{name}.npy", arr if out is None else out)


def _same_draws(a, b):
    for e in (0, 1):
        np.testing.assert_array_equal(a.sample(epoch=e), b.sample(epoch=e))
        np.testing.assert_array_equal(a.positive_index(epoch=e), b.positive_index(epoch=e))


def test_save_records_digests_and_round_trips(tmp_path):
    smp, d = _saved(tmp_path)
    meta = _meta(d)
    assert meta["version"] == 2 and meta["meta_sha256"] == sampler_mod._meta_digest(meta)
    for name, entry in meta["arrays"].items():
        with open(d / f"{name}.npy", "rb") as f:
            assert entry["sha256"] == hashlib.sha256(f.read()).hexdigest()
        assert entry["shape"] == list(np.load(d / f"{name}.npy", mmap_mode="r").shape)
    for mmap in (True, False):
        _same_draws(SimANSSampler.load(d, mmap=mmap), smp)
    assert sorted(os.listdir(tmp_path)) == ["smp"]


ALIAS_CRASH = textwrap.dedent("""
    import sys
    import numpy as np
    from simans_fast.sampler import SimANSSampler, SamplerFileError
    try:
        SimANSSampler.load(sys.argv[1]).sample(epoch=0)
    except SamplerFileError as e:
        print("ERROR", e)
    else:
        print("LOADED")
""")


@pytest.mark.parametrize("resign", [False, True])
def test_alias_out_of_range_is_an_error_not_a_crash(tmp_path, resign):
    smp, d = _saved(tmp_path)

    def poison(p):  # every column of every row aliases far outside the row, never kept
        p[:, :, 0] = 10_000_000
        p.view(np.float32)[:, :, 1] = 0.0
        return p

    _rewrite(d, "alias_packed", poison)
    if resign:
        _resign(d)
    # in a child process: before the fix this was a segmentation fault
    out = subprocess.run([sys.executable, "-c", ALIAS_CRASH, str(d)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("ERROR") and "alias_packed.npy" in line, line
    assert ("alias outside" if resign else "sha256") in line


def _expect_file_error(d, fname, match=None, **kw):
    with pytest.raises(SamplerFileError) as info:
        SimANSSampler.load(d, **kw)
    assert isinstance(info.value, ValueError)
    assert fname in str(info.value), str(info.value)
    if match:
        assert match in str(info.value), str(info.value)


@pytest.mark.parametrize("name, edit, resign, fname, match", [
    # shapes that disagree with meta.json
    ("logw", lambda a: a[:-1], True, "logw.npy", "disagree"),
    ("n_valid", lambda a: np.concatenate([a, a]), True, "n_valid.npy", "disagree"),
    ("candidate_scores", lambda a: a.astype(np.float16), True, "candidate_scores.npy", "dtype"),
    ("alias_packed", lambda a: np.asfortranarray(a), True, "alias_packed.npy", "C order"),
    # values no kernel may see
    ("alias_packed", lambda a: a.view(np.float32).__setitem__((0, 0, 1), np.nan), True,
     "alias_packed.npy", "keep-probability"),
    ("n_valid", lambda a: a + 1, True, "n_valid.npy", "n_valid"),
    ("peak", lambda a: a + 2, True, "peak.npy", "outside [0, 1]"),
    ("logw", lambda a: a.__setitem__((1, 1), np.nan), True, "logw.npy", "NaN"),
    ("candidate_ids", lambda a: a.__setitem__((2, 3), -7), True, "candidate_ids.npy", "-7"),
    ("candidate_scores", lambda a: a.__setitem__((2, 3), np.inf), True,
     "candidate_scores.npy", "+inf"),
    ("positive_scores", lambda a: a.__setitem__((4, 0), -np.inf), True,
     "positive_scores.npy", "infinite"),
    # and any edit at all without re-signing
    ("candidate_scores", lambda a: a * 2, False, "candidate_scores.npy", "sha256"),
    ("row_keys", lambda a: a + 1, False, "row_keys.npy", "sha256"),
])
def test_tampered_arrays_are_clear_errors(tmp_path, name, edit, resign, fname, match):
    _, d = _saved(tmp_path)
    _rewrite(d, name, edit)
    if resign:
        meta = _meta(d)
        arr = np.load(d / f"{name}.npy", mmap_mode="r")
        if "disagree" not in match:
            meta["arrays"][name]["shape"] = list(arr.shape)
            meta["arrays"][name]["dtype"] = arr.dtype.str
        _write_meta(d, meta)
        _resign(d)
    _expect_file_error(d, fname, match)


def test_invalid_column_that_could_be_drawn_is_an_error(tmp_path):
    _, d = _saved(tmp_path)
    logw = np.load(d / "logw.npy")
    r, c = np.argwhere(np.isneginf(logw) & (np.isfinite(logw).sum(1) > 0)[:, None])[0]

    def keep_invalid(p):
        p.view(np.float32)[r, c, 1] = 1.0  # an invalid (padding) column kept when drawn

    _rewrite(d, "alias_packed", keep_invalid)
    _resign(d)
    _expect_file_error(d, "alias_packed.npy", "invalid")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("kind", ["object_npy", "raw_pickle"])
def test_pickles_are_refused_and_never_run(tmp_path, kind):
    _, d = _saved(tmp_path)
    marker = str(tmp_path / "pickle_ran")
    target = d / "candidate_ids.npy"
    if kind == "object_npy":
        np.save(target, np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    else:
        import pickle

        with open(target, "wb") as f:
            pickle.dump(_Evil(marker), f)
    _expect_file_error(d, "candidate_ids.npy", "sha256")
    _resign(d)
    _expect_file_error(d, "candidate_ids.npy")
    _expect_file_error(d, "candidate_ids.npy", mmap=False)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("cut", [0, 1, 40, -1])
def test_cut_meta_json_names_the_file(tmp_path, cut):
    _, d = _saved(tmp_path)
    raw = (d / "meta.json").read_bytes()
    (d / "meta.json").write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) // 2])
    _expect_file_error(d, "meta.json", "not valid JSON")


@pytest.mark.parametrize("field, value, match", [
    ("n", 0, "field 'n'"),
    ("a", -1.0, "field 'a'"),
    ("kernel", "cauchy", "field 'kernel'"),
    ("seed", 1.5, "field 'seed'"),
    ("n_queries", 61, "shape"),
    ("k", 13, "shape"),
    ("n_pairs", 10, "shape"),
    ("version", 3, "version 3 not supported"),
    ("format", "something else", "format"),
])
def test_edited_meta_json_is_an_error(tmp_path, field, value, match):
    _, d = _saved(tmp_path)
    meta = _meta(d)
    meta[field] = value
    _write_meta(d, meta)  # re-signed: the field checks must catch it
    _expect_file_error(d, "meta.json" if match not in ("shape",) else ".npy", match)
    meta = _meta(d)
    meta["seed"] = 10  # a plausible edit, not re-signed: the meta digest catches it
    with open(d / "meta.json", "w") as f:
        json.dump(meta, f)
    _expect_file_error(d, "meta.json")


def test_missing_and_truncated_arrays(tmp_path):
    _, d = _saved(tmp_path)
    raw = (d / "logw.npy").read_bytes()
    (d / "logw.npy").write_bytes(raw[: len(raw) - 5])
    _expect_file_error(d, "logw.npy", "sha256")
    _resign(d)
    _expect_file_error(d, "logw.npy", "not a readable .npy")
    _expect_file_error(d, "logw.npy", "not a readable .npy", mmap=False)
    (d / "logw.npy").write_bytes(raw)
    _resign(d)
    SimANSSampler.load(d)  # whole again
    os.remove(d / "peak.npy")
    _expect_file_error(d, "peak.npy", "missing")


def _as_version_1(d):
    meta = _meta(d)
    for key in ("arrays", "meta_sha256", "n_positive_columns", "n_pairs"):
        meta.pop(key)
    meta["version"] = 1
    with open(d / "meta.json", "w") as f:
        json.dump(meta, f)


def test_version_1_directories_still_load_and_are_checked(tmp_path):
    smp, d = _saved(tmp_path)
    _as_version_1(d)
    _same_draws(SimANSSampler.load(d), smp)
    _rewrite(d, "alias_packed", lambda p: p.__setitem__((0, 0, 0), 10_000_000))
    _expect_file_error(d, "alias_packed.npy", "rebuilt")


def test_save_refuses_to_replace_foreign_directories(tmp_path):
    smp, _ = _saved(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a saved SimANSSampler"):
        smp.save(other)
    assert (other / "precious.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="not a saved SimANSSampler"):
        smp.save(tmp_path / "afile")
    empty = tmp_path / "empty"
    empty.mkdir()
    smp.save(empty)
    _same_draws(SimANSSampler.load(empty), smp)


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory):
    base = tmp_path_factory.mktemp("once")
    smp, d = _saved(base, n_q=20, k=6, m=2, seed=8)
    files = sorted(os.listdir(d))
    sizes = {f: os.path.getsize(d / f) for f in files}
    return smp, d, files, sizes


@settings(deadline=None, max_examples=80, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_corruption_is_an_error_or_changes_nothing(saved_once, tmp_path_factory, data):
    """Flip one byte or cut any file anywhere: load raises SamplerFileError, or (a change JSON
    does not see, such as whitespace) the sampler draws exactly as before. Never a crash."""
    smp, d, files, sizes = saved_once
    f = data.draw(st.sampled_from(files))
    work = tmp_path_factory.mktemp("flip") / "smp"
    shutil.copytree(d, work)
    raw = bytearray((work / f).read_bytes())
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, sizes[f] - 1))
        raw[at] = data.draw(st.integers(0, 255))
    else:
        raw = raw[: data.draw(st.integers(0, sizes[f] - 1))]
    (work / f).write_bytes(bytes(raw))
    try:
        back = SimANSSampler.load(work)
    except SamplerFileError as e:
        assert str(work) in str(e)
    else:
        _same_draws(back, smp)


# ---------------------------------------------------------------------------------------------
# 4. non-finite numbers and ids: one rule everywhere
# ---------------------------------------------------------------------------------------------
def _small(n_q=6, k=5, seed=1):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_q, k))
    ids = np.arange(n_q * k).reshape(n_q, k)
    pos = rng.normal(size=n_q)
    return ids, s, pos


def _all_entry_points(ids, s, pos):
    yield "simans_negatives", lambda: sf.simans_negatives(ids, s, pos, 3)
    yield "simans_negatives 2-D", lambda: sf.simans_negatives(ids, s, np.stack([pos, pos], 1), 3)
    yield "SimANSSampler", lambda: SimANSSampler(ids, s, pos, n=3)
    yield "SimANSSampler 2-D", lambda: SimANSSampler(ids, s, np.stack([pos, pos], 1), n=3)
    yield "ambiguity_log_weights", lambda: sf.ambiguity_log_weights(
        s, pos, candidate_ids=ids, fallback="uniform")
    yield "check_candidates", lambda: core.check_candidates(ids, s)


def test_plus_inf_candidate_score_is_an_error_naming_it():
    ids, s, pos = _small()
    s[4, 2] = np.inf
    for name, fn in _all_entry_points(ids, s, pos):
        with pytest.raises(ValueError, match=r"scores is \+inf at index \(4, 2\)") as info:
            fn()
        if name != "ambiguity_log_weights":  # whose parameter is called `scores`
            assert "candidate_scores is" in str(info.value)
    with pytest.raises(ValueError, match=r"scores is \+inf at index \(4, 2\)"):
        sf.ambiguity_log_weights(s, pos)


def test_ids_below_minus_one_are_an_error_naming_them():
    ids, s, pos = _small()
    ids[3, 1] = -2
    s[3, 1] = np.nan  # even on a padded slot
    for name, fn in _all_entry_points(ids, s, pos):
        with pytest.raises(ValueError, match=r"candidate_ids must hold .* found -2 at index "
                                             r"\(3, 1\)"):
            fn()


def test_error_rows_are_query_rows_with_several_positives():
    ids, s, pos = _small(n_q=8)
    pos2 = np.stack([pos, pos - 1, pos + 1], 1)
    s[6, 0] = np.inf
    with pytest.raises(ValueError, match=r"at index \(6, 0\)"):
        SimANSSampler(ids, s, pos2, n=2)  # one table row per (query, positive) pair
    with pytest.raises(ValueError, match=r"at index \(6, 0\)"):
        sf.simans_negatives(ids, s, pos2, 2)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_positive_score_is_an_error_naming_it(bad):
    ids, s, pos = _small()
    pos[2] = bad
    for name, fn in _all_entry_points(ids, s, pos):
        if name == "check_candidates":
            continue
        with pytest.raises(ValueError, match=r"positive_scores is -?inf at index \(2(, 0)?,?\) "
                                             r"\(\d infinite value\(s\)\)"):
            fn()


def test_padding_rules_are_the_documented_ones():
    """id -1 pads whatever the score (+inf included); NaN and -inf pad whatever the id; NaN
    positive = unknown (fallback); a huge finite score is a real candidate."""
    ids, s, pos = _small(n_q=300, k=8, seed=3)
    ref_ids = ids.copy()
    ref_ids[:, 2] = -1
    ref_ids[:, 5] = -1
    want = sf.simans_negatives(ref_ids, s, pos, 6, a=2.0, seed=5)
    variants = []
    for fill2, fill5 in ((np.nan, -np.inf), (np.inf, np.nan), (-np.inf, 3.0)):
        s2 = s.copy()
        i2 = ids.copy()
        s2[:, 2] = fill2
        s2[:, 5] = fill5
        if not np.isnan(fill2) and not np.isneginf(fill2):
            i2[:, 2] = -1  # +inf is only allowed on id -1
        if not np.isnan(fill5) and not np.isneginf(fill5):
            i2[:, 5] = -1
        variants.append((i2, s2))
    for i2, s2 in variants:
        np.testing.assert_array_equal(sf.simans_negatives(i2, s2, pos, 6, a=2.0, seed=5), want)
        smp = SimANSSampler(i2, s2, pos, n=6, a=2.0, seed=5)
        ref = SimANSSampler(ref_ids, s, pos, n=6, a=2.0, seed=5)
        np.testing.assert_array_equal(smp.sample(epoch=1), ref.sample(epoch=1))
    huge = s.copy()
    huge[:, 0] = 1e300
    neg = sf.simans_negatives(ids, huge, pos, 8, a=0.0, seed=1)
    assert (neg == ids[:, :1]).any(axis=1).all()  # drawn like any other (a = 0: uniform)
    nan_pos = pos.copy()
    nan_pos[7] = np.nan
    neg = sf.simans_negatives(ids, s, nan_pos, 3, fallback="lowest")
    np.testing.assert_array_equal(neg[7], ids[7, -3:])
    with pytest.raises(ValueError, match="fallback='raise'"):
        sf.simans_negatives(ids, s, nan_pos, 3, fallback="raise")


def test_check_candidates_helper():
    ids, s, pos = _small()
    got_ids, got_s = core.check_candidates(ids.astype(np.int32), s.astype(np.float16))
    assert got_ids.dtype == np.int64 and got_s.dtype == np.float32
    s[1, 1] = np.inf
    ids[1, 1] = -1
    core.check_candidates(ids, s)  # +inf on padding is fine
    with pytest.raises(ValueError, match=r"my_scores is \+inf at index \(1, 1\)"):
        core.check_candidate_values(None, s, scores_name="my_scores")
    with pytest.raises(ValueError, match="my_ids"):
        core.check_candidates(np.full_like(ids, -3), s, ids_name="my_ids")
    with pytest.raises(ValueError, match=r"positive_scores is -inf at index \(0, 1\) \(1 "
                                         r"infinite value\(s\)\)"):
        core.check_positive_scores(np.array([[0.0, -np.inf]]), 1, matrix=True)


def test_alias_tables_built_by_hand_are_checked():
    t = sf.build_alias(np.array([[0.0, 0.7, -np.inf], [0.0, 0.0, 0.0]], np.float32))
    bad = t.packed.copy()
    bad[0, 0, 0] = 99
    bad.view(np.float32)[0, 0, 1] = 0.0
    with pytest.raises(ValueError, match="alias outside"):
        sf.AliasTables(bad, t.n_valid, t.logw, t.peak)
    with pytest.raises(ValueError, match="would draw an invalid"):
        prob = t.prob.copy()
        prob[0, 2] = 0.5
        sf.AliasTables.from_arrays(prob, t.alias, t.n_valid, t.logw)
    with pytest.raises(ValueError, match="n_valid must have shape"):
        sf.AliasTables(t.packed, t.n_valid[:1], t.logw, t.peak)
    with pytest.raises(ValueError, match="packed must have dtype int32"):
        sf.AliasTables(t.packed.astype(np.int64), t.n_valid, t.logw, t.peak)
    ok = sf.AliasTables(t.packed.copy(), t.n_valid, t.logw, t.peak)
    np.testing.assert_array_equal(sf.sample(ok, 2, seed=1), sf.sample(t, 2, seed=1))


# ---------------------------------------------------------------------------------------------
# 5. empty and degenerate shapes
# ---------------------------------------------------------------------------------------------
def test_sampler_without_candidates():
    smp = SimANSSampler(np.empty((3, 0), np.int64), np.empty((3, 0)), np.zeros(3), n=4)
    np.testing.assert_array_equal(smp.sample(epoch=0), np.full((3, 4), -1))
    np.testing.assert_array_equal(smp.sample_columns(epoch=2, rows=[1]), np.full((1, 4), -1))
    np.testing.assert_array_equal(smp.positive_index(epoch=0), [0, 0, 0])
    np.testing.assert_array_equal(
        sf.simans_negatives(np.empty((3, 0), np.int64), np.empty((3, 0)),
                            np.zeros((3, 2)), 4), np.full((3, 4), -1))


@pytest.mark.parametrize("n_q, k, m", [(0, 5, 1), (0, 0, 2), (4, 0, 1), (3, 4, 0), (5, 2, 3)])
def test_degenerate_samplers_save_and_load(tmp_path, n_q, k, m):
    ids, s, pos2 = _data(n_q=n_q, k=k, m=max(m, 1), seed=2)
    pos2 = pos2[:, :m]
    smp = SimANSSampler(ids, s, pos2, n=6, seed=1)
    assert smp.sample(epoch=0).shape == (n_q, 6)
    assert smp.positive_index(epoch=0).shape == (n_q,)
    smp.save(tmp_path / "d")
    back = SimANSSampler.load(tmp_path / "d")
    _same_draws(back, smp)
    assert back.positive_scores.shape == (n_q, m)


def test_rows_argument_edge_cases():
    lw = np.zeros((3, 4), np.float32)
    assert sf.sample(lw, 2, rows=[]).shape == (0, 2)
    assert sf.sample(lw, 2, rows=np.array([], np.int64)).shape == (0, 2)
    np.testing.assert_array_equal(sf.sample(lw, 2, rows=-1), sf.sample(lw, 2)[[2]])
    with pytest.raises(ValueError, match="rows must be a 1-D array"):
        sf.sample(lw, 2, rows=[[0, 1]])
    with pytest.raises(ValueError, match="rows must be integer"):
        sf.sample(lw, 2, rows=[0.0])
    with pytest.raises(ValueError, match="rows must index rows"):
        sf.sample(lw, 2, rows=np.array([2**63], np.uint64))
    with pytest.raises(ValueError, match="n must be >= 1"):
        sf.sample(lw, 0)
    smp = SimANSSampler(np.zeros((3, 4), np.int64), np.zeros((3, 4)), np.zeros(3), n=2)
    assert smp.sample(rows=[], epoch=1).shape == (0, 2)
    assert smp.positive_index(rows=[], epoch=1).shape == (0,)


def _valid_set(ids_row, s_row):
    return {int(i) for i, x in zip(ids_row, s_row) if i >= 0 and np.isfinite(x)}


def _check_rows(neg, ids, s, n):
    for r in range(ids.shape[0]):
        valid = _valid_set(ids[r], s[r])
        got = neg[r][neg[r] >= 0]
        assert got.size == min(n, len(valid))
        assert np.all(neg[r][got.size:] == -1)
        assert len(set(got.tolist())) == got.size and set(got.tolist()) <= valid


cell = st.one_of(st.floats(-5, 5), st.just(np.nan), st.just(-np.inf))


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.integers(0, 6), st.integers(1, 8), st.sampled_from([None, 0, 1, 3]),
       st.sampled_from(["random", "highest", "lowest"]), st.sampled_from(["lowest", "uniform"]),
       st.integers(0, 2**40), st.data())
def test_any_shape_has_a_defined_result(n_q, k, n, m, choice, fallback, seed, data):
    s = np.array(data.draw(st.lists(cell, min_size=n_q * k, max_size=n_q * k)),
                 np.float64).reshape(n_q, k)
    pad = np.array(data.draw(st.lists(st.booleans(), min_size=n_q * k, max_size=n_q * k)),
                   bool).reshape(n_q, k)
    ids = np.where(pad, -1, np.arange(n_q * k).reshape(n_q, k))
    width = 1 if m is None else m
    pos = np.array(data.draw(st.lists(st.one_of(st.floats(-5, 5), st.just(np.nan)),
                                      min_size=n_q * width, max_size=n_q * width)),
                   np.float64).reshape(n_q, width)
    if m is None:
        pos = pos[:, 0]
    kw = dict(a=2.0, seed=seed, fallback=fallback)
    neg = sf.simans_negatives(ids, s, pos, n, epoch=3, positive_choice=choice, **kw)
    assert neg.shape == (n_q, n) and neg.dtype == np.int64
    _check_rows(neg, ids, s, n)
    smp = SimANSSampler(ids, s, pos, n=n, positive_choice=choice, **kw)
    got = smp.sample(epoch=3)
    assert got.shape == (n_q, n)
    _check_rows(got, ids, s, n)
    col = smp.positive_index(epoch=3)
    assert col.shape == (n_q,) and np.all(col >= -1) and np.all(col < max(width, 1))
    # the single shot with a matrix draws as with the positive the sampler chose
    pos2 = pos.reshape(n_q, width)
    np.testing.assert_array_equal(
        neg, sf.simans_negatives(ids, s, _chosen(pos2, col), n, epoch=3, **kw))
    lw = sf.ambiguity_log_weights(s, pos2[:, 0] if pos2.shape[1] else np.full(n_q, np.nan),
                                  candidate_ids=ids, fallback="uniform")
    assert lw.shape == (n_q, k)
    cols = sf.sample(sf.build_alias(lw), n, seed=seed)
    assert cols.shape == (n_q, n)


# ---------------------------------------------------------------------------------------------
# the new kernels against their plain-Python references (tests/naive.py)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["random", "highest", "lowest"])
def test_choose_positive_matches_reference(choice):
    rng = np.random.default_rng(7)
    pos2 = rng.choice([0.0, 0.5, 1.0, np.nan], size=(300, 4))  # ties included
    keys = rng.integers(-(2**62), 2**62, size=300)
    for seed, epoch in ((0, 0), (5, 3), (-1, 2**64 - 1)):
        got = core.choose_positive(pos2, choice, to_u64(seed), to_u64(epoch, "epoch"),
                                   keys.view(np.uint64))
        assert got.tolist() == naive.positive_choice(pos2, choice, seed, epoch, keys)


@settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5), st.integers(0, 5), st.booleans(), st.data())
def test_candidate_checks_match_reference(n_q, k, with_ids, data):
    s = np.array(data.draw(st.lists(st.sampled_from([0.0, -1.5, np.nan, -np.inf, np.inf]),
                                    min_size=n_q * k, max_size=n_q * k)),
                 np.float64).reshape(n_q, k)
    ids = np.array(data.draw(st.lists(st.sampled_from([0, 3, -1, -2, -9]), min_size=n_q * k,
                                      max_size=n_q * k)), np.int64).reshape(n_q, k)
    ids = ids if with_ids else None
    want = naive.first_bad_candidate(ids, s)
    for parallel in (True, False):
        if want is None:
            core.check_candidate_values(ids, s, parallel=parallel)
            continue
        kind, r, c = want
        name = "candidate_ids" if kind == "ids" else "candidate_scores"
        with pytest.raises(ValueError, match=rf"{name} .*at index \({r}, {c}\)"):
            core.check_candidate_values(ids, s, parallel=parallel)
    if with_ids and n_q:  # the fused kernel finds the same entry
        try:
            sf.simans_negatives(ids, s, np.zeros(n_q), 2)
        except ValueError as e:
            assert want is not None and f"at index ({want[1]}, {want[2]})" in str(e)
        else:
            assert want is None


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.integers(1, 6), st.data())
def test_table_checks_match_reference(n_q, k, data):
    lw = np.array(data.draw(st.lists(st.sampled_from([0.0, -0.5, -3.0, -np.inf]),
                                     min_size=n_q * k, max_size=n_q * k)),
                  np.float32).reshape(n_q, k)
    t = sf.build_alias(lw)
    assert naive.alias_tables_ok(t.packed, t.n_valid, t.logw, t.peak)
    packed, n_valid, logw, peak = (t.packed.copy(), t.n_valid.copy(), t.logw.copy(),
                                   t.peak.copy())
    for _ in range(data.draw(st.integers(1, 3))):  # corrupt a few entries
        r, i = data.draw(st.integers(0, n_q - 1)), data.draw(st.integers(0, k - 1))
        what = data.draw(st.sampled_from(["alias", "prob", "logw", "n_valid", "peak"]))
        if what == "alias":
            packed[r, i, 0] = data.draw(st.sampled_from([-1, 0, k - 1, k, 2**31 - 1]))
        elif what == "prob":
            packed.view(np.float32)[r, i, 1] = data.draw(st.sampled_from(
                [0.0, 0.5, 1.0, 1.5, -0.1, np.nan]))
        elif what == "logw":
            logw[r, i] = data.draw(st.sampled_from([0.0, -np.inf, np.nan, np.inf]))
        elif what == "n_valid":
            n_valid[r] = data.draw(st.integers(-1, k + 1))
        else:
            peak[r] = data.draw(st.sampled_from([0.0, 0.5, 1.0, 1.01, -1.0, np.nan]))
    ok = naive.alias_tables_ok(packed, n_valid, logw, peak)
    for parallel in (True, False):
        if ok:
            core.check_alias_arrays(packed, n_valid, logw, peak, parallel=parallel)
        else:
            with pytest.raises(ValueError, match="not valid alias tables"):
                core.check_alias_arrays(packed, n_valid, logw, peak, parallel=parallel)
    if ok:  # whatever passes the check is drawn from without reading out of bounds
        cols = sf.sample(sf.AliasTables(packed, n_valid, logw, peak), 3, seed=1)
        assert np.all((cols >= -1) & (cols < k))
        drawn = logw[np.nonzero(cols >= 0)[0], cols[cols >= 0]]
        assert np.all(np.isfinite(drawn))  # never an invalid column

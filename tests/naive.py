"""Plain-NumPy / pure-Python references for the core kernels (stumpy's tests/naive.py habit).

Slow and obvious on purpose: every kernel of simans_fast.kernels.sampling is compared against
these in the tests.
"""

import itertools
import math

import numpy as np

MASK = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def splitmix64(seed, n):
    """The reference SimpleSplitMix64 generator (Vigna's splitmix64.c), pure Python."""
    x = seed & MASK
    out = []
    for _ in range(n):
        x = (x + G) & MASK
        out.append(mix64(x))
    return out


def stream_state(seed, epoch, key):
    s = mix64((seed + G) & MASK)
    s = mix64((s + epoch + G) & MASK)
    return mix64((s + (key & MASK) + G) & MASK)


def uniform(state, j):
    return (mix64((state + (j + 1) * G) & MASK) >> 11) * 2.0 ** -53


def log_weights(scores, pos, a, b, kernel, ids=None, missing_uniform=True):
    """Float32 SimANS log-weights; -inf for invalid candidates."""
    s = np.asarray(scores, np.float64)
    p = np.asarray(pos, np.float64)[:, None]
    d = s - p - b
    v = -a * d * d if kernel == "gaussian" else -a * np.abs(d)
    v = np.maximum(v, -np.finfo(np.float32).max)
    valid = np.isfinite(s)
    if ids is not None:
        valid &= np.asarray(ids) >= 0
    missing = ~np.isfinite(p[:, 0])
    if missing_uniform:
        v[missing] = 0.0
    else:
        valid[missing] = False
    return np.where(valid, v, -np.inf).astype(np.float32)


def normalised_weights(logw):
    """Row-wise softmax of float32 log-weights in float64 (0 for -inf; all-zero rows stay 0)."""
    lw = np.asarray(logw, np.float64)
    m = np.max(lw, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        w = np.exp(lw - np.where(np.isfinite(m), m, 0.0))
    w[~np.isfinite(lw)] = 0.0
    tot = w.sum(axis=1, keepdims=True)
    return np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)


def ordered_sample_probs(logw_row, n):
    """Exact probability of every ordered n-tuple under successive sampling, in log space
    (so rows whose weights underflow in linear space are still exact)."""
    lw = [float(x) for x in logw_row]
    valid = [i for i, x in enumerate(lw) if x > -math.inf]
    n = min(n, len(valid))
    out = {}
    for tup in itertools.permutations(valid, n):
        logp = 0.0
        remaining = list(valid)
        for c in tup:
            m = max(lw[i] for i in remaining)
            z = sum(math.exp(lw[i] - m) for i in remaining)
            logp += (lw[c] - m) - math.log(z)
            remaining.remove(c)
        out[tup] = math.exp(logp)
    return out


def with_replacement_probs(logw_row, n):
    w = normalised_weights(np.asarray([logw_row]))[0]
    valid = [i for i in range(len(w)) if w[i] > 0]
    return {t: float(np.prod([w[c] for c in t])) for t in itertools.product(valid, repeat=n)}


def lowest(logw_row, n):
    valid = [i for i, x in enumerate(logw_row) if x > -np.inf]
    take = valid[len(valid) - min(n, len(valid)):]
    return take + [-1] * (n - len(take))


def alias_weights(prob, alias):
    """Weights encoded by alias tables, straight from the definition."""
    n_rows, k = prob.shape
    w = np.zeros((n_rows, k))
    for r in range(n_rows):
        for i in range(k):
            w[r, i] += prob[r, i] / k
            w[r, alias[r, i]] += (1.0 - prob[r, i]) / k
    return w


# ---------------------------------------------------------------------------------------------
# validation rules and the choice of a positive (issue 8), written from their definitions
# ---------------------------------------------------------------------------------------------
POS_DOMAIN = 0x504F534954495645


def positive_choice(pos2, choice, seed, epoch, keys):
    """Column of the positive each row uses (-1: none known), one row at a time."""
    out = []
    for r in range(pos2.shape[0]):
        known = [c for c in range(pos2.shape[1]) if not math.isnan(pos2[r, c])]
        if not known:
            out.append(-1)
        elif choice == "highest":
            out.append(max(known, key=lambda c: (pos2[r, c], -c)))
        elif choice == "lowest":
            out.append(min(known, key=lambda c: (pos2[r, c], c)))
        elif len(known) == 1:
            out.append(known[0])
        else:
            st = stream_state((seed & MASK) ^ POS_DOMAIN, epoch & MASK, int(keys[r]))
            out.append(known[min(int(uniform(st, 0) * len(known)), len(known) - 1)])
    return out


def first_bad_candidate(ids, scores):
    """First (row-major) rejected candidate: ("ids", r, c) for an id < -1, ("scores", r, c) for
    +inf on a candidate that is not padding (id -1), or None."""
    for r in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            if ids is not None and ids[r, c] < 0:
                if ids[r, c] < -1:
                    return ("ids", r, c)
            elif scores[r, c] == math.inf:
                return ("scores", r, c)
    return None


def alias_tables_ok(packed, n_valid, logw, peak):
    """Whether alias tables are safe to draw from (every invariant a draw relies on)."""
    n_q, k = logw.shape
    prob = packed.view(np.float32)[:, :, 1]
    alias = packed[:, :, 0]
    for r in range(n_q):
        if np.isnan(logw[r]).any() or (logw[r] == np.inf).any():
            return False
        nv = int(np.isfinite(logw[r]).sum())
        if n_valid[r] != nv or not (0.0 <= peak[r] <= 1.0):
            return False
        for i in range(k):
            a = int(alias[r, i])
            if a < 0 or a >= k:
                return False
            if nv:
                p = float(prob[r, i])
                if not (0.0 <= p <= 1.0):
                    return False
                if p > 0 and not np.isfinite(logw[r, i]):
                    return False
                if p < 1 and not np.isfinite(logw[r, a]):
                    return False
    return True

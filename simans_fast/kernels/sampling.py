"""Numba kernels for SimANS weights, Walker/Vose alias tables and exact sampling.

Arrays in, arrays out: no Python objects, no I/O. The public layer (``simans_fast.core``) validates
input and picks the kernels.

Layout of the work: rows are split into chunks; a ``prange`` runs over chunks and each chunk owns
its scratch buffers (no buffer is shared between threads) and writes only its own output rows, so
there are no racy writes and the result does not depend on the number of threads.

Sampling without replacement is exact successive sampling (draw proportional to the weights, remove,
renormalise), done in two phases per row:

1. *rejection*: draw from the row's alias table and discard columns already chosen ("draw with
   replacement, discard duplicates, in draw order" is exactly successive sampling). At most
   ``max_reject`` duplicates are tolerated per row;
2. *exact finish*: if the row is peaked (too many duplicates) the remaining draws come from a
   two-level cumulative sum over the not-yet-chosen candidates (chosen ones set to 0 and their
   block recomputed), with weights recomputed from the log-weights
   relative to the largest remaining one (so candidates whose weight underflowed in the table
   are still drawn in the right proportions). Because the draws are i.i.d., the future of the
   rejection process given its past is successive sampling from the remaining candidates, so
   switching at any point keeps the sample exact.

Every uniform comes from the counter-based stream ``(seed, epoch, row key)`` at draw index ``j``
(``kernels.rng``); ``j`` counts every uniform consumed by the row, in both phases.
"""

import math

import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from .._numba import jit, pjit
from .borrowed import borrow, row
from .rng import draw_uniform, stream_state


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to load the cache line holding ``arr[idx]`` into its L2 cache (``idx`` an
    int or a tuple of ints; no bounds check, nothing read): a no-op for the results.

    L2, not L1 (LLVM locality 2, ``prefetcht1``): the callers prefetch whole table and id rows
    a few rows ahead, about 100 lines in flight, more than the L1 cache has miss buffers for;
    with the L1 hint the prefetches themselves stalled the draws. Measured on a 2-core EPYC
    (Zen 4), 1M queries x 200, 15 negatives: ``sampler.sample(epoch=1)`` 0.21-0.25 s against
    0.31-0.37 s with the L1 hint, and a DataLoader-sized batch of 64 scattered rows 39-46 µs
    against 58-76 µs (issue 11)."""
    if not isinstance(arr, types.Array):
        return None
    n_idx = len(idx) if isinstance(idx, types.BaseTuple) else 1
    if n_idx != arr.ndim:
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        if isinstance(idxty, types.BaseTuple):
            raw = cgutils.unpack_tuple(builder, args[1], len(idxty))
            tys = list(idxty)
        else:
            raw, tys = [args[1]], [idxty]
        inds = [context.cast(builder, v, t, types.intp) for v, t in zip(raw, tys)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, inds, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen

@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits`` (a register
    bitcast: no memory round trip, so loops using it still vectorise)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        v = args[0]
        if signature.args[0].bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif signature.args[0].bitwidth < 32:
            v = builder.sext(v, ir.IntType(32)) if signature.args[0].signed else \
                builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


# exp_shifted's flags: contraction into FMAs only (no reassociation, which could fold the
# two-constant range reduction back into one)
_EXP_FLAGS = {"contract"}

# kernel codes
GAUSSIAN = 0
LAPLACE = 1
# what to do with a row whose positive score is not finite
MISSING_NONE = 0  # leave the row as computed (all -inf: no valid candidate)
MISSING_UNIFORM = 1  # log-weight 0 on every valid candidate
BAD_ROW = -1  # logw_row's answer for a row holding an id < -1 or a +inf score (see logw_row)

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 to 9 bits: n * _LN2_HI is exact for |n| < 2**15
_LN2_LO = np.float32(0.6931471805599453 - 0.693359375)
_EXP_MIN = np.float32(-87.0)  # below this exp underflows float32's normal range: weight 0
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_C2 = np.float32(1.0 / 2.0)
_C3 = np.float32(1.0 / 6.0)
_C4 = np.float32(1.0 / 24.0)
_C5 = np.float32(1.0 / 120.0)
_C6 = np.float32(1.0 / 720.0)
_C7 = np.float32(1.0 / 5040.0)
_FLT_MAX = 3.4028234663852886e38
_NEG_INF32 = np.float32(-np.inf)


# ----------------------------------------------------------------------------------------------
# per-row building blocks
# ----------------------------------------------------------------------------------------------
@jit(inline="always")
def logw_value(s, s_pos, a, b, kernel):
    """Log-weight of one candidate as float32: -inf if the score is NaN or -inf.

    Finite results below float32's range are clamped to -FLT_MAX, so a valid candidate never
    looks invalid.
    """
    s = np.float64(s)
    if not (s > -np.inf):  # NaN or -inf
        return _NEG_INF32
    if s == np.inf:
        return _NEG_INF32
    d = s - s_pos - b
    if kernel == GAUSSIAN:
        v = -a * d * d
    else:
        v = -a * abs(d)
    if v < -_FLT_MAX:
        v = -_FLT_MAX
    return np.float32(v)


@jit(inline="always")
def _logw_scaled(srow, s_pos, b, na, gauss, idrow, has_ids, out):
    """The loop of :func:`logw_row` for a finite positive score, written without branches
    (selects only) so that LLVM vectorises it: the same arithmetic as :func:`logw_value`."""
    k = srow.shape[0]
    nv = 0
    bad = 0
    for i in range(k):
        s = np.float64(srow[i])
        idv = idrow[i] if has_ids else np.int64(0)
        ok = (s > -np.inf) & (s < np.inf) & (idv >= 0)
        bad |= np.int64(idv < -1) | np.int64((idv >= 0) & (s == np.inf))
        d = s - s_pos - b
        v = na * d * d if gauss else na * abs(d)
        v = -_FLT_MAX if v < -_FLT_MAX else v
        r = np.float32(v) if ok else _NEG_INF32
        out[i] = r
        nv += np.int64(r > _NEG_INF32)
    return nv, bad


@jit(inline="always")
def logw_row(srow, s_pos, a, b, kernel, idrow, has_ids, missing, out):
    """Fill ``out`` (float32) with the log-weights of one row; return the number of valid ones,
    or ``BAD_ROW`` (-1) when the row holds a value the public layer rejects.

    A candidate is valid when its id is >= 0 (with ``has_ids``) and its score is finite or NaN/-inf
    (then invalid: padding). Rejected: an id below -1, and a score of +inf on a candidate that
    is not padding (its log-weight would be meaningless). The row is still filled (with the
    rejected entries as -inf) so the caller only has to look at the return value.

    Each candidate's value is :func:`logw_value`'s; the loops are branch-free (selects) so they
    vectorise, and the kernel choice is hoisted out of them.
    """
    k = srow.shape[0]
    if math.isfinite(s_pos):
        if kernel == GAUSSIAN:
            nv, bad = _logw_scaled(srow, s_pos, b, -a, True, idrow, has_ids, out)
        else:
            nv, bad = _logw_scaled(srow, s_pos, b, -a, False, idrow, has_ids, out)
    else:
        uni = missing == MISSING_UNIFORM
        nv = 0
        bad = 0
        for i in range(k):
            s = np.float64(srow[i])
            idv = idrow[i] if has_ids else np.int64(0)
            ok = (s > -np.inf) & (s < np.inf) & (idv >= 0) & uni
            bad |= np.int64(idv < -1) | np.int64((idv >= 0) & (s == np.inf))
            out[i] = _F0 if ok else _NEG_INF32
            nv += np.int64(ok)
    return BAD_ROW if bad else nv


@jit(fastmath=_EXP_FLAGS)
def exp_shifted(x, m, k, out):
    """``out[i] = exp(x[i] - m)`` in float32 for ``x[i] - m <= 0``; 0 below ``-87`` or for -inf.

    Branch-free float32 arithmetic that LLVM vectorises: ``exp(y) = 2**n * exp(r)`` with
    ``n = floor(y * log2(e) + 1/2)`` and ``r = y - n ln2`` (Cody-Waite: ``ln2`` split into a
    9-bit head, so ``n * head`` is exact, and a tail), ``exp(r)`` by its Taylor polynomial of
    degree 7 (``|r| <= ln2/2``: truncation < 6e-9) in Horner form, ``2**n`` built from its
    bits. Measured against float64 ``exp`` on 3M arguments in [-87, 0]: within 0.93 float32
    ulps (the float64 polynomial with a one-constant reduction it replaced: 4.5 ulps near -87,
    3.1x slower; issue 11).
    """
    for i in range(k):
        y = x[i] - m
        ok = y >= _EXP_MIN
        y = y if ok else _EXP_MIN
        nf = np.floor(y * _LOG2E + _HALF)
        r = (y - nf * _LN2_HI) - nf * _LN2_LO
        p = _F1 + r * (_F1 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
        out[i] = (p * f32_from_bits(np.int32(nf) + np.int32(127) << np.int32(23))) if ok else _F0


@jit(inline="always")
def _max2(u, v):
    return u if u > v else v


@jit(inline="always")
def row_max(x, k):
    """Largest of ``x[:k]`` (float32, no NaN; -inf for an empty or all -inf row).

    Eight independent running maxima, so the loop is not one chain of dependent compares
    (LLVM does not vectorise a float max reduction without ``nnan``): 2.3x faster at k = 200.
    Max is exact in any order, so the result is the same as a single running maximum."""
    m0 = _NEG_INF32
    m1 = m2 = m3 = m4 = m5 = m6 = m7 = m0
    k8 = k - k % 8
    for i in range(0, k8, 8):
        m0 = _max2(x[i], m0)
        m1 = _max2(x[i + 1], m1)
        m2 = _max2(x[i + 2], m2)
        m3 = _max2(x[i + 3], m3)
        m4 = _max2(x[i + 4], m4)
        m5 = _max2(x[i + 5], m5)
        m6 = _max2(x[i + 6], m6)
        m7 = _max2(x[i + 7], m7)
    for i in range(k8, k):
        m0 = _max2(x[i], m0)
    return _max2(_max2(_max2(m0, m1), _max2(m2, m3)), _max2(_max2(m4, m5), _max2(m6, m7)))


@jit(inline="always")
def row_max_unmarked(x, k, mark, stamp):
    """Largest of ``x[i]`` over ``i < k`` with ``mark[i] != stamp`` (-inf if none), with four
    independent running maxima as :func:`row_max` (exact in any order)."""
    m0 = _NEG_INF32
    m1 = m2 = m3 = m0
    k4 = k - k % 4
    for i in range(0, k4, 4):
        m0 = _max2(x[i] if mark[i] != stamp else _NEG_INF32, m0)
        m1 = _max2(x[i + 1] if mark[i + 1] != stamp else _NEG_INF32, m1)
        m2 = _max2(x[i + 2] if mark[i + 2] != stamp else _NEG_INF32, m2)
        m3 = _max2(x[i + 3] if mark[i + 3] != stamp else _NEG_INF32, m3)
    for i in range(k4, k):
        m0 = _max2(x[i] if mark[i] != stamp else _NEG_INF32, m0)
    return _max2(_max2(m0, m1), _max2(m2, m3))


@jit(inline="always")
def build_row(lw, k, packed, q, wbuf, light, heavy, ql, qh):
    """Walker alias table of one row from its float32 log-weights.

    ``packed[i, 0]`` is the alias of column ``i`` and ``packed[i, 1]`` the bits of its float32
    keep-probability (interleaved, so a draw touches one cache line). Weights are
    ``exp(lw - max)``, ``q = k * w / sum(w)`` in float64.

    Construction: the "sweep" form of Vose's method. Light columns (``q < 1``) are filled in
    index order by the current heavy column, whose residual ``r`` shrinks by ``1 - q_light``;
    when ``r < 1`` the heavy column is itself filled by the next heavy one. Each step is written
    as selects, not branches, and the light/heavy weights are gathered beforehand, so the loop
    has no data-dependent branch and a short dependency chain. Rounding leftovers keep
    probability 1 and alias themselves; a weightless (invalid) column is always filled, so it is
    never drawn. Returns the sum of the weights (0 for an empty row).
    """
    pf = packed.view(np.float32)
    m = row_max(lw, k)
    if not (m > _NEG_INF32):
        for i in range(k):
            packed[i, 0] = i
            pf[i, 1] = _F0
        return 0.0
    exp_shifted(lw, m, k, wbuf)
    total = 0.0
    for i in range(k):
        total += np.float64(wbuf[i])
    scale = k / total
    nl = 0
    nh = 0
    for i in range(k):
        qi = np.float64(wbuf[i]) * scale
        q[i] = qi
        packed[i, 0] = i
        pf[i, 1] = _F1
        c = np.int64(qi < 1.0)
        light[nl] = i
        heavy[nh] = i
        nl += c
        nh += 1 - c
    for t in range(nl):
        ql[t] = q[light[t]]
    for t in range(nh):
        qh[t] = q[heavy[t]]
    # sentinels past the ends (read by the selects, never written as real entries)
    qh[nh] = 1.0
    heavy[nh] = heavy[nh - 1]
    ql[nl] = 0.0
    light[nl] = heavy[0]
    i = 0
    j = 0
    h = heavy[0]
    r = qh[0]
    # a heavy column whose residual dropped below 1 after the last light one still needs filling
    while i < nl or (r < 1.0 and j + 1 < nh):
        li = light[i]
        qli = ql[i]
        nxt = heavy[j + 1]
        qn = qh[j + 1]
        # fill the next light column, unless the heavy one is spent (r < 1) and another heavy
        # remains; the last heavy column absorbs rounding
        fill = (i < nl) and ((r >= 1.0) or (j + 1 >= nh))
        target = li if fill else h
        pf[target, 1] = np.float32(qli if fill else r)
        packed[target, 0] = h if fill else nxt
        r = ((r + qli) - 1.0) if fill else ((qn + r) - 1.0)
        h = h if fill else nxt
        i += np.int64(fill)
        j += 1 - np.int64(fill)
    return total


CDF_BLOCK = 16  # columns per block of the two-level CDF


@jit(inline="always")
def _block_sums(wbuf, cib, b):
    """In-block cumulative sums of block ``b`` (recomputed, never updated by subtraction)."""
    acc = 0.0
    o = b * CDF_BLOCK
    for t in range(CDF_BLOCK):
        acc += np.float64(wbuf[o + t])
        cib[o + t] = acc


@jit(inline="always")
def _block_sums_from(wbuf, cib, c):
    """In-block cumulative sums of ``c``'s block from column ``c`` on, after ``wbuf[c]``
    changed: the sums before ``c`` are unchanged, so this equals :func:`_block_sums`."""
    o = (c // CDF_BLOCK) * CDF_BLOCK
    acc = 0.0 if c == o else cib[c - 1]
    for i in range(c, o + CDF_BLOCK):
        acc += np.float64(wbuf[i])
        cib[i] = acc


@jit(inline="always")
def _block_prefix(nb, cib, bcum, b0):
    """Block prefix ``bcum[b0:]`` from the in-block totals."""
    acc = 0.0 if b0 == 0 else bcum[b0 - 1]
    for b in range(b0, nb):
        acc += cib[b * CDF_BLOCK + CDF_BLOCK - 1]
        bcum[b] = acc


@jit(inline="always")
def build_cdf(lw, k, cib, bcum, wbuf):
    """Two-level cumulative weights of one row, ``w = exp(lw - max)``.

    ``cib[i]``: cumulative weight inside column ``i``'s block of ``CDF_BLOCK`` columns;
    ``bcum[b]``: cumulative weight up to the end of block ``b``. The in-block sums of different
    blocks are independent chains, so they overlap in the CPU. ``wbuf`` (size >= nb * CDF_BLOCK)
    keeps the weights. Returns ``(nb, last)``: the number of blocks and the last column of
    positive weight (-1 for an empty row).
    """
    nb = (k + CDF_BLOCK - 1) // CDF_BLOCK
    m = row_max(lw, k)
    if not (m > _NEG_INF32):
        return nb, -1
    exp_shifted(lw, m, k, wbuf)
    for i in range(k, nb * CDF_BLOCK):
        wbuf[i] = _F0
    for b in range(nb):
        _block_sums(wbuf, cib, b)
    _block_prefix(nb, cib, bcum, 0)
    return nb, positive_span(wbuf, k)[1]  # its unused start is dead code once inlined


@jit(inline="always")
def cdf_draw(cib, bcum, nb, wbuf, k, last, u):
    """First column whose cumulative weight exceeds ``u * total``.

    The block and the column inside it are found by counting comparisons (vectorisable, no
    chain of dependent loads as in a binary search).
    """
    r = u * bcum[nb - 1]
    blk = 0
    for b in range(nb):
        blk += np.int64(bcum[b] <= r)
    if blk >= nb:
        blk = nb - 1
    r2 = r
    if blk > 0:
        r2 = r - bcum[blk - 1]
    o = blk * CDF_BLOCK
    cnt = 0
    for t in range(CDF_BLOCK):
        cnt += np.int64(cib[o + t] <= r2)
    c = o + cnt
    if c >= k or not (wbuf[c] > _F0):  # rounding at a block or row end
        c = last
    return c


@jit(inline="always")
def alias_draw(packed, pf, k, u):
    """Column drawn from an interleaved alias table with one uniform ``u`` in [0, 1).

    Branch-free: the alias is read with the probability (same cache line) and chosen by a
    select, so a table entry that misses the cache does not also cost a mispredicted branch
    that discards the draws issued after it (the loads of a row's draws stay in flight
    together)."""
    t = u * k
    c = np.int64(t)
    c = c if c < k else k - 1
    alias = np.int64(packed[c, 0])
    keep = t - c < pf[c, 1]
    return c if keep else alias


# Below this remaining total (weights are relative to a maximum of 1) the weights are
# re-exponentiated relative to the largest remaining log-weight. float32 weights keep full
# relative precision down to 2**-126 and exp_shifted flushes below e**-87 (~2**-125.5), so with
# a remaining total >= 2**-100 what is flushed or denormal weighs < 2**-25 of it: float32 level.
_REBASE = 7.888609052210118e-31  # 2**-100
# rows whose largest candidate holds more than this share of the mass skip the rejection phase
PEAKED = 0.3


# A finish whose positive weights all lie within this many consecutive columns draws by a linear
# cumulative scan of that span (no block sums to maintain): peaked rows (large ``a``) of
# score-sorted candidates keep ~10-20 adjacent candidates above float32's range, and the
# two-level CDF's upkeep per draw (one block's sums and the block prefix, two dependent chains)
# costs more than scanning them.
SPAN = 48


@jit(inline="always")
def positive_span(w, k):
    """``(lo, hi)``: the first and last ``i < k`` with ``w[i] > 0`` (``(k, -1)`` if none), by
    branch-free integer min/max reductions (vectorised)."""
    lo = np.int64(k)
    hi = np.int64(-1)
    for i in range(k):
        p = w[i] > _F0
        a = np.int64(i) if p else np.int64(k)
        z = np.int64(i) if p else np.int64(-1)
        lo = a if a < lo else lo
        hi = z if z > hi else hi
    return lo, hi


@jit(inline="always")
def _span_draws(wbuf, lo, hi, mark, stamp, cols, count, target, st, j):
    """Successive draws from the weights ``wbuf[lo:hi + 1]`` (zero outside the span): each takes
    the first column whose cumulative weight, summed afresh in float64 from ``lo``, exceeds
    ``u * total``, then gets weight 0. Stops when ``target`` columns are chosen or the remaining
    total is <= ``_REBASE`` (the caller then re-exponentiates). Returns ``(count, j)``."""
    while count < target:
        total = 0.0
        for i in range(lo, hi + 1):
            total += np.float64(wbuf[i])
        if not (total > _REBASE):
            break
        r = draw_uniform(st, np.uint64(j)) * total
        j += 1
        c = -1
        acc = 0.0
        for i in range(lo, hi + 1):
            acc += np.float64(wbuf[i])
            if acc > r:
                c = i
                break
        if c < 0:  # rounding at the end of the span: the last positive weight
            for i in range(hi, lo - 1, -1):
                if wbuf[i] > _F0:
                    c = i
                    break
        cols[count] = c
        count += 1
        mark[c] = stamp
        wbuf[c] = _F0
    return count, j


@jit
def exact_finish(lw, k, mark, stamp, cols, count, target, st, j, cib, bcum, wbuf,
                 have_w):
    """Successive sampling of ``target - count`` more columns among the unmarked valid ones.

    Weights come from ``wbuf`` when ``have_w`` (the row's weights relative to its maximum, with
    ``cib``/``bcum`` its two-level CDF from :func:`build_cdf`), else, and whenever the
    remaining total falls below 2**-100, from ``exp(lw - m)`` with ``m`` the largest remaining
    log-weight, so candidates whose weight underflowed are still drawn in the right
    proportions. When the positive weights lie within ``SPAN`` consecutive columns the draws
    scan that span (:func:`_span_draws`); otherwise they use the two-level CDF, where each
    chosen column gets weight 0 and only its block and the block prefix after it are
    recomputed. Returns ``(count, j)``.
    """
    nb = (k + CDF_BLOCK - 1) // CDF_BLOCK
    fresh = have_w
    blocks = have_w  # cib/bcum hold the row's CDF but for the blocks of the chosen columns
    if have_w:
        for t in range(count):
            wbuf[cols[t]] = _F0
    while count < target:
        if not fresh:
            m = row_max_unmarked(lw, k, mark, stamp)
            if not (m > _NEG_INF32):
                break  # nothing valid left (cannot happen when target <= n_valid)
            exp_shifted(lw, m, k, wbuf)
            for t in range(count):  # the marked columns are exactly the chosen ones
                wbuf[cols[t]] = _F0
            blocks = False
        fresh = False
        lo, hi = positive_span(wbuf, k)
        if hi - lo < SPAN:
            count, j = _span_draws(wbuf, lo, hi, mark, stamp, cols, count, target, st, j)
            blocks = False
            continue
        if blocks:
            # only the blocks of the columns already chosen changed (each recomputed from
            # scratch, so the numbers equal a full recomputation)
            b0 = nb
            for t in range(count):
                b = cols[t] // CDF_BLOCK
                b0 = b if b < b0 else b0
                _block_sums(wbuf, cib, b)
            if b0 < nb:
                _block_prefix(nb, cib, bcum, b0)
        else:
            for i in range(k, nb * CDF_BLOCK):
                wbuf[i] = _F0
            for b in range(nb):
                _block_sums(wbuf, cib, b)
            _block_prefix(nb, cib, bcum, 0)
        blocks = False
        while count < target and bcum[nb - 1] > _REBASE:
            u = draw_uniform(st, np.uint64(j))
            j += 1
            c = cdf_draw(cib, bcum, nb, wbuf, k, -1, u)
            if c < 0 or mark[c] == stamp:  # rounding landed on a removed column
                c = -1
                for i in range(k - 1, -1, -1):
                    if wbuf[i] > _F0:
                        c = i
                        break
                if c < 0:
                    break
            cols[count] = c
            count += 1
            mark[c] = stamp
            wbuf[c] = _F0
            # only this block's sums from c on and the prefix after it change
            _block_sums_from(wbuf, cib, c)
            _block_prefix(nb, cib, bcum, c // CDF_BLOCK)
    return count, j


@jit(inline="always")
def _keep(c, mark, stamp, cols, count):
    """Append column ``c`` to ``cols[:count]`` unless this row drew it already (``mark``).
    Returns the new count (unchanged for a duplicate)."""
    if mark[c] == stamp:
        return count
    mark[c] = stamp
    cols[count] = c
    return count + 1


@jit(inline="always")
def _dedupe(cand, n, target, mark, stamp, cols):
    """Keep the first occurrences of ``cand[:n]`` in draw order until ``target`` are kept.
    Returns ``(count, rejected, used)``."""
    count = 0
    used = 0
    for t in range(n):
        if count >= target:
            break
        count = _keep(cand[t], mark, stamp, cols, count)
        used += 1
    return count, used - count, used


@jit(inline="always")
def _pick(use_cdf, packed, pf, cib, bcum, nb, wbuf, k, last, u):
    if use_cdf:
        return cdf_draw(cib, bcum, nb, wbuf, k, last, u)
    return alias_draw(packed, pf, k, u)


@jit(inline="always")
def draw_row(use_cdf, packed, cib, bcum, nb, last, nv, peak, lw, k, n, replace, max_reject, st,
             mark, stamp, wbuf, cand, cols):
    """Draw ``n`` columns of one row into ``cols`` (int64, -1 padded).

    The source of the draws is the row's alias table ``packed`` (``use_cdf`` False) or its
    two-level CDF ``cib``/``bcum`` from :func:`build_cdf` (``use_cdf`` True; ``wbuf`` then holds
    the row's weights on entry and ``last`` its last column of positive weight).

    The first ``n`` uniforms are turned into columns before any is checked, so their table
    loads are independent and overlap in memory; duplicates are then dropped in draw order and
    more draws made, until ``max_reject`` duplicates send the row to the exact finish. Rows
    whose largest candidate holds more than ``PEAKED`` of the mass (``peak``) go to the exact
    finish directly (their draws would be mostly duplicates).
    """
    pf = packed.view(np.float32)
    for t in range(n):
        cols[t] = -1
    if nv <= 0 or (use_cdf and last < 0):
        return
    target = n if n < nv else nv
    count = 0
    j = 0
    if replace or target <= 1 or not (peak > PEAKED):
        for t in range(n):
            cand[t] = _pick(use_cdf, packed, pf, cib, bcum, nb, wbuf, k, last,
                            draw_uniform(st, np.uint64(t)))
        if replace:
            for t in range(n):
                cols[t] = cand[t]
            return
        count, rejected, j = _dedupe(cand, n, target, mark, stamp, cols)
        while count < target and rejected <= max_reject:
            c = _pick(use_cdf, packed, pf, cib, bcum, nb, wbuf, k, last,
                      draw_uniform(st, np.uint64(j)))
            j += 1
            kept = _keep(c, mark, stamp, cols, count)
            rejected += 1 - (kept - count)
            count = kept
    if count < target:
        exact_finish(lw, k, mark, stamp, cols, count, target, st, j, cib, bcum, wbuf,
                     use_cdf)


@jit(inline="always")
def lowest_row(lw, k, n, cols):
    """The ``n`` lowest-ranked valid columns (the last valid ones), in rank order, -1 padded."""
    for t in range(n):
        cols[t] = -1
    nv = 0
    for i in range(k):
        if lw[i] > _NEG_INF32:
            nv += 1
    take = n if n < nv else nv
    skip = nv - take
    t = 0
    for i in range(k):
        if lw[i] > _NEG_INF32:
            if skip > 0:
                skip -= 1
            else:
                cols[t] = i
                t += 1


# ----------------------------------------------------------------------------------------------
# chunk workers (serial) and their parallel / serial drivers
#
# The per-row steps (``logw_row``, ``build_row``, ``build_cdf``, ``draw_row``) are
# ``inline="always"``, and every row loop runs in a ``*_rows`` function whose arrays are
# borrowed (``kernels.borrowed``): a chunk worker allocates the scratch buffers and calls it.
# Without that, each array handed to a row step costs two atomic reference-count updates per
# row (13-14 % of a re-draw on one thread; as called functions draw_row alone took 0.25 s of a
# 0.69 s single shot, 1M rows x 200, 2 threads). With borrowed arrays the single shot's
# worker no longer needs to be inlined into its drivers either (it was, for a 1.7x gain that
# was this same counting): single shot 0.40-0.42 s against 0.58 s, re-draw 0.17-0.21 s against
# 0.20-0.24 s, bit-identical (issue 11). ``exact_finish`` stays a called function (large, rare
# at moderate ``a``).
# ----------------------------------------------------------------------------------------------
@jit
def _build_scratch(k):
    """A chunk's scratch for :func:`build_row`: ``q, wbuf, light, heavy, ql, qh``."""
    return (np.empty(k, np.float64), np.empty(k, np.float32), np.empty(k + 1, np.int64),
            np.empty(k + 1, np.int64), np.empty(k + 1, np.float64), np.empty(k + 1, np.float64))


@jit
def _draw_scratch(k, n):
    """A chunk's scratch for :func:`draw_row`: ``mark, cib, bcum, wbuf, cand, cols``
    (``mark`` all -1, as :func:`draw_row` expects)."""
    kb = k + CDF_BLOCK
    return (np.full(k, -1, np.int64), np.empty(kb, np.float64),
            np.empty(kb // CDF_BLOCK + 1, np.float64), np.empty(kb, np.float32),
            np.empty(n, np.int64), np.empty(n, np.int64))


@jit
def _logw_chunk(scores, pos, a, b, kernel, ids, has_ids, missing, out, nvalid, start, stop):
    scores, pos, ids, out, nvalid = borrow(scores), borrow(pos), borrow(ids), borrow(out), \
        borrow(nvalid)
    for r in range(start, stop):
        idrow = row(ids, r) if has_ids else row(ids, 0)
        nvalid[r] = logw_row(row(scores, r), np.float64(pos[r]), a, b, kernel, idrow, has_ids,
                             missing, row(out, r))


@pjit
def logw_par(scores, pos, a, b, kernel, ids, has_ids, missing, out, nvalid, chunk):
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _logw_chunk(scores, pos, a, b, kernel, ids, has_ids, missing, out, nvalid, start, stop)


@jit
def logw_ser(scores, pos, a, b, kernel, ids, has_ids, missing, out, nvalid, chunk):
    _logw_chunk(scores, pos, a, b, kernel, ids, has_ids, missing, out, nvalid, 0,
                scores.shape[0])


@jit
def _build_rows(logw, packed, nvalid, peak, start, stop, q, wbuf, light, heavy, ql, qh):
    logw, packed, nvalid, peak = borrow(logw), borrow(packed), borrow(nvalid), borrow(peak)
    q, wbuf, light = borrow(q), borrow(wbuf), borrow(light)
    heavy, ql, qh = borrow(heavy), borrow(ql), borrow(qh)
    k = logw.shape[1]
    for r in range(start, stop):
        lw = row(logw, r)
        nv = 0
        for i in range(k):
            if lw[i] > _NEG_INF32:
                nv += 1
        nvalid[r] = nv
        total = build_row(lw, k, row(packed, r), q, wbuf, light, heavy, ql, qh)
        peak[r] = np.float32(1.0 / total) if total > 0.0 else _F0  # the max weight is 1


@jit
def _build_chunk(logw, packed, nvalid, peak, start, stop):
    q, wbuf, light, heavy, ql, qh = _build_scratch(logw.shape[1])
    _build_rows(logw, packed, nvalid, peak, start, stop, q, wbuf, light, heavy, ql, qh)


@pjit
def build_par(logw, packed, nvalid, peak, chunk):
    n_rows = logw.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _build_chunk(logw, packed, nvalid, peak, start, stop)


@jit
def build_ser(logw, packed, nvalid, peak, chunk):
    _build_chunk(logw, packed, nvalid, peak, 0, logw.shape[0])


@jit
def _weights_tables_chunk(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid,
                          peak, start, stop):
    """Log-weights and alias table of table rows ``start:stop`` in one pass (the row's
    log-weights are still in cache when its table is built): table row ``r`` takes the
    candidates of query ``qrow[r]`` and the positive score ``pos[r]``. The same numbers as
    :func:`_logw_chunk` then :func:`_build_chunk`; a row ``logw_row`` rejects gets
    ``nvalid[r] = BAD_ROW`` and no table (the caller raises)."""
    q, wbuf, light, heavy, ql, qh = _build_scratch(logw.shape[1])
    _weights_tables_rows(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid,
                         peak, start, stop, q, wbuf, light, heavy, ql, qh)


@jit
def _weights_tables_rows(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid,
                         peak, start, stop, q, wbuf, light, heavy, ql, qh):
    scores, qrow, pos, ids = borrow(scores), borrow(qrow), borrow(pos), borrow(ids)
    logw, packed, nvalid, peak = borrow(logw), borrow(packed), borrow(nvalid), borrow(peak)
    q, wbuf, light = borrow(q), borrow(wbuf), borrow(light)
    heavy, ql, qh = borrow(heavy), borrow(ql), borrow(qh)
    k = logw.shape[1]
    for r in range(start, stop):
        s = qrow[r]
        lw = row(logw, r)
        nv = logw_row(row(scores, s), np.float64(pos[r]), a, b, kernel, row(ids, s), True,
                      missing, lw)
        nvalid[r] = nv
        if nv == BAD_ROW:
            continue
        total = build_row(lw, k, row(packed, r), q, wbuf, light, heavy, ql, qh)
        peak[r] = np.float32(1.0 / total) if total > 0.0 else _F0  # the max weight is 1


@pjit
def weights_tables_par(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid, peak,
                       chunk):
    n_rows = logw.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _weights_tables_chunk(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed,
                              nvalid, peak, start, stop)


@jit
def weights_tables_ser(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid, peak,
                       chunk):
    _weights_tables_chunk(scores, qrow, pos, a, b, kernel, ids, missing, logw, packed, nvalid,
                          peak, 0, logw.shape[0])


@jit
def _sample_chunk(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject, out,
                  start, stop):
    mark, cib, bcum, wbuf, cand, _ = _draw_scratch(packed.shape[1], n)
    _sample_rows(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject,
                 out, start, stop, mark, cib, bcum, wbuf, cand)


@jit
def _sample_rows(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject,
                 out, start, stop, mark, cib, bcum, wbuf, cand):
    packed, nvalid, peak, logw = borrow(packed), borrow(nvalid), borrow(peak), borrow(logw)
    trows, keys, out, mark = borrow(trows), borrow(keys), borrow(out), borrow(mark)
    cib, bcum, wbuf, cand = borrow(cib), borrow(bcum), borrow(wbuf), borrow(cand)
    k = packed.shape[1]
    for r in range(start, stop):
        t = trows[r]
        st = stream_state(seed, epoch, np.uint64(keys[r]))
        draw_row(False, row(packed, t), cib, bcum, 0, 0, nvalid[t], peak[t], row(logw, t), k, n,
                 replace, max_reject, st, mark, np.int64(r), wbuf, cand, row(out, r))


@pjit
def sample_par(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject, out,
               chunk):
    n_rows = trows.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _sample_chunk(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject,
                      out, start, stop)


@jit
def sample_ser(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject, out,
               chunk):
    _sample_chunk(packed, nvalid, peak, logw, trows, keys, n, seed, epoch, replace, max_reject, out, 0,
                  trows.shape[0])


@jit
def row_range(rows):
    """``(min, max)`` of a non-empty int64 array in one pass (the bounds check of a batch)."""
    lo = rows[0]
    hi = rows[0]
    for i in range(1, rows.shape[0]):
        v = rows[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


#: table entries (8 bytes: alias int32, probability float32) and int64 ids per 64-byte line
_LINE_ENTRIES = 8


@jit(inline="always")
def _table_row(indptr, keys, q, pos_seed, epoch):
    """Table row (query ``q``, its positive for ``epoch``) as :meth:`SimANSSampler._pairs`
    computes it."""
    p = indptr[q]
    cnt = indptr[q + 1] - p
    if cnt > 1:
        u = draw_uniform(stream_state(pos_seed, epoch, np.uint64(keys[q])), np.uint64(0))
        c = np.int64(u * cnt)
        p += c if c < cnt - 1 else cnt - 1
    return p


#: how many rows ahead _queries_rows prefetches the lines the draws read (_prefetch_row), the
#: row's small per-row entries (_prefetch_meta), and its entries in indptr and keys
_PREFETCH_ROWS = 2
_PREFETCH_META = 4
_PREFETCH_KEYS = 6


@jit(inline="always")
def _prefetch_row(packed, nvalid, peak, logw, has_fb, fb_index, indptr, keys, q, seed, pos_seed,
                  epoch, n, k, cand_ids, want_ids):
    """Prefetch what drawing query ``q`` will read: the table line of each of its first ``n``
    draws (column ``floor(u_t k)`` of its table row, from the same uniforms the draws use; alias
    and probability share that line) and, with ``want_ids``, its whole id row (which columns
    the draws return is known only after them), or its log-weight row when it is peaked (it
    then goes to the exact finish). A no-op for the results.

    Prefetching only the table lines the draws read, instead of the whole table row, plus the
    per-row entries a few rows earlier (:func:`_prefetch_meta`), measured on the 2-core EPYC VM,
    1M queries x 200, 15 negatives, outputs identical (issue 11): ``sampler.sample(epoch=1)``
    0.20 s against 0.22-0.31 s at a = 0.5 and 0.61-0.63 s against 0.76-0.91 s at a = 1000 (the
    log-weight rows of peaked rows were not prefetched before); 64 scattered rows 59-63 us
    against 66-79 us at a = 0.5, 118 us against 178-204 us at a = 1000."""
    p = _table_row(indptr, keys, q, pos_seed, epoch)
    if has_fb and fb_index[p] >= 0:
        return
    if nvalid[p] <= 0:
        return
    if peak[p] > PEAKED:
        for c in range(0, k, 2 * _LINE_ENTRIES):  # float32 log-weights: 16 a line
            prefetch(logw, (p, c))
        return
    st = stream_state(seed, epoch, np.uint64(keys[q]))
    for t in range(n):
        c = np.int64(draw_uniform(st, np.uint64(t)) * k)
        prefetch(packed, (p, c if c < k else k - 1, 0))
    if want_ids:
        for c in range(0, k, _LINE_ENTRIES):
            prefetch(cand_ids, (q, c))


@jit(inline="always")
def _prefetch_meta(nvalid, peak, has_fb, fb_index, pair_col, pair_fb, want_pidx, indptr, keys, q,
                   pos_seed, epoch):
    """Prefetch the per-row entries query ``q``'s draws look up first (its table row's
    ``nvalid``, ``peak``, fallback index, positive column), so that :func:`_prefetch_row` and the
    draws do not wait on them when the rows of a batch are scattered."""
    p = _table_row(indptr, keys, q, pos_seed, epoch)
    prefetch(nvalid, p)
    prefetch(peak, p)
    if has_fb:
        prefetch(fb_index, p)
    if want_pidx:
        prefetch(pair_col, p)
        prefetch(pair_fb, p)


@jit
def _queries_rows(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                  max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                  pair_fb, pidx, start, stop, mark, cib, bcum, wbuf, cand, cols):
    """Everything ``SimANSSampler.sample`` does for query rows ``rows[start:stop]`` in one pass:
    the choice of the table row (query, positive) from the positive-choice stream, the fallback
    columns, the draws, and (``want_ids``) the map from columns to document ids.

    The table row of query ``q`` is ``indptr[q] + min(floor(u * c), c - 1)`` with ``c`` its
    number of table rows and ``u`` uniform 0 of the stream ``(seed ^ POS_DOMAIN, epoch,
    keys[q])`` (only when ``c > 1``), exactly as :func:`positive_uniforms` and the sampler's
    Python code compute it; the draws are those of :func:`_sample_chunk` for that table row.
    When ``pidx`` is not empty, ``pidx[r]`` gets the column of the positive used (``pair_col``
    of the table row, -1 where ``pair_fb`` marks it unknown), as ``positive_index`` returns.
    """
    want_pidx = pidx.shape[0] > 0
    # every array the row loop hands to the inlined row steps is borrowed (no reference
    # count): otherwise each row pays two atomic operations per array (see :func:`row`)
    packed, nvalid, peak, logw = borrow(packed), borrow(nvalid), borrow(peak), borrow(logw)
    indptr, keys, rows, out = borrow(indptr), borrow(keys), borrow(rows), borrow(out)
    fb_index, fb_cols, cand_ids = borrow(fb_index), borrow(fb_cols), borrow(cand_ids)
    pair_col, pair_fb, pidx = borrow(pair_col), borrow(pair_fb), borrow(pidx)
    mark, cib, bcum, wbuf = borrow(mark), borrow(cib), borrow(bcum), borrow(wbuf)
    cand, cols = borrow(cand), borrow(cols)
    k = packed.shape[1]
    pos_seed = seed ^ np.uint64(POS_DOMAIN)
    for r in range(start, min(start + _PREFETCH_KEYS, stop)):
        prefetch(indptr, rows[r])
        prefetch(keys, rows[r])
    for r in range(start, min(start + _PREFETCH_META, stop)):
        _prefetch_meta(nvalid, peak, has_fb, fb_index, pair_col, pair_fb, want_pidx, indptr, keys,
                       rows[r], pos_seed, epoch)
    for r in range(start, min(start + _PREFETCH_ROWS, stop)):
        _prefetch_row(packed, nvalid, peak, logw, has_fb, fb_index, indptr, keys, rows[r], seed,
                      pos_seed, epoch, n, k, cand_ids, want_ids)
    for r in range(start, stop):
        q = rows[r]
        key = np.uint64(keys[q])
        p = _table_row(indptr, keys, q, pos_seed, epoch)
        if r + _PREFETCH_KEYS < stop:
            prefetch(indptr, rows[r + _PREFETCH_KEYS])
            prefetch(keys, rows[r + _PREFETCH_KEYS])
        if r + _PREFETCH_META < stop:
            _prefetch_meta(nvalid, peak, has_fb, fb_index, pair_col, pair_fb, want_pidx, indptr,
                           keys, rows[r + _PREFETCH_META], pos_seed, epoch)
        if r + _PREFETCH_ROWS < stop:
            # the lines a row a few ahead will draw from are fetched while this one is drawn,
            # so the loads of several rows overlap
            _prefetch_row(packed, nvalid, peak, logw, has_fb, fb_index, indptr, keys,
                          rows[r + _PREFETCH_ROWS], seed, pos_seed, epoch, n, k, cand_ids,
                          want_ids)
        if want_pidx:
            pidx[r] = -1 if pair_fb[p] else pair_col[p]
        f = fb_index[p] if has_fb else -1
        if f >= 0:
            for t in range(n):
                cols[t] = fb_cols[f, t]
        else:
            st = stream_state(seed, epoch, key)
            draw_row(False, row(packed, p), cib, bcum, 0, 0, nvalid[p], peak[p], row(logw, p), k,
                     n, replace, max_reject, st, mark, np.int64(r), wbuf, cand, cols)
        orow = row(out, r)
        if want_ids:
            idrow = row(cand_ids, q)
            for t in range(n):
                c = cols[t]
                orow[t] = -1 if c < 0 else np.int64(idrow[c])
        else:
            for t in range(n):
                orow[t] = cols[t]


@jit
def _queries_chunk(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                   max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                   pair_fb, pidx, start, stop):
    """:func:`_queries_rows` for ``rows[start:stop]`` with this chunk's own scratch buffers
    (allocated here, so they outlive the call that borrows them)."""
    mark, cib, bcum, wbuf, cand, cols = _draw_scratch(packed.shape[1], n)
    _queries_rows(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                  max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                  pair_fb, pidx, start, stop, mark, cib, bcum, wbuf, cand, cols)


@pjit
def sample_batch_par(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                     max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                     pair_fb, pidx, chunk):
    """:func:`_queries_chunk` over all ``rows``, chunks in parallel (``pidx`` empty: no
    positive index)."""
    n_rows = rows.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _queries_chunk(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                       max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                       pair_fb, pidx, start, stop)


@jit
def sample_batch_ser(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                     max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                     pair_fb, pidx, chunk):
    """:func:`_queries_chunk` over all ``rows`` in this thread."""
    _queries_chunk(packed, nvalid, peak, logw, indptr, keys, rows, seed, epoch, n, replace,
                   max_reject, has_fb, fb_index, fb_cols, cand_ids, want_ids, out, pair_col,
                   pair_fb, pidx, 0, rows.shape[0])


@jit
def _fused_chunk(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch,
                 replace, max_reject, out, status, start, stop):
    """:func:`_fused_rows` for rows ``start:stop`` with this chunk's own scratch buffers."""
    k = scores.shape[1]
    mark, cib, bcum, wbuf, cand, cols = _draw_scratch(k, n)
    _fused_rows(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch,
                replace, max_reject, out, status, start, stop, np.empty(k, np.float32), cib,
                bcum, wbuf, mark, cand, cols, np.zeros((1, 2), np.int32))


@jit
def _fused_rows(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch,
                replace, max_reject, out, status, start, stop, lw, cib, bcum, wbuf, mark,
                cand, cols, dummy):
    """Weights, cumulative weights, draws and id lookup for rows ``start:stop``, all in
    thread-local buffers (nothing of size n_q x k is allocated; ``dummy``: no alias table in
    the fused path). ``status[r]`` is set to 1 for a row ``logw_row`` rejects (its output row
    is all -1; the caller raises)."""
    ids, scores, pos, keys = borrow(ids), borrow(scores), borrow(pos), borrow(keys)
    out, status, lw, cib, bcum = borrow(out), borrow(status), borrow(lw), borrow(cib), \
        borrow(bcum)
    wbuf, mark, cand = borrow(wbuf), borrow(mark), borrow(cand)
    cols, dummy = borrow(cols), borrow(dummy)
    k = scores.shape[1]
    for r in range(start, stop):
        s_pos = np.float64(pos[r])
        nv = logw_row(row(scores, r), s_pos, a, b, kernel, row(ids, r), True, missing, lw)
        status[r] = np.int8(nv == BAD_ROW)
        if nv == BAD_ROW:  # the caller raises; nothing is drawn from a rejected row
            for t in range(n):
                out[r, t] = -1
            continue
        if lowest_fb and not math.isfinite(s_pos):
            lowest_row(lw, k, n, cols)
        else:
            nb, last = build_cdf(lw, k, cib, bcum, wbuf)
            st = stream_state(seed, epoch, np.uint64(keys[r]))
            peak = 1.0 / bcum[nb - 1] if last >= 0 else 0.0  # the max weight is 1
            draw_row(True, dummy, cib, bcum, nb, last, nv, peak, lw, k, n, replace, max_reject,
                     st, mark, np.int64(r), wbuf, cand, cols)
        orow = row(out, r)
        idrow = row(ids, r)
        for t in range(n):
            c = cols[t]
            orow[t] = -1 if c < 0 else np.int64(idrow[c])


@pjit
def fused_par(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch, replace,
              max_reject, out, status, chunk):
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _fused_chunk(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch,
                     replace, max_reject, out, status, start, stop)


@jit
def fused_ser(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch, replace,
              max_reject, out, status, chunk):
    _fused_chunk(ids, scores, pos, a, b, kernel, missing, lowest_fb, keys, n, seed, epoch,
                 replace, max_reject, out, status, 0, scores.shape[0])


@jit
def lowest_rows(logw, rows, n, out):
    """``lowest_row`` for the table rows ``rows`` (serial; used for fallback rows)."""
    k = logw.shape[1]
    for r in range(rows.shape[0]):
        lowest_row(logw[rows[r]], k, n, out[r])


@jit
def reconstruct_weights(packed):
    """Normalised weights encoded by alias tables:
    ``w_i = (prob_i + sum_{j: alias_j = i} (1 - prob_j)) / k``, float64 (n_rows, k)."""
    n_rows, k = packed.shape[0], packed.shape[1]
    pf = packed.view(np.float32)
    out = np.zeros((n_rows, k), np.float64)
    for r in range(n_rows):
        for i in range(k):
            p = np.float64(pf[r, i, 1])
            out[r, i] += p
            out[r, packed[r, i, 0]] += 1.0 - p
        for i in range(k):
            out[r, i] /= k
    return out


# ----------------------------------------------------------------------------------------------
# validation scans (the public layer raises; these only find the first offending entry)
# ----------------------------------------------------------------------------------------------
CAND_OK = 0
CAND_ID_BELOW = 1  # an id below -1
CAND_SCORE_INF = 2  # a +inf score on a candidate that is not padding


@jit
def _candidate_chunk(ids, scores, has_ids, start, stop, found):
    k = scores.shape[1]
    for r in range(start, stop):
        for i in range(k):
            code = CAND_OK
            if has_ids and ids[r, i] < 0:
                if ids[r, i] < -1:
                    code = CAND_ID_BELOW
            elif np.float64(scores[r, i]) == np.inf:
                code = CAND_SCORE_INF
            if code != CAND_OK:
                found[0] = code
                found[1] = r
                found[2] = i
                return


@pjit
def candidate_errors_par(ids, scores, has_ids, chunk, found):
    """First (in row-major order) rejected candidate: ``found[c] = (code, row, col)`` per chunk."""
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _candidate_chunk(ids, scores, has_ids, start, stop, found[ci])


@jit
def candidate_errors_ser(ids, scores, has_ids, chunk, found):
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in range(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _candidate_chunk(ids, scores, has_ids, start, stop, found[ci])


# codes of check_tables_*
TAB_OK = 0
TAB_LOGW_NAN = 1  # a NaN log-weight
TAB_LOGW_POSINF = 2  # a +inf log-weight
TAB_NVALID = 3  # n_valid differs from the number of finite log-weights
TAB_PEAK = 4  # peak outside [0, 1] (or NaN)
TAB_ALIAS_RANGE = 5  # an alias outside 0..k-1
TAB_PROB = 6  # a keep-probability outside [0, 1] (or NaN)
TAB_INVALID_DRAWN = 7  # an invalid column can be drawn (kept, or the alias of a column)


@jit
def _tables_chunk(packed, nvalid, peak, logw, start, stop, found):
    k = packed.shape[1]
    pf = packed.view(np.float32)
    for r in range(start, stop):
        code = TAB_OK
        col = -1
        nv = 0
        for i in range(k):
            x = logw[r, i]
            if np.isnan(x):
                code = TAB_LOGW_NAN
                col = i
                break
            if x == np.inf:
                code = TAB_LOGW_POSINF
                col = i
                break
            if x > _NEG_INF32:
                nv += 1
        if code == TAB_OK and nvalid[r] != nv:
            code = TAB_NVALID
        p = peak[r]
        if code == TAB_OK and not (p >= _F0 and p <= _F1):
            code = TAB_PEAK
        if code == TAB_OK:
            for i in range(k):
                al = packed[r, i, 0]
                if al < 0 or al >= k:
                    code = TAB_ALIAS_RANGE
                    col = i
                    break
                if nv > 0:
                    q = pf[r, i, 1]
                    if not (q >= _F0 and q <= _F1):
                        code = TAB_PROB
                        col = i
                        break
                    if (q > _F0 and not (logw[r, i] > _NEG_INF32)) or \
                            (q < _F1 and not (logw[r, al] > _NEG_INF32)):
                        code = TAB_INVALID_DRAWN
                        col = i
                        break
        if code != TAB_OK:
            found[0] = code
            found[1] = r
            found[2] = col
            return


@pjit
def check_tables_par(packed, nvalid, peak, logw, chunk, found):
    """Structural check of alias tables (everything a draw relies on not to read out of bounds
    or return an invalid column): first failure per chunk in ``found[c] = (code, row, col)``."""
    n_rows = packed.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _tables_chunk(packed, nvalid, peak, logw, start, stop, found[ci])


@jit
def check_tables_ser(packed, nvalid, peak, logw, chunk, found):
    n_rows = packed.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in range(n_chunks):
        start = np.int64(ci) * chunk
        stop = min(start + chunk, n_rows)
        _tables_chunk(packed, nvalid, peak, logw, start, stop, found[ci])


# ----------------------------------------------------------------------------------------------
# choice of one positive among several
# ----------------------------------------------------------------------------------------------
from .._config import POS_DOMAIN  # noqa: E402  "POSITIVE" (the registry): the positive-choice stream


@jit
def positive_uniforms(seed, epoch, keys, out):
    """``out[i]``: uniform 0 of the stream ``(seed ^ POS_DOMAIN, epoch, keys[i])``, the draw that
    picks the positive of query ``keys[i]`` at ``epoch``."""
    for i in range(keys.shape[0]):
        st = stream_state(seed ^ np.uint64(POS_DOMAIN), epoch, keys[i])
        out[i] = draw_uniform(st, np.uint64(0))

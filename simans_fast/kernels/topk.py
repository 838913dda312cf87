"""Numba kernels for exact top-k selection over streamed score blocks, and for rescoring.

Owner: the "topk" engineer (simans_fast/candidates.py is the public layer on top of these).

Keys
----
Every candidate is packed into one ``uint64`` key whose ascending order is the ranking order
"score descending, then document id ascending"::

    key = (descending_score_bits << 32) | doc_id           (doc_id < 2**32)

``descending_score_bits`` is the float32 score mapped to a uint32 whose unsigned order is the
reverse of the float order (``-0.0`` is folded onto ``+0.0`` first, so the two compare equal as
floats do). The top k of a row are its k *smallest* keys, keys are unique (one per document),
and ties between equal scores are broken by the lower document id with no extra comparison.

Selection state (one row per query of the current query block)
--------------------------------------------------------------
A key buffer ``keys[r, :cap + CHUNK]``, a fill count, an entry threshold ``thr[r]`` and a
"guess" flag. A score enters the buffer only if it is strictly above the threshold; when the
buffer holds ``cap`` (about 2k) keys it is compacted to its best k (quickselect) and the
threshold becomes the k-th best score. Equal scores cannot enter because documents are scanned
in increasing id order, so a later document loses every tie against the current k-th: the result
does not depend on block sizes or thread counts.

The scan of a score row builds a 64-bit mask of "score > threshold" per chunk of 64 scores with
SIMD compares; empty masks (almost all of them once the threshold has settled) cost a fraction of
a nanosecond per score. Excluded documents are cleared from the mask (sorted per-query lists,
one forward-moving pointer), dense masks are appended branch-free, sparse ones bit by bit.

Threshold guess: in a random order about ``k * m / n`` of the final top k are among the first m
documents, so at a compaction the threshold may be raised to the score of rank
``k f + z sqrt(k f (1 - f)) + 1`` (``f = m / n``, ``z = 5``), which roughly halves the candidates
inserted. The guess is verified at the end (:func:`finalize`: the k-th best kept score must be
above the final threshold, so no skipped document can belong to the top k); rows that fail are
recomputed without guessing by the caller, so results are always exact.

GEMM + selection (:func:`gemm_select`) runs per thread on its own query sub-block, one
single-threaded BLAS ``sgemm`` per tile of corpus rows, selection while the tile is in cache,
threads never waiting for each other. Every call has the same zero-padded shape (``sub`` query
rows, ``tile`` corpus rows, ``d``) and every row a position in it fixed by the caller, because
a BLAS rounds an element differently depending on the shape of the call and the element's place
in it: the scores are then a function of the data alone. :func:`gemm_block` makes the same calls
one after the other into a score block and :func:`select_block` is the selection alone, for
BLAS libraries that cannot be limited to one thread.

All kernels take and return arrays only; the public layer validates inputs.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import get_thread_id, prange, types
from numba.extending import get_cython_function_address, intrinsic

from .._numba import FASTMATH, jit, pjit

# numba expects a (mutable) set for fastmath flags
_FM = set(FASTMATH)

_SIGN = np.uint64(0x80000000)
_M32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
#: key value marking an empty slot of the output
EMPTY_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
#: scan chunk length of the vectorised threshold test (bits of one uint64 mask)
CHUNK = 64
#: set bits from which a chunk is appended branch-free instead of bit by bit
DENSE = 12


@intrinsic
def _cttz(typingctx, x):
    """Count trailing zeros of a non-zero uint64 (LLVM ``cttz``, one instruction on x86-64)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@intrinsic
def _half_to_float(typingctx, x):
    """float32 value of a float16 given by its bits (uint16): LLVM ``fpext half``, exact."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@jit(inline="always")
def _key(bits, doc):
    """Key of a float32 score (its bits as uint32) and a document id; branch-free."""
    b = np.uint64(bits)
    b = b & (np.uint64(0) - np.uint64(b != _SIGN))  # -0.0 -> +0.0
    # ascending-order bits: flip everything for negatives, only the sign for positives
    flip = (np.uint64(0) - (b >> np.uint64(31))) | _SIGN
    asc = (b ^ flip) & _M32
    return ((_M32 ^ asc) << _SHIFT) | np.uint64(doc)


@jit(inline="always")
def _bits_from_key(key):
    """Inverse of the key's score part: float32 bits (as uint64) of a key."""
    asc = _M32 ^ (key >> _SHIFT)
    if asc & _SIGN:
        return asc ^ _SIGN
    return _M32 ^ asc


@jit
def _nth_smallest(a, n, nth):
    """Rearrange ``a[:n]`` (distinct uint64) so ``a[nth]`` is the value of rank nth (0-based),
    smaller values before it and larger after it (quickselect, median-of-three pivot; after 64
    rounds, which random data never needs, the remaining range is sorted instead)."""
    lo = 0
    hi = n - 1
    rounds = 0
    while hi > lo:
        rounds += 1
        if rounds > 64:
            a[lo : hi + 1] = np.sort(a[lo : hi + 1])
            return
        mid = lo + (hi - lo) // 2
        # median of three -> a[mid]
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if nth <= j:
            hi = j
        elif nth >= i:
            lo = i
        else:
            return


@jit(inline="always")
def _compact(kr, c, k, t_prev, guess, fb, fv, pos, n_tot, z):
    """Compact a full key buffer to its best k; returns (k, threshold, guess flag).

    The safe threshold is the k-th best score of the buffer. With ``z > 0`` it may be raised to
    an *estimate* of the final k-th best: after ``pos`` of ``n_tot`` documents, in random order,
    about ``k * pos / n_tot`` of the final top k have been seen, so the score of rank
    ``k f + z sqrt(k f (1 - f)) + 1`` (``f = pos / n_tot``) is below the final k-th best unless
    the order is far from random. Scores at or below the threshold are skipped from then on, so
    a wrong guess can lose candidates: ``guess`` records that the threshold is a guess, and
    :func:`finalize` checks at the end that the k-th best kept score is above the threshold
    (then no skipped document can be in the top k); rows failing the check are recomputed
    without guessing by the caller.
    """
    _nth_smallest(kr, c, k - 1)
    fb[0] = np.uint32(_bits_from_key(kr[k - 1]))
    t = fv[0]
    # the buffer holds every seen document scoring above t_prev: if its k-th best is above
    # t_prev, its best k are the exact best k seen so far and the state is exact again
    if t > t_prev:
        guess = False
    if z > 0.0 and pos < n_tot:
        f = pos / n_tot
        j = np.int64(np.ceil(k * f + z * np.sqrt(k * f * (1.0 - f)))) + 1
        if j < k:
            _nth_smallest(kr, k, j - 1)
            fb[0] = np.uint32(_bits_from_key(kr[j - 1]))
            ta = fv[0]
            if ta > t:
                t = ta
                guess = True
    if t < t_prev:  # never lower the threshold
        t = t_prev
    return k, t, guess


@jit(inline="always")
def _take(m, row, rbits, j0, w, d0, kr, c, t, guess, k, cap, excl_ids, ep, ehi, fb, fv, n_tot,
          z):
    """Append the documents of a chunk whose bits are set in ``m``; see :func:`_scan_row`."""
    one = np.uint64(1)
    if ep < ehi:
        while ep < ehi and excl_ids[ep] < d0:
            ep += 1
        e = ep
        while e < ehi and excl_ids[e] < d0 + w:
            m &= ~(one << np.uint64(excl_ids[e] - d0))
            e += 1
    if _popcount(m) >= DENSE:
        for j in range(w):
            kr[c] = _key(rbits[j0 + j], d0 + j)
            c += np.int64((m >> np.uint64(j)) & one)
        if c >= cap:
            c, t, guess = _compact(kr, c, k, t, guess, fb, fv, d0 + w, n_tot, z)
    else:
        while m != 0:
            j = np.int64(_cttz(m))
            m &= m - one
            # t may have risen since the mask was built (compaction below)
            if row[j0 + j] > t:
                kr[c] = _key(rbits[j0 + j], d0 + j)
                c += 1
                if c >= cap:
                    c, t, guess = _compact(kr, c, k, t, guess, fb, fv, d0 + j + 1, n_tot, z)
    return c, t, guess, ep


@jit(fastmath=_FM)
def _scan_row(row, rbits, col0, kr, st, thr, k, cap, excl_ids, ehi, fb, fv, n_tot, z):
    """Merge one row of scores into one row's state (see :func:`select_block`).

    ``kr`` has ``cap + CHUNK`` slots; the buffer is compacted to its best ``k`` once it holds
    ``cap`` keys or more. Each chunk of CHUNK scores is compared with the threshold at once into
    a bit mask (SIMD compares), so a rejected score costs a fraction of a nanosecond. Excluded
    documents are cleared from the mask (``excl_ids[ep:ehi]`` is sorted and documents arrive in
    increasing order, so the pointer ``ep`` only moves forward). A dense mask (early blocks) is
    appended branch-free; a sparse one is walked bit by bit with count-trailing-zeros.
    """
    c = st[0]
    ep = st[1]
    guess = st[2] != 0
    t = thr[0]
    nc = row.shape[0]
    j0 = 0
    # keep this loop shape: a fixed-length mask loop over full chunks compiles to SIMD
    while j0 + CHUNK <= nc:
        m = np.uint64(0)
        for j in range(CHUNK):
            m |= np.uint64(row[j0 + j] > t) << np.uint64(j)
        if m != 0:
            c, t, guess, ep = _take(m, row, rbits, j0, CHUNK, col0 + j0, kr, c, t, guess, k,
                                    cap, excl_ids, ep, ehi, fb, fv, n_tot, z)
        j0 += CHUNK
    w = nc - j0
    if w > 0:
        m = np.uint64(0)
        for j in range(w):
            m |= np.uint64(row[j0 + j] > t) << np.uint64(j)
        if m != 0:
            c, t, guess, ep = _take(m, row, rbits, j0, w, col0 + j0, kr, c, t, guess, k, cap,
                                    excl_ids, ep, ehi, fb, fv, n_tot, z)
    st[0] = c
    st[1] = ep
    st[2] = 1 if guess else 0
    thr[0] = t


@jit
def _l2_row(row, qi, c_sq, c0):
    """In place: ``row[j] = 2 row[j] - qi - c_sq[c0 + j]`` (``-||q - c||^2`` from the inner
    product and the squared norms). No fast-math (no contraction into an FMA): both score paths
    call this one function, so they round identically."""
    two = np.float32(2.0)
    for j in range(row.shape[0]):
        row[j] = two * row[j] - qi - c_sq[c0 + j]


@pjit
def select_block(scores, bits, slots, lead, nc, col0, keys, state, thr, k, excl_indptr,
                 excl_ids, row0, n_tot, z, l2, q_sq, c_sq):
    """Merge one block of scores (computed by :func:`gemm_block`) into the per-row top-k state.

    Parameters
    ----------
    scores : (n_pad, width) float32, C-contiguous
        Padded score block: row ``p`` belongs to query ``slots[p]`` of the block (``-1``: a
        padding row, skipped); columns ``lead .. lead + nc - 1`` are corpus rows
        ``col0 .. col0 + nc - 1``.
    bits : (n_pad, width) uint32
        The same memory viewed as uint32.
    slots : (n_pad,) int64
        Query (row of ``keys`` / ``state`` / ``thr``) of each padded row, or -1.
    keys : (nb, cap + CHUNK) uint64
        Key buffers (modified in place), ``cap > k``.
    state : (nb, 3) int64
        Per row: number of filled keys; position in ``excl_ids`` of the next excluded id not yet
        passed; 1 if the threshold is a guess (see :func:`_compact`). Start a query block with
        ``(0, excl_indptr[row0 + row], 0)``. Modified in place.
    thr : (nb, 1) float32
        Entry threshold per row (modified in place); start with ``-inf``.
    k : int
        Number of candidates kept.
    excl_indptr, excl_ids : int64 arrays
        CSR of excluded document ids (sorted within each row), indexed by global row.
    row0 : int
        Global row index of the block's first query.
    n_tot : float
        Number of documents in the whole corpus.
    z : float
        Margin of the threshold guess (0: never guess).
    l2 : bool
        Turn inner products into ``-||q - c||^2`` with ``q_sq`` (nb,) and ``c_sq`` (nc,).
    """
    n_pad = scores.shape[0]
    cap = keys.shape[1] - CHUNK
    for p in prange(n_pad):
        g = slots[p]
        if g < 0:
            continue
        fb = np.empty(1, np.uint32)  # scratch for the float32 <- bits conversion
        fv = fb.view(np.float32)
        row = scores[p, lead : lead + nc]
        if l2:
            _l2_row(row, q_sq[g], c_sq, 0)
        _scan_row(row, bits[p, lead : lead + nc], col0, keys[g], state[g], thr[g], k, cap,
                  excl_ids, excl_indptr[row0 + g + 1], fb, fv, n_tot, z)


# ------------------------------------------------------------------ fused GEMM + selection

_VP = ctypes.c_void_p
#: BLAS sgemm (SciPy's Fortran-ABI export). Passed to the kernel as an argument: a ctypes
#: global would be baked into the machine code and stop Numba from caching the kernel.
SGEMM = ctypes.CFUNCTYPE(None, *([_VP] * 13))(
    get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))


@jit(inline="always")
def _tile_span(t, tile, lead, nc):
    """Corpus rows ``lo:hi`` (of the block) of padded tile ``t`` and their offset in the tile."""
    lo = max(0, t * tile - lead)
    hi = min(nc, (t + 1) * tile - lead)
    return lo, hi, lo + lead - t * tile


@jit(inline="always")
def _sgemm_tile(sgemm, qpad, q0, corpus, edge, t, tile, lead, nc, out, ldc, ints, alpha, beta,
                tr):
    """One BLAS call of the fixed shape ``(sub, tile, d)``: scores of the ``sub`` padded query
    rows from ``q0`` against padded tile ``t``, written column-major as ``out`` (``ldc``).

    A full tile is read in place; a partial one (first or last of the block) from its
    zero-padded copy in ``edge``, so the shape, and each corpus row's position in the call,
    never change."""
    lo, hi, s0 = _tile_span(t, tile, lead, nc)
    # column-major view: S^T (tile x sub) = C_tile^T (tile x d) . Q_sub (d x sub), i.e. the
    # row-major (sub x tile) block S = Q_sub . C_tile^T
    if hi - lo == tile:
        a = corpus[lo:].ctypes
    elif t == 0:
        a = edge[0].ctypes
    else:
        a = edge[1].ctypes
    sgemm(tr[0:].ctypes, tr[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes,
          alpha.ctypes, a, ints[3:].ctypes, qpad[q0:].ctypes, ints[3:].ctypes, beta.ctypes,
          out.ctypes, ldc.ctypes)
    return lo, hi, s0


@jit(inline="always")
def _blas_args(tile, sub, d):
    # Fortran BLAS takes every argument by pointer
    ints = np.empty(4, np.int32)
    ints[0] = tile
    ints[1] = sub
    ints[2] = d
    ints[3] = d
    alpha = np.ones(1, np.float32)
    beta = np.zeros(1, np.float32)
    tr = np.empty(2, np.uint8)
    tr[0] = 84  # 'T'
    tr[1] = 78  # 'N'
    return ints, alpha, beta, tr


@pjit
def gemm_select(qpad, slots, corpus, edge, lead, col0, keys, state, thr, k, excl_indptr,
                excl_ids, row0, n_tot, z, n_split, sbuf, sbits, sub, tile, l2, q_sq, c_sq,
                select, sgemm):
    """Scores of a query block against a block of corpus rows, merged into the top-k state,
    with no ``n_queries x n_docs`` matrix and no synchronisation between threads.

    Every BLAS call has the same shape, ``sub`` padded query rows by ``tile`` padded corpus
    rows by ``d``, and every query and corpus row sits at a position in it fixed by the caller
    (its global row index modulo ``sub`` / ``tile``): the bits of a score depend on the data
    alone, never on the thread count or on the other rows in the block (BLAS kernels round an
    element differently depending on the call's shape and on the element's position in it).

    Tasks are (query sub-block, split) pairs handed to threads dynamically (call under
    ``numba.parallel_chunksize(1)``): split ``s`` takes the tiles ``t`` with
    ``t % n_split == s`` and merges them into its own state rows ``s * nb + row``, so a few
    queries still keep every thread busy; :func:`finalize` merges the splits. A thread runs one
    single-threaded BLAS ``sgemm`` per tile into its own buffer ``sbuf[thread]`` and merges it
    into the state while it is still in cache. Call with the BLAS limited to one thread.

    Parameters
    ----------
    qpad : (n_sub * sub, d) float32, C-contiguous
        Padded queries: row ``p`` is query ``slots[p]`` of the block, or zeros (``-1``).
    slots : (n_sub * sub,) int64
    corpus : (nc, d) float32, C-contiguous
        Rows ``col0 .. col0 + nc - 1`` of the corpus; corpus row ``i`` of the block sits at
        padded position ``lead + i`` (tiles of ``tile`` padded positions).
    edge : (2, tile, d) float32
        Zero-padded copies of the block's first (``edge[0]``) and last (``edge[1]``) tile when
        they are partial.
    keys, state, thr, k, excl_indptr, excl_ids, row0, n_tot, z
        As in :func:`select_block`; ``keys``, ``state`` and ``thr`` have ``n_split * nb`` rows.
    sbuf : (n_threads, sub * tile) float32
        Per-thread score buffers; ``sbits`` is the same memory viewed as uint32.
    l2 : bool
        Turn inner products into ``-||q - c||^2`` with ``q_sq`` (nb,) and ``c_sq`` (nc,).
    select : bool
        ``False`` runs the GEMMs only (the floor measured by the benchmarks).
    sgemm : ctypes function
        :data:`SGEMM`.
    """
    n_pad, d = qpad.shape
    nc = corpus.shape[0]
    cap = keys.shape[1] - CHUNK
    nsub = n_pad // sub
    nb = keys.shape[0] // n_split
    ntile = (lead + nc + tile - 1) // tile
    for task in prange(nsub * n_split):
        b = task // n_split
        s = task - b * n_split
        tid = get_thread_id()
        srow = sbuf[tid]
        brow = sbits[tid]
        q0 = b * sub
        ints, alpha, beta, tr = _blas_args(tile, sub, d)
        ldc = ints[0:1]
        fb = np.empty(1, np.uint32)
        fv = fb.view(np.float32)
        for t in range(s, ntile, n_split):
            lo, hi, s0 = _sgemm_tile(sgemm, qpad, q0, corpus, edge, t, tile, lead, nc, srow,
                                     ldc, ints, alpha, beta, tr)
            if not select:
                continue
            n = hi - lo
            for r in range(sub):
                g = slots[q0 + r]
                if g < 0:
                    continue
                row = srow[r * tile + s0 : r * tile + s0 + n]
                if l2:
                    _l2_row(row, q_sq[g], c_sq, lo)
                v = s * nb + g
                _scan_row(row, brow[r * tile + s0 : r * tile + s0 + n], col0 + lo, keys[v],
                          state[v], thr[v], k, cap, excl_ids, excl_indptr[row0 + g + 1], fb,
                          fv, n_tot, z)


@jit
def gemm_block(qpad, corpus, edge, lead, scores, sub, tile, sgemm):
    """The scores of :func:`gemm_select`, computed by the same BLAS calls (same shapes, same
    positions), one after the other, into the padded block ``scores`` of shape
    ``(n_pad, n_tiles * tile)`` (row ``p``: padded query row ``p``; column ``lead + i``: corpus
    row ``i``), for :func:`select_block`. Used when the BLAS cannot be limited to one thread
    (it then runs each call with its own threads)."""
    n_pad, d = qpad.shape
    nc = corpus.shape[0]
    width = scores.shape[1]
    ntile = (lead + nc + tile - 1) // tile
    flat = scores.reshape(-1)
    ints, alpha, beta, tr = _blas_args(tile, sub, d)
    ldc = np.empty(1, np.int32)
    ldc[0] = width
    for q0 in range(0, n_pad, sub):
        for t in range(ntile):
            _sgemm_tile(sgemm, qpad, q0, corpus, edge, t, tile, lead, nc,
                        flat[q0 * width + t * tile:], ldc, ints, alpha, beta, tr)


@jit
def _radix_sort(a, tmp):
    """Sort the uint64 array ``a`` in place (LSD radix, 8-bit digits; ``tmp`` same length).
    Digits shared by every key are skipped (e.g. the high bytes of small document ids)."""
    n = a.shape[0]
    counts = np.empty(256, np.int64)
    src = a
    dst = tmp
    for p in range(8):
        shift = np.uint64(8 * p)
        counts[:] = 0
        for i in range(n):
            counts[np.int64((src[i] >> shift) & np.uint64(255))] += 1
        if counts[np.int64((src[0] >> shift) & np.uint64(255))] == n:
            continue
        tot = 0
        for b in range(256):
            c = counts[b]
            counts[b] = tot
            tot += c
        for i in range(n):
            v = src[i]
            dig = np.int64((v >> shift) & np.uint64(255))
            dst[counts[dig]] = v
            counts[dig] += 1
        src, dst = dst, src
    if src is not a:  # odd number of passes: the result is in tmp
        a[:] = src


@jit(inline="always")
def _decode(key, fb, fv):
    """(document id, score) of a key."""
    fb[0] = np.uint32(_bits_from_key(key))
    return np.int64(key & _M32), fv[0]


@jit(inline="always")
def _write_sorted(kr, c, k, ids_row, scores_row, fb, fv):
    """Sort the ``c <= k`` keys ``kr[:c]`` and write them as (id, score) into a row of ``k``,
    padded with -1 / -inf."""
    if c > 0:
        tmp = np.empty(c, np.uint64)
        _radix_sort(kr[:c], tmp)
    for j in range(c):
        d, v = _decode(kr[j], fb, fv)
        ids_row[j] = d
        scores_row[j] = v
    for j in range(c, k):
        ids_row[j] = -1
        scores_row[j] = -np.inf


@pjit
def finalize(keys, state, thr, k, n_split, ids, scores, ok):
    """Merge each row's splits, sort the kept keys and write the best ``k`` as ``ids`` (int64)
    and ``scores`` (float32), padded with -1 / -inf.

    ``keys``, ``state`` and ``thr`` have ``n_split * nb`` rows (split ``s`` of row ``r`` is row
    ``s * nb + r``; each holds the top k of its own documents). ``ok[r]`` is 0 when a split's
    threshold was a guess that its result does not confirm (its k-th best kept score must be
    above the threshold); such rows must be recomputed.
    """
    nb = ids.shape[0]
    for r in prange(nb):
        fb = np.empty(1, np.uint32)
        fv = fb.view(np.float32)
        good = True
        # best k of every split, each checked against its own threshold
        for s in range(n_split):
            v = s * nb + r
            c = state[v, 0]
            kr = keys[v]
            if c > k:
                _nth_smallest(kr, c, k - 1)
                c = k
                state[v, 0] = k
            if state[v, 2] != 0:
                if c < k:
                    good = False
                else:
                    top = kr[0]  # the largest of the k kept keys is the k-th best
                    for j in range(1, k):
                        if kr[j] > top:
                            top = kr[j]
                    _, worst = _decode(top, fb, fv)
                    if not worst > thr[v, 0]:
                        good = False
        if n_split == 1:
            kr = keys[r]
            c = state[r, 0]
        else:
            tot = 0
            for s in range(n_split):
                tot += state[s * nb + r, 0]
            kr = np.empty(tot, np.uint64)
            c = 0
            for s in range(n_split):
                v = s * nb + r
                cv = state[v, 0]
                kr[c : c + cv] = keys[v, :cv]
                c += cv
            if c > k:
                _nth_smallest(kr, c, k - 1)
                c = k
        _write_sorted(kr, c, k, ids[r], scores[r], fb, fv)
        ok[r] = 1 if good else 0


@jit(inline="always")
def _finish(acc, nn, mode):
    if mode == 1:  # cosine: queries normalised by the caller, divide by the corpus norm
        if nn > 0.0:
            return np.float32(acc / np.sqrt(nn))
        return np.float32(0.0)
    return np.float32(acc)


@pjit(fastmath=_FM)
def rescore_dense(queries, corpus, ids, mode, out):
    """Scores of given candidates, products summed in float64.

    ``mode`` 0: ``<q, c>``; 1: cosine (``queries`` already row-normalised, corpus rows divided by
    their norm, all-zero rows score 0); 2: ``-||q - c||^2``. ``out`` is ``-inf`` where
    ``ids == -1``.
    """
    nq, kk = ids.shape
    d = queries.shape[1]
    for i in prange(nq):
        for j in range(kk):
            doc = ids[i, j]
            if doc < 0:
                out[i, j] = -np.inf
                continue
            acc = 0.0
            nn = 0.0
            if mode == 2:
                for t in range(d):
                    diff = np.float64(queries[i, t]) - np.float64(corpus[doc, t])
                    acc -= diff * diff
            else:
                for t in range(d):
                    c = np.float64(corpus[doc, t])
                    acc += np.float64(queries[i, t]) * c
                    nn += c * c
            out[i, j] = _finish(acc, nn, mode)


@pjit(fastmath=_FM)
def rescore_f16(queries, corpus_u16, ids, mode, out):
    """:func:`rescore_dense` for a float16 corpus passed as its uint16 bit view (values
    converted exactly to float32)."""
    nq, kk = ids.shape
    d = queries.shape[1]
    for i in prange(nq):
        for j in range(kk):
            doc = ids[i, j]
            if doc < 0:
                out[i, j] = -np.inf
                continue
            acc = 0.0
            nn = 0.0
            if mode == 2:
                for t in range(d):
                    c = np.float64(_half_to_float(corpus_u16[doc, t]))
                    diff = np.float64(queries[i, t]) - c
                    acc -= diff * diff
            else:
                for t in range(d):
                    c = np.float64(_half_to_float(corpus_u16[doc, t]))
                    acc += np.float64(queries[i, t]) * c
                    nn += c * c
            out[i, j] = _finish(acc, nn, mode)


@pjit(fastmath=_FM)
def block_to_f32(src, dst, normalize):
    """``dst[:] = src`` as float32 (``src`` float32 or float64), rows scaled to unit norm when
    ``normalize`` (all-zero rows stay zero)."""
    n, d = src.shape
    for i in prange(n):
        ss = 0.0
        for j in range(d):
            v = np.float32(src[i, j])
            dst[i, j] = v
            ss += np.float64(v) * np.float64(v)
        if normalize and ss > 0.0:
            inv = np.float32(1.0 / np.sqrt(ss))
            for j in range(d):
                dst[i, j] *= inv


@pjit(fastmath=_FM)
def block_f16_to_f32(src_u16, dst, normalize):
    """:func:`block_to_f32` for a float16 source given as its uint16 bit view (exact
    conversion; ``vcvtph2ps`` on x86-64 with F16C)."""
    n, d = src_u16.shape
    for i in prange(n):
        ss = 0.0
        for j in range(d):
            v = _half_to_float(src_u16[i, j])
            dst[i, j] = v
            ss += np.float64(v) * np.float64(v)
        if normalize and ss > 0.0:
            inv = np.float32(1.0 / np.sqrt(ss))
            for j in range(d):
                dst[i, j] *= inv


@jit
def nonfinite_rows(bits, bad):
    """``bad[i] = 1`` where row ``i`` of a float32 matrix (given as its uint32 bit view) holds a
    NaN or an infinity, else 0 (integer tests: no floating-point flags can fold them away).
    Serial: it runs at memory speed, once per block."""
    n, d = bits.shape
    e = np.uint32(0x7F800000)
    for i in range(n):
        m = np.uint32(0)
        for j in range(d):
            m |= np.uint32((bits[i, j] & e) == e)
        bad[i] = m


@jit
def sq_norms(x, out):
    """``out[i] = sum_j x[i, j]^2`` summed in float64 in index order, rounded to float32: the
    same bits for a row wherever it sits in a block. Serial (memory speed, once per block)."""
    n, d = x.shape
    for i in range(n):
        acc = 0.0
        for j in range(d):
            v = np.float64(x[i, j])
            acc += v * v
        out[i] = np.float32(acc)


# ------------------------------------------------------- bfloat16 first pass (certified top-k)


@pjit
def bf16_norms(x, x_u16, rounded2, error2, sq2):
    """Squared norms, summed in float64, of the bfloat16 rows ``x~`` (``x_u16``: their bits),
    of the rounding errors ``x - x~`` and of the float32 rows ``x`` themselves:
    ``rounded2[i]``, ``error2[i]``, ``sq2[i]`` (float64). ``x - x~`` is exact in float32 (it is
    the low half of ``x``'s significand), so only the float64 sums round."""
    n, d = x.shape
    sh = np.uint32(16)
    for i in prange(n):
        bits = np.empty(d, np.uint32)
        for j in range(d):
            bits[j] = np.uint32(x_u16[i, j]) << sh
        r32 = bits.view(np.float32)
        a = 0.0
        e = 0.0
        f = 0.0
        for j in range(d):
            r = np.float64(r32[j])
            w = np.float64(x[i, j])
            v = w - r
            a += r * r
            e += v * v
            f += w * w
        rounded2[i] = a
        error2[i] = e
        sq2[i] = f


@pjit
def select_bf16_block(scores_u16, col0, keys, state, thr, k, excl_indptr, excl_ids, row0, n_tot,
                      z, fbuf):
    """:func:`select_block` for a block of bfloat16 scores (``scores_u16``: ``(nb, nc)`` uint16,
    the bfloat16 bits; row ``r`` is state row ``r``, column ``j`` corpus row ``col0 + j``).

    A bfloat16 value is the high half of a float32, so each row is widened exactly into the
    thread's scratch row ``fbuf[thread]`` (``(n_threads, >= nc)`` float32) and scanned there."""
    nb, nc = scores_u16.shape
    cap = keys.shape[1] - CHUNK
    sh = np.uint32(16)
    for r in prange(nb):
        tid = get_thread_id()
        row = fbuf[tid, :nc]
        rbits = row.view(np.uint32)
        src = scores_u16[r]
        for j in range(nc):
            rbits[j] = np.uint32(src[j]) << sh
        fb = np.empty(1, np.uint32)
        fv = fb.view(np.float32)
        _scan_row(row, rbits, col0, keys[r], state[r], thr[r], k, cap, excl_ids,
                  excl_indptr[row0 + r + 1], fb, fv, n_tot, z)


@pjit
def rank_rescored(ids, score_bits, rows, k, out_ids, out_scores):
    """Best ``k`` of each listed row of candidates (``ids``, float32 scores given as their bits
    ``score_bits``) by score descending, ties by lower id (``-1`` ids are padding and come last), written to ``out_ids[i]`` /
    ``out_scores[i]`` for the ``i``-th listed row ``rows[i]``."""
    m = ids.shape[1]
    for i in prange(rows.shape[0]):
        r = rows[i]
        kr = np.empty(m, np.uint64)
        c = 0
        for j in range(m):
            d = ids[r, j]
            if d >= 0:
                kr[c] = _key(score_bits[r, j], d)
                c += 1
        if c > k:
            _nth_smallest(kr, c, k - 1)
            c = k
        fb = np.empty(1, np.uint32)
        fv = fb.view(np.float32)
        _write_sorted(kr, c, k, out_ids[i], out_scores[i], fb, fv)

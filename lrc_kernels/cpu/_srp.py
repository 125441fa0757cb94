"""SRP on the CPU: window-count histograms in O(T*k + E) per (sequence, layer, m).

For one layer of one sequence and one segment length m, ``H[e][c]`` counts the windows
``[t, t+m)`` in which expert e is used by c tokens. Rather than recount every window, the
kernel slides the window and tracks, per expert, its current count and the window index
``since[e]`` from which that count has held. When a token leaves or enters the window the
counts of its k experts change; the windows spent at the old count are then added to the
histogram in one step. At the end every expert is flushed once. The work is two updates per
activation plus O(E), independent of m.
"""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._spec import m_columns
from ._jit import jit, num_threads, prange
from ._plan import make_plan

__all__ = ["window_hist_table", "window_acts_table", "best_f1_rows", "sum_sequences"]


# Below this many elements of work a reduction kernel runs on the calling thread only:
# starting a parallel region costs a wake-up of every worker, and on a busy machine the
# call waits until the OS schedules each of them (measured ~7 ms per tiny call at load 1.5).
_SERIAL_BELOW = 1 << 16


def _pick(kernels: tuple, work: int):
    """The serial or the parallel twin of a kernel for ``work`` elements."""
    return kernels[0] if work < _SERIAL_BELOW or num_threads() == 1 else kernels[1]


def _twins(kernel) -> tuple:
    """``(serial, parallel)`` compilations of one parallel kernel. The serial one is
    compiled from a copy of the function under its own name, so that the two never share
    an on-disk cache entry (``prange`` is ``range`` there)."""
    f = kernel.py_func
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__)
    g.__qualname__ = f.__qualname__ + "_serial"
    g.__module__ = f.__module__
    return jit()(g), kernel


@jit()
def _hist_one(x, a, b, l, m, cnt, since, h, col, per_expert):
    """Histogram of one (sequence rows a:b, layer l) stream for one m into ``h[e, col+c]``."""
    T = b - a
    k = x.shape[2]
    E = cnt.shape[0]
    if T < m:
        return
    for e in range(E):
        cnt[e] = 0
        since[e] = 0
    for i in range(a, a + m):
        for j in range(k):
            cnt[x[i, l, j]] += 1
    W = T - m + 1
    for t in range(1, W):
        out_row = a + t - 1
        in_row = out_row + m
        for j in range(k):
            e = x[out_row, l, j]
            h[e * per_expert, col + cnt[e]] += t - since[e]
            since[e] = t
            cnt[e] -= 1
        for j in range(k):
            e = x[in_row, l, j]
            h[e * per_expert, col + cnt[e]] += t - since[e]
            since[e] = t
            cnt[e] += 1
    for e in range(E):
        h[e * per_expert, col + cnt[e]] += W - since[e]


@jit(parallel=True)
def _hist_chunks(x, offsets, seq_order, chunk_ptr, ms, cols, E, per_expert, workers, out):
    P = chunk_ptr.shape[0] - 1
    L = x.shape[1]
    U = P * L
    # one worker per thread, units dealt round-robin: scratch is allocated once per worker,
    # not once per unit (small allocations from every thread contend in the allocator)
    for w in prange(workers):
        cnt = np.zeros(E, np.int64)
        since = np.zeros(E, np.int64)
        for unit in range(w, U, workers):
            c = unit // L
            l = unit % L
            h = out[c, l]
            for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
                s = seq_order[q]
                a = offsets[s]
                b = offsets[s + 1]
                for mi in range(ms.shape[0]):
                    _hist_one(x, a, b, l, ms[mi], cnt, since, h, cols[mi], per_expert)


def window_hist_table(
    experts, offsets, num_experts, ms, group, n_groups, per_expert, *, per_sequence_int32=False
):
    """Same contract as :func:`lrc_kernels.reference.window_hist_table`.

    ``per_sequence_int32=True`` (for per-sequence bootstrap tables, where every group is one
    sequence) writes int32 counts: a count of one sequence is at most its number of windows,
    and half the bytes make the kernel and everything reading its table faster.
    """
    int32 = bool(per_sequence_int32)
    if int32:
        g = np.asarray(group)
        lens = np.diff(np.asarray(offsets))
        if np.unique(g).size != g.size or (lens.size and lens.max() >= 2**31):
            int32 = False  # groups of several sequences: counts may pass 2**31
    ms = np.asarray(ms, dtype=np.int64)
    first_cols, width = m_columns(ms.tolist())
    cols = np.asarray(first_cols, np.int64)
    N, L, k = experts.shape
    Eo = int(num_experts) if per_expert else 1
    lengths = np.diff(offsets)
    dtype = np.int32 if int32 else np.int64
    row_bytes = L * Eo * width * np.dtype(dtype).itemsize
    plan = make_plan(lengths, group, n_groups, row_bytes=row_bytes, min_tokens=int(ms.min()))
    out = np.zeros((plan.n_chunks, L, Eo, width), dtype=dtype)
    if plan.n_chunks:
        _hist_chunks(
            experts,
            np.asarray(offsets, np.int64),
            plan.seq_order,
            plan.chunk_ptr,
            ms,
            cols,
            int(num_experts),
            1 if per_expert else 0,
            max(1, min(num_threads(), plan.n_chunks * L)),
            out,
        )
    return plan.reduce(out)


@jit(parallel=True)
def _acts_chunks(x, offsets, seq_order, chunk_ptr, ms, out):
    P = chunk_ptr.shape[0] - 1
    L = x.shape[1]
    k = x.shape[2]
    for unit in prange(P * L):
        c = unit // L
        l = unit % L
        o = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            a = offsets[s]
            T = offsets[s + 1] - a
            for mi in range(ms.shape[0]):
                m = ms[mi]
                for t in range(T if T >= m else 0):
                    # windows [w, w+m) with 0 <= w <= T-m that contain token t
                    w = min(t, T - m) - max(0, t - m + 1) + 1
                    for j in range(k):
                        o[x[a + t, l, j], mi] += w


def window_acts_table(experts, offsets, num_experts, ms, group, n_groups):
    """int64 ``(G, L, E, len(ms))``: per expert and m, its activations summed over all
    windows, ``sum_c c * H[e][c]`` of :func:`window_hist_table`'s histograms.

    Counted directly: a token lies in ``min(t, T-m) - max(0, t-m+1) + 1`` windows of its
    sequence, so each activation adds that many; O(T * k) per (sequence, layer, m), no
    histogram bins. The activation ratios of a streamed bootstrap need only these.
    """
    ms = np.asarray(ms, dtype=np.int64)
    N, L, k = experts.shape
    E = int(num_experts)
    offsets = np.asarray(offsets, np.int64)
    plan = make_plan(
        np.diff(offsets), group, n_groups, row_bytes=L * E * ms.size * 8, min_tokens=int(ms.min())
    )
    out = np.zeros((plan.n_chunks, L, E, ms.size), np.int64)
    if plan.n_chunks:
        _acts_chunks(experts, offsets, plan.seq_order, plan.chunk_ptr, ms, out)
    return plan.reduce(out)


@jit(parallel=True)
def _best_f1_rows(H, m, f1, thr, preds_out, acts_out):
    R = H.shape[0]
    for r in prange(R):
        acts = 0.0
        for c in range(m + 1):
            acts += c * H[r, c]
        best = -1.0
        best_p = 0
        best_preds = 0.0
        matches = 0.0
        cells = 0.0
        # p from m down to 0: suffix sums; ">=" keeps the smallest p among ties
        for p in range(m, -1, -1):
            matches += p * H[r, p]
            cells += H[r, p]
            preds = m * cells
            den = preds + acts
            v = 2.0 * matches / den if den > 0 else 0.0
            if v >= best:
                best = v
                best_p = p
                best_preds = preds
        f1[r] = best
        thr[r] = best_p
        preds_out[r] = best_preds
        acts_out[r] = acts


_best_f1_rows_twins = _twins(_best_f1_rows)


def best_f1_rows(H: np.ndarray, m: int):
    """Best F1 over thresholds for each row of ``H`` (rows = histograms over c = 0..m).

    ``H`` holds exact integer counts (int64, or float32/float64 holding integers). All sums
    are exact in float64 below 2**53; F1 is one correctly rounded division, so every
    backend that feeds the same counts gets the same bits. Returns ``(f1, p*, preds(p*),
    acts)``.
    """
    H = np.ascontiguousarray(H)
    R = H.shape[0]
    f1 = np.empty(R, np.float64)
    thr = np.empty(R, np.int64)
    preds = np.empty(R, np.float64)
    acts = np.empty(R, np.float64)
    if R:
        _pick(_best_f1_rows_twins, H.size)(H, int(m), f1, thr, preds, acts)
    return f1, thr, preds, acts


@jit()
def _f1_sparse_row(hb, a, n, col_c, m, off, suf_m, suf_c):
    """Best F1 of one resampled row: kept bins ``a .. a+n-1`` read at ``hb[j - off]``."""
    matches = 0.0
    cells = 0.0
    for i in range(n - 1, -1, -1):  # suffix sums: sequential, additions only
        h = np.float64(hb[a + i - off])
        matches += col_c[a + i] * h
        cells += h
        suf_m[i] = matches
        suf_c[i] = cells
    acts = matches  # the suffix from the lowest kept bin is every activation
    best = 0.0
    for i in range(n):  # independent divisions: vectorised
        den = m * suf_c[i] + acts
        v = 2.0 * suf_m[i] / den if den > 0 else 0.0
        best = max(best, v)
    return best


@jit(parallel=True)
def _best_f1_sparse(Hb, row_ptr, col_c, m, max_row, out):
    B = Hb.shape[0]
    R = row_ptr.shape[0] - 1
    for b in prange(B):
        suf_m = np.empty(max_row, np.float64)  # matches(p) for p = each kept bin
        suf_c = np.empty(max_row, np.float64)  # windows with count >= p
        for r in range(R):
            a = row_ptr[r]
            out[b, r] = _f1_sparse_row(Hb[b], a, row_ptr[r + 1] - a, col_c, m, 0, suf_m, suf_c)


@jit()
def _best_f1_cols(PT, row_ptr, col_c, m, r0, r1, outT):
    """Best F1 of rows ``r0 .. r1-1`` for every resample at once, from a transposed
    product block: ``PT[j - row_ptr[r0], b]`` is kept bin j in resample b (serial: called
    from several Python threads).

    The same additions, in the same order, as :func:`_f1_sparse_row` (suffix sums from the
    highest kept bin down), so the same bits; only the loops are exchanged, the inner loop
    running over the resamples, which vectorises (the division and the running maximum
    are elementwise). ``den`` is 0 only where every count is 0 (then ``matches`` is 0 too),
    so dividing by ``max(den, 1)`` is the guarded division of :func:`_f1_sparse_row`.
    """
    B = PT.shape[1]
    off = row_ptr[r0]
    acts = np.empty(B, np.float64)
    mt = np.empty(B, np.float64)
    cl = np.empty(B, np.float64)
    best = np.empty(B, np.float64)
    for r in range(r0, r1):
        a = row_ptr[r] - off
        n = row_ptr[r + 1] - row_ptr[r]
        for b in range(B):
            acts[b] = 0.0
            mt[b] = 0.0
            cl[b] = 0.0
            best[b] = 0.0
        for i in range(n - 1, -1, -1):  # acts: the full suffix sum, same order
            c = np.float64(col_c[row_ptr[r] + i])
            row = PT[a + i]
            for b in range(B):
                acts[b] += c * np.float64(row[b])
        for i in range(n - 1, -1, -1):
            c = np.float64(col_c[row_ptr[r] + i])
            row = PT[a + i]
            for b in range(B):
                h = np.float64(row[b])
                mt[b] += c * h
                cl[b] += h
                v = 2.0 * mt[b] / max(m * cl[b] + acts[b], 1.0)
                best[b] = max(best[b], v)
        o = outT[r]
        for b in range(B):
            o[b] = best[b]


def best_f1_sparse(Hb: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int) -> np.ndarray:
    """Best F1 of many resampled histograms stored without their all-zero bins.

    ``Hb[b, j]`` is the count of bin ``c = col_c[j]`` of row ``r`` (``row_ptr[r] <= j <
    row_ptr[r+1]``, c increasing) in resample ``b``. Bins missing from the layout are zero in
    every resample, so suffix sums, and with them F1 at every threshold, are the same exact
    numbers as with the dense histogram: F1 is constant for thresholds between two kept bins
    and 0 above the last. Returns the ``(B, R)`` maxima.
    """
    out = np.empty((Hb.shape[0], row_ptr.shape[0] - 1), np.float64)
    if out.size:
        row_ptr = row_ptr.astype(np.int64)
        _best_f1_sparse(
            np.ascontiguousarray(Hb),
            row_ptr,
            col_c.astype(np.int64),
            int(m),
            max(int(np.diff(row_ptr).max()), 1),
            out,
        )
    return out


@jit(parallel=True)
def _gather_bins(tab, c0, col_r, col_c, out):
    S = tab.shape[0]
    J = col_r.shape[0]
    for s in prange(S):
        t = tab[s]
        o = out[s]
        for j in range(J):
            o[j] = t[col_r[j], c0 + col_c[j]]


_gather_bins_twins = _twins(_gather_bins)


def gather_bins(tab: np.ndarray, c0: int, m: int, keep: np.ndarray, dtype) -> np.ndarray:
    """Per-sequence counts of the bins ``keep`` (flat ``r*(m+1) + c``) of
    ``tab[:, :, c0:c0+m+1]`` (``tab`` shaped (S, R, W)), as ``dtype``, shape (S, len(keep))."""
    tab = np.ascontiguousarray(tab)
    keep = keep.astype(np.int64)
    out = np.empty((tab.shape[0], keep.shape[0]), dtype)
    # row and bin of each kept column, once (not a division per sequence and column)
    _pick(_gather_bins_twins, out.size)(
        tab, int(c0), keep // (int(m) + 1), keep % (int(m) + 1), out
    )
    return out


@jit(parallel=True)
def _sum_rows(t, out):
    X = t.shape[1]
    span = 4096
    for c in prange((X + span - 1) // span):
        a = c * span
        b = min(a + span, X)
        for x in range(a, b):
            out[x] = 0
        for s in range(t.shape[0]):
            for x in range(a, b):
                out[x] += t[s, x]


_sum_rows_twins = _twins(_sum_rows)


def sum_sequences(t: np.ndarray) -> np.ndarray:
    """``t.sum(axis=0)`` in int64 for an integer table ``t`` (per-sequence tables summed
    over the sequences), with the columns split over the threads."""
    t = np.ascontiguousarray(t)
    if t.shape[0] == 0:
        return np.zeros(t.shape[1:], np.int64)
    out = np.empty(t.shape[1:], np.int64)
    if out.size:
        _pick(_sum_rows_twins, t.size)(t.reshape(t.shape[0], -1), out.reshape(-1))
    return out


_BLAS = None


def _blas_controller():
    """One threadpoolctl controller per process (inspecting loaded libraries takes ms)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS


def resample_product(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``W @ H`` in ``H.dtype``: resample multiplicities times per-sequence bin counts.

    Every entry is an integer sum; the caller picks float32 or float64 so that all partial
    sums are exactly representable, which makes BLAS exact here. The product runs on as many
    threads as the Numba kernels (column blocks, one single-threaded BLAS call each), with
    BLAS's own thread pool held to one thread: its workers keep spinning after a call and
    would otherwise compete with the Numba kernels that run next.
    """
    W = np.ascontiguousarray(W, dtype=H.dtype)
    H = np.ascontiguousarray(H)
    J = H.shape[1]
    n = max(1, min(num_threads(), J // 256))
    with _blas_controller().limit(limits=1, user_api="blas"):
        if n == 1:
            return W @ H
        out = np.empty((W.shape[0], J), H.dtype)
        edges = np.linspace(0, J, n + 1).astype(np.int64)

        def part(i: int) -> None:
            a, b = edges[i], edges[i + 1]
            np.matmul(W, H[:, a:b], out=out[:, a:b])

        list(_pool(n).map(part, range(n)))
        return out


def _row_blocks(row_ptr: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``(r0, r1)`` of about ``target`` kept bins each."""
    R = row_ptr.shape[0] - 1
    blocks, r0 = [], 0
    while r0 < R:
        stop = int(np.searchsorted(row_ptr, row_ptr[r0] + target, side="right")) - 1
        r1 = min(max(stop, r0 + 1), R)
        blocks.append((r0, r1))
        r0 = r1
    return blocks


def resample_best_f1(
    W: np.ndarray, H: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int, *, block=None
) -> np.ndarray:
    """``best_f1_sparse(resample_product(W, H), row_ptr, col_c, m)``, fused by row blocks.

    The rows are cut into blocks of about ``block`` kept bins (default: an eighth of each
    thread's share, between 64 and 192); each thread multiplies its blocks' columns by
    ``W`` (single-threaded BLAS, the product transposed: one row per kept bin, the
    resamples along it) and takes the best F1 of those rows for every resample at once
    (:func:`_best_f1_cols`, vectorised over the resamples). The (B, J) product is never
    written to memory: a block's product (at most ~192 x B floats) stays in the core's
    cache. Every product entry is the same exact integer sum, and each F1 the same
    arithmetic in the same order as :func:`best_f1_sparse`, so the result has the same
    bits. Returns a ``(B, R)`` view of an ``(R, B)`` array (what
    :func:`column_quantiles` reads).
    """
    W = np.ascontiguousarray(W, dtype=H.dtype)
    H = np.ascontiguousarray(H)
    row_ptr = row_ptr.astype(np.int64)
    col_c = col_c.astype(np.int64)
    R = row_ptr.shape[0] - 1
    B = W.shape[0]
    outT = np.empty((R, B), np.float64)
    if not outT.size:
        return outT.T
    J = int(row_ptr[-1] - row_ptr[0])
    threads = num_threads()
    target = int(block) if block else max(64, min(192, -(-J // (8 * threads))))
    blocks = _row_blocks(row_ptr, target)
    WT = W.T

    def part(i: int) -> None:
        r0, r1 = blocks[i]
        a, b = row_ptr[r0], row_ptr[r1]
        PT = np.empty((b - a, B), H.dtype)
        np.matmul(H[:, a:b].T, WT, out=PT)
        _best_f1_cols(PT, row_ptr, col_c, int(m), r0, r1, outT)

    n = max(1, min(threads, len(blocks)))
    with _blas_controller().limit(limits=1, user_api="blas"):
        if n == 1:
            for i in range(len(blocks)):
                part(i)
        else:
            list(_pool(n).map(part, range(len(blocks))))
    return outT.T


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(n: int) -> ThreadPoolExecutor:
    """A persistent pool of ``n`` threads (starting threads on every call cost ms: a new
    thread must be scheduled before the call can hand it work)."""
    pool = _POOLS.get(n)
    if pool is None:
        pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lrc-blas")
    return pool


@jit()
def _lerp(a, b, t):
    # numpy's quantile interpolation, bit for bit (numpy.lib._function_base_impl._lerp)
    d = b - a
    if t >= 0.5:
        return b - d * (1.0 - t)
    return a + d * t


@jit(parallel=True)
def _column_quantiles(xt, qs, out):
    R, B = xt.shape
    nq = qs.shape[0]
    kth = np.empty(2 * nq, np.int64)
    for i in range(nq):
        lo = int(np.floor(qs[i] * (B - 1)))
        kth[2 * i] = lo
        kth[2 * i + 1] = min(lo + 1, B - 1)
    for r in prange(R):
        col = np.partition(xt[r], kth)  # the order statistics needed, nothing more
        for i in range(nq):
            v = qs[i] * (B - 1)
            out[i, r] = _lerp(col[kth[2 * i]], col[kth[2 * i + 1]], v - kth[2 * i])


_column_quantiles_twins = _twins(_column_quantiles)


def column_quantiles(x: np.ndarray, qs) -> np.ndarray:
    """``np.quantile(x, qs, axis=0)`` (method "linear"), one column per thread.

    Same interpolation arithmetic as numpy, so the same bits. ``x`` must be free of NaN.
    """
    qs = np.asarray(qs, np.float64)
    out = np.empty((qs.shape[0], x.shape[1]), np.float64)
    if x.shape[0] and x.shape[1]:
        _pick(_column_quantiles_twins, x.size)(np.ascontiguousarray(x.T, dtype=np.float64), qs, out)
    else:
        out[:] = np.nan
    return out

"""Model-level SCH stack distances: implicit depths for class 0, block-skip walk for the rest.

SCH's key is ``(future, last)`` packed as in :func:`._stack._stream_packed` (larger =
keep). Class 0 = stack entries with ``future == 0``; hot = entries with ``future >= 1``.
Facts (proofs in docs/metrics.md, "SCH at model level"):

- F1: every id looked up is hot or new, so look-ups read ``hpos[id]`` only.
- F2: class 0 is in recency order, so a class-0 id's depth is
  ``select(S0, rank0(id))``, with S0 the set of class-0 depths and rank0 the number of
  class-0 ids accessed more recently (marks over compacted time, as in :mod:`._stack_lru`).
- F3/F4: with p0 = min(S0), an update of x from depth D moves only the hot records in
  ``[0, min(D, p0))`` (an explicit walk) and, if p0 < D, every class-0 entry in ``[p0, D)``
  one class-0 slot down: S0 loses p0 and gains D, no class-0 rank changes.

The hot walk skips blocks of ``B = 16`` depths whose lower bound on the key is at or
above the carried key (no swap can happen there), testing eight bounds at once first;
bounds stay valid because the window slide only raises keys and every lowered key is
folded in. Class-0 depths hold a sentinel key above every real key.
"""

from __future__ import annotations

import numpy as np

from ._fenwick import bit_clear, bit_set, compact_marks, ctz, rank_le, select
from ._jit import jit, prange
from ._stack_lru import token_ids

__all__ = ["sch_chunks"]

SENTINEL = np.int64(np.iinfo(np.int64).max)  # above every packed key (<= 62 bits)
BLOCK_SHIFT = 4  # blocks of B = 16 depths (compile-time constants of the walk)
BLOCK = 1 << BLOCK_SHIFT
GROUP = 8  # blocks tested at once by one min over their bounds


@jit()
def _walk(hk, hpos, bnd, c, lo, hi, id_mask):
    """SPEC's carry over depths ``[lo, hi)`` (all hot), skipping blocks without records.

    Blocks are tested eight at a time (one branch-free min over their bounds) and then one
    by one; a block with a record is walked branch-free and its bound re-taken exactly.
    """
    bsh = BLOCK_SHIFT
    B = BLOCK
    dd = lo
    while dd < hi:
        blk = dd >> bsh
        if blk % GROUP == 0 and blk + GROUP <= bnd.shape[0]:
            g = bnd[blk]
            for i in range(blk + 1, blk + GROUP):
                g = min(g, bnd[i])
            if g >= c:
                dd = (blk + GROUP) << bsh
                continue
        bs = blk << bsh
        be = min(bs + B, hi)
        if bnd[blk] < c:
            for e in range(dd, be):
                v = hk[e]
                big = max(c, v)
                c = min(c, v)
                hk[e] = big
                hpos[big & id_mask] = e
            mn = hk[bs]
            for e in range(bs + 1, bs + B):
                mn = min(mn, hk[e])
            bnd[blk] = mn
        dd = be
    return c


@jit()
def _next_bit(words, p):
    """Smallest member above p; one must exist."""
    w = p >> 6
    v = words[w] & ((np.int64(-2)) << (p & 63))
    while v == 0:
        w += 1
        v = words[w]
    return w * 64 + ctz(v)


@jit()
def _put(hk, bnd, d, key):
    """Store a key at depth d and fold it into its block's bound."""
    hk[d] = key
    blk = d >> BLOCK_SHIFT
    if key < bnd[blk]:
        bnd[blk] = key


@jit()
def _update(y, key, D, st, hk, hpos, bnd, s0fen, s0w, id_mask):
    """Move y (new key, old depth D) to the top; ``st[0]`` holds p0 (N + 1 if S0 empty)."""
    p0 = st[0]
    hpos[y] = 0
    if D == 0:
        _put(hk, bnd, 0, key)
        return
    if p0 == 0:  # the old top is class 0: the whole record chain is class 0
        _put(hk, bnd, 0, key)
    else:
        s = min(D, p0)
        c = hk[0]
        _put(hk, bnd, 0, key)
        c = _walk(hk, hpos, bnd, c, 1, s, id_mask)
        _put(hk, bnd, s, c)
        hpos[c & id_mask] = s
        if s == D:
            return
    # p0 < D: class-0 entries in [p0, D) move one class-0 slot down
    bit_clear(s0fen, s0w, p0)
    bit_set(s0fen, s0w, D)
    hk[D] = SENTINEL
    st[0] = _next_bit(s0w, p0)  # D > p0 is a member


@jit()
def _sch_stream(x, a, b, E, m, warm, stat, id_bits, ts_bits, v, hk, bnd, bufs):
    """Add one sequence's model-level SCH depth counts (rows a:b) to ``stat``.

    ``v`` holds per-id int64 arrays (future, last ts, hot depth, class-0 mark time), ``bufs``
    the bitsets and scratch (see :func:`sch_chunks`).
    """
    T = b - a
    if T == 0:
        return
    future, lts, hpos, t0 = v[0], v[1], v[2], v[3]
    m0w, m0fen, who0, s0w, s0fen, ids, st = bufs
    N = future.shape[0]
    A = ids.shape[0]
    id_mask = (np.int64(1) << id_bits) - 1
    sh_p = id_bits + ts_bits
    cap0 = m0w.shape[0] * 64
    for i in range(N):
        future[i] = 0
        hpos[i] = -1
        t0[i] = -1
    hk[:] = SENTINEL
    bnd[:] = SENTINEL
    m0w[:] = 0
    m0fen[:] = 0
    s0w[:] = 0
    s0fen[:] = 0
    for t in range(min(m, T)):
        token_ids(x, a + t, 0, True, E, ids)
        for j in range(A):
            future[ids[j]] += 1
    st[0] = N + 1  # p0: no class-0 entry yet
    size = np.int64(0)
    ts = np.int64(0)
    now0 = np.int64(0)
    n0 = np.int64(0)
    for t in range(T):
        if now0 + A > cap0:
            now0 = compact_marks(m0fen, m0w, who0, t0)
        token_ids(x, a + t, 0, True, E, ids)
        u = size  # 1. look-ups: every id seen before is hot (F1)
        for j in range(A):
            d = hpos[ids[j]]
            if d >= 0:
                stat[d] += 1
            else:
                stat[u if warm else N] += 1
                u += 1
        for j in range(A):  # 2. updates in slot order
            y = ids[j]
            ts += 1
            future[y] -= 1
            lts[y] = ts
            key = (future[y] << sh_p) | (ts << id_bits) | y
            D = hpos[y]
            if D < 0:
                D = size
                size += 1
            _update(y, key, D, st, hk, hpos, bnd, s0fen, s0w, id_mask)
            if future[y] == 0:  # y joins class 0 on top, as its newest member
                hk[0] = SENTINEL
                hpos[y] = -1
                bit_set(s0fen, s0w, 0)
                st[0] = 0
                t0[y] = now0
                who0[now0] = y
                bit_set(m0fen, m0w, now0)
                now0 += 1
                n0 += 1
        if t + m < T:  # 3. the window slides: raise the keys of token t+m's ids in place
            token_ids(x, a + t + m, 0, True, E, ids)
            inc = np.int64(1) << sh_p
            for j in range(A):
                y = ids[j]
                future[y] += 1
                if hpos[y] >= 0:
                    hk[hpos[y]] += inc
                elif t0[y] >= 0:  # class 0 -> 1 in place, at its implicit depth
                    d = select(s0fen, s0w, n0 - rank_le(m0fen, m0w, t0[y]))
                    bit_clear(s0fen, s0w, d)
                    bit_clear(m0fen, m0w, t0[y])
                    t0[y] = -1
                    n0 -= 1
                    _put(hk, bnd, d, inc | (lts[y] << id_bits) | y)
                    hpos[y] = d
                    if d == st[0]:
                        st[0] = select(s0fen, s0w, 0) if n0 > 0 else N + 1


@jit(parallel=True)
def sch_chunks(x, offsets, seq_order, chunk_ptr, E, warm, m, id_bits, ts_bits, out):
    """Parallel driver (model level): one chunk of sequences per iteration, own row each."""
    P = chunk_ptr.shape[0] - 1
    N = out.shape[2] - 1
    A = x.shape[1] * x.shape[2]
    W0 = (2 * N + A + 63) // 64
    Ws = (N + 1 + 63) // 64
    nb = (N + 1 + (1 << BLOCK_SHIFT) - 1) >> BLOCK_SHIFT
    for c in prange(P):
        v = np.empty((4, N), np.int64)
        hk = np.empty(nb << BLOCK_SHIFT, np.int64)
        bnd = np.empty(nb, np.int64)
        bufs = (
            np.empty(W0, np.int64),
            np.empty(W0 + 1, np.int64),
            np.empty(W0 * 64, np.int64),
            np.empty(Ws, np.int64),
            np.empty(Ws + 1, np.int64),
            np.empty(A, np.int64),
            np.empty(1, np.int64),
        )
        stat = out[c, 0]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            _sch_stream(
                x, offsets[s], offsets[s + 1], E, m, warm, stat, id_bits, ts_bits, v, hk, bnd, bufs
            )

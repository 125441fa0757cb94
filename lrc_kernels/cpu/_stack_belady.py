"""Belady (MIN) stack depths by the run-list scan: the same stack as ``_stream_packed``.

The stack is kept explicitly (packed keys ``(top - next use) << id_bits | id``, larger =
sooner, unique) with ``pos[id]``, exactly as in :mod:`._stack`; what changes is how an
update finds its records. Cut the stack into maximal strictly descending *runs* (by depth).

- The accessed id x holds the largest key (its next use is now), so depth D-1 ends a run
  and the walk over depths 1..D-1 covers whole runs.
- The carry c (running minimum) passes a run untouched iff the run's last key is above c;
  otherwise it enters at the run's first key below c, that tail shifts down by one depth,
  c takes the first of those depths, and the run's old last key becomes the carry. So a run
  stays descending inside, and run ends can change only at depth 0, at the ends of touched
  runs and just above them, and at D-1 and D.

Run ends are bits of a bitset over depths (bit d set iff ``stk[d] < stk[d+1]``, or d is the
bottom), so the walk visits the ~60 run ends above D with ``tzcnt`` and moves only the
records. The result is bit-identical to the linear scan (same stack after every update).
See docs/metrics.md, "Shared-cache engines: LFU and Belady".
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import jit, prange
from ._stack_steps import _init_stream, _look_up

__all__ = ["belady_chunks"]


@jit(inline="always")
def _is_end(hi_key, lo_key, d, size):
    """Whether depth d ends a run: the key below it is larger, or d is the bottom."""
    return d + 1 >= size or hi_key < lo_key


@jit()
def _belady_stream(x, a, b, l, model, E, warm, stat, pos, stk, brk, nxt, last_seen, tch, id_bits):
    """One stream (rows a:b; layer l unless model): Belady depth counts added to ``stat``.

    One flat body on purpose: an array passed to a helper inside the hot loop costs NRT
    reference counting on every call (with helpers this engine was 1.7x slower).
    """
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    A = k * x.shape[1] if model else k
    l0, l1 = (0, x.shape[1]) if model else (l, l + 1)
    mul = E if model else 0
    N = pos.shape[0]
    id_mask = (np.int64(1) << id_bits) - 1
    top = T * A + 1 + N
    _init_stream(x, a, T, l, model, E, k, A, 2, 0, pos, tch, nxt, last_seen)
    for w in range(brk.shape[0]):
        brk[w] = 0
    one = np.uint64(1)
    size = 0
    for t in range(T):
        row = a + t
        _look_up(x, row, l, model, E, k, A, warm, pos, size, stat)
        t0 = t * A
        ia = 0
        for lay in range(l0, l1):
            for jj in range(k):
                y = lay * mul + np.int64(x[row, lay, jj])
                key = ((top - nxt[t0 + ia]) << id_bits) | y
                ia += 1
                D = pos[y]
                if D < 0:
                    D = size
                    size += 1
                pos[y] = 0
                nt = 0
                if D > 0:
                    # carry the old top through depths 1..D-1, run by run
                    c = stk[0]
                    last = D - 1
                    lastw = last >> 6
                    for w in range(lastw + 1):
                        bits = brk[w]
                        if w == 0:
                            bits &= ~one  # depth 0 is not walked
                        if w == lastw:
                            sh = np.uint64(63 - (last & 63))
                            bits = (bits << sh) >> sh
                        while bits != 0:
                            e = (w << 6) + np.int64(trailing_zeros(bits))
                            bits &= bits - one
                            ce = stk[e]
                            if ce > c:
                                continue  # the carry passes this run untouched
                            # the key above the run (or the old top) is > c: a sentinel
                            p = e
                            while stk[p - 1] < c:
                                p -= 1
                            for q in range(e, p, -1):
                                v = stk[q - 1]
                                stk[q] = v
                                pos[v & id_mask] = q
                            stk[p] = c
                            pos[c & id_mask] = p
                            c = ce
                            tch[nt] = p - 1
                            tch[nt + 1] = e
                            nt += 2
                    stk[D] = c
                    pos[c & id_mask] = D
                stk[0] = key
                # run ends can change only next to what moved
                tch[nt] = 0
                tch[nt + 1] = D - 1
                tch[nt + 2] = D
                for q in range(nt + 3):
                    d = tch[q]
                    if d < 0 or d >= size:
                        continue
                    bit = one << np.uint64(d & 63)
                    if _is_end(stk[d], stk[d + 1] if d + 1 < size else 0, d, size):
                        brk[d >> 6] |= bit
                    else:
                        brk[d >> 6] &= ~bit


@jit(parallel=True)
def belady_chunks(x, offsets, seq_order, chunk_ptr, E, warm, model, max_len, id_bits, out):
    """Belady depth counts per chunk of sequences: ``out[c, l]`` (l = 0 at model level)."""
    P = chunk_ptr.shape[0] - 1
    Lo = out.shape[1]
    N = out.shape[2] - 1
    A = x.shape[2] * (x.shape[1] if model else 1)
    for unit in prange(P * Lo):
        c = unit // Lo
        l = unit % Lo
        pos = np.empty(N, np.int64)
        stk = np.empty(N + 1, np.int64)
        brk = np.empty((N + 64) // 64 + 1, np.uint64)
        tch = np.empty(2 * N + 2, np.int64)
        last_seen = np.empty(N, np.int64)
        nxt = np.empty(max_len * A, np.int64)
        stat = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            _belady_stream(
                x, offsets[s], offsets[s + 1], l, model, E, warm, stat, pos, stk, brk, nxt,
                last_seen, tch, id_bits,
            )  # fmt: skip

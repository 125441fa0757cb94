"""LRU stack distances by counting (Bennett-Kruskal), exact under SPEC's token batching.

Under LRU keys the carry of SPEC's update always swaps, so an update is move-to-front and
the stack is sorted by latest access: the depth of id x is the number of ids whose latest
access is newer than x's. Each seen id holds one mark at its latest access time, in a
bitset over *compacted* time with a Fenwick tree over its words (:mod:`._fenwick`):

- look-up (all A ids of a token, before its updates): depth = size - rank_le(last[x]);
  a first access follows :func:`._stack._look_up`'s warm-start rule (``stat[u]``, or
  ``stat[N]`` cold);
- update (slot order): clear x's mark, set a mark at ``now``, ``now += 1``;
- when fewer than A free times remain, the live marks are renumbered ``0 .. size-1``
  (O(N) every ``>= N / A`` tokens; the time axis holds ``2N + A`` positions).

Cost per access: one prefix query and two point updates on a tree of ``(2N + A) / 64``
words, independent of the depth (the scan engine pays the depth). Same contract as
:func:`._stack.stack_stats_table`; used at model level and at layer level for large E.
"""

from __future__ import annotations

import numpy as np

from ._fenwick import bit_clear, bit_set, compact_marks, n_words, rank_le
from ._jit import jit, prange

__all__ = ["lru_chunks", "lru_words", "token_ids"]


def lru_words(n_ids: int, accesses: int) -> int:
    """Words of the compacted time axis: ``2N + A`` positions, rounded up."""
    return n_words(2 * n_ids + accesses)


@jit()
def token_ids(x, row, l, model, E, ids):
    """Fill ``ids[:A]`` with the stream ids of one token, in access order."""
    k = x.shape[2]
    if model:
        j = 0
        for lay in range(x.shape[1]):
            base = lay * E
            for s in range(k):
                ids[j] = base + np.int64(x[row, lay, s])
                j += 1
    else:
        for s in range(k):
            ids[s] = np.int64(x[row, l, s])


@jit()
def _lru_stream(x, a, b, l, model, E, warm, stat, last, who, words, fen, ids):
    """Add one stream's LRU depth counts (rows a:b; layer l unless model) to ``stat``."""
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    A = k * x.shape[1] if model else k
    N = last.shape[0]
    cap = words.shape[0] * 64
    for i in range(N):
        last[i] = -1
    for i in range(words.shape[0]):
        words[i] = 0
    for i in range(fen.shape[0]):
        fen[i] = 0
    size = np.int64(0)
    now = np.int64(0)
    for t in range(T):
        row = a + t
        if now + A > cap:
            now = compact_marks(fen, words, who, last)
        token_ids(x, row, l, model, E, ids)
        # 1. look-ups against the stack before this token
        u = size
        for j in range(A):
            y = ids[j]
            p = last[y]
            if p >= 0:
                stat[size - rank_le(fen, words, p)] += 1
            else:
                if warm:
                    stat[u] += 1
                else:
                    stat[N] += 1
                u += 1
        # 2. updates in slot order: move to front = newest mark
        for j in range(A):
            y = ids[j]
            p = last[y]
            if p >= 0:
                bit_clear(fen, words, p)
            else:
                size += 1
            bit_set(fen, words, now)
            last[y] = now
            who[now] = y
            now += 1


@jit(parallel=True)
def lru_chunks(x, offsets, seq_order, chunk_ptr, E, warm, model, W, out):
    """Parallel driver: one (chunk, layer) unit per iteration, each writing its own row."""
    P = chunk_ptr.shape[0] - 1
    Lo = out.shape[1]
    N = out.shape[2] - 1
    for unit in prange(P * Lo):
        c = unit // Lo
        l = unit % Lo
        last = np.empty(N, np.int64)
        who = np.empty(W * 64, np.int64)
        words = np.empty(W, np.int64)
        fen = np.empty(W + 1, np.int64)
        ids = np.empty(x.shape[2] * (x.shape[1] if model else 1), np.int64)
        stat = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            _lru_stream(
                x, offsets[s], offsets[s + 1], l, model, E, warm, stat, last, who, words, fen, ids
            )

"""LRU stack distances by counting (Bennett-Kruskal), exact under SPEC's token batching.

Under LRU keys the carry of SPEC's update always swaps, so an update is move-to-front and
the stack is sorted by latest access: the depth of id x is the number of ids whose latest
access is newer than x's. Each seen id holds one mark at its latest access time, in a
bitset over *compacted* time (:mod:`._fenwick`). All look-ups of a token come before its
updates, so instead of a Fenwick tree a plain array ``pre[w]`` (marks in the words before
word w) is rebuilt once per token:

- look-up (all A ids of a token, before its updates): depth = size - (``pre[w]`` +
  popcount of x's word up to x's mark), O(1); a first access follows
  :func:`._stack._look_up`'s warm-start rule (``stat[u]``, or ``stat[N]`` cold);
- update (slot order): clear x's mark, set a mark at ``now``, ``now += 1``;
- after the token: rebuild ``pre`` over the words in use, O(W);
- when fewer than A free times remain, the live marks are renumbered ``0 .. size-1``
  (O(N) every ``>= N / A`` tokens; the time axis holds ``2N + A`` positions, so
  ``W = (2N + A) / 64`` words, 200 at 48 x 128 experts, about one per access).

Cost per access: O(1) plus ``W / A`` for the per-token rebuild, independent of the depth
(the scan engine pays the depth). Same contract as :func:`._stack.stack_stats_table`;
used at both levels for LRU.
"""

from __future__ import annotations

import numpy as np

from ._fenwick import n_words, popcount, renumber_marks
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
def _prefix_counts(words, pre, n):
    """``pre[w]`` = marks in words ``[0, w)``, for the first ``n`` words."""
    acc = np.int64(0)
    for w in range(n):
        pre[w] = acc
        acc += popcount(words[w])


@jit()
def _lru_stream(x, a, b, l, model, E, warm, stat, last, who, words, pre, ids):
    """Add one stream's LRU depth counts (rows a:b; layer l unless model) to ``stat``."""
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    A = k * x.shape[1] if model else k
    N = last.shape[0]
    W = words.shape[0]
    cap = W * 64
    for i in range(N):
        last[i] = -1
    for i in range(W):
        words[i] = 0
        pre[i] = 0
    size = np.int64(0)
    now = np.int64(0)
    for t in range(T):
        row = a + t
        if now + A > cap:
            now = renumber_marks(words, who, last)
            _prefix_counts(words, pre, min((now >> 6) + 1, W))
        token_ids(x, row, l, model, E, ids)
        # 1. look-ups against the stack before this token
        u = size
        for j in range(A):
            y = ids[j]
            p = last[y]
            if p >= 0:
                w = p >> 6
                mask = (np.int64(2) << (p & 63)) - 1  # bits 0..p&63 (all when 63)
                stat[size - pre[w] - popcount(words[w] & mask)] += 1
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
                words[p >> 6] &= ~(np.int64(1) << (p & 63))
            else:
                size += 1
            words[now >> 6] |= np.int64(1) << (now & 63)
            last[y] = now
            who[now] = y
            now += 1
        _prefix_counts(words, pre, min(((now - 1) >> 6) + 1, W))


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
        pre = np.empty(W, np.int64)
        ids = np.empty(x.shape[2] * (x.shape[1] if model else 1), np.int64)
        stat = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            _lru_stream(
                x, offsets[s], offsets[s + 1], l, model, E, warm, stat, last, who, words, pre, ids
            )

"""Bitsets with a Fenwick tree over their 64-bit words: rank and select in O(log W).

Shared by the counting stack engines (:mod:`._stack_lru`, :mod:`._stack_sch`). A set of
integers in ``[0, 64 * W)`` is stored as ``words`` (int64 bit patterns, bit ``p & 63`` of
word ``p >> 6``) plus ``fen`` (length W + 1, 1-based), the Fenwick tree of the words'
popcounts. Then

- ``rank_le(p)`` = members <= p: one prefix query plus one popcount;
- ``select(r)`` = the r-th smallest member (0-based): one Fenwick descent plus a select
  inside one word;
- insert / delete: one bit flip plus one point update.

*Marks over compacted time* (the Bennett-Kruskal counting method for LRU stack distances)
use such a set over access times: each live id holds one mark at its latest access time,
``who[p]`` names the id marked at p, and when the time axis is full the live marks are
renumbered ``0 .. count-1`` in order (:func:`compact_marks`), so the axis stays a few
times the number of ids and the tree stays in L1. (When all rank queries of a batch come
before all its changes, a plain prefix-count array rebuilt once per batch is cheaper:
:mod:`._stack_lru` does that.)

Popcount and count-trailing-zeros are LLVM intrinsics (``ctpop``, ``cttz``), so they
compile to single instructions where the CPU has them.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import jit

__all__ = [
    "popcount",
    "ctz",
    "fen_add",
    "fen_prefix",
    "fen_build",
    "rank_le",
    "select",
    "bit_set",
    "bit_clear",
    "compact_marks",
    "renumber_marks",
    "n_words",
]


@intrinsic
def popcount(typingctx, v):
    """Number of set bits of an int64 bit pattern."""
    if not isinstance(v, types.Integer) or v.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(v), codegen


@intrinsic
def ctz(typingctx, v):
    """Index of the lowest set bit of a non-zero int64 bit pattern."""
    if not isinstance(v, types.Integer) or v.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.int64(v), codegen


def n_words(n_bits: int) -> int:
    """Words needed for ``n_bits`` bits (at least one)."""
    return max((int(n_bits) + 63) // 64, 1)


@jit()
def fen_add(fen, w, v):
    """Add ``v`` to the count of word ``w`` (0-based)."""
    W = fen.shape[0] - 1
    i = w + 1
    while i <= W:
        fen[i] += v
        i += i & -i


@jit()
def fen_prefix(fen, w):
    """Total count of words ``[0, w)``."""
    s = np.int64(0)
    i = w
    while i > 0:
        s += fen[i]
        i -= i & -i
    return s


@jit()
def fen_build(fen, words):
    """Rebuild the tree from the words in O(W)."""
    W = words.shape[0]
    fen[0] = 0
    for i in range(1, W + 1):
        fen[i] = popcount(words[i - 1])
    for i in range(1, W + 1):
        j = i + (i & -i)
        if j <= W:
            fen[j] += fen[i]


@jit()
def rank_le(fen, words, p):
    """Members ``<= p``."""
    w = p >> 6
    b = p & 63
    mask = (np.int64(2) << b) - 1  # b = 63: 2 << 63 wraps to 0, so the mask is all ones
    return fen_prefix(fen, w) + popcount(words[w] & mask)


@jit()
def _select_in_word(v, r):
    """Bit index of the r-th (0-based) set bit of ``v`` (r < popcount(v))."""
    pos = np.int64(0)
    c = popcount(v & 0xFFFFFFFF)
    if r >= c:
        r -= c
        pos += 32
    c = popcount((v >> pos) & 0xFFFF)
    if r >= c:
        r -= c
        pos += 16
    c = popcount((v >> pos) & 0xFF)
    if r >= c:
        r -= c
        pos += 8
    w8 = (v >> pos) & 0xFF
    for _ in range(r):
        w8 &= w8 - 1
    return pos + ctz(w8)


@jit()
def select(fen, words, r):
    """The r-th smallest member (0-based); requires r < number of members."""
    W = fen.shape[0] - 1
    i = 0
    step = np.int64(1)
    while step * 2 <= W:
        step *= 2
    while step > 0:
        j = i + step
        if j <= W and fen[j] <= r:
            i = j
            r -= fen[j]
        step >>= 1
    # word i (0-based) holds the answer, r is the rank inside it
    return i * 64 + _select_in_word(words[i], r)


@jit()
def bit_set(fen, words, p):
    words[p >> 6] |= np.int64(1) << (p & 63)
    fen_add(fen, p >> 6, 1)


@jit()
def bit_clear(fen, words, p):
    words[p >> 6] &= ~(np.int64(1) << (p & 63))
    fen_add(fen, p >> 6, -1)


@jit()
def renumber_marks(words, who, mark):
    """Renumber the marks ``0 .. count-1`` in order; fix ``mark[id]`` and ``who``.

    Only the words change (see :func:`compact_marks` for the tree too). Returns the count
    (the next free time).
    """
    W = words.shape[0]
    q = np.int64(0)
    for w in range(W):
        v = words[w]
        while v != 0:
            y = who[w * 64 + ctz(v)]
            who[q] = y  # q <= the position just read: nothing unread is overwritten
            mark[y] = q
            q += 1
            v &= v - 1
    full = q >> 6
    for w in range(W):
        if w < full:
            words[w] = -1
        elif w == full:
            words[w] = (np.int64(1) << (q & 63)) - 1
        else:
            words[w] = 0
    return q


@jit()
def compact_marks(fen, words, who, mark):
    """:func:`renumber_marks`, then rebuild the tree. Returns the count."""
    q = renumber_marks(words, who, mark)
    fen_build(fen, words)
    return q

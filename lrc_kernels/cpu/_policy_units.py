"""Per-size simulation units of :mod:`lrc_kernels.cpu._policies`: the doubly linked lists
every queue is built from, the LFU variants (perfect, decayed, windowed counts) and the
static placements (static-oracle, static-prefix, pinned-lru).

A unit simulates one cache size over a chunk of sequences of one layer (or of the whole
model) and returns its hits; ``docs/metrics.md`` ("Frequency and static policies") is the
definition, :mod:`lrc_kernels._reference_policies` the plain Python it is tested against.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = [
    "UNIT_CODES",
    "push",
    "unlink",
    "unit_lfu",
    "unit_static",
    "token_ids",
]

#: policy -> code of the units here ("lfu", perfect LFU, only checks the stack engine)
UNIT_CODES: dict[str, int] = {
    "lfu": 100,
    "lfu-decay": 101,
    "lfu-window": 102,
    "static-oracle": 110,
    "static-prefix": 111,
    "pinned-lru": 112,
}
_LFU = UNIT_CODES["lfu"]
_DECAY = UNIT_CODES["lfu-decay"]
_WINDOW = UNIT_CODES["lfu-window"]
_PREFIX = UNIT_CODES["static-prefix"]
_PINNED = UNIT_CODES["pinned-lru"]


@jit()
def push(x, l, lst, prv, nxt, first, last, size):
    """Append ``x`` as the newest entry of list ``l``."""
    lst[x] = l
    nxt[x] = -1
    prv[x] = last[l]
    if last[l] >= 0:
        nxt[last[l]] = x
    else:
        first[l] = x
    last[l] = x
    size[l] += 1


@jit()
def unlink(x, lst, prv, nxt, first, last, size):
    """Remove ``x`` from its list."""
    l = lst[x]
    p = prv[x]
    n = nxt[x]
    if p >= 0:
        nxt[p] = n
    else:
        first[l] = n
    if n >= 0:
        prv[n] = p
    else:
        last[l] = p
    size[l] -= 1
    lst[x] = -1


@jit()
def token_ids(experts, r, E, layer, model, tok):
    """The ids of row ``r`` in slot order: ``k`` at layer level, ``L*k`` (``l*E + e``) at
    model level."""
    k = experts.shape[2]
    if model:
        for j in range(tok.shape[0]):
            tok[j] = (j // k) * E + np.int64(experts[r, j // k, j % k])
    else:
        for j in range(k):
            tok[j] = np.int64(experts[r, layer, j])


@jit()
def unit_lfu(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids, param):
    """Perfect LFU over per-sequence counts: plain (``lfu``), decayed by ``param`` after
    every token (``lfu-decay``) or over the last ``param`` tokens (``lfu-window``). A miss
    inserts the id, evicting the cached id of lowest (count, last access)."""
    A = experts.shape[1] * experts.shape[2] if model else experts.shape[2]
    score = np.zeros(n_ids, np.float64)
    stamp = np.zeros(n_ids, np.int64)
    pos = np.full(n_ids, -1, np.int64)
    seen = np.zeros(n_ids, np.uint8)
    seen_ids = np.empty(n_ids, np.int64)
    slots = np.empty(min(C, n_ids), np.int64)
    tok = np.empty(A, np.int64)
    old_tok = np.empty(A, np.int64)
    window = np.int64(param) if code == _WINDOW else 0
    hits = 0
    for si in range(s0, s1):
        s = seq_order[si]
        u = 0
        n = 0
        ts = 0
        for r in range(offsets[s], offsets[s + 1]):
            token_ids(experts, r, E, layer, model, tok)
            for j in range(A):  # 1. look-ups against the cache before the token
                x = tok[j]
                if pos[x] >= 0:
                    hits += 1
                elif seen[x] == 0 and warm and u < C:
                    hits += 1
                if seen[x] == 0:
                    seen[x] = 1
                    seen_ids[u] = x
                    u += 1
            for j in range(A):  # 2. processing in stored order
                x = tok[j]
                ts += 1
                stamp[x] = ts
                score[x] += 1.0
                if pos[x] >= 0:
                    continue
                if n < C:
                    slots[n] = x
                    pos[x] = n
                    n += 1
                    continue
                v = 0
                bs = score[slots[0]]
                bl = stamp[slots[0]]
                for q in range(1, n):
                    y = slots[q]
                    if score[y] < bs or (score[y] == bs and stamp[y] < bl):
                        v = q
                        bs = score[y]
                        bl = stamp[y]
                pos[slots[v]] = -1
                slots[v] = x
                pos[x] = v
            if code == _DECAY:  # 3. after the token
                for q in range(u):
                    score[seen_ids[q]] *= param
            elif code == _WINDOW and r - window + 1 >= offsets[s]:
                token_ids(experts, r - window + 1, E, layer, model, old_tok)
                for j in range(A):
                    score[old_tok[j]] -= 1.0
        for q in range(u):  # reset what this sequence touched
            x = seen_ids[q]
            score[x] = 0.0
            stamp[x] = 0
            pos[x] = -1
            seen[x] = 0
    return hits


@jit()
def _pin(experts, offsets, s, E, layer, model, code, C, n_ids, param, cnt, tok, inset):
    """Mark in ``inset`` the pinned ids of sequence ``s``; return how many (P)."""
    a = offsets[s]
    b = offsets[s + 1]
    if code == _PREFIX:
        b = min(b, a + np.int64(param))
    P = min(np.int64(param * C) if code == _PINNED else C, n_ids)
    if P == 0:
        return P
    cnt[:] = 0
    for r in range(a, b):
        token_ids(experts, r, E, layer, model, tok)
        for j in range(tok.shape[0]):
            cnt[tok[j]] += 1
    top = cnt.max()
    key = (top - cnt) * n_ids + np.arange(n_ids)  # count descending, then id ascending
    order = np.argsort(key)
    for q in range(P):
        inset[order[q]] = 1
    return P


@jit()
def unit_static(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids, param):
    """static-oracle / static-prefix: a fixed set S of C ids (most used of the sequence / of
    its first ``param`` tokens; ties to the smaller id); pinned-lru: the
    ``floor(param * C)`` most used pinned, LRU over the other ids in the rest. An access to
    S hits (cold start: not its first access)."""
    A = experts.shape[1] * experts.shape[2] if model else experts.shape[2]
    cnt = np.zeros(n_ids, np.int64)
    inset = np.zeros(n_ids, np.uint8)
    seen = np.zeros(n_ids, np.uint8)
    lst = np.full(n_ids, -1, np.int64)
    prv = np.empty(n_ids, np.int64)
    nxt = np.empty(n_ids, np.int64)
    first = np.full(1, -1, np.int64)
    last = np.full(1, -1, np.int64)
    size = np.zeros(1, np.int64)
    tok = np.empty(A, np.int64)
    hits = 0
    for si in range(s0, s1):
        s = seq_order[si]
        inset[:] = 0
        seen[:] = 0
        lst[:] = -1
        first[0] = -1
        last[0] = -1
        size[0] = 0
        P = _pin(experts, offsets, s, E, layer, model, code, C, n_ids, param, cnt, tok, inset)
        Q = C - P if code == _PINNED else 0  # slots of the LRU part
        u2 = 0
        for r in range(offsets[s], offsets[s + 1]):
            token_ids(experts, r, E, layer, model, tok)
            for j in range(A):  # 1. look-ups
                x = tok[j]
                fresh = seen[x] == 0
                seen[x] = 1
                if inset[x] == 1:
                    if warm or not fresh:
                        hits += 1
                    continue
                if lst[x] == 0:
                    hits += 1
                elif fresh and warm and u2 < Q:
                    hits += 1
                if fresh:
                    u2 += 1
            if Q == 0:
                continue
            for j in range(A):  # 2. the LRU part processes the other ids
                x = tok[j]
                if inset[x] == 1:
                    continue
                if lst[x] == 0:
                    unlink(x, lst, prv, nxt, first, last, size)
                elif size[0] + 1 > Q:
                    unlink(first[0], lst, prv, nxt, first, last, size)
                push(x, 0, lst, prv, nxt, first, last, size)
    return hits

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
    "state_size",
    "reset",
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


# One simulation's integer state is ONE int64 array ``S`` (an array argument of a helper
# costs reference counting on every call, even inlined, so the helpers take one array):
# for ``n`` ids, ``S[x]`` is the list of id x (-1: none), ``S[n + x]`` / ``S[2n + x]`` its
# older / newer neighbour, ``S[3n + x]`` its bit or frequency; then per list l < 4 its
# oldest id ``S[4n + l]``, newest id ``S[4n + 4 + l]`` and length ``S[4n + 8 + l]``, and
# from ``4n + 12`` the policy's scalars (state_size).
N_LISTS = 4
N_MISC = 5


@jit(inline="always")
def state_size(n):
    """Length of the state array ``S`` of a simulation over ``n`` ids."""
    return 4 * n + 3 * N_LISTS + N_MISC


@jit(inline="always")
def reset(S, n):
    """Empty lists, clear bits and scalars."""
    S[: 3 * n] = -1
    S[3 * n : 4 * n] = 0
    S[4 * n : 4 * n + 8] = -1
    S[4 * n + 8 :] = 0


@jit(inline="always")
def push(S, n, x, l):
    """Append ``x`` as the newest entry of list ``l``."""
    F = 4 * n
    S[x] = l
    S[2 * n + x] = -1
    tail = S[F + 4 + l]
    S[n + x] = tail
    if tail >= 0:
        S[2 * n + tail] = x
    else:
        S[F + l] = x
    S[F + 4 + l] = x
    S[F + 8 + l] += 1


@jit(inline="always")
def unlink(S, n, x):
    """Remove ``x`` from its list."""
    F = 4 * n
    l = S[x]
    p = S[n + x]
    q = S[2 * n + x]
    if p >= 0:
        S[2 * n + p] = q
    else:
        S[F + l] = q
    if q >= 0:
        S[n + q] = p
    else:
        S[F + 4 + l] = p
    S[F + 8 + l] -= 1
    S[x] = -1


@jit(inline="always")
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
    # the cached ids' scores and stamps again, by slot: the victim scan reads them
    # contiguously (kept equal to score[] and stamp[] by the same float64 operations)
    slot_score = np.empty(min(C, n_ids), np.float64)
    slot_stamp = np.empty(min(C, n_ids), np.int64)
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
                v = pos[x]
                if v < 0:
                    if n < C:
                        v = n
                        n += 1
                    else:  # evict the lowest (score, stamp)
                        v = 0
                        bs = slot_score[0]
                        bl = slot_stamp[0]
                        for q in range(1, n):
                            if slot_score[q] < bs or (slot_score[q] == bs and slot_stamp[q] < bl):
                                v = q
                                bs = slot_score[q]
                                bl = slot_stamp[q]
                        pos[slots[v]] = -1
                    slots[v] = x
                    pos[x] = v
                slot_score[v] = score[x]
                slot_stamp[v] = ts
            if code == _DECAY:  # 3. after the token
                for q in range(u):
                    score[seen_ids[q]] *= param
                for q in range(n):
                    slot_score[q] *= param
            elif code == _WINDOW and r - window + 1 >= offsets[s]:
                token_ids(experts, r - window + 1, E, layer, model, old_tok)
                for j in range(A):
                    y = old_tok[j]
                    score[y] -= 1.0
                    if pos[y] >= 0:
                        slot_score[pos[y]] = score[y]
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
    S = np.empty(state_size(n_ids), np.int64)  # the LRU part's list (list 0)
    F = 4 * n_ids
    tok = np.empty(A, np.int64)
    hits = 0
    for si in range(s0, s1):
        s = seq_order[si]
        inset[:] = 0
        seen[:] = 0
        reset(S, n_ids)
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
                if S[x] == 0:
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
                if S[x] == 0:
                    unlink(S, n_ids, x)
                elif S[F + 8] + 1 > Q:
                    unlink(S, n_ids, S[F])
                push(S, n_ids, x, 0)
    return hits

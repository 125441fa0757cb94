"""Per-size cache policies without the stack property (FIFO, Clock, SIEVE, S3-FIFO, ARC).

One simulation per cache size, as ``docs/metrics.md`` ("Policies without the stack
property") defines it and :func:`lrc_kernels.reference.policy_hits_table` spells out. Each
``prange`` unit is one (chunk of sequences, layer, size) at layer level, or one (chunk,
size) at model level, and writes its own output cell, so there is no shared ``+=``.

Every queue is a doubly linked list over the ids, ordered oldest first (libCacheSim's tail
is a list's oldest entry, its head the newest); an id is in at most one list (data or
ghost) at a time. A simulation's whole integer state is one int64 array (layout in
:mod:`lrc_kernels.cpu._policy_units`): the helpers are inlined, and each array argument of
a helper call costs reference counting in the hot loop, so they take that one array (this
made the kernels 2-4x faster; ``docs/benchmarks.md``, bench_policies).
"""

from __future__ import annotations

import numpy as np

from .._spec import POLICY_PARAMS, SIZE_POLICIES
from ._jit import jit, prange
from ._plan import make_plan
from ._policy_units import (
    UNIT_CODES,
    push,
    reset,
    state_size,
    token_ids,
    unit_lfu,
    unit_static,
    unlink,
)

__all__ = ["SIZE_POLICY_CODES", "policy_hits_table"]

#: Integer code of each per-size policy inside the kernels ("lru" and "lfu" only check the
#: simulation against the stack engine); the LFU variants and static placements run the
#: units of :mod:`lrc_kernels.cpu._policy_units`.
SIZE_POLICY_CODES: dict[str, int] = {
    p: i for i, p in enumerate(p for p in SIZE_POLICIES + ("lru",) if p not in UNIT_CODES)
}
SIZE_POLICY_CODES.update(UNIT_CODES)
_LFU_UNITS = (UNIT_CODES["lfu"], UNIT_CODES["lfu-decay"], UNIT_CODES["lfu-window"])
_STATIC_UNITS = (UNIT_CODES["static-oracle"], UNIT_CODES["static-prefix"], UNIT_CODES["pinned-lru"])
_FIFO = SIZE_POLICY_CODES["fifo"]
_CLOCK = SIZE_POLICY_CODES["clock"]
_SIEVE = SIZE_POLICY_CODES["sieve"]
_S3FIFO = SIZE_POLICY_CODES["s3fifo"]
_ARC = SIZE_POLICY_CODES["arc"]
_LRU = SIZE_POLICY_CODES["lru"]

# the policy's scalars in the state array S (after the lists; see _policy_units)
_HAND, _HAS_EVICTED, _S_SIZE, _M_SIZE, _G_SIZE = 0, 1, 2, 3, 4


@jit(inline="always")
def _arc_replace(S, n, in_b2, p):
    F = 4 * n
    n1 = S[F + 8]
    if (n1 > 0 and (n1 > p or (n1 == p and in_b2))) or S[F + 9] == 0:
        y = S[F]
        unlink(S, n, y)
        push(S, n, y, 2)
    else:
        y = S[F + 1]
        unlink(S, n, y)
        push(S, n, y, 3)


@jit(inline="always")
def _arc(S, n, x, C, fp):
    """ARC as libCacheSim implements it: lists 0 = T1, 1 = T2, 2 = B1, 3 = B2; fp[0] = p."""
    F = 4 * n
    Z = F + 8  # list lengths
    if S[x] == 0 or S[x] == 1:
        unlink(S, n, x)
        push(S, n, x, 1)
        return
    ghost = 0
    if S[x] == 2:
        fp[0] = min(fp[0] + max(S[Z + 3] / S[Z + 2], 1.0), float(C))
        unlink(S, n, x)
        ghost = 1
    elif S[x] == 3:
        fp[0] = max(fp[0] - max(S[Z + 2] / S[Z + 3], 1.0), 0.0)
        unlink(S, n, x)
        ghost = 2
    while S[Z] + S[Z + 1] + 1 > C:
        if ghost != 0:
            _arc_replace(S, n, ghost == 2, fp[0])
        elif S[Z] + S[Z + 2] + 1 > C:  # case IV
            if S[Z + 2] > 0:
                unlink(S, n, S[F + 2])
                _arc_replace(S, n, False, fp[0])
            else:
                unlink(S, n, S[F])
        else:
            if S[Z] + S[Z + 1] + S[Z + 2] + S[Z + 3] >= 2 * C and S[Z + 3] > 0:
                unlink(S, n, S[F + 3])
            _arc_replace(S, n, False, fp[0])
    push(S, n, x, 1 if ghost != 0 else 0)


@jit(inline="always")
def _s3fifo_evict(S, n, M):
    """One S3-FIFO eviction: lists 0 = small, 1 = main, 2 = ghost; bit = freq."""
    F = 4 * n
    Z = F + 8
    B = 3 * n
    S[M + _HAS_EVICTED] = 1
    if S[Z + 1] > S[M + _M_SIZE] or S[Z] == 0:
        while S[Z + 1] > 0:
            y = S[F + 1]
            unlink(S, n, y)
            if S[B + y] >= 1:
                push(S, n, y, 1)
                S[B + y] = min(S[B + y], 3) - 1
            else:
                return
        return
    while S[Z] > 0:
        y = S[F]
        unlink(S, n, y)
        if S[B + y] >= 2:
            push(S, n, y, 1)
            S[B + y] = 0
        else:
            if S[M + _G_SIZE] > 0:
                if S[Z + 2] + 1 > S[M + _G_SIZE]:
                    unlink(S, n, S[F + 2])
                push(S, n, y, 2)
            return


@jit(inline="always")
def _s3fifo(S, n, x, C):
    M = 4 * n + 12
    Z = 4 * n + 8
    B = 3 * n
    if S[x] == 0:
        S[B + x] += 1
        return
    hit_on_ghost = False
    if S[M + _G_SIZE] > 0 and S[x] == 2:
        unlink(S, n, x)
        hit_on_ghost = True
    if S[x] == 1:
        S[B + x] += 1
        return
    while S[Z] + S[Z + 1] + 1 > C:
        _s3fifo_evict(S, n, M)
    if hit_on_ghost or (S[M + _HAS_EVICTED] == 0 and S[Z] >= S[M + _S_SIZE]):
        push(S, n, x, 1)
    else:
        push(S, n, x, 0)
    S[B + x] = 0


@jit(inline="always")
def _process(S, n, code, x, C, fp):
    """One access of ``x`` (libCacheSim's ``get``): a hit updates, a miss evicts, inserts."""
    if code == _S3FIFO:
        _s3fifo(S, n, x, C)
        return
    if code == _ARC:
        _arc(S, n, x, C, fp)
        return
    F = 4 * n
    B = 3 * n
    if S[x] == 0:  # hit
        if code == _CLOCK or code == _SIEVE:
            S[B + x] = 1
        elif code == _LRU:
            unlink(S, n, x)
            push(S, n, x, 0)
        return
    if S[F + 8] + 1 > C:
        y = S[F]
        if code == _CLOCK:
            while S[B + y] >= 1:  # second chance: clear the bit, move to the newest end
                S[B + y] = 0
                unlink(S, n, y)
                push(S, n, y, 0)
                y = S[F]
        elif code == _SIEVE:
            hand = F + 12 + _HAND
            if S[hand] >= 0:
                y = S[hand]
            while S[B + y] >= 1:  # the hand moves towards newer objects, wrapping
                S[B + y] = 0
                y = S[2 * n + y] if S[2 * n + y] >= 0 else S[F]
            S[hand] = S[2 * n + y]
        unlink(S, n, y)
    push(S, n, x, 0)
    S[B + x] = 0


@jit()
def _unit(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids):
    """Hits of one cache size over sequences ``seq_order[s0:s1]`` of one layer (or model)."""
    A = experts.shape[1] * experts.shape[2] if model else experts.shape[2]
    n = n_ids
    S = np.empty(state_size(n), np.int64)
    M = 4 * n + 12
    seen = np.empty(n, np.uint8)
    fp = np.empty(1, np.float64)
    tok = np.empty(A, np.int64)
    s_size = max(np.int64(C * 0.1), 1)
    hits = 0
    for si in range(s0, s1):
        s = seq_order[si]
        reset(S, n)
        seen[:] = 0
        S[M + _HAND] = -1
        S[M + _S_SIZE] = s_size
        S[M + _M_SIZE] = C - s_size
        S[M + _G_SIZE] = np.int64(C * 0.9)
        fp[0] = 0.0
        u = 0
        for r in range(offsets[s], offsets[s + 1]):
            token_ids(experts, r, E, layer, model, tok)
            for j in range(A):  # 1. look-ups against the cache before the token
                x = tok[j]
                if S[x] == 0 or S[x] == 1:
                    hits += 1
                elif seen[x] == 0 and warm and u < C:
                    hits += 1
                if seen[x] == 0:
                    seen[x] = 1
                    u += 1
            for j in range(A):  # 2. processing in stored order
                _process(S, n, code, tok[j], C, fp)
    return hits


@jit()
def _any_unit(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids, param):
    """The unit of policy ``code`` (hits of one size over a chunk of sequences)."""
    if code == _LFU_UNITS[0] or code == _LFU_UNITS[1] or code == _LFU_UNITS[2]:
        return unit_lfu(
            experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids, param
        )
    if code == _STATIC_UNITS[0] or code == _STATIC_UNITS[1] or code == _STATIC_UNITS[2]:
        return unit_static(
            experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids, param
        )
    return _unit(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids)


@jit(parallel=True)
def _policy_chunks(
    experts, offsets, seq_order, chunk_ptr, E, code, sizes, model, warm, param, out
):  # fmt: skip
    P = chunk_ptr.shape[0] - 1
    Lo = out.shape[1]
    nS = sizes.shape[0]
    n_ids = experts.shape[1] * E if model else E
    per_chunk = Lo * nS
    for w in prange(P * per_chunk):
        c = w // per_chunk
        lo = (w % per_chunk) // nS
        ci = w % nS
        out[c, lo, ci] = _any_unit(
            experts, offsets, seq_order, chunk_ptr[c], chunk_ptr[c + 1], E, lo, model, code,
            sizes[ci], warm, n_ids, param,
        )  # fmt: skip


def policy_hits_table(
    experts, offsets, num_experts, policy, sizes, model_level, warm_start, group, n_groups,
    param=None,
):  # fmt: skip
    """Same contract as :func:`lrc_kernels.reference.policy_hits_table`.

    Returns int64 hits ``(G, L or 1, len(sizes))``: for each group, layer (one row at model
    level) and cache size, the look-ups that hit, summed over the group's sequences.
    """
    if policy not in SIZE_POLICY_CODES:
        raise ValueError(f"policy must be one of {tuple(SIZE_POLICY_CODES)}, got {policy!r}")
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if sizes.size and int(sizes.min()) < 1:
        raise ValueError(f"cache sizes must be >= 1, got {int(sizes.min())}")
    N_rows, L, k = experts.shape
    Lo = 1 if model_level else L
    offsets = np.asarray(offsets, np.int64)
    plan = make_plan(np.diff(offsets), group, n_groups, row_bytes=Lo * max(sizes.size, 1) * 8)
    out = np.zeros((plan.n_chunks, Lo, sizes.size), dtype=np.int64)
    if plan.n_chunks and sizes.size:
        _policy_chunks(
            experts, offsets, plan.seq_order, plan.chunk_ptr, int(num_experts),
            SIZE_POLICY_CODES[policy], sizes, bool(model_level), bool(warm_start),
            float(_param(policy, param)), out,
        )  # fmt: skip
    return plan.reduce(out)


def _param(policy, param):
    """The policy's parameter as a float (its default when None; 0 for none)."""
    if policy in POLICY_PARAMS:
        return POLICY_PARAMS[policy][1] if param is None else param
    return 0.0

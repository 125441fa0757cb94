"""Per-size cache policies without the stack property (FIFO, Clock, SIEVE, S3-FIFO, ARC).

One simulation per cache size, as ``docs/metrics.md`` ("Policies without the stack
property") defines it and :func:`lrc_kernels.reference.policy_hits_table` spells out. Each
``prange`` unit is one (chunk of sequences, layer, size) at layer level, or one (chunk,
size) at model level, and writes its own output cell, so there is no shared ``+=``.

Every queue is a doubly linked list over the ids (``prv``/``nxt`` arrays, one list id per
id in ``lst``), ordered oldest first: libCacheSim's tail is ``first[l]``, its head
``last[l]``. An id is in at most one list (data or ghost) at a time.
"""

from __future__ import annotations

import numpy as np

from .._spec import POLICY_PARAMS, SIZE_POLICIES
from ._jit import jit, prange
from ._plan import make_plan
from ._policy_units import UNIT_CODES, push, token_ids, unit_lfu, unit_static, unlink

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

# misc[] slots of one simulation
_HAND, _HAS_EVICTED, _S_SIZE, _M_SIZE, _G_SIZE = 0, 1, 2, 3, 4


@jit()
def _arc_replace(in_b2, p, lst, prv, nxt, first, last, size):
    n1 = size[0]
    if (n1 > 0 and (n1 > p or (n1 == p and in_b2))) or size[1] == 0:
        y = first[0]
        unlink(y, lst, prv, nxt, first, last, size)
        push(y, 2, lst, prv, nxt, first, last, size)
    else:
        y = first[1]
        unlink(y, lst, prv, nxt, first, last, size)
        push(y, 3, lst, prv, nxt, first, last, size)


@jit()
def _arc(x, C, lst, prv, nxt, first, last, size, fp):
    """ARC as libCacheSim implements it: lists 0 = T1, 1 = T2, 2 = B1, 3 = B2; fp[0] = p."""
    if lst[x] == 0 or lst[x] == 1:
        unlink(x, lst, prv, nxt, first, last, size)
        push(x, 1, lst, prv, nxt, first, last, size)
        return
    ghost = 0
    if lst[x] == 2:
        fp[0] = min(fp[0] + max(size[3] / size[2], 1.0), float(C))
        unlink(x, lst, prv, nxt, first, last, size)
        ghost = 1
    elif lst[x] == 3:
        fp[0] = max(fp[0] - max(size[2] / size[3], 1.0), 0.0)
        unlink(x, lst, prv, nxt, first, last, size)
        ghost = 2
    while size[0] + size[1] + 1 > C:
        if ghost != 0:
            _arc_replace(ghost == 2, fp[0], lst, prv, nxt, first, last, size)
        elif size[0] + size[2] + 1 > C:  # case IV
            if size[2] > 0:
                unlink(first[2], lst, prv, nxt, first, last, size)
                _arc_replace(False, fp[0], lst, prv, nxt, first, last, size)
            else:
                unlink(first[0], lst, prv, nxt, first, last, size)
        else:
            if size[0] + size[1] + size[2] + size[3] >= 2 * C and size[3] > 0:
                unlink(first[3], lst, prv, nxt, first, last, size)
            _arc_replace(False, fp[0], lst, prv, nxt, first, last, size)
    push(x, 1 if ghost != 0 else 0, lst, prv, nxt, first, last, size)


@jit()
def _s3fifo_evict(lst, prv, nxt, first, last, size, bit, misc):
    """One S3-FIFO eviction: lists 0 = small, 1 = main, 2 = ghost; bit = freq."""
    misc[_HAS_EVICTED] = 1
    if size[1] > misc[_M_SIZE] or size[0] == 0:
        while size[1] > 0:
            y = first[1]
            unlink(y, lst, prv, nxt, first, last, size)
            if bit[y] >= 1:
                push(y, 1, lst, prv, nxt, first, last, size)
                bit[y] = min(bit[y], 3) - 1
            else:
                return
        return
    while size[0] > 0:
        y = first[0]
        unlink(y, lst, prv, nxt, first, last, size)
        if bit[y] >= 2:
            push(y, 1, lst, prv, nxt, first, last, size)
            bit[y] = 0
        else:
            if misc[_G_SIZE] > 0:
                if size[2] + 1 > misc[_G_SIZE]:
                    unlink(first[2], lst, prv, nxt, first, last, size)
                push(y, 2, lst, prv, nxt, first, last, size)
            return


@jit()
def _s3fifo(x, C, lst, prv, nxt, first, last, size, bit, misc):
    if lst[x] == 0:
        bit[x] += 1
        return
    hit_on_ghost = False
    if misc[_G_SIZE] > 0 and lst[x] == 2:
        unlink(x, lst, prv, nxt, first, last, size)
        hit_on_ghost = True
    if lst[x] == 1:
        bit[x] += 1
        return
    while size[0] + size[1] + 1 > C:
        _s3fifo_evict(lst, prv, nxt, first, last, size, bit, misc)
    if hit_on_ghost or (misc[_HAS_EVICTED] == 0 and size[0] >= misc[_S_SIZE]):
        push(x, 1, lst, prv, nxt, first, last, size)
    else:
        push(x, 0, lst, prv, nxt, first, last, size)
    bit[x] = 0


@jit()
def _process(code, x, C, lst, prv, nxt, first, last, size, bit, misc, fp):
    """One access of ``x`` (libCacheSim's ``get``): a hit updates, a miss evicts, inserts."""
    if code == _S3FIFO:
        _s3fifo(x, C, lst, prv, nxt, first, last, size, bit, misc)
        return
    if code == _ARC:
        _arc(x, C, lst, prv, nxt, first, last, size, fp)
        return
    if lst[x] == 0:  # hit
        if code == _CLOCK or code == _SIEVE:
            bit[x] = 1
        elif code == _LRU:
            unlink(x, lst, prv, nxt, first, last, size)
            push(x, 0, lst, prv, nxt, first, last, size)
        return
    if size[0] + 1 > C:
        y = first[0]
        if code == _CLOCK:
            while bit[y] >= 1:  # second chance: clear the bit, move to the newest end
                bit[y] = 0
                unlink(y, lst, prv, nxt, first, last, size)
                push(y, 0, lst, prv, nxt, first, last, size)
                y = first[0]
        elif code == _SIEVE:
            if misc[_HAND] >= 0:
                y = misc[_HAND]
            while bit[y] >= 1:  # the hand moves towards newer objects, wrapping
                bit[y] = 0
                y = nxt[y] if nxt[y] >= 0 else first[0]
            misc[_HAND] = nxt[y]
        unlink(y, lst, prv, nxt, first, last, size)
    push(x, 0, lst, prv, nxt, first, last, size)
    bit[x] = 0


@jit()
def _unit(experts, offsets, seq_order, s0, s1, E, layer, model, code, C, warm, n_ids):
    """Hits of one cache size over sequences ``seq_order[s0:s1]`` of one layer (or model)."""
    L = experts.shape[1]
    k = experts.shape[2]
    A = L * k if model else k
    lst = np.empty(n_ids, np.int64)
    prv = np.empty(n_ids, np.int64)
    nxt = np.empty(n_ids, np.int64)
    bit = np.empty(n_ids, np.int64)
    seen = np.empty(n_ids, np.uint8)
    first = np.empty(4, np.int64)
    last = np.empty(4, np.int64)
    size = np.empty(4, np.int64)
    misc = np.empty(5, np.int64)
    fp = np.empty(1, np.float64)
    tok = np.empty(A, np.int64)
    s_size = max(np.int64(C * 0.1), 1)
    hits = 0
    for si in range(s0, s1):
        s = seq_order[si]
        lst[:] = -1
        bit[:] = 0
        seen[:] = 0
        first[:] = -1
        last[:] = -1
        size[:] = 0
        misc[_HAND] = -1
        misc[_HAS_EVICTED] = 0
        misc[_S_SIZE] = s_size
        misc[_M_SIZE] = C - s_size
        misc[_G_SIZE] = np.int64(C * 0.9)
        fp[0] = 0.0
        u = 0
        for r in range(offsets[s], offsets[s + 1]):
            token_ids(experts, r, E, layer, model, tok)
            for j in range(A):  # 1. look-ups against the cache before the token
                x = tok[j]
                if lst[x] == 0 or lst[x] == 1:
                    hits += 1
                elif seen[x] == 0 and warm and u < C:
                    hits += 1
                if seen[x] == 0:
                    seen[x] = 1
                    u += 1
            for j in range(A):  # 2. processing in stored order
                _process(code, tok[j], C, lst, prv, nxt, first, last, size, bit, misc, fp)
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

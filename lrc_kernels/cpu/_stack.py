"""The priority-stack engine on the CPU: one pass gives the hit rate at every cache size.

One kernel serves LRU, LFU, Belady and SCH; they differ only in the priority an expert gets
when it is accessed (and, for SCH, in the window slide after each token). The stack is kept
as three arrays indexed by depth (id, primary priority, last access), plus ``pos[id]`` = the
depth of each id (-1 when not yet accessed), so a look-up is O(1) and an update walks only
down to the accessed id's old depth, never over all N ids.

Streams: at layer level a (sequence, layer) pair with N = E ids; at model level one
sequence with the L*k accesses of a token in layer order and ids ``l*E + e`` (N = L*E).

For large N, LFU and Belady go to exact engines that avoid most of the walk
(:mod:`._stack_lfu`, count classes; :mod:`._stack_belady`, run-list scan); the scan here
stays their test oracle (``_engine="scan"``).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from ._plan import make_plan
from ._stack_steps import _access_id, _init_stream, _look_up

__all__ = ["POLICY_CODES", "stack_stats_table"]

from .._spec import POLICY_CODES  # noqa: E402


@jit()
def _stream(x, a, b, l, model, E, policy, m, warm, stat, pos, sid, sp, sl, aux, nxt, last_seen):
    """Run one stream (rows a:b; layer l unless model) and add its depth counts to ``stat``."""
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    A = k * x.shape[1] if model else k
    _init_stream(x, a, T, l, model, E, k, A, policy, m, pos, aux, nxt, last_seen)
    size = 0
    ts = 0
    for t in range(T):
        row = a + t
        # 1. look-ups against the stack as it was before this token
        _look_up(x, row, l, model, E, k, A, warm, pos, size, stat)
        # 2. updates, in stored order
        for j in range(A):
            y = _access_id(x, row, l, j, k, E, model)
            ts += 1
            if policy == 0:
                prim = 0
            elif policy == 1:
                aux[y] += 1
                prim = aux[y]
            elif policy == 2:
                prim = -nxt[t * A + j]
            else:
                aux[y] -= 1
                prim = aux[y]
            D = pos[y]
            if D < 0:
                D = size
                size += 1
            if D == 0:  # already on top, or the first id of the sequence
                sid[0] = y
                pos[y] = 0
                sp[0] = prim
                sl[0] = ts
                continue
            cid = sid[0]
            cp = sp[0]
            cl = sl[0]
            sid[0] = y
            sp[0] = prim
            sl[0] = ts
            pos[y] = 0
            for dd in range(1, D):
                ep = sp[dd]
                if cp > ep or (cp == ep and cl > sl[dd]):
                    eid = sid[dd]
                    el = sl[dd]
                    sid[dd] = cid
                    sp[dd] = cp
                    sl[dd] = cl
                    pos[cid] = dd
                    cid = eid
                    cp = ep
                    cl = el
            sid[D] = cid
            sp[D] = cp
            sl[D] = cl
            pos[cid] = D
        # 3. SCH: the window slides by one token
        if policy == 3 and t + m < T:
            for j in range(A):
                y = _access_id(x, row + m, l, j, k, E, model)
                aux[y] += 1
                if pos[y] >= 0:
                    sp[pos[y]] += 1


@jit()
def _stream_packed(
    x, a, b, l, model, E, policy, m, warm, stat, pos, stk, aux, nxt, last_seen, id_bits, ts_bits
):
    """Same pass as :func:`_stream`, with each stack entry packed into one int64 key.

    ``key = primary << (ts_bits + id_bits) | last << id_bits | id``: comparing keys compares
    (primary, last) lexicographically, and keys are unique, so one carry step is a
    branch-free ``max``/``min``. Used whenever the three fields fit in 63 bits.
    """
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    A = k * x.shape[1] if model else k
    N = pos.shape[0]
    id_mask = (np.int64(1) << id_bits) - 1
    sh_p = id_bits + ts_bits
    top = T * A + 1 + N  # Belady: primary = top - next >= 1
    _init_stream(x, a, T, l, model, E, k, A, policy, m, pos, aux, nxt, last_seen)
    size = 0
    ts = np.int64(0)
    for t in range(T):
        row = a + t
        _look_up(x, row, l, model, E, k, A, warm, pos, size, stat)
        for j in range(A):
            y = _access_id(x, row, l, j, k, E, model)
            ts += 1
            if policy == 0:
                prim = np.int64(0)
            elif policy == 1:
                aux[y] += 1
                prim = aux[y]
            elif policy == 2:
                prim = top - nxt[t * A + j]
            else:
                aux[y] -= 1
                prim = aux[y]
            key = (prim << sh_p) | y
            if ts_bits > 0:  # Belady's primary is unique alone
                key |= ts << id_bits
            D = pos[y]
            if D < 0:
                D = size
                size += 1
            pos[y] = 0
            if D == 0:
                stk[0] = key
                continue
            c = stk[0]
            stk[0] = key
            for dd in range(1, D):
                e = stk[dd]
                hi = max(c, e)
                c = min(c, e)
                stk[dd] = hi
                pos[hi & id_mask] = dd
            stk[D] = c
            pos[c & id_mask] = D
        if policy == 3 and t + m < T:
            inc = np.int64(1) << sh_p
            for j in range(A):
                y = _access_id(x, row + m, l, j, k, E, model)
                aux[y] += 1
                if pos[y] >= 0:
                    stk[pos[y]] += inc


@jit(parallel=True)
def _stack_chunks(
    x, offsets, seq_order, chunk_ptr, E, policy, m, warm, model, max_len, id_bits, ts_bits, out
):
    P = chunk_ptr.shape[0] - 1
    Lo = out.shape[1]
    N = out.shape[2] - 1
    A = x.shape[2] * (x.shape[1] if model else 1)
    packed = id_bits >= 0
    for unit in prange(P * Lo):
        c = unit // Lo
        l = unit % Lo
        pos = np.empty(N, np.int64)
        sid = np.empty(N, np.int64)
        sp = np.empty(N if not packed else 0, np.int64)
        sl = np.empty(N if not packed else 0, np.int64)
        aux = np.empty(N, np.int64)
        last_seen = np.empty(N if policy == 2 else 0, np.int64)
        nxt = np.empty(max_len * A if policy == 2 else 0, np.int64)
        stat = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            if packed:
                _stream_packed(
                    x,
                    offsets[s],
                    offsets[s + 1],
                    l,
                    model,
                    E,
                    policy,
                    m,
                    warm,
                    stat,
                    pos,
                    sid,
                    aux,
                    nxt,
                    last_seen,
                    id_bits,
                    ts_bits,
                )
            else:
                _stream(
                    x,
                    offsets[s],
                    offsets[s + 1],
                    l,
                    model,
                    E,
                    policy,
                    m,
                    warm,
                    stat,
                    pos,
                    sid,
                    sp,
                    sl,
                    aux,
                    nxt,
                    last_seen,
                )


def _bits(v: int) -> int:
    """Bits needed to hold every integer in [0, v]."""
    return max(int(v).bit_length(), 1)


def _packing(policy: str, n_ids: int, accesses: int, max_len: int, m: int) -> tuple[int, int]:
    """(id_bits, ts_bits) of the packed key, or (-1, -1) when it would not fit in 63 bits."""
    id_bits = _bits(n_ids - 1)
    total = max_len * accesses
    if policy == "belady":
        ts_bits, prim_bits = 0, _bits(total + n_ids + 1)
    else:
        ts_bits = _bits(total)
        prim_bits = {"lru": 0, "lfu": _bits(max_len), "sch": _bits(min(m, max_len))}[policy]
    if id_bits + ts_bits + prim_bits > 63:
        return -1, -1
    return id_bits, ts_bits


# Smallest id count N from which the LFU / Belady engines beat the scan, per (policy,
# model level); measured in docs/benchmarks.md, "Shared-cache engines: LFU and Belady".
_FAST_MIN_IDS = {
    ("lfu", True): 1024,
    ("lfu", False): 2048,
    ("belady", True): 2048,
    ("belady", False): 4096,
}


_ENGINES = (None, "auto", "scan", "lru", "sch", "lfu", "belady")


def _fast_fits(policy, accesses, max_len, id_bits) -> bool:
    """Whether the LFU / Belady engine can hold this call's keys and class pool."""
    if policy == "belady":
        return id_bits >= 0
    return max_len * accesses < 2**31 - 1  # int32 class pool


def _fast_engine(policy, model_level, n_ids, accesses, max_len, id_bits, engine):
    """``"lfu"`` or ``"belady"`` when that engine serves the call, else ``None`` (the scan)."""
    if engine == "scan" or (policy, bool(model_level)) not in _FAST_MIN_IDS:
        return None
    if n_ids < _FAST_MIN_IDS[policy, bool(model_level)]:
        return None
    return policy if _fast_fits(policy, accesses, max_len, id_bits) else None


def _run_fast(engine, experts, offsets, plan, E, warm, model, max_len, n_ids, id_bits, out):
    from ._stack_belady import belady_chunks
    from ._stack_lfu import lfu_chunks, lfu_tree_shape

    args = (experts, offsets, plan.seq_order, plan.chunk_ptr, E, warm, model, max_len)
    if engine == "belady":
        belady_chunks(*args, id_bits, out)
    else:
        h, cb, dtype = lfu_tree_shape(max_len, n_ids)
        lfu_chunks(*args, h, cb, np.array([np.iinfo(dtype).max], dtype), out)


def stack_stats_table(
    experts,
    offsets,
    num_experts,
    policy,
    m,
    model_level,
    warm_start,
    group,
    n_groups,
    *,
    _force_unpacked=False,
    _engine=None,
):
    """Same contract as :func:`lrc_kernels.reference.stack_stats_table`.

    ``_engine`` (private, for tests and benchmarks): ``"scan"`` forces the priority-stack
    scan below (the oracle of the faster engines); ``"lru"``, ``"sch"``, ``"lfu"`` and
    ``"belady"`` force the exact engines of :mod:`._stack_lru`, :mod:`._stack_sch`,
    :mod:`._stack_lfu` and :mod:`._stack_belady`; ``None`` or ``"auto"`` picks the fastest
    exact one (:func:`_pick_engine`), or the scan when ``_force_unpacked`` (which tests its
    unpacked form).
    """
    if _engine not in _ENGINES:
        raise ValueError(f"_engine must be one of {_ENGINES}, got {_engine!r}")
    N_rows, L, k = experts.shape
    E = int(num_experts)
    n_ids = L * E if model_level else E
    Lo = 1 if model_level else L
    offsets = np.asarray(offsets, np.int64)
    lengths = np.diff(offsets)
    plan = make_plan(lengths, group, n_groups, row_bytes=Lo * (n_ids + 1) * 8)
    out = np.zeros((plan.n_chunks, Lo, n_ids + 1), dtype=np.int64)
    if plan.n_chunks:
        max_len = int(lengths.max())
        mm = int(m) if m is not None else 0
        id_bits, ts_bits = _packing(policy, n_ids, k * (L if model_level else 1), max_len, mm)
        if _force_unpacked:
            id_bits = ts_bits = -1
        accesses = k * (L if model_level else 1)
        engine = _engine
        if engine in (None, "auto"):
            engine = (
                "scan"
                if _force_unpacked
                else _pick_engine(
                    policy, model_level, n_ids, id_bits, ts_bits, mm, max_len, accesses
                )
            )
        if engine in ("lru", "sch"):
            args = (experts, offsets, plan.seq_order, plan.chunk_ptr, E, bool(warm_start))
            key_ok = _sch_key_fits(id_bits, ts_bits, mm, max_len)
            _fast_chunks(engine, policy, args, bool(model_level), mm, key_ok, id_bits, ts_bits, out)
            return plan.reduce(out)
        if engine in ("lfu", "belady"):
            if engine != policy or not _fast_fits(policy, accesses, max_len, id_bits):
                raise ValueError(f"stack engine {engine!r} cannot compute this {policy!r} call")
            _run_fast(
                engine, experts, offsets, plan, E, bool(warm_start), bool(model_level), max_len,
                n_ids, id_bits, out,
            )  # fmt: skip
            return plan.reduce(out)
        _stack_chunks(
            experts,
            offsets,
            plan.seq_order,
            plan.chunk_ptr,
            E,
            POLICY_CODES[policy],
            mm,
            bool(warm_start),
            bool(model_level),
            max_len,
            id_bits,
            ts_bits,
            out,
        )
    return plan.reduce(out)


def _pick_engine(policy, model_level, n_ids, id_bits, ts_bits, m, max_len, accesses=1) -> str:
    """The fastest exact engine for (policy, level, shape); see docs/metrics.md."""
    if policy == "lru":  # faster at every measured shape, layer level included
        return "lru"
    if policy in ("lfu", "belady"):
        return (
            _fast_engine(policy, model_level, n_ids, accesses, max_len, id_bits, "auto") or "scan"
        )
    if (
        policy == "sch"
        and model_level
        and n_ids >= _SCH_MIN_IDS
        and _sch_key_fits(id_bits, ts_bits, m, max_len)
    ):
        return "sch"
    return "scan"


# below this many ids the whole shared stack is shallow and the scan is as fast or faster
# than the SCH hybrid (measured on synthetic traces, 16 .. 2048 ids, m = 4 and 64)
_SCH_MIN_IDS = 1024


def _sch_key_fits(id_bits, ts_bits, m, max_len) -> bool:
    """The SCH engine needs packed keys of at most 62 bits (a sentinel sits above them)."""
    return id_bits >= 0 and id_bits + ts_bits + _bits(min(m, max_len)) <= 62


def _fast_chunks(engine, policy, args, model_level, m, key_ok, id_bits, ts_bits, out):
    """Run a counting engine with the scan's plan and output rows (``args``: its inputs)."""
    if engine not in ("lru", "sch") or engine != policy:
        raise ValueError(f"stack engine {engine!r} does not compute policy {policy!r}")
    x = args[0]
    n_ids = out.shape[2] - 1
    if engine == "lru":
        from ._stack_lru import lru_chunks, lru_words  # they import this module's helpers

        A = x.shape[2] * (x.shape[1] if model_level else 1)
        lru_chunks(*args, model_level, lru_words(n_ids, A), out)
        return
    from ._stack_sch import sch_chunks

    if not (model_level and key_ok):
        raise ValueError("the SCH counting engine needs model level and keys of <= 62 bits")
    sch_chunks(*args, m, id_bits, ts_bits, out)

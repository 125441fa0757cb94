"""LFU stack depths by count classes: implicit depths, no walk down the stack.

LFU's key is ``(count, last)``. Call the ids with count c *class c* and m(c) the depth of
its newest member (its top). Three facts (proofs in docs/metrics.md, "Shared-cache engines:
LFU and Belady") make every depth implicit:

- L1: inside a class, the stack is in recency order (newest shallowest).
- L2: in the update of x (old depth D, old count c0), the carry starts in the class a0 of
  the old top and drops to a_{i+1} = argmin_{c < a_i} m(c) while m(a_{i+1}) < D.
- L3: each class a_i loses its smallest depth and gains the next drop's depth (D for the
  last); x leaves class c0 (with its depth D) and joins class c0+1 as newest at depth 0.
  Members never change order inside a class.

So each class stores its members (oldest first) and its depth set (sorted, decreasing) in
parallel arrays carved from one pool; ``slot[id]`` points into the pool and a look-up is
``dep[slot[id]]``. Class tops are keys ``m << cb | c`` in a 16-ary min tree over counts,
so each drop is one prefix-min query. An update costs the drops (about 1.6) plus one shift
of the records' depths per dropped class, and no per-record id bookkeeping.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._jit import jit, prange

__all__ = ["lfu_chunks", "lfu_tree_shape"]


def lfu_tree_shape(max_len: int, n_ids: int) -> tuple[int, int, type]:
    """(levels, class bits, key dtype) of the min tree for counts up to ``max_len``."""
    h = 1
    while 16**h < max_len + 2:
        h += 1
    cb = max(int(max_len + 1).bit_length(), 1)
    dbits = max(int(n_ids + 1).bit_length(), 1)
    dtype = np.int32 if cb + dbits <= 30 else np.int64
    return h, cb, dtype


@intrinsic
def _shift_up(typingctx, arr, p, n):
    """``arr[p+1 : p+1+n] = arr[p : p+n]`` as one ``llvm.memmove`` (overlap-safe, no copy)."""
    sig = types.void(arr, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        src = builder.gep(ary.data, [args[1]])
        dst = builder.gep(src, [context.get_constant(types.int64, 1)])
        item = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memmove(builder, dst, src, args[2], item)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _min16(typingctx, arr, base, cut, skip, fill):
    """Smallest ``arr[base + j]`` over lanes j < cut, j != skip (``fill`` if none).

    One 16-lane vector load, a lane mask and ``llvm.vector.reduce.smin``: a scalar loop
    here is a 16-step dependency chain (the whole engine was 1.5-1.9x slower with it).
    """
    sig = arr.dtype(arr, types.int64, types.int64, types.int64, arr.dtype)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        elt = context.get_data_type(signature.args[0].dtype)
        vty = ir.VectorType(elt, 16)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), vty.as_pointer())
        vec = builder.load(ptr, align=elt.width // 8)
        i64 = ir.IntType(64)
        lanes = ir.Constant(ir.VectorType(i64, 16), list(range(16)))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)

        def splat(v):
            und = ir.Constant(ir.VectorType(v.type, 16), ir.Undefined)
            one = builder.insert_element(und, v, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, und, zeros)

        keep = builder.and_(
            builder.icmp_signed("<", lanes, splat(args[2])),
            builder.icmp_signed("!=", lanes, splat(args[3])),
        )
        sel = builder.select(keep, vec, splat(args[4]))
        fnty = ir.FunctionType(elt, [vty])
        name = f"llvm.vector.reduce.smin.v16i{elt.width}"
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [sel])

    return sig, codegen


@jit()
def _init_classes(x, a, T, l0, l1, mul, k, cnt, slot, base, lo, hi, tree):
    """Reset per-stream state; class c gets room for every id whose final count reaches c."""
    N = cnt.shape[0]
    for i in range(N):
        cnt[i] = 0
        slot[i] = -1
    for t in range(T):
        for lay in range(l0, l1):
            for jj in range(k):
                cnt[lay * mul + np.int64(x[a + t, lay, jj])] += 1
    for c in range(T + 2):
        hi[c] = 0
    base[0] = 0  # class 0 (ids not yet seen) holds no one
    for i in range(N):
        hi[cnt[i]] += 1
        cnt[i] = 0
    # cap[c] = ids with final count >= c; base = its running sum over c = 1..T
    cap = 0
    for c in range(T, 0, -1):
        cap += hi[c]
        lo[c] = cap
    p = 0
    for c in range(1, T + 2):
        base[c] = p
        if c <= T:
            p += lo[c]
    for c in range(T + 2):
        lo[c] = base[c]
        hi[c] = base[c]
    inf = tree[0]
    for i in range(tree.shape[0]):
        tree[i] = inf


@jit()
def _lfu_stream(
    x, a, b, l, model, E, warm, stat, cnt, slot, mem, dep, base, lo, hi, tree, h, cb, drc, drd
):
    """One stream (rows a:b; layer l unless model): LFU depth counts added to ``stat``.

    One flat body on purpose: an array passed to a helper inside the hot loop costs NRT
    reference counting on every call.
    """
    T = b - a
    if T == 0:
        return
    k = x.shape[2]
    l0, l1 = (0, x.shape[1]) if model else (l, l + 1)
    mul = E if model else 0
    N = cnt.shape[0]
    _init_classes(x, a, T, l0, l1, mul, k, cnt, slot, base, lo, hi, tree)
    inf = tree[0]
    cmask = (np.int64(1) << cb) - 1
    size = 0
    ta = 0  # class of the id on top
    for t in range(T):
        row = a + t
        # 1. look-ups against the stack before this token (warm start as _stack._look_up)
        u = size
        for lay in range(l0, l1):
            for jj in range(k):
                s = slot[lay * mul + np.int64(x[row, lay, jj])]
                if s >= 0:
                    stat[dep[s]] += 1
                else:
                    stat[u if warm else N] += 1
                    u += 1
        # 2. updates in stored order
        for lay in range(l0, l1):
            for jj in range(k):
                y = lay * mul + np.int64(x[row, lay, jj])
                c0 = np.int64(cnt[y])
                s = np.int64(slot[y])
                if s >= 0:
                    D = np.int64(dep[s])
                else:
                    D = np.int64(size)
                    size += 1
                # L2: the carry's class drops, one prefix-min query over class tops each
                nd = 0
                if D > 0:
                    drc[0] = ta
                    cur = ta
                    while True:
                        # q = smallest key among classes < cur: 16 lanes per level
                        q = inf
                        ii = cur
                        o = 0
                        sz = np.int64(1) << (4 * h)
                        for _ in range(h):
                            v = _min16(tree, o + ((ii >> 4) << 4), ii & 15, -1, inf)
                            q = v if v < q else q
                            ii >>= 4
                            o += sz
                            sz >>= 4
                        qd = np.int64(q >> cb)
                        if qd >= D:
                            break
                        nd += 1
                        cur = np.int64(q & cmask)
                        drc[nd] = cur
                        drd[nd] = qd
                    drd[nd + 1] = D
                # x leaves class c0 with its depth; the shorter side of the class moves
                if s >= 0:
                    ca = lo[c0]
                    cz = hi[c0]
                    if s - ca < cz - 1 - s:
                        for qq in range(s, ca, -1):
                            z = mem[qq - 1]
                            mem[qq] = z
                            dep[qq] = dep[qq - 1]
                            slot[z] = qq
                        lo[c0] = ca + 1
                    else:
                        for qq in range(s, cz - 1):
                            z = mem[qq + 1]
                            mem[qq] = z
                            dep[qq] = dep[qq + 1]
                            slot[z] = qq
                        hi[c0] = cz - 1
                # L3: each dropped class loses its top depth and gains the next drop's
                if D > 0:
                    for i in range(nd + 1):
                        cl = drc[i]
                        nv = drd[i + 1]
                        e = hi[cl] - 1
                        p = lo[cl]  # first index in [lo, e) with a depth below nv
                        n = e - p
                        while n > 0:  # branch-free lower bound
                            half = n >> 1
                            above = dep[p + half] > nv
                            p = p + half + 1 if above else p
                            n = n - half - 1 if above else half
                        _shift_up(dep, p, e - p)
                        dep[p] = nv
                # x joins class c0 + 1 as its newest member, on top
                c1 = c0 + 1
                p = hi[c1]
                mem[p] = y
                dep[p] = 0
                slot[y] = p
                hi[c1] = p + 1
                cnt[y] = c1
                ta = c1
                # refresh the tops of the classes that changed
                for i in range(-2, nd + 1):
                    if i == -2:
                        if s < 0:
                            continue
                        cl = c0
                    elif i == -1:
                        cl = c1
                    else:
                        if D == 0:
                            break
                        cl = drc[i]
                        if cl == c0 or cl == c1:
                            continue
                    key = inf
                    if hi[cl] > lo[cl]:
                        key = (np.int64(dep[hi[cl] - 1]) << cb) | cl
                    # set the class's key, refresh the minima above it (stop when unchanged)
                    ii = cl
                    o = 0
                    sz = np.int64(1) << (4 * h)
                    for lv in range(h):
                        r = _min16(tree, o + ((ii >> 4) << 4), 16, ii & 15, inf)
                        r = key if key < r else r
                        tree[o + ii] = key
                        ii >>= 4
                        o += sz
                        sz >>= 4
                        if lv + 1 < h and tree[o + ii] == r:
                            break
                        key = r


@jit(parallel=True)
def lfu_chunks(x, offsets, seq_order, chunk_ptr, E, warm, model, max_len, h, cb, tree0, out):
    """LFU depth counts per chunk of sequences: ``out[c, l]`` (l = 0 at model level).

    ``tree0`` is a one-element array holding the tree's "empty" key (its dtype is the
    tree's)."""
    P = chunk_ptr.shape[0] - 1
    Lo = out.shape[1]
    N = out.shape[2] - 1
    A = x.shape[2] * (x.shape[1] if model else 1)
    n_tree = 0
    for lv in range(h):
        n_tree += np.int64(1) << (4 * (h - lv))
    for unit in prange(P * Lo):
        c = unit // Lo
        l = unit % Lo
        cnt = np.empty(N, np.int32)
        slot = np.empty(N, np.int32)
        mem = np.empty(max_len * A + 1, np.int32)
        dep = np.empty(max_len * A + 1, np.int32)
        base = np.empty(max_len + 2, np.int64)
        lo = np.empty(max_len + 2, np.int64)
        hi = np.empty(max_len + 2, np.int64)
        tree = np.full(n_tree, tree0[0])
        drc = np.empty(max_len + 2, np.int64)
        drd = np.empty(max_len + 3, np.int64)
        stat = out[c, l]
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            s = seq_order[q]
            _lfu_stream(
                x, offsets[s], offsets[s + 1], l, model, E, warm, stat, cnt, slot, mem, dep,
                base, lo, hi, tree, h, cb, drc, drd,
            )  # fmt: skip

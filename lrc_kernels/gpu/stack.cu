// The priority-stack engine: stack-depth counts for SCH, LRU, LFU and Belady
// (docs/metrics.md, "One engine for SCH, LRU, LFU and Belady").
//
// One work item = one stream: a (sequence, layer) pair at layer level (N = E ids, A = k
// accesses per token), or one sequence at model level (N = L*E ids, A = L*k accesses per
// token: layers 0..L-1 in order, expert e of layer l is id l*E + e). Items are spread over
// the grid with a grid-stride loop; one thread runs a whole stream serially.
//
// Scratch per thread (int32), 5*N + 1 entries:
//   stack[N]  ids by depth (0 = top)          pos[N]  depth of each id, -1 if absent
//   last[N]   ts of latest access (Belady: -next access position)
//   aux[N]    LFU: access count, SCH: future-window count, otherwise 0
//   stat[N+1] this stream's depth counts, flushed to the table with atomics at the end
// Priority of id y: aux[y] * 2^32 + last[y] (larger = keep), which orders (aux, last)
// lexicographically because 0 <= last < 2^31 for LRU/LFU/SCH, and is -next for Belady.
// The caller guarantees T*A + N + 1 < 2^31 for every stream, so all int32 values fit.
//
// Belady needs the position of the next access of the same id. The thread computes it
// for its own stream first, in a backward pass (stack[] serves as the last-seen table),
// into nxt[], an int32 array laid out like the trace: no other thread reads that part.
#include "common.cuh"

// Policy codes: the loader prepends lrc_kernels._spec.cuda_defines(); these defaults (for
// compiling the file from disk, e.g. the host-shim tests) are checked against _spec.
#ifndef LRC_POLICY_LRU
#define LRC_POLICY_LRU 0
#define LRC_POLICY_LFU 1
#define LRC_POLICY_BELADY 2
#define LRC_POLICY_SCH 3
#endif

__device__ __forceinline__ i64 lrc_priority(const int* aux, const int* last, int y) {
    return (i64)aux[y] * 4294967296LL + (i64)last[y];
}

template <typename Id>
__device__ void lrc_stack_stats(const Id* __restrict__ x, const i64* __restrict__ offsets,
                                const i64* __restrict__ group, i64 num_seqs, int L, int k, int E,
                                int policy, int m, int model_level, int warm_start,
                                int* __restrict__ scratch, i64 scratch_stride,
                                int* __restrict__ nxt, i64* __restrict__ out) {
    const int N = model_level ? L * E : E;
    const int A = model_level ? L * k : k;
    const i64 Lo = model_level ? 1 : L;
    const i64 items = model_level ? num_seqs : num_seqs * (i64)L;
    const i64 tid = lrc_thread_id();
    int* stack = scratch + tid * scratch_stride;
    int* pos = stack + N;
    int* last = pos + N;
    int* aux = last + N;
    int* stat = aux + N;
    for (i64 w = tid; w < items; w += lrc_thread_count()) {
        const i64 s = model_level ? w : w / L;
        const int l = model_level ? 0 : (int)(w % L);
        const i64 a = offsets[s];
        const int T = (int)(offsets[s + 1] - a);
        // access q (0 <= q < A) of token t is trace element base(t) + q
        const i64 first = model_level ? a * L * (i64)k : (a * L + l) * (i64)k;
        const i64 step = (i64)L * k;
#define LRC_ELEM(t, q) (first + (i64)(t) * step + (q))
#define LRC_ID(t, q) ((model_level ? ((q) / k) * E : 0) + (int)x[LRC_ELEM(t, q)])
        for (int i = 0; i < N; ++i) {
            pos[i] = -1;
            last[i] = 0;
            aux[i] = 0;
            stat[i] = 0;
        }
        stat[N] = 0;
        if (policy == LRC_POLICY_BELADY) {
            const int never = T * A + 1;  // never accessed again: T*A + 1 + id
            for (int i = 0; i < N; ++i) stack[i] = never + i;
            for (int t = T - 1; t >= 0; --t) {
                for (int q = A - 1; q >= 0; --q) {
                    const int y = LRC_ID(t, q);
                    nxt[LRC_ELEM(t, q)] = stack[y];
                    stack[y] = t * A + q + 1;
                }
            }
        } else if (policy == LRC_POLICY_SCH) {
            const int upto = m < T ? m : T;
            for (int t = 0; t < upto; ++t) {
                for (int q = 0; q < A; ++q) aux[LRC_ID(t, q)] += 1;
            }
        }
        int ts = 0;     // global access counter
        int u = 0;      // distinct ids first accessed so far
        int size = 0;   // ids in the stack
        for (int t = 0; t < T; ++t) {
            // 1. look-up against the stack as it was before token t
            for (int q = 0; q < A; ++q) {
                const int d = pos[LRC_ID(t, q)];
                if (d >= 0) {
                    stat[d] += 1;
                } else {
                    stat[warm_start ? u : N] += 1;
                    u += 1;
                }
            }
            // 2. update, in stored order: priority state, then move to the top
            for (int q = 0; q < A; ++q) {
                const int y = LRC_ID(t, q);
                ts += 1;
                if (policy == LRC_POLICY_BELADY) {
                    last[y] = -nxt[LRC_ELEM(t, q)];
                } else {
                    last[y] = ts;
                    if (policy == LRC_POLICY_LFU) aux[y] += 1;
                    else if (policy == LRC_POLICY_SCH) aux[y] -= 1;
                }
                int old = pos[y];
                if (old < 0) old = size++;
                if (old == 0) {
                    stack[0] = y;
                    pos[y] = 0;
                    continue;
                }
                int carried = stack[0];
                i64 carried_pri = lrc_priority(aux, last, carried);
                stack[0] = y;
                pos[y] = 0;
                for (int d = 1; d < old; ++d) {
                    const int z = stack[d];
                    const i64 z_pri = lrc_priority(aux, last, z);
                    if (carried_pri > z_pri) {
                        stack[d] = carried;
                        pos[carried] = d;
                        carried = z;
                        carried_pri = z_pri;
                    }
                }
                stack[old] = carried;
                pos[carried] = old;
            }
            // 3. SCH: the future window slides past token t
            if (policy == LRC_POLICY_SCH && t + (i64)m < T) {
                for (int q = 0; q < A; ++q) aux[LRC_ID(t + m, q)] += 1;
            }
        }
#undef LRC_ID
#undef LRC_ELEM
        i64* dst = out + (group[s] * Lo + l) * (i64)(N + 1);
        for (int d = 0; d <= N; ++d) {
            if (stat[d]) lrc_add(dst + d, stat[d]);
        }
    }
}

#define LRC_STACK_ENTRY(NAME, ID)                                                            \
    extern "C" __global__ void NAME(const ID* x, const i64* offsets, const i64* group,       \
                                    i64 num_seqs, int L, int k, int E, int policy, int m,    \
                                    int model_level, int warm_start, int* scratch,           \
                                    i64 scratch_stride, int* nxt, i64* out) {                \
        lrc_stack_stats<ID>(x, offsets, group, num_seqs, L, k, E, policy, m, model_level,    \
                            warm_start, scratch, scratch_stride, nxt, out);                  \
    }

LRC_STACK_ENTRY(lrc_stack_stats_u8, unsigned char)
LRC_STACK_ENTRY(lrc_stack_stats_u16, unsigned short)
LRC_STACK_ENTRY(lrc_stack_stats_u32, unsigned int)

// SRP window histograms: H[e][c] = number of (sequence, window) pairs of m tokens in which
// expert e is selected by exactly c tokens (docs/metrics.md, "SRP").
//
// One work item = one (sequence, layer, m) triple; items are spread over the grid with a
// grid-stride loop. Per item, O(T*k + E) work with per-expert (count, since) state: the
// window slides one token at a time; when the count of expert e changes at window t, the
// windows since[e] .. t-1 all had the old count, so (t - since[e]) is added to
// H[e][count[e]] and since[e] becomes t. A final flush adds the windows still open.
//
// Scratch per thread (int64): count[E], since[E], and, for layer-level tables
// (per_expert == 0), a private histogram hist[max_m + 1] that is flushed once per item.
#include "common.cuh"

template <typename Id>
__device__ void lrc_srp_hist(const Id* __restrict__ x, const i64* __restrict__ offsets,
                             const i64* __restrict__ group, i64 num_seqs, int L, int k, int E,
                             const i64* __restrict__ ms, const i64* __restrict__ cols, int M,
                             i64 width, int per_expert, i64* __restrict__ scratch,
                             i64 scratch_stride, i64* __restrict__ out) {
    const i64 tid = lrc_thread_id();
    const i64 items = num_seqs * (i64)L * (i64)M;
    const i64 Eo = per_expert ? (i64)E : 1;
    i64* count = scratch + tid * scratch_stride;
    i64* since = count + E;
    i64* hist = since + E;  // used only when per_expert == 0
    for (i64 w = tid; w < items; w += lrc_thread_count()) {
        const int mi = (int)(w % M);
        const i64 sl = w / M;
        const int l = (int)(sl % L);
        const i64 s = sl / L;
        const i64 a = offsets[s];
        const i64 T = offsets[s + 1] - a;
        const i64 m = ms[mi];
        if (T < m) continue;  // a sequence shorter than m has no window
        const i64 W = T - m + 1;
        i64* dst = out + (group[s] * (i64)L + l) * Eo * width + cols[mi];
        for (int e = 0; e < E; ++e) {
            count[e] = 0;
            since[e] = 0;
        }
        if (!per_expert) {
            for (i64 c = 0; c <= m; ++c) hist[c] = 0;
        }
        // stride between consecutive tokens of this (sequence, layer) stream
        const i64 step = (i64)L * k;
        const Id* row = x + (a * L + l) * (i64)k;
        for (i64 t = 0; t < m; ++t) {
            for (int j = 0; j < k; ++j) count[row[t * step + j]] += 1;
        }
        for (i64 t = 1; t < W; ++t) {
            const Id* leave = row + (t - 1) * step;
            const Id* enter = row + (t + m - 1) * step;
            for (int j = 0; j < k; ++j) {
                const int e = (int)leave[j];
                const i64 d = t - since[e];
                if (d) {
                    if (per_expert) lrc_add(dst + e * width + count[e], d);
                    else hist[count[e]] += d;
                }
                since[e] = t;
                count[e] -= 1;
            }
            for (int j = 0; j < k; ++j) {
                const int e = (int)enter[j];
                const i64 d = t - since[e];
                if (d) {
                    if (per_expert) lrc_add(dst + e * width + count[e], d);
                    else hist[count[e]] += d;
                }
                since[e] = t;
                count[e] += 1;
            }
        }
        for (int e = 0; e < E; ++e) {
            const i64 d = W - since[e];
            if (d) {
                if (per_expert) lrc_add(dst + e * width + count[e], d);
                else hist[count[e]] += d;
            }
        }
        if (!per_expert) {
            for (i64 c = 0; c <= m; ++c) {
                if (hist[c]) lrc_add(dst + c, hist[c]);
            }
        }
    }
}

#define LRC_SRP_ENTRY(NAME, ID)                                                              \
    extern "C" __global__ void NAME(const ID* x, const i64* offsets, const i64* group,       \
                                    i64 num_seqs, int L, int k, int E, const i64* ms,        \
                                    const i64* cols, int M, i64 width, int per_expert,       \
                                    i64* scratch, i64 scratch_stride, i64* out) {            \
        lrc_srp_hist<ID>(x, offsets, group, num_seqs, L, k, E, ms, cols, M, width,           \
                         per_expert, scratch, scratch_stride, out);                          \
    }

LRC_SRP_ENTRY(lrc_srp_hist_u8, unsigned char)
LRC_SRP_ENTRY(lrc_srp_hist_u16, unsigned short)
LRC_SRP_ENTRY(lrc_srp_hist_u32, unsigned int)

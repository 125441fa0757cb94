// Validation scan: flat index (row*L + layer)*k + slot of the first id repeated within its
// token, in (row, layer, slot) order, the same order as the host check. One work item =
// one (row, layer) token; the minimum over all items is kept with atomicMin, so the result
// does not depend on the order in which threads run. *first must start at 2^64 - 1.
#include "common.cuh"

template <typename Id>
__device__ void lrc_first_duplicate(const Id* __restrict__ x, i64 tokens, int k,
                                    u64* __restrict__ first) {
    for (i64 w = lrc_thread_id(); w < tokens; w += lrc_thread_count()) {
        const Id* tok = x + w * k;
        bool found = false;
        for (int j = 1; j < k && !found; ++j) {
            for (int i = 0; i < j; ++i) {
                if (tok[i] == tok[j]) {
                    atomicMin(first, (u64)(w * k + j));
                    found = true;
                    break;
                }
            }
        }
    }
}

#define LRC_DUP_ENTRY(NAME, ID)                                                              \
    extern "C" __global__ void NAME(const ID* x, i64 tokens, int k, u64* first) {            \
        lrc_first_duplicate<ID>(x, tokens, k, first);                                        \
    }

LRC_DUP_ENTRY(lrc_first_duplicate_u8, unsigned char)
LRC_DUP_ENTRY(lrc_first_duplicate_u16, unsigned short)
LRC_DUP_ENTRY(lrc_first_duplicate_u32, unsigned int)

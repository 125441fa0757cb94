// Shared definitions of the lrc_kernels CUDA sources.
//
// Every kernel of the package follows the same rules, so that the sources also run, unchanged,
// on the CPU through the host shim used by the test suite (tests/gpu_host/shim.h):
//   - grid-stride loops over independent work items (one stream per iteration);
//   - per-thread state in global scratch memory, sized by the caller (threads x stride),
//     never in fixed-size local arrays, so any expert count works;
//   - results reach global memory only through atomics (atomicAdd / atomicMin), which commute;
//   - no __syncthreads, shared memory, warp intrinsics or any other cooperation between
//     threads: the order in which threads run can never change a result.
// No system headers: NVRTC compiles these files without an include path.
#ifndef LRC_KERNELS_COMMON_CUH
#define LRC_KERNELS_COMMON_CUH

typedef long long i64;
typedef unsigned long long u64;

// Index of this thread in the whole grid, and the number of threads of the grid.
__device__ __forceinline__ i64 lrc_thread_id() {
    return (i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x;
}

__device__ __forceinline__ i64 lrc_thread_count() {
    return (i64)gridDim.x * (i64)blockDim.x;
}

// Add a non-negative count to an int64 table cell (the tables are int64 on the host).
__device__ __forceinline__ void lrc_add(i64* cell, i64 value) {
    atomicAdd(reinterpret_cast<u64*>(cell), (u64)value);
}

#endif  // LRC_KERNELS_COMMON_CUH

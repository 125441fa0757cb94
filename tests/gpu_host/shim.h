// Host shim: lets the CUDA sources of lrc_kernels/gpu compile and run on the CPU.
//
// Force-included by g++ (-include shim.h) in front of every .cu file. The kernels then
// become plain functions; the test driver sets blockIdx/threadIdx (lrc_shim_set) and calls
// the kernel once per (block, thread) of the launch geometry the CuPy wrapper uses, one
// thread after another. Atomics are therefore plain read-modify-writes.
//
// Deliberately absent: __syncthreads, __shared__, warp intrinsics. A kernel that relied on
// cooperation between threads could not be tested soundly by serial execution, so using
// any of them fails to compile here.
#ifndef LRC_KERNELS_HOST_SHIM_H
#define LRC_KERNELS_HOST_SHIM_H

struct dim3 {
    unsigned int x, y, z;
};

extern dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}

inline int atomicAdd(int* p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}

inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

#endif  // LRC_KERNELS_HOST_SHIM_H

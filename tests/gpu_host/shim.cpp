// Launch indices of the host shim (see shim.h), set by the test driver before each call.
#include "shim.h"

dim3 threadIdx = {0, 0, 0};
dim3 blockIdx = {0, 0, 0};
dim3 blockDim = {1, 1, 1};
dim3 gridDim = {1, 1, 1};

extern "C" void lrc_shim_set(unsigned int grid, unsigned int block, unsigned int b,
                             unsigned int t) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    blockIdx = {b, 0, 0};
    threadIdx = {t, 0, 0};
}

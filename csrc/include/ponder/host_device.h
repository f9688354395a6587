// PONDER_HOST_DEVICE marks the small functions that one header gives to both the CPU
// kernels and the CUDA kernels, so that every backend computes them the same way.
#pragma once

#if defined(__CUDACC__)
#define PONDER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PONDER_HOST_DEVICE inline
#endif

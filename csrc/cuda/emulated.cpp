// The CUDA kernels of this folder compiled as host code: cuda/runtime.cuh includes
// cuda/emulation.h and names the namespace summit::cuda_emulated, so these are the very
// sources nvcc compiles, run on the CPU (the tests' way to execute them without a GPU).
#include "cuda/runtime.cuh"

#include "cuda/activation.cu"
#include "cuda/influence.cu"

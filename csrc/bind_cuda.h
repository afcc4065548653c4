// The CUDA per-batch ops (SPEC.md A and B), bound into summit_fast._C: on the GPU when built
// with CUDA, and executed on the CPU (the tests' way to run the same kernel source) always.
#pragma once
#include <pybind11/pybind11.h>

namespace summit {
void bind_cuda_ops(pybind11::module_& m);
}  // namespace summit

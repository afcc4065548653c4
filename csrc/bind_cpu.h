// Native CPU per-batch ops (SPEC.md A and B), bound into summit_fast._C.
#pragma once
#include <pybind11/pybind11.h>

namespace summit {
void bind_cpu_ops(pybind11::module_& m);
}  // namespace summit

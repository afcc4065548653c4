// Native attribution-graph kernels (SPEC.md C), bound into summit_fast._C.
#pragma once
#include <pybind11/pybind11.h>

namespace summit {
void bind_graph_ops(pybind11::module_& m);
}  // namespace summit

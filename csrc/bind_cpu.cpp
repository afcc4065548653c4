// Python bindings of the native CPU ops: raw pointers, shapes and strides in; every argument
// is checked (bind_args.cpp) before the GIL is released and before any count is written.
#include "bind_cpu.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "bind_args.h"
#include "cpu/kernels.h"

namespace py = pybind11;

namespace summit {
namespace {

void py_activation_update(std::uintptr_t acts, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                          std::uintptr_t labels, std::uintptr_t counts, int64_t num_classes, const std::string& rule,
                          double tau, int64_t k, std::uintptr_t excluded, std::uintptr_t max_out,
                          std::uintptr_t argmax_out) {
  const ActivationArgs a = activation_args(acts, dtype, shape, strides, labels, counts, num_classes, rule, tau, k,
                                           excluded, max_out, argmax_out, /*labels_on_host=*/true);
  py::gil_scoped_release release;
  activation_update(a);
}

std::pair<int64_t, int64_t> py_influence_update(std::uintptr_t x, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                         std::uintptr_t weight, const std::string& weight_dtype, const Shape4& weight_shape,
                         const Pair& stride, const Shape4& pad, const Pair& dilation, int64_t groups,
                         const std::string& padding_mode, int64_t spatial_stride, std::uintptr_t labels,
                         std::uintptr_t counts, const std::string& count_dtype, int64_t num_classes, int64_t k,
                         bool prune) {
  const InfluenceArgs a = influence_args(x, dtype, shape, strides, weight, weight_dtype, weight_shape, stride, pad,
                                         dilation, groups, padding_mode, spatial_stride, labels, counts, count_dtype,
                                         num_classes, k, prune, /*labels_on_host=*/true);
  py::gil_scoped_release release;
  const InfluenceStats stats = influence_update(a);
  return {stats.exact, stats.total};
}

}  // namespace

void bind_cpu_ops(py::module_& m) {
  m.def("cpu_activation_update", &py_activation_update, py::arg("acts"), py::arg("dtype"), py::arg("shape"),
        py::arg("strides"), py::arg("labels"), py::arg("counts"), py::arg("num_classes"), py::arg("rule"),
        py::arg("tau"), py::arg("k"), py::arg("excluded"), py::arg("max_out") = 0, py::arg("argmax_out") = 0,
        "SPEC.md A on raw pointers: acts (B, C, H, W) with element strides, int64 labels (B,), int32 counts "
        "(num_classes, C) contiguous, rule 'mass' (tau) or 'topk' (k), excluded: (C,) bool mask pointer or 0. "
        "Optional max_out (float32) and argmax_out (int64), (B, C) contiguous, both or neither: each channel's "
        "max and the flat position h * W + w of its first occurrence, from the same pass.");
  m.def("cpu_influence_update", &py_influence_update, py::arg("x"), py::arg("dtype"), py::arg("shape"),
        py::arg("strides"), py::arg("weight"), py::arg("weight_dtype"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("pad"), py::arg("dilation"), py::arg("groups"), py::arg("padding_mode"), py::arg("spatial_stride"),
        py::arg("labels"), py::arg("counts"), py::arg("count_dtype"), py::arg("num_classes"), py::arg("k"),
        py::arg("prune") = true,
        "SPEC.md B on raw pointers: conv input x (B, C_in, H, W) with element strides, contiguous float32/float64 "
        "weight, pad (left, right, top, bottom), int64 labels (B,), int32 or int16 counts "
        "(num_classes, C_out, C_in/groups). prune: kxk convs skip the scores an exact bound shows cannot be "
        "kept (same counts). Returns (scores computed, B * C_out * C_in/groups).");
}

}  // namespace summit

// Python bindings of the CUDA ops: raw device pointers, shapes, strides and the caller's CUDA
// stream (a cudaStream_t as an integer: torch's or CuPy's current stream). The arguments are
// checked as for the CPU ops (bind_args.cpp), except the label values, which live on the
// device (the Python layer checks them). `cuda_emulated_*` run the same kernels on the CPU,
// on host pointers, labels checked here.
#include "bind_cuda.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>

#include "bind_args.h"
#include "cuda/ops.h"

namespace py = pybind11;

namespace summit {
namespace {

using ActivationOp = void (*)(const ActivationArgs&, std::uintptr_t);
using InfluenceOp = InfluenceStats (*)(const InfluenceArgs&, std::uintptr_t);

template <ActivationOp op, bool on_host>
void py_activation_update(std::uintptr_t acts, const std::string& dtype, const Shape4& shape, const Shape4& strides,
                          std::uintptr_t labels, std::uintptr_t counts, int64_t num_classes, const std::string& rule,
                          double tau, int64_t k, std::uintptr_t excluded, std::uintptr_t max_out,
                          std::uintptr_t argmax_out, std::uintptr_t stream) {
  const ActivationArgs a = activation_args(acts, dtype, shape, strides, labels, counts, num_classes, rule, tau, k,
                                           excluded, max_out, argmax_out, on_host);
  py::gil_scoped_release release;
  op(a, stream);
}

template <InfluenceOp op, bool on_host>
std::pair<int64_t, int64_t> py_influence_update(
    std::uintptr_t x, const std::string& dtype, const Shape4& shape, const Shape4& strides, std::uintptr_t weight,
    const std::string& weight_dtype, const Shape4& weight_shape, const Pair& stride, const Shape4& pad,
    const Pair& dilation, int64_t groups, const std::string& padding_mode, int64_t spatial_stride,
    std::uintptr_t labels, std::uintptr_t counts, const std::string& count_dtype, int64_t num_classes, int64_t k,
    bool prune, std::uintptr_t stream) {
  const InfluenceArgs a = influence_args(x, dtype, shape, strides, weight, weight_dtype, weight_shape, stride, pad,
                                         dilation, groups, padding_mode, spatial_stride, labels, counts, count_dtype,
                                         num_classes, k, prune, on_host);
  py::gil_scoped_release release;
  const InfluenceStats stats = op(a, stream);
  return {stats.exact, stats.total};
}

template <ActivationOp activation, InfluenceOp influence, bool on_host>
void bind_pair(py::module_& m, const std::string& prefix, const std::string& where) {
  m.def((prefix + "_activation_update").c_str(), &py_activation_update<activation, on_host>, py::arg("acts"),
        py::arg("dtype"), py::arg("shape"), py::arg("strides"), py::arg("labels"), py::arg("counts"),
        py::arg("num_classes"), py::arg("rule"), py::arg("tau"), py::arg("k"), py::arg("excluded"),
        py::arg("max_out") = 0, py::arg("argmax_out") = 0, py::arg("stream") = 0,
        ("cpu_activation_update's arguments and meaning, " + where).c_str());
  m.def((prefix + "_influence_update").c_str(), &py_influence_update<influence, on_host>, py::arg("x"),
        py::arg("dtype"), py::arg("shape"), py::arg("strides"), py::arg("weight"), py::arg("weight_dtype"),
        py::arg("weight_shape"), py::arg("stride"), py::arg("pad"), py::arg("dilation"), py::arg("groups"),
        py::arg("padding_mode"), py::arg("spatial_stride"), py::arg("labels"), py::arg("counts"),
        py::arg("count_dtype"), py::arg("num_classes"), py::arg("k"), py::arg("prune") = true, py::arg("stream") = 0,
        ("cpu_influence_update's arguments and meaning, " + where).c_str());
}

}  // namespace

void bind_cuda_ops(py::module_& m) {
#ifdef SUMMIT_WITH_CUDA
  bind_pair<cuda::activation_update, cuda::influence_update, false>(
      m, "cuda", "on device pointers, launched on `stream` (a cudaStream_t as an integer; 0: the default stream)");
#endif
  bind_pair<cuda_emulated::activation_update, cuda_emulated::influence_update, true>(
      m, "cuda_emulated", "on host pointers: the CUDA kernels executed on the CPU (for tests; slow)");
}

}  // namespace summit

// The one compiled module, summit_fast._C: build facts plus the native per-batch ops.
// It takes raw pointers, shapes and strides (no libtorch), so it builds in seconds and
// serves torch and CuPy arrays alike.
#include <pybind11/pybind11.h>

#include "bind_cpu.h"
#include "bind_cuda.h"
#include "cuda/info.h"
#include "bind_graph.h"

#ifdef SUMMIT_WITH_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

int openmp_max_threads() {
#ifdef SUMMIT_WITH_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_openmp_threads(int n) {
  if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
#ifdef SUMMIT_WITH_OPENMP
  omp_set_num_threads(n);
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "summit_fast native extension: CPU (OpenMP) and CUDA ops, graph kernels, CUDA build facts";
  m.attr("__version__") = SUMMIT_VERSION;
#ifdef SUMMIT_WITH_OPENMP
  m.attr("with_openmp") = true;
#else
  m.attr("with_openmp") = false;
#endif
  m.attr("with_cuda") = summit::cuda_built();
  m.def("cuda_available", &summit::cuda_available,
        "True when built with CUDA and a CUDA device is usable (never raises without a driver).");
  m.def("cuda_device_count", &summit::cuda_device_count,
        "Number of CUDA devices, 0 when not built with CUDA or no driver/device is present.");
  m.def("cuda_status", &summit::cuda_status,
        "Why CUDA is or is not usable, in words.");
  m.def("num_threads", &openmp_max_threads, "OpenMP threads the CPU ops use.");
  m.def("set_num_threads", &set_openmp_threads, py::arg("n"), "Set the OpenMP thread count.");
  summit::bind_cpu_ops(m);
  summit::bind_cuda_ops(m);
  summit::bind_graph_ops(m);
}

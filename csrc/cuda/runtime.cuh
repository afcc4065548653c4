// What every CUDA source of csrc/cuda includes first. The sources are compiled twice:
//  - by nvcc (SUMMIT_WITH_CUDA builds), into namespace summit::cuda, launched on the GPU;
//  - by the host compiler through emulated.cpp, into namespace summit::cuda_emulated, where
//    cuda/emulation.h gives the CUDA names a CPU meaning; the tests run the kernels this way.
// So kernels use only what emulation.h lists, and host code launches and allocates only
// through the helpers below.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define SUMMIT_CUDA_NS cuda
#else
#include "cuda/emulation.h"
#define SUMMIT_CUDA_NS cuda_emulated
#endif

#include "op_args.h"

namespace summit {
namespace SUMMIT_CUDA_NS {

using Stream = cudaStream_t;

#if defined(__CUDACC__)
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}
#endif

// Runs kernel<<<grid, block, 0, stream>>>(args...) and reports a launch error as an exception.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Stream stream, Args... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, 0, stream>>>(static_cast<Params>(args)...);
  check(cudaGetLastError(), "a kernel launch");
#else
  (void)stream;
  emulation::run_grid(grid, block, [&] { kernel(static_cast<Params>(args)...); });
#endif
}

// Scratch memory in stream order (the pool of cudaMallocAsync on a GPU, the heap here). Freed
// when the owner goes out of scope, after the stream's earlier work.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t bytes, Stream stream) : stream_(stream) {
    if (bytes == 0) return;
#if defined(__CUDACC__)
    check(cudaMallocAsync(&data_, bytes, stream), "cudaMallocAsync");
#else
    data_ = ::operator new(bytes);
#endif
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (!data_) return;
#if defined(__CUDACC__)
    cudaFreeAsync(data_, stream_);
#else
    ::operator delete(data_);
#endif
  }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  Stream stream_;
};

// Sets `bytes` of device memory to 0, in stream order.
inline void zero_device(void* p, size_t bytes, Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemsetAsync(p, 0, bytes, stream), "cudaMemsetAsync");
#else
  (void)stream;
  std::memset(p, 0, bytes);
#endif
}

// Copies `bytes` of device memory to the host once the stream's earlier work is done (a sync).
inline void copy_to_host(void* dst, const void* src, size_t bytes, Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
#else
  (void)stream;
  std::memcpy(dst, src, bytes);
#endif
}

// Element loads: every input dtype read as float (double for float64 inputs, which keep
// double precision as in the CPU kernels).
__device__ __forceinline__ float load_float(const float* p) { return *p; }
__device__ __forceinline__ double load_float(const double* p) { return *p; }
__device__ __forceinline__ float load_float(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_float(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// Calls f(T{}) with the element type T of `dtype` (a null pointer of that type selects it).
template <class F>
auto dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(static_cast<const float*>(nullptr));
    case DType::f16: return f(static_cast<const __half*>(nullptr));
    case DType::bf16: return f(static_cast<const __nv_bfloat16*>(nullptr));
    case DType::f64: return f(static_cast<const double*>(nullptr));
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace SUMMIT_CUDA_NS
}  // namespace summit

// CUDA runtime facts. cudart is linked statically, so without a driver these calls return
// an error code (e.g. cudaErrorInsufficientDriver, 35) rather than failing to load.
#include <cuda_runtime.h>

#include <string>

#include "cuda/info.h"

namespace summit {

bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

bool cuda_available() { return cuda_device_count() > 0; }

std::string cuda_status() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    // cudart's own words for 35 blame the driver's version, but no driver at all gives it too.
    const std::string why = err == cudaErrorInsufficientDriver
                                ? "no NVIDIA driver was found, or it is older than this build's CUDA runtime"
                                : cudaGetErrorString(err);
    return "built with CUDA, but no usable device: " + why + " (error " + std::to_string(static_cast<int>(err)) + ")";
  }
  if (n == 0) return "built with CUDA, but no CUDA device is present";
  return "built with CUDA; " + std::to_string(n) + " device(s) available";
}

}  // namespace summit

// Fallback for builds without CUDA: report that CUDA was not built.
#ifndef SUMMIT_WITH_CUDA
#include "cuda/info.h"

namespace summit {
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
bool cuda_available() { return false; }
std::string cuda_status() { return "summit_fast was built without CUDA (no nvcc found, or SUMMIT_CUDA=OFF)"; }
}  // namespace summit
#endif

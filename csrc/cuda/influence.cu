// SPEC.md B on the GPU: to be written.
#include "cuda/ops.h"
#include "cuda/runtime.cuh"

namespace summit {
namespace SUMMIT_CUDA_NS {

InfluenceStats influence_update(const InfluenceArgs& a, std::uintptr_t stream) {
  (void)a;
  (void)stream;
  throw std::runtime_error("the CUDA influence kernel is not written yet");
}

}  // namespace SUMMIT_CUDA_NS
}  // namespace summit

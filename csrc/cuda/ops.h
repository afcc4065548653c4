// The CUDA versions of the two per-batch ops (SPEC.md A and B), on raw device pointers and
// the caller's stream. summit::cuda is the nvcc build (only with SUMMIT_WITH_CUDA);
// summit::cuda_emulated is the same source executed on the CPU (cuda/emulation.h), always
// built, so the tests run the kernels without a GPU. Arguments are checked by bind_args.cpp.
#pragma once
#include <cstdint>

#include "op_args.h"

namespace summit {

namespace cuda {
void activation_update(const ActivationArgs& a, std::uintptr_t stream);
InfluenceStats influence_update(const InfluenceArgs& a, std::uintptr_t stream);
}  // namespace cuda

namespace cuda_emulated {
void activation_update(const ActivationArgs& a, std::uintptr_t stream);
InfluenceStats influence_update(const InfluenceArgs& a, std::uintptr_t stream);
}  // namespace cuda_emulated

}  // namespace summit

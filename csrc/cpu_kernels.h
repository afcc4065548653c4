// The two native CPU per-batch ops (SPEC.md A and B). Arguments are raw pointers and
// geometry, already validated by the binding (cpu_ops.cpp); both run without the GIL.
#pragma once
#include <cstdint>

#include "cpu_common.h"

namespace summit {

struct ActivationArgs {
  View4 acts;                         // (B, C, H, W), any layout and float dtype
  const int64_t* labels = nullptr;    // (B,), each in [0, num_classes)
  int32_t* counts = nullptr;          // (num_classes, C), contiguous
  int64_t num_classes = 0;
  bool topk = false;                  // rule: top-k (k) or mass (tau)
  int64_t k = 0;
  double tau = 0.0;
  const uint8_t* excluded = nullptr;  // (C,) bool mask or null
  // Optional outputs, (B, C) contiguous, both or neither (the dataset examples' candidates):
  // each channel's spatial max as float32 (excluded channels too) and the flat position
  // h * W + w of its first occurrence in row-major order, as torch's max(dim) gives them for
  // the activations converted with .float().
  float* max_out = nullptr;
  int64_t* argmax_out = nullptr;
};

struct InfluenceArgs {
  View4 x;                          // conv input (B, C_in, H, W), any layout and float dtype
  const void* weight = nullptr;     // (C_out, C_in/groups, kh, kw), contiguous
  bool weight_f64 = false;          // weight dtype: float64 (compute in double) or float32
  int64_t c_out = 0, groups = 1;
  ConvGeometry geo{};
  const int64_t* labels = nullptr;  // (B,)
  void* counts = nullptr;           // (num_classes, C_out, C_in/groups), contiguous; [k, j, s]
                                    // counts source channel group(j) * C_in/groups + s
  bool counts_int16 = false;        // count type: int16 (the caller prevents overflow) or int32
  int64_t num_classes = 0;
  int64_t k = 0;                    // sources kept per (image, target)
  bool prune = true;                // kxk: skip the scores an exact bound shows cannot be kept
};

// How many of the B * C_out * C_in/groups scores L[b, j, i] an influence update computed.
struct InfluenceStats {
  int64_t exact = 0, total = 0;
};

void activation_update(const ActivationArgs& a);
InfluenceStats influence_update(const InfluenceArgs& a);

}  // namespace summit

// The arguments of the two per-batch ops (SPEC.md A and B) as every native version takes
// them: raw pointers, shapes, strides and conv geometry, validated once by the bindings
// (bind_args.cpp). Device-neutral: the CPU kernels (csrc/cpu) and the CUDA kernels
// (csrc/cuda, compiled by nvcc or executed on the CPU) read the same structs.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SUMMIT_HOST_DEVICE __host__ __device__
#else
#define SUMMIT_HOST_DEVICE
#endif

namespace summit {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };
enum class PadMode : int { zeros = 0, reflect = 1, replicate = 2, circular = 3 };

// A strided (B, C, H, W) tensor; strides are in elements, any layout.
struct View4 {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};
};

// ---------------------------------------------------------------- padding
// The real index that padded coordinate q (0-based in the padded axis) reads, or -1 for a
// zero. Matches torch.nn.functional.pad, whose reflect needs lo, hi < n and circular lo, hi <= n
// (the Python side checks those limits).
SUMMIT_HOST_DEVICE inline int64_t padded_source(int64_t q, int64_t n, int64_t lo, PadMode mode) {
  int64_t r = q - lo;
  if (r >= 0 && r < n) return r;
  switch (mode) {
    case PadMode::zeros: return -1;
    case PadMode::reflect: return r < 0 ? -r : 2 * (n - 1) - r;
    case PadMode::replicate: return r < 0 ? 0 : n - 1;
    case PadMode::circular: return ((r % n) + n) % n;
  }
  return -1;
}

// Geometry of one conv edge's sampled output grid (SPEC.md B with spatial_stride folded
// into the step): output (y, x) reads padded input (y*step_h + u*dil_h, x*step_w + v*dil_w).
struct ConvGeometry {
  int64_t kh, kw, step_h, step_w, dil_h, dil_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t out_h, out_w;  // sampled grid size
  PadMode mode;
};

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

}  // namespace summit

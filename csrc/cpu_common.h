// Shared pieces of the native CPU ops: tensor views over raw pointers, element types read
// in-kernel (fp32/fp16/bf16/fp64), and padded-coordinate maps (SPEC.md B's Xpad).
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

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

// ---------------------------------------------------------------- element types
// Each element type has a raw storage type and a "key" type whose ordering equals the
// value ordering, so spatial max/min run on raw keys (no conversion in the hot loop) and
// only the final extremum is converted. For fp16/bf16 the key is the bit pattern as int16
// with the magnitude bits flipped for negative values (a monotone map; -0 < +0 is harmless).
inline int16_t half_bits_key(uint16_t bits) {
  const int16_t s = static_cast<int16_t>(bits);
  return static_cast<int16_t>(s ^ ((s >> 15) & 0x7fff));
}

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
    const float f = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -f : f;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

struct F32 {
  using raw = float;
  using key = float;
  static key to_key(raw v) { return v; }
  static double key_value(key k) { return k; }
  static float to_float(raw v) { return v; }
};

struct F64 {
  using raw = double;
  using key = double;
  static key to_key(raw v) { return v; }
  static double key_value(key k) { return k; }
  static double to_float(raw v) { return v; }  // float64 inputs keep double precision
};

struct F16 {
  using raw = uint16_t;
  using key = int16_t;
  static key to_key(raw v) { return half_bits_key(v); }
  static double key_value(key k) { return half_to_float(static_cast<uint16_t>(half_bits_key(static_cast<uint16_t>(k)))); }
  static float to_float(raw v) { return half_to_float(v); }
};

struct BF16 {
  using raw = uint16_t;
  using key = int16_t;
  static key to_key(raw v) { return half_bits_key(v); }
  static double key_value(key k) { return to_float(static_cast<uint16_t>(half_bits_key(static_cast<uint16_t>(k)))); }
  static float to_float(raw v) { return bits_to_float(static_cast<uint32_t>(v) << 16); }
};

// Calls f(E{}) with the element type of `dtype`.
template <class F>
auto dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(F32{});
    case DType::f16: return f(F16{});
    case DType::bf16: return f(BF16{});
    case DType::f64: return f(F64{});
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(static_cast<int>(dtype)));
}

// ---------------------------------------------------------------- padding
// The real index that padded coordinate q (0-based in the padded axis) reads, or -1 for a
// zero. Matches torch.nn.functional.pad, whose reflect needs lo, hi < n and circular lo, hi <= n
// (the Python side checks those limits).
inline int64_t padded_source(int64_t q, int64_t n, int64_t lo, PadMode mode) {
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

// Below about this many element operations a call runs on one thread: waking the OpenMP
// team costs more than it saves, and far more when the cores are busy with other work.
constexpr int64_t kParallelWork = int64_t{1} << 17;

// Geometry of one conv edge's sampled output grid (SPEC.md B with spatial_stride folded
// into the step): output (y, x) reads padded input (y*step_h + u*dil_h, x*step_w + v*dil_w).
struct ConvGeometry {
  int64_t kh, kw, step_h, step_w, dil_h, dil_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t out_h, out_w;  // sampled grid size
  PadMode mode;
};

}  // namespace summit

// Shared pieces of the native CPU ops: element types read in-kernel (fp32/fp16/bf16/fp64)
// and the work size below which a call stays on one thread. Views, conv geometry and the
// padded-coordinate map (SPEC.md B's Xpad) are device-neutral: op_args.h.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "float16.h"
#include "op_args.h"

namespace summit {

// ---------------------------------------------------------------- element types
// Each element type has a raw storage type and a "key" type whose ordering equals the
// value ordering, so spatial max/min run on raw keys (no conversion in the hot loop) and
// only the final extremum is converted. For fp16/bf16 the key is the bit pattern as int16
// with the magnitude bits flipped for negative values (a monotone map; -0 < +0 is harmless).
inline int16_t half_bits_key(uint16_t bits) {
  const int16_t s = static_cast<int16_t>(bits);
  return static_cast<int16_t>(s ^ ((s >> 15) & 0x7fff));
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
  static float to_float(raw v) { return bfloat16_to_float(v); }
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

// Below about this many element operations a call runs on one thread: waking the OpenMP
// team costs more than it saves, and far more when the cores are busy with other work.
constexpr int64_t kParallelWork = int64_t{1} << 17;

}  // namespace summit

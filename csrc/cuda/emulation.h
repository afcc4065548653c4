// CPU execution of the CUDA kernels: the CUDA C++ names the kernels of csrc/cuda use, given a
// host meaning, so that the same kernel source nvcc compiles also runs (slowly, exactly) on a
// machine without a GPU. The tests run every CUDA kernel this way (python_tests/test_cuda_*).
//
// Model: a launch runs its blocks one after another; every CUDA thread of a block is a fiber
// (its own stack, switched cooperatively, never preempted), so the threads of a block
// interleave only at __syncthreads and at warp operations, as nothing else can be relied on.
// __shared__ variables are one per block (static thread_local: a block runs on one OS thread,
// and blocks do not overlap). Warps are 32 consecutive thread indices, as on the hardware.
//
// What is provided, and nothing more (a kernel that needs more fails to compile here):
//   __global__ __device__ __host__ __forceinline__ __launch_bounds__ __restrict__ __shared__
//   dim3, threadIdx, blockIdx, blockDim, gridDim, warpSize, cudaStream_t
//   __syncthreads, __syncwarp, __shfl_sync, __shfl_down_sync, __shfl_up_sync, __shfl_xor_sync,
//   __ballot_sync, __any_sync, __all_sync, __activemask (every live lane of the warp must take
//   part: a mask that differs from the warp's live lanes is reported as an error)
//   atomicAdd, atomicMax, atomicMin, atomicCAS, atomicExch on 32- and 64-bit integers,
//   atomicAdd on float and double
//   __half, __nv_bfloat16 (storage only) with __half2float, __bfloat162float
//   __float_as_uint, __uint_as_float, __float_as_int, __int_as_float, __double_as_longlong,
//   __longlong_as_double, __popc, __popcll, __ffs, __ffsll, __clz, __clzll, __ldg, min, max,
//   and <cmath>'s fmaf, fmaxf, fminf, fma, fmax, fmin, isnan, ...
// Not provided: dynamic (extern) shared memory, cooperative groups, WMMA, inline PTX, textures.
// Errors a wrong kernel can make visible here (divergent __syncthreads, warp operations with a
// partial mask) throw std::runtime_error from the launch, naming the block and warp.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "float16.h"

#define SUMMIT_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = struct EmulatedStream*;  // launches run at once; the stream is not used
constexpr int warpSize = 32;

namespace summit {
namespace emulation {

struct ThreadIndex {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned linear = 0;  // x + y * block_dim.x + z * block_dim.x * block_dim.y
};

// The CUDA thread whose code runs now; only valid inside a kernel launched by run_grid.
const ThreadIndex& this_thread();
// Suspends the calling CUDA thread until every live thread of its block has called it.
void block_barrier();
// Publishes `value` for the calling lane, waits until every live lane of its warp has
// published, and returns what lane `source_lane` published (a second barrier keeps the values
// until every lane has read). `mask` must name exactly the warp's live lanes.
uint64_t warp_exchange(unsigned mask, uint64_t value, unsigned source_lane);
// The lanes of the caller's warp whose predicate is true (a warp barrier, like the exchange).
unsigned warp_ballot(unsigned mask, bool predicate);
// The lanes of the caller's warp that exist and have not returned.
unsigned live_lanes();
// Runs `kernel` once per thread of every block of the grid.
void run_grid(dim3 grid, dim3 block, const std::function<void()>& kernel);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  return bits;
}

template <class T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <class To, class From>
To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of one size");
  To out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

template <class T, class Op>
T atomic_update(T* address, Op op) {  // compare-and-swap loop: exact for any operation
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* raw = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(raw, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(raw, &expected, bit_cast<Bits>(op(bit_cast<T>(expected))), false,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return bit_cast<T>(expected);
}

}  // namespace emulation
}  // namespace summit

#define threadIdx (::summit::emulation::this_thread().thread_idx)
#define blockIdx (::summit::emulation::this_thread().block_idx)
#define blockDim (::summit::emulation::this_thread().block_dim)
#define gridDim (::summit::emulation::this_thread().grid_dim)

inline void __syncthreads() { summit::emulation::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { summit::emulation::warp_ballot(mask, true); }
inline unsigned __activemask() { return summit::emulation::live_lanes(); }
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return summit::emulation::warp_ballot(mask, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// Lane arithmetic as CUDA defines it: `width` splits the warp into segments; a source outside
// the caller's segment (shfl_down/up) leaves the caller's own value.
template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  const unsigned lane = summit::emulation::this_thread().linear % warpSize;
  const unsigned source = (lane & ~static_cast<unsigned>(width - 1)) + (static_cast<unsigned>(src_lane) % width);
  return summit::emulation::from_bits<T>(summit::emulation::warp_exchange(mask, summit::emulation::to_bits(var), source));
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const unsigned lane = summit::emulation::this_thread().linear % warpSize;
  const unsigned source = (lane % width) + delta < static_cast<unsigned>(width) ? lane + delta : lane;
  return summit::emulation::from_bits<T>(summit::emulation::warp_exchange(mask, summit::emulation::to_bits(var), source));
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const unsigned lane = summit::emulation::this_thread().linear % warpSize;
  const unsigned source = (lane % width) >= delta ? lane - delta : lane;
  return summit::emulation::from_bits<T>(summit::emulation::warp_exchange(mask, summit::emulation::to_bits(var), source));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  const unsigned lane = summit::emulation::this_thread().linear % warpSize;
  const unsigned other = lane ^ static_cast<unsigned>(lane_mask);
  const unsigned source = (other / width == lane / width) ? other : lane;
  return summit::emulation::from_bits<T>(summit::emulation::warp_exchange(mask, summit::emulation::to_bits(var), source));
}

// Integer atomics: one read-modify-write each (GCC builtins, safe even if blocks ran in parallel).
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicAdd(T* address, T value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline float atomicAdd(float* address, float value) {
  return summit::emulation::atomic_update(address, [value](float old) { return old + value; });
}
inline double atomicAdd(double* address, double value) {
  return summit::emulation::atomic_update(address, [value](double old) { return old + value; });
}
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicMax(T* address, T value) {
  return summit::emulation::atomic_update(address, [value](T old) { return old < value ? value : old; });
}
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicMin(T* address, T value) {
  return summit::emulation::atomic_update(address, [value](T old) { return value < old ? value : old; });
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;  // the old value either way
}
template <class T>
T atomicExch(T* address, T value) { return __atomic_exchange_n(address, value, __ATOMIC_RELAXED); }

// Half-precision storage types: the kernels only read them, through the conversions below.
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return summit::half_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 b) { return summit::bfloat16_to_float(b.bits); }

inline unsigned __float_as_uint(float f) { return summit::emulation::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return summit::emulation::bit_cast<float>(u); }
inline int __float_as_int(float f) { return summit::emulation::bit_cast<int>(f); }
inline float __int_as_float(int i) { return summit::emulation::bit_cast<float>(i); }
inline long long __double_as_longlong(double d) { return summit::emulation::bit_cast<long long>(d); }
inline double __longlong_as_double(long long i) { return summit::emulation::bit_cast<double>(i); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
template <class T>
T __ldg(const T* p) { return *p; }
template <class T>
T min(T a, T b) { return b < a ? b : a; }
template <class T>
T max(T a, T b) { return a < b ? b : a; }

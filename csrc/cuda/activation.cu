// SPEC.md A on the GPU, in two launches on the caller's stream:
//  1. channel_max_kernel reads every activation once and writes, per (image, split, channel),
//     the spatial max over a range of positions (and, when the maxima are asked for, the
//     flat position h * W + w of its first occurrence). A channel's positions are split over
//     several blocks only when the images x channels alone would leave the GPU idle.
//  2. select_kernel, one warp per image, folds the splits into z, writes the optional maxima,
//     finds the image's selection (mass rule or top-k) by a bitwise search for the cut value
//     over order-preserving integer keys, and adds 1 to counts[label, c] for each selected c.
// Ties follow the other backends: channels by ascending index, positions by the first one in
// row-major order, comparing float32 values (float64 inputs: their float32 rounding).
#include <climits>
#include <cmath>
#include <type_traits>

#include "cuda/ops.h"
#include "cuda/runtime.cuh"

namespace summit {
namespace SUMMIT_CUDA_NS {
namespace activation_kernels {

constexpr int kThreads = 256;               // channel_max_kernel's block: 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kSelectWarps = 4;             // select_kernel's block: one image per warp
constexpr int32_t kNoPosition = INT32_MAX;  // position of an accumulator that saw nothing
constexpr unsigned kFullMask = 0xffffffffu;
// Splitting positions over blocks: aim at about one full wave of blocks (132 SMs x 8 blocks
// of 256 threads on an H100/H200, 108 x 8 on an A100), but keep every thread at least this
// many elements per split, so the partial maxima stay a few percent of the traffic.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinPerThread = 32;

// Where the positions p = 0 .. n-1 of one channel are. A run: p * run_stride, flat position p
// (contiguous planes, also rows of channels_last). Otherwise p walks the inner axis (the one
// with the smaller stride) first: p = o * n_inner + i reads o * s_outer + i * s_inner and is
// flat position o * pos_outer + i * pos_inner.
struct Positions {
  int32_t n;
  int64_t run_stride;
  int32_t n_inner, pos_inner, pos_outer;
  int64_t s_inner, s_outer;
};

template <bool kRun>
__device__ __forceinline__ int64_t offset_of(const Positions& g, int32_t p) {
  if (kRun) return p * g.run_stride;
  const int32_t o = p / g.n_inner, i = p - o * g.n_inner;
  return o * g.s_outer + i * g.s_inner;
}

template <bool kRun>
__device__ __forceinline__ int32_t flat_of(const Positions& g, int32_t p) {
  if (kRun) return p;
  const int32_t o = p / g.n_inner, i = p - o * g.n_inner;
  return o * g.pos_outer + i * g.pos_inner;
}

// Folds (v, p) into the running (m, pos): m becomes the max of the values; with kPos, pos
// becomes the position of the first max in float32 order (equal float32 values: the lower
// position). Symmetric, so it also merges two running pairs. Of two equal maxima, m keeps
// the winner's (a -0 found first stays -0, as torch's max(dim) returns it); a float64 max
// stays the largest double even when another one rounds to the same float.
template <class V, bool kPos>
__device__ __forceinline__ void fold(V& m, int32_t& pos, V v, int32_t p) {
  if (!kPos) {
    m = v > m ? v : m;
    return;
  }
  const float fv = static_cast<float>(v), fm = static_cast<float>(m);
  const bool take = fv > fm || (fv == fm && p < pos);
  pos = take ? p : pos;
  m = take ? (m > v ? m : v) : (v > m ? v : m);
}

// Folds elements p, p + step, ... < end of one channel, four loads at a time so that each
// thread keeps several independent loads in flight (the kernel is bound by memory latency
// times bytes in flight, not by arithmetic).
template <class T, class V, bool kPos, bool kRun>
__device__ __forceinline__ void fold_range(const T* base, const Positions& g, int32_t p, int32_t end, int32_t step,
                                           V& m, int32_t& pos) {
  for (; p + 3 * step < end; p += 4 * step) {
    const V v0 = load_float(base + offset_of<kRun>(g, p));
    const V v1 = load_float(base + offset_of<kRun>(g, p + step));
    const V v2 = load_float(base + offset_of<kRun>(g, p + 2 * step));
    const V v3 = load_float(base + offset_of<kRun>(g, p + 3 * step));
    fold<V, kPos>(m, pos, v0, flat_of<kRun>(g, p));
    fold<V, kPos>(m, pos, v1, flat_of<kRun>(g, p + step));
    fold<V, kPos>(m, pos, v2, flat_of<kRun>(g, p + 2 * step));
    fold<V, kPos>(m, pos, v3, flat_of<kRun>(g, p + 3 * step));
  }
  for (; p < end; p += step) fold<V, kPos>(m, pos, load_float(base + offset_of<kRun>(g, p)), flat_of<kRun>(g, p));
}

// The launch geometry of channel_max_kernel. Block id = (b * splits + s) * tiles + tile.
struct ReduceGrid {
  int64_t C, stride_b, stride_c;
  Positions pos;
  int32_t lanes;   // spatial-inner tiles: lanes per channel (a power of two <= 32)
  int32_t chunk;   // positions per split
  int32_t splits, tiles;
};

// One block: a tile of channels of one image over one split's positions; writes the tile's
// (max, position) pairs to zpart/pospart[(b * splits + s) * C + c].
//  - channels inner (channels_last): lane = channel, so each warp load reads 32 consecutive
//    channels of one position; the 8 warps take every 8th position and meet in shared memory.
//  - spatial inner (NCHW): `lanes` consecutive lanes read one channel's positions, so a warp
//    reads consecutive addresses of one plane (or of 32/lanes small planes); a butterfly of
//    shuffles merges the lanes.
// (4 blocks per SM in the bounds lets ptxas use up to 64 registers: left to itself, ptxas 13
// held this kernel to 32-40 and spilled the float64 and strided variants.)
template <class T, bool kPos, bool kRun, bool kChannelsInner>
__global__ void __launch_bounds__(kThreads, 4)
    channel_max_kernel(const T* __restrict__ x, ReduceGrid r, decltype(load_float(x))* __restrict__ zpart,
                       int32_t* __restrict__ pospart) {
  using V = decltype(load_float(x));
  const int64_t block = blockIdx.x;
  const int64_t tile = block % r.tiles, s = (block / r.tiles) % r.splits, b = block / (int64_t{r.tiles} * r.splits);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int32_t p0 = static_cast<int32_t>(s) * r.chunk;
  const int32_t p1 = r.pos.n - p0 < r.chunk ? r.pos.n : p0 + r.chunk;
  V m = -INFINITY;
  int32_t pos = kNoPosition;
  int64_t c;
  if (kChannelsInner) {
    c = tile * 32 + lane;
    if (c < r.C) fold_range<T, V, kPos, kRun>(x + b * r.stride_b + c * r.stride_c, r.pos, p0 + warp, p1, kWarps, m, pos);
    __shared__ V tile_max[kWarps][32];
    __shared__ int32_t tile_pos[kWarps][32];
    tile_max[warp][lane] = m;
    tile_pos[warp][lane] = pos;
    __syncthreads();
    if (warp != 0) return;
    for (int w = 1; w < kWarps; ++w) fold<V, kPos>(m, pos, tile_max[w][lane], tile_pos[w][lane]);
  } else {
    const int per_warp = 32 / r.lanes, sub = lane % r.lanes;
    c = tile * (kWarps * per_warp) + warp * per_warp + lane / r.lanes;
    if (c < r.C)
      fold_range<T, V, kPos, kRun>(x + b * r.stride_b + c * r.stride_c, r.pos, p0 + sub, p1, r.lanes, m, pos);
    for (int d = r.lanes / 2; d > 0; d /= 2) {  // every lane takes part, in range or not
      const V om = __shfl_xor_sync(kFullMask, m, d);
      const int32_t op = __shfl_xor_sync(kFullMask, pos, d);
      fold<V, kPos>(m, pos, om, op);
    }
    if (sub != 0) return;
  }
  if (c >= r.C) return;
  const int64_t at = (b * r.splits + s) * r.C + c;
  zpart[at] = m;
  if (kPos) pospart[at] = pos;
}

// Integer keys in the order of the values (-0 and +0 are made one value before keying).
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ uint64_t order_key(double v) {
  const uint64_t u = static_cast<uint64_t>(__double_as_longlong(v));
  return (u >> 63) ? ~u : (u | (uint64_t{1} << 63));
}
__device__ __forceinline__ double key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ double key_value(uint64_t k) {
  return __longlong_as_double(static_cast<long long>((k >> 63) ? (k & ~(uint64_t{1} << 63)) : ~k));
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {  // butterfly: every lane ends with the same bits
  for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(kFullMask, v, d);
  return v;
}

struct SelectArgs {
  int64_t B, C, splits;
  const int64_t* labels;
  int32_t* counts;
  bool topk;
  int64_t k;  // min(k, C)
  double tau;
  const uint8_t* excluded;
  float* max_out;
  int64_t* argmax_out;
};

// One warp per image b. Lane l owns channels l, l + 32, ...: it alone writes and reads their
// keys, so the warp needs no memory barrier, only shuffles. The selection is a prefix of the
// order (key descending, channel ascending); the search finds the key v of its last channel,
// bit by bit from the top (32 or 64 warp-wide passes over the keys, which stay in L1), then
// takes every key > v and the first `need` channels with key == v.
template <class V, bool kPos>
__global__ void __launch_bounds__(kSelectWarps * 32)
    select_kernel(SelectArgs a, const V* __restrict__ zpart, const int32_t* __restrict__ pospart,
                  decltype(order_key(V{}))* __restrict__ keys) {
  using K = decltype(order_key(V{}));
  const int lane = threadIdx.x % 32;
  const int64_t b = int64_t{blockIdx.x} * kSelectWarps + threadIdx.x / 32;
  if (b >= a.B) return;  // the whole warp
  K* row_keys = keys + b * a.C;
  double total = 0.0;  // sum of q (mass rule)
  for (int64_t c = lane; c < a.C; c += 32) {
    V m = zpart[b * a.splits * a.C + c];
    int32_t pos = kPos ? pospart[b * a.splits * a.C + c] : 0;
    for (int64_t s = 1; s < a.splits; ++s)
      fold<V, kPos>(m, pos, zpart[(b * a.splits + s) * a.C + c], kPos ? pospart[(b * a.splits + s) * a.C + c] : 0);
    if (kPos) {  // a float64 max rounds to the float32 max: rounding is monotone
      a.max_out[b * a.C + c] = static_cast<float>(m);
      a.argmax_out[b * a.C + c] = pos;
    }
    V z = a.excluded && a.excluded[c] ? V(0) : m;  // excluded channels count as 0
    z = a.topk ? (z == V(0) ? V(0) : z) : (z > V(0) ? z : V(0));  // mass: q = max(z, 0); one zero
    row_keys[c] = order_key(z);
    total += static_cast<double>(z);
  }
  total = warp_sum(total);
  const double threshold = a.tau * total;
  if (!a.topk && !(threshold > 0.0)) return;  // no positive mass: nothing is selected

  // top-k: v = the largest key with count(key >= v) >= k. mass: u = the largest key with
  // mass(key > u) >= threshold, and v = u + 1 (v = 0 if even mass(key > 0) is below it).
  auto holds = [&](K cand) {
    if (a.topk) {
      int64_t n = 0;
      for (int64_t c = lane; c < a.C; c += 32) n += row_keys[c] >= cand;
      return warp_sum(n) >= a.k;
    }
    double above = 0.0;
    for (int64_t c = lane; c < a.C; c += 32) above += row_keys[c] > cand ? key_value(row_keys[c]) : 0.0;
    return warp_sum(above) >= threshold;
  };
  K v = 0;
  for (int bit = 8 * sizeof(K) - 1; bit >= 0; --bit) {
    const K cand = v | (K{1} << bit);
    if (holds(cand)) v = cand;
  }
  if (!a.topk) v = holds(0) ? v + 1 : 0;

  int64_t above = 0, tied = 0;  // channels with key > v, == v
  double above_mass = 0.0;
  for (int64_t c = lane; c < a.C; c += 32) {
    const K key = row_keys[c];
    above += key > v;
    tied += key == v;
    above_mass += key > v ? key_value(key) : 0.0;
  }
  above = warp_sum(above);
  tied = warp_sum(tied);
  above_mass = warp_sum(above_mass);
  int64_t need = a.k - above;  // channels taken among those with key == v
  if (!a.topk) {  // the j-th tied channel (from 0) has mass above_mass + j * q before it
    const double q = key_value(v);
    need = tied;
    if (tied > 0 && q > 0.0) {
      need = static_cast<int64_t>(ceil((threshold - above_mass) / q));
      need = need < 1 ? 1 : (need > tied ? tied : need);
      while (need > 1 && !(above_mass + static_cast<double>(need - 1) * q < threshold)) --need;
      while (need < tied && above_mass + static_cast<double>(need) * q < threshold) ++need;
    }
  }

  int32_t* counts = a.counts + a.labels[b] * a.C;
  int64_t ties_before = 0;  // tied channels at lower indices, for the lower-index-first rule
  for (int64_t base = 0; base < a.C; base += 32) {
    const int64_t c = base + lane;
    const K key = c < a.C ? row_keys[c] : K{0};
    const bool tie = c < a.C && key == v;
    const unsigned ties = __ballot_sync(kFullMask, tie);
    const int64_t rank = ties_before + __popc(ties & ((1u << lane) - 1u));
    if (c < a.C && (key > v || (tie && rank < need))) atomicAdd(counts + c, 1);  // images of one class share a row
    ties_before += __popc(ties);
  }
}

// The positions of a (H, W) grid with strides (sh, sw), as Positions describes them.
Positions positions_of(int64_t H, int64_t W, int64_t sh, int64_t sw) {
  Positions g{};
  g.n = static_cast<int32_t>(H * W);
  g.run_stride = H == 1 ? sw : W == 1 ? sh : (sh == W * sw ? sw : 0);
  const bool inner_h = sh < sw;
  g.n_inner = static_cast<int32_t>(inner_h ? H : W);
  g.s_inner = inner_h ? sh : sw;
  g.s_outer = inner_h ? sw : sh;
  g.pos_inner = static_cast<int32_t>(inner_h ? W : 1);
  g.pos_outer = static_cast<int32_t>(inner_h ? 1 : W);
  return g;
}

template <class T, bool kPos>
void launch_all(const ActivationArgs& a, Stream stream) {
  using V = decltype(load_float(static_cast<const T*>(nullptr)));
  using K = decltype(order_key(V{}));
  const View4& t = a.acts;
  const int64_t B = t.shape[0], C = t.shape[1], H = t.shape[2], W = t.shape[3];
  if (H * W >= (int64_t{1} << 30))
    throw std::invalid_argument("activations: the cuda backend needs fewer than 2^30 positions per channel, got " +
                                std::to_string(H * W));
  ReduceGrid r{};
  r.C = C;
  r.stride_b = t.stride[0];
  r.stride_c = t.stride[1];
  r.pos = positions_of(H, W, t.stride[2], t.stride[3]);
  const bool run = H * W == 1 || r.pos.run_stride != 0;
  // Channels inner when their stride is below every spatial axis's that has more than one position.
  int64_t spatial = INT64_MAX;
  if (H > 1) spatial = t.stride[2];
  if (W > 1 && t.stride[3] < spatial) spatial = t.stride[3];
  const bool channels_inner = C > 1 && t.stride[1] < spatial;

  int64_t per_thread_step;
  if (channels_inner) {
    r.lanes = 32;
    r.tiles = static_cast<int32_t>((C + 31) / 32);
    per_thread_step = kWarps;
  } else {
    r.lanes = 1;
    while (r.lanes < 32 && r.lanes < H * W) r.lanes *= 2;
    const int64_t planes = kThreads / r.lanes;
    r.tiles = static_cast<int32_t>((C + planes - 1) / planes);
    per_thread_step = r.lanes;
  }
  const int64_t base_blocks = B * r.tiles;
  int64_t splits = (kTargetBlocks + base_blocks - 1) / base_blocks;
  const int64_t most = H * W / (kMinPerThread * per_thread_step);
  splits = splits < most ? splits : (most > 1 ? most : 1);
  r.chunk = static_cast<int32_t>((H * W + splits - 1) / splits);
  r.splits = static_cast<int32_t>((H * W + r.chunk - 1) / r.chunk);

  DeviceBuffer zpart(sizeof(V) * B * r.splits * C, stream);
  DeviceBuffer pospart(kPos ? sizeof(int32_t) * B * r.splits * C : 0, stream);
  DeviceBuffer keys(sizeof(K) * B * C, stream);
  const T* x = static_cast<const T*>(t.data);
  const dim3 grid(static_cast<unsigned>(base_blocks * r.splits)), block(kThreads);
  if (channels_inner && run) launch(channel_max_kernel<T, kPos, true, true>, grid, block, stream, x, r, zpart.as<V>(), pospart.as<int32_t>());
  else if (channels_inner) launch(channel_max_kernel<T, kPos, false, true>, grid, block, stream, x, r, zpart.as<V>(), pospart.as<int32_t>());
  else if (run) launch(channel_max_kernel<T, kPos, true, false>, grid, block, stream, x, r, zpart.as<V>(), pospart.as<int32_t>());
  else launch(channel_max_kernel<T, kPos, false, false>, grid, block, stream, x, r, zpart.as<V>(), pospart.as<int32_t>());

  SelectArgs s{};
  s.B = B;
  s.C = C;
  s.splits = r.splits;
  s.labels = a.labels;
  s.counts = a.counts;
  s.topk = a.topk;
  s.k = a.k < C ? a.k : C;
  s.tau = a.tau;
  s.excluded = a.excluded;
  s.max_out = a.max_out;
  s.argmax_out = a.argmax_out;
  launch(select_kernel<V, kPos>, dim3(static_cast<unsigned>((B + kSelectWarps - 1) / kSelectWarps)),
         dim3(kSelectWarps * 32), stream, s, zpart.as<V>(), pospart.as<int32_t>(), keys.as<K>());
}

}  // namespace activation_kernels

void activation_update(const ActivationArgs& a, std::uintptr_t stream) {
  dispatch_dtype(a.acts.dtype, [&](auto tag) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(tag)>>;
    if (a.max_out) activation_kernels::launch_all<T, true>(a, reinterpret_cast<Stream>(stream));
    else activation_kernels::launch_all<T, false>(a, reinterpret_cast<Stream>(stream));
  });
}

}  // namespace SUMMIT_CUDA_NS
}  // namespace summit

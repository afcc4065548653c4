// SPEC.md B on the GPU: L[b, j, i] = max over the sampled output grid of source i's
// contribution to target j, the top k sources of every (b, j), counts[label, j, s] += 1.
// The same counts as csrc/cpu/influence.cpp (same tie rule: the lower source first).
//
// - 1x1 convs, the exact shortcut: extrema_kernel reduces each (image, channel)'s max and min
//   over the sampled positions (B * C_in doubles each), then top_k_kernel scores
//   W * max (W >= 0) or W * min on the fly, in double as the CPU does.
// - kxk convs: kxk_scores_kernel computes L for a chunk of images into a scratch
//   (images, C_out, C_in/groups): one block per (image, source channel, tile of its group's
//   targets) stages the weights and, tile after tile of output positions, the padded input
//   patch in shared memory; each thread keeps PJ targets x kPositions positions of sums in
//   registers and a running max per target. Then top_k_kernel reads the stored scores.
//   With pruning (InfluenceArgs.prune, the default), only the scores an exact bound cannot rule
//   out are computed, in two rounds, as on the CPU (see "exact bound pruning" below).
// - k >= the group's sources (depthwise convs, for one): every source counts; no scores.
// Nothing of size B * C_out * C_in * H * W exists at any point.
#include <algorithm>
#include <limits>
#include <string>
#include <type_traits>

#include "cuda/ops.h"
#include "cuda/runtime.cuh"

namespace summit {
namespace SUMMIT_CUDA_NS {
// A named namespace: emulated.cpp compiles activation.cu and this file as one unit.
namespace influence_kernels {

constexpr int kThreads = 256;              // threads of every block here
constexpr int kWarps = kThreads / 32;
constexpr int kPositions = 4;              // output positions per thread and tile (kxk)
constexpr int kPatchBytes = 24 * 1024;     // shared input patch (kxk)
constexpr int kWeightBytes = 8 * 1024;     // shared weights of a block's targets (kxk)
constexpr int64_t kScoreElements = int64_t{1} << 25;  // kxk score scratch per chunk of images

// counts[...] += 1 from many threads at once.
__device__ __forceinline__ void add_one(int32_t* p) { atomicAdd(p, 1); }
// CUDA has no 16-bit integer atomicAdd: a compare-and-swap of the aligned 32-bit word that
// holds *p, changing only its half.
__device__ __forceinline__ void add_one(int16_t* p) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  unsigned* word = reinterpret_cast<unsigned*>(at & ~uintptr_t{3});
  const unsigned shift = static_cast<unsigned>(at & 2) * 8, mask = 0xffffu << shift;
  unsigned old = *word, assumed;
  do {
    assumed = old;
    const unsigned half = (((assumed & mask) >> shift) + 1u) << shift;
    old = atomicCAS(word, assumed, (assumed & ~mask) | (half & mask));
  } while (old != assumed);
}

// One rounding per tap, in a fixed order: the emulated and the GPU build compute the very same
// scores (nvcc would otherwise contract some products into FMAs and the host compiler not).
__device__ __forceinline__ float mul_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double mul_add(double a, double b, double c) { return fma(a, b, c); }

// ---------------------------------------------------------------- k >= sources: all count
template <class N>
__global__ void __launch_bounds__(kThreads) count_all_kernel(const int64_t* labels, int64_t images,
                                                             int64_t per_image, N* counts) {
  const int64_t n = images * per_image, step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n; e += step)
    add_one(counts + labels[e / per_image] * per_image + e % per_image);
}

// ---------------------------------------------------------------- top k and counts
// One warp per (image, target) row. Each call picks the best score of row (b, j) ordered after
// (prev_v, prev_s), the previous pick (value descending, lower source first), and makes it the
// previous one; false when none is left (only NaN scores, which no order places, as on the
// CPU). No per-row storage, so any number of sources works; the scores are read (or
// recomputed) once a call, from L1/L2. Every lane of the warp calls it and gets the pick.
template <class Score>
__device__ __forceinline__ bool next_best(const Score& score, int64_t b, int64_t j, int cin_g,
                                          typename Score::value& prev_v, int& prev_s) {
  using V = typename Score::value;
  V best_v = -INFINITY;
  int best_s = cin_g;  // none
  for (int s = threadIdx.x % 32; s < cin_g; s += 32) {  // ascending: a tie keeps the lane's first
    const V v = score(b, j, s);
    const bool after = v < prev_v || (v == prev_v && s > prev_s);
    if (after && (best_s == cin_g || v > best_v)) best_v = v, best_s = s;
  }
  for (int d = 16; d > 0; d /= 2) {
    const V ov = __shfl_xor_sync(0xffffffffu, best_v, d);
    const int os = __shfl_xor_sync(0xffffffffu, best_s, d);
    if (os != cin_g && (best_s == cin_g || ov > best_v || (ov == best_v && os < best_s))) best_v = ov, best_s = os;
  }
  if (best_s == cin_g) return false;
  prev_v = best_v;
  prev_s = best_s;
  return true;
}

// counts[label, j, s] += 1 for the top k sources s of every row (b, j), b in [b0, b0 + rows / c_out).
template <class Score, class N>
__global__ void __launch_bounds__(kThreads) top_k_kernel(Score score, int64_t b0, int64_t rows, int64_t c_out,
                                                         int cin_g, int64_t k, const int64_t* labels, N* counts) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps: the shuffles see full warps
  const int64_t b = b0 + row / c_out, j = row % c_out;
  N* out = counts + (labels[b] * c_out + j) * cin_g;
  typename Score::value v = INFINITY;
  int s = -1;
  for (int64_t n = 0; n < k && next_best(score, b, j, cin_g, v, s); ++n)
    if (threadIdx.x % 32 == 0) add_one(out + s);
}

// ---------------------------------------------------------------- 1x1: the exact shortcut
// hi/lo[b * C + c]: max and min of channel c of image b over the sampled positions (a position
// on zero padding reads 0). Channels inner (channels_last): a block takes 32 channels, a lane
// each, so that a warp reads 32 neighbours at once, and its 8 warps split the positions. Else a
// warp per channel, its lanes along the positions (consecutive columns at stride 1).
template <class T>
__global__ void __launch_bounds__(kThreads) extrema_kernel(View4 x, ConvGeometry g, bool channels_inner, double* hi,
                                                           double* lo) {
  using V = decltype(load_float(static_cast<const T*>(nullptr)));
  __shared__ V part_hi[kThreads], part_lo[kThreads];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int tile = channels_inner ? 32 : kWarps, parts = kThreads / tile;
  const int64_t C = x.shape[1], b = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * tile;
  const int64_t c = c0 + (channels_inner ? lane : warp);
  const int part = channels_inner ? warp : lane, out_w = static_cast<int>(g.out_w);
  const int n_pos = static_cast<int>(g.out_h) * out_w;
  V mx = -INFINITY, mn = INFINITY;
  if (c < C) {
    const T* plane = static_cast<const T*>(x.data) + b * x.stride[0] + c * x.stride[1];
    for (int p = part; p < n_pos; p += parts) {
      const int64_t r = padded_source(p / out_w * g.step_h, x.shape[2], g.pad_top, g.mode);
      const int64_t q = padded_source(p % out_w * g.step_w, x.shape[3], g.pad_left, g.mode);
      const V v = r >= 0 && q >= 0 ? load_float(plane + r * x.stride[2] + q * x.stride[3]) : V(0);
      mx = v > mx ? v : mx;
      mn = v < mn ? v : mn;
    }
  }
  part_hi[tid] = mx;
  part_lo[tid] = mn;
  __syncthreads();
  if (tid < tile && c0 + tid < C) {
    V a = -INFINITY, z = INFINITY;
    for (int n = 0; n < parts; ++n) {
      const int at = channels_inner ? n * 32 + tid : tid * 32 + n;
      a = part_hi[at] > a ? part_hi[at] : a;
      z = part_lo[at] < z ? part_lo[at] : z;
    }
    hi[b * C + c0 + tid] = a;
    lo[b * C + c0 + tid] = z;
  }
}

// W[j, s] * (max of source s where W >= 0, else its min), in double: exact for float32 values,
// so ties are those of the float64 reference.
template <class Acc>
struct PointwiseScore {
  using value = double;
  const Acc* w;
  const double *hi, *lo;
  int64_t c_in, cin_g, cout_g;
  __device__ double operator()(int64_t b, int64_t j, int s) const {
    const double wt = w[j * cin_g + s];
    const int64_t at = b * c_in + j / cout_g * cin_g + s;
    return wt * (wt >= 0.0 ? hi[at] : lo[at]);
  }
};

// ---------------------------------------------------------------- kxk
// Where the score L[b, j, s] of image b = b0 + image is stored in a chunk's (images, C_out,
// C_in/groups) scratch (and its state, with pruning).
__device__ __forceinline__ int64_t score_index(int64_t image, int64_t c_out, int64_t j, int64_t cin_g, int64_t s) {
  return (image * c_out + j) * cin_g + s;
}

// How kxk_scores_kernel splits its work (chosen on the host by plan_kxk).
struct KxkPlan {
  int jg;                // target groups of PJ targets per block (1, 2, 4 or 8)
  int64_t target_tiles;  // blocks per source channel: ceil(C_out/groups / (jg * PJ))
  int tile_h, tile_w;    // output positions per tile, at most kThreads / jg * kPositions
  int64_t tiles_w, tiles;  // tiles across the grid's width, tiles in all
  int patch_w;           // row length of the shared patch
};

// L[b - b0, j, s] of one source channel i = (group, s) and one tile of the group's targets.
// Threads: jg groups of kThreads / jg lanes (whole warps); a thread sums PJ targets (the
// weights a broadcast read, one per warp) at kPositions positions of each tile (a patch read
// each, consecutive lanes on consecutive positions), all in registers.
// Pruned calls pass `state`, laid out as the scores: 0 not computed, 1 wanted, 2 computed. A
// block then runs only if one of its targets is wanted, computes them all (a target's score
// does not depend on the others of its block; extra scores only add candidates), marks them
// computed and adds those not computed before to *computed.
template <class T, class Acc, int PJ>
__global__ void __launch_bounds__(kThreads) kxk_scores_kernel(View4 x, const Acc* weight, ConvGeometry g,
                                                              int64_t c_out, int64_t groups, KxkPlan plan,
                                                              int64_t b0, Acc* scores, uint8_t* state,
                                                              unsigned long long* computed) {
  __shared__ Acc patch[kPatchBytes / sizeof(Acc)];
  __shared__ Acc wts[kWeightBytes / sizeof(Acc)];
  __shared__ Acc warp_max[kWarps][PJ];
  __shared__ int wanted;
  const int64_t c_in = x.shape[1], cin_g = c_in / groups, cout_g = c_out / groups;
  const int64_t i = blockIdx.x % c_in, j0 = blockIdx.x / c_in * plan.jg * PJ, b = b0 + blockIdx.y;
  const int64_t grp = i / cin_g, s = i % cin_g;
  // Thread tid < jg * PJ stores the score of target j0 + tid, if the group has it (its index
  // is computed twice: kept through the tiles below, it cost registers).
  if (state) {
    if (threadIdx.x == 0) wanted = 0;
    __syncthreads();
    if (threadIdx.x < plan.jg * PJ && j0 + threadIdx.x < cout_g &&
        state[score_index(b - b0, c_out, grp * cout_g + j0 + threadIdx.x, cin_g, s)] == 1)
      wanted = 1;
    __syncthreads();
    if (!wanted) return;  // the whole block
  }
  const int kh = static_cast<int>(g.kh), kw = static_cast<int>(g.kw), taps = kh * kw;
  const int sh = static_cast<int>(g.step_h), sw = static_cast<int>(g.step_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w), pw = plan.patch_w;
  const int lanes = kThreads / plan.jg, tid = threadIdx.x, jg = tid / lanes, lane = tid % lanes;
  // wts[jj * taps + t] = W[target j0 + jj of the group, s, t]; 0 past the group's end.
  for (int e = tid; e < plan.jg * PJ * taps; e += kThreads) {
    const int64_t jl = j0 + e / taps;
    wts[e] = jl < cout_g ? weight[((grp * cout_g + jl) * cin_g + s) * taps + e % taps] : Acc(0);
  }
  const T* plane = static_cast<const T*>(x.data) + b * x.stride[0] + i * x.stride[1];
  Acc run[PJ];
  for (int q = 0; q < PJ; ++q) run[q] = -INFINITY;
  for (int64_t tile = 0; tile < plan.tiles; ++tile) {
    const int64_t oy0 = tile / plan.tiles_w * plan.tile_h, ox0 = tile % plan.tiles_w * plan.tile_w;
    const int th = static_cast<int>(min(static_cast<int64_t>(plan.tile_h), g.out_h - oy0));
    const int tw = static_cast<int>(min(static_cast<int64_t>(plan.tile_w), g.out_w - ox0));
    // The padded input under this tile's positions, converted once. Padded coordinates stay
    // within the region the sampled grid reads, so padded_source gives a real index or -1.
    const int ph = (th - 1) * sh + (kh - 1) * dh + 1, pw_used = (tw - 1) * sw + (kw - 1) * dw + 1;
    __syncthreads();  // the previous tile's reads are done
    for (int e = tid; e < ph * pw_used; e += kThreads) {
      const int py = e / pw_used, px = e % pw_used;
      const int64_t r = padded_source(oy0 * sh + py, x.shape[2], g.pad_top, g.mode);
      const int64_t q = padded_source(ox0 * sw + px, x.shape[3], g.pad_left, g.mode);
      patch[py * pw + px] = r >= 0 && q >= 0 ? static_cast<Acc>(load_float(plane + r * x.stride[2] + q * x.stride[3]))
                                             : Acc(0);
    }
    __syncthreads();
    // Positions past the tile repeat its last one, which leaves a max unchanged.
    const int n = th * tw;
    int at[kPositions];
    for (int m = 0; m < kPositions; ++m) {
      const int p = min(lane + m * lanes, n - 1);
      at[m] = p / tw * sh * pw + p % tw * sw;
    }
    Acc acc[kPositions][PJ];
    for (int m = 0; m < kPositions; ++m)
      for (int q = 0; q < PJ; ++q) acc[m][q] = Acc(0);
    const Acc* wj = wts + jg * PJ * taps;
    for (int u = 0; u < kh; ++u) {
      for (int v = 0; v < kw; ++v) {
        const int t = u * kw + v, off = u * dh * pw + v * dw;
        Acc wv[PJ];
        for (int q = 0; q < PJ; ++q) wv[q] = wj[q * taps + t];
#pragma unroll
        for (int m = 0; m < kPositions; ++m) {
          const Acc xv = patch[at[m] + off];
#pragma unroll
          for (int q = 0; q < PJ; ++q) acc[m][q] = mul_add(wv[q], xv, acc[m][q]);
        }
      }
    }
    for (int m = 0; m < kPositions; ++m)
      for (int q = 0; q < PJ; ++q) run[q] = acc[m][q] > run[q] ? acc[m][q] : run[q];
  }
  // Max over the lanes of each target group: the warp, then its group's warps.
  for (int q = 0; q < PJ; ++q) {
    for (int d = 16; d > 0; d /= 2) {
      const Acc o = __shfl_xor_sync(0xffffffffu, run[q], d);
      run[q] = o > run[q] ? o : run[q];
    }
    if (tid % 32 == 0) warp_max[tid / 32][q] = run[q];
  }
  __syncthreads();
  if (tid < plan.jg * PJ && j0 + tid < cout_g) {
    const int q = tid % PJ, w0 = tid / PJ * (lanes / 32);
    Acc m = warp_max[w0][q];
    for (int w = w0 + 1; w < w0 + lanes / 32; ++w) m = warp_max[w][q] > m ? warp_max[w][q] : m;
    const int64_t at = score_index(b - b0, c_out, grp * cout_g + j0 + tid, cin_g, s);
    scores[at] = m;
    if (state) {
      if (state[at] != 2) atomicAdd(computed, 1ull);
      state[at] = 2;
    }
  }
}

// The stored kxk scores of images [b0, b0 + chunk).
template <class Acc>
struct StoredScore {
  using value = Acc;
  const Acc* scores;
  int64_t b0, c_out, cin_g;
  __device__ Acc operator()(int64_t b, int64_t j, int s) const { return scores[score_index(b - b0, c_out, j, cin_g, s)]; }
};

// ---------------------------------------------------------------- kxk: exact bound pruning
// The cpu backend's pruning (csrc/cpu/influence.cpp, above influence_kxk_pruned: the bound, its
// rounding margin and why the counts stay exact), as kernels:
//  - extrema_kernel over the padded region the sampled grid reads: every value a tap reads lies
//    in [lo, hi] of its source plane (0 included where that region is zero padding);
//  - bound_terms_kernel: per (target, source) the sums of the positive, negative and absolute taps;
//  - round 1, mark_by_bound_kernel: the 2k best sources of each (image, target) row by bound,
//    and any tied with the 2k-th, are wanted; kxk_scores_kernel computes them;
//  - round 2, mark_by_score_kernel: t = the row's k-th best stored score (uncomputed ones are
//    -inf; a NaN makes t = -inf) is at most its final k-th best, so every uncomputed source
//    whose bound is not below t is wanted (a tie with t may win on a lower index); computed;
//  - top_k_kernel over the stored scores: an uncomputed source scores below k computed ones.

// hi * Pos + lo * Neg + 4 (T + 3) (u A + eta), A = Abs * max(|hi|, |lo|), in double: at least
// every score the kernels can compute for (b, j, s). +inf where A could overflow Acc, where the
// extrema are not finite (a plane of NaN), or where the kernel is too large for the margin.
struct ScoreBound {
  using value = double;
  const double *pos, *neg, *abs;  // (C_out, C_in/groups) each
  const double *hi, *lo;          // (B, C_in) each
  int64_t c_in, cin_g, cout_g;
  double rel, eta, limit;
  __device__ double operator()(int64_t b, int64_t j, int s) const {
    const int64_t p = j * cin_g + s, at = b * c_in + j / cout_g * cin_g + s;
    const double h = hi[at], l = lo[at], amax = fmax(fabs(h), fabs(l)), A = abs[p] * amax;
    return A < limit && amax < INFINITY ? h * pos[p] + l * neg[p] + (rel * A + eta) : INFINITY;
  }
};

// pos/neg/abs[p]: the sums of the positive, negative and absolute taps of pair p = (j, s).
// A weight too large for double's sums makes abs inf (or NaN), and the bound +inf.
template <class Acc>
__global__ void __launch_bounds__(kThreads) bound_terms_kernel(const Acc* w, int64_t pairs, int taps, double* pos,
                                                               double* neg, double* abs) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; p < pairs; p += step) {
    double sp = 0.0, sn = 0.0, sa = 0.0;
    for (int t = 0; t < taps; ++t) {
      const double v = w[p * taps + t];
      sp += v > 0.0 ? v : 0.0;
      sn += v < 0.0 ? v : 0.0;
      sa += fabs(v);
    }
    pos[p] = sp, neg[p] = sn, abs[p] = sa;
  }
}

// Round 1, one warp per (image, target) row: state 1 (wanted) for the 2k best sources by bound
// and any tied with the 2k-th, else 0; the row's scores -inf (not computed).
template <class Acc>
__global__ void __launch_bounds__(kThreads) mark_by_bound_kernel(ScoreBound bound, int64_t b0, int64_t rows,
                                                                 int64_t c_out, int cin_g, int64_t k, Acc* scores,
                                                                 uint8_t* state) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps
  const int64_t b = b0 + row / c_out, j = row % c_out;
  double v = INFINITY;  // the 2k-th best bound (bounds are never NaN)
  int at = -1;
  for (int64_t n = min(2 * k, static_cast<int64_t>(cin_g)); n > 0 && next_best(bound, b, j, cin_g, v, at); --n) {
  }
  for (int s = threadIdx.x % 32; s < cin_g; s += 32) {
    state[row * cin_g + s] = bound(b, j, s) < v ? 0 : 1;
    scores[row * cin_g + s] = -INFINITY;
  }
}

// Round 2, one warp per row: state 1 for every uncomputed source whose bound is not below t.
template <class Acc>
__global__ void __launch_bounds__(kThreads) mark_by_score_kernel(ScoreBound bound, StoredScore<Acc> score,
                                                                 int64_t rows, int64_t k, uint8_t* state) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps
  const int64_t c_out = score.c_out, b = score.b0 + row / c_out, j = row % c_out;
  const int cin_g = static_cast<int>(score.cin_g);
  bool nan = false;
  for (int s = threadIdx.x % 32; s < cin_g; s += 32) nan |= score(b, j, s) != score(b, j, s);
  Acc t = -INFINITY;
  if (!__any_sync(0xffffffffu, nan)) {
    Acc v = INFINITY;
    int at = -1;
    int64_t n = 0;
    while (n < k && next_best(score, b, j, cin_g, v, at)) ++n;
    t = v;  // k < cin_g scores, none NaN: n == k
  }
  for (int s = threadIdx.x % 32; s < cin_g; s += 32)
    if (state[row * cin_g + s] == 0 && !(bound(b, j, s) < t)) state[row * cin_g + s] = 1;
}

// Blocks as large as the group's targets need (up to 8 x PJ) and the weights fit; position
// tiles of whole output rows where they fit, as many positions as the threads take.
template <class Acc>
KxkPlan plan_kxk(const InfluenceArgs& a, int pj) {
  const ConvGeometry& g = a.geo;
  const int64_t cout_g = a.c_out / a.groups, taps = g.kh * g.kw;
  const int64_t weight_cap = kWeightBytes / sizeof(Acc), patch_cap = kPatchBytes / sizeof(Acc);
  KxkPlan plan{};
  plan.jg = 8;
  while (plan.jg > 1 && (plan.jg / 2) * pj >= cout_g) plan.jg /= 2;
  while (plan.jg > 1 && plan.jg * pj * taps > weight_cap) plan.jg /= 2;
  plan.target_tiles = (cout_g + plan.jg * pj - 1) / (plan.jg * pj);
  const int64_t positions = int64_t{kThreads} / plan.jg * kPositions;
  int64_t tw = std::min(g.out_w, positions), th = std::min(g.out_h, std::max<int64_t>(1, positions / tw));
  auto patch = [&](int64_t h, int64_t w) {
    return ((h - 1) * g.step_h + (g.kh - 1) * g.dil_h + 1) * ((w - 1) * g.step_w + (g.kw - 1) * g.dil_w + 1);
  };
  while (patch(th, tw) > patch_cap && (th > 1 || tw > 1)) (th > 1 ? th : tw) /= 2;
  if (patch(th, tw) > patch_cap)
    throw std::invalid_argument("conv kernel " + std::to_string(g.kh) + "x" + std::to_string(g.kw) + " with dilation " +
                                std::to_string(g.dil_h) + "x" + std::to_string(g.dil_w) +
                                " reads more input per output than the cuda backend's influence kernel stages (" +
                                std::to_string(patch_cap) + " values); use backend 'cpu' or 'torch' for this conv");
  plan.tile_h = static_cast<int>(th);
  plan.tile_w = static_cast<int>(tw);
  plan.tiles_w = (g.out_w + tw - 1) / tw;
  plan.tiles = (g.out_h + th - 1) / th * plan.tiles_w;
  plan.patch_w = static_cast<int>((tw - 1) * g.step_w + (g.kw - 1) * g.dil_w + 1);
  return plan;
}

template <class Score, class N>
void launch_top_k(const InfluenceArgs& a, Score score, int64_t b0, int64_t images, Stream stream) {
  const int64_t rows = images * a.c_out, cin_g = a.x.shape[1] / a.groups;
  launch(top_k_kernel<Score, N>, dim3(static_cast<unsigned>((rows + kWarps - 1) / kWarps)), dim3(kThreads), stream,
         score, b0, rows, a.c_out, static_cast<int>(cin_g), a.k, a.labels, static_cast<N*>(a.counts));
}

// hi/lo[b * C_in + c]: the max and min of every input plane over the positions of grid g.
template <class T>
void launch_extrema(const InfluenceArgs& a, const ConvGeometry& g, double* hi, double* lo, Stream stream) {
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1];
  const bool channels_inner = a.x.stride[1] == 1 && c_in > 1;
  const int64_t tile = channels_inner ? 32 : kWarps;
  // Images on the grid's x (2^31 - 1 of them), channel tiles on y (65535 tiles).
  launch(extrema_kernel<T>, dim3(static_cast<unsigned>(B), static_cast<unsigned>((c_in + tile - 1) / tile)),
         dim3(kThreads), stream, a.x, g, channels_inner, hi, lo);
}

template <class T, class Acc, class N>
void influence_1x1(const InfluenceArgs& a, Stream stream) {
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1];
  DeviceBuffer extrema(2 * B * c_in * sizeof(double), stream);
  double* hi = extrema.as<double>();
  double* lo = hi + B * c_in;
  launch_extrema<T>(a, a.geo, hi, lo, stream);
  const PointwiseScore<Acc> score{static_cast<const Acc*>(a.weight), hi, lo, c_in, c_in / a.groups, a.c_out / a.groups};
  launch_top_k<PointwiseScore<Acc>, N>(a, score, 0, B, stream);
}

// The padded region the sampled grid of kxk conv g reads, as a grid of its own (step 1):
// every value under a tap is at one of its positions.
inline ConvGeometry read_region(const ConvGeometry& g) {
  ConvGeometry r = g;
  r.out_h = (g.out_h - 1) * g.step_h + (g.kh - 1) * g.dil_h + 1;
  r.out_w = (g.out_w - 1) * g.step_w + (g.kw - 1) * g.dil_w + 1;
  r.kh = r.kw = r.step_h = r.step_w = r.dil_h = r.dil_w = 1;
  return r;
}

// The scores' bounds: extrema of the read region into hi/lo (B * C_in doubles each), the
// weights' sums into terms (3 * C_out * C_in/groups doubles); the margin's constants as the
// cpu backend's make_bound_terms.
template <class T, class Acc>
ScoreBound launch_score_bounds(const InfluenceArgs& a, double* hi, double* lo, double* terms, Stream stream) {
  const int64_t c_in = a.x.shape[1], cin_g = c_in / a.groups, pairs = a.c_out * cin_g;
  const int taps = static_cast<int>(a.geo.kh * a.geo.kw);
  launch_extrema<T>(a, read_region(a.geo), hi, lo, stream);
  const int64_t blocks = std::min<int64_t>((pairs + kThreads - 1) / kThreads, 4096);
  launch(bound_terms_kernel<Acc>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream,
         static_cast<const Acc*>(a.weight), pairs, taps, terms, terms + pairs, terms + 2 * pairs);
  const double n = 4.0 * (taps + 3), u = std::numeric_limits<Acc>::epsilon() / 2;
  const bool small_error = n / 4 * u < 0.01;  // (T + 3) u
  const double limit = small_error ? static_cast<double>(std::numeric_limits<Acc>::max()) / 4 : 0.0;  // 0: no A is below
  return ScoreBound{terms, terms + pairs, terms + 2 * pairs, hi, lo, c_in, cin_g, a.c_out / a.groups,
                    n * u, n * static_cast<double>(std::numeric_limits<Acc>::denorm_min()), limit};
}

// Every score (a.prune false) or, with pruning, those the two rounds want; returns how many
// scores were computed.
template <class T, class Acc, class N, int PJ>
InfluenceStats influence_kxk(const InfluenceArgs& a, Stream stream) {
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1], cin_g = c_in / a.groups, total = B * a.c_out * cin_g;
  const KxkPlan plan = plan_kxk<Acc>(a, PJ);
  const int64_t chunk = std::min<int64_t>({B, 65535, std::max<int64_t>(1, kScoreElements / (a.c_out * cin_g))});
  DeviceBuffer scores(chunk * a.c_out * cin_g * sizeof(Acc), stream);
  // Pruning only: each score's state, the extrema, the bound terms and the count of scores computed.
  DeviceBuffer state(a.prune ? chunk * a.c_out * cin_g : 0, stream);
  DeviceBuffer doubles(a.prune ? (2 * B * c_in + 3 * a.c_out * cin_g) * sizeof(double) : 0, stream);
  DeviceBuffer computed(a.prune ? sizeof(unsigned long long) : 0, stream);
  ScoreBound bound{};
  if (a.prune) {
    double* hi = doubles.as<double>();
    bound = launch_score_bounds<T, Acc>(a, hi, hi + B * c_in, hi + 2 * B * c_in, stream);
    zero_device(computed.as<void>(), sizeof(unsigned long long), stream);
  }
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t images = std::min(chunk, B - b0), rows = images * a.c_out;
    const dim3 row_blocks(static_cast<unsigned>((rows + kWarps - 1) / kWarps));
    auto compute = [&](uint8_t* wanted) {
      launch(kxk_scores_kernel<T, Acc, PJ>,
             dim3(static_cast<unsigned>(c_in * plan.target_tiles), static_cast<unsigned>(images)), dim3(kThreads),
             stream, a.x, static_cast<const Acc*>(a.weight), a.geo, a.c_out, a.groups, plan, b0, scores.as<Acc>(),
             wanted, computed.as<unsigned long long>());
    };
    const StoredScore<Acc> stored{scores.as<Acc>(), b0, a.c_out, cin_g};
    if (a.prune) {
      launch(mark_by_bound_kernel<Acc>, row_blocks, dim3(kThreads), stream, bound, b0, rows, a.c_out,
             static_cast<int>(cin_g), a.k, scores.as<Acc>(), state.as<uint8_t>());
      compute(state.as<uint8_t>());
      launch(mark_by_score_kernel<Acc>, row_blocks, dim3(kThreads), stream, bound, stored, rows, a.k,
             state.as<uint8_t>());
      compute(state.as<uint8_t>());
    } else {
      compute(nullptr);
    }
    launch_top_k<StoredScore<Acc>, N>(a, stored, b0, images, stream);
  }
  if (!a.prune) return {total, total};
  unsigned long long n = 0;
  copy_to_host(&n, computed.as<void>(), sizeof n, stream);
  return {static_cast<int64_t>(n), total};
}

template <class N>
InfluenceStats update_into(const InfluenceArgs& a, Stream stream) {
  const int64_t B = a.x.shape[0], cin_g = a.x.shape[1] / a.groups, per_image = a.c_out * cin_g;
  if (a.k >= cin_g) {  // every target keeps all of its sources: the scores cannot matter
    const int64_t blocks = std::min<int64_t>((B * per_image + kThreads - 1) / kThreads, 4096);
    launch(count_all_kernel<N>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream, a.labels, B, per_image,
           static_cast<N*>(a.counts));
    return {0, B * per_image};
  }
  return dispatch_dtype(a.x.dtype, [&](auto e) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(e)>>;
    auto run = [&](auto acc) -> InfluenceStats {
      using Acc = decltype(acc);
      if (a.geo.kh == 1 && a.geo.kw == 1) {
        influence_1x1<T, Acc, N>(a, stream);  // every score, from the extrema
        return {B * per_image, B * per_image};
      }
      // PJ = 4 targets a thread where the group has them and their weights fit; else 1.
      if (a.c_out / a.groups >= 4 && 4 * a.geo.kh * a.geo.kw <= kWeightBytes / int64_t{sizeof(Acc)})
        return influence_kxk<T, Acc, N, 4>(a, stream);
      if (a.geo.kh * a.geo.kw > kWeightBytes / int64_t{sizeof(Acc)})
        throw std::invalid_argument("conv kernel " + std::to_string(a.geo.kh) + "x" + std::to_string(a.geo.kw) +
                                    " has more taps than the cuda backend's influence kernel stages (" +
                                    std::to_string(kWeightBytes / sizeof(Acc)) + "); use backend 'cpu' or 'torch'");
      return influence_kxk<T, Acc, N, 1>(a, stream);
    };
    return a.weight_f64 ? run(double{}) : run(float{});
  });
}

}  // namespace influence_kernels

InfluenceStats influence_update(const InfluenceArgs& a, std::uintptr_t stream) {
  const Stream s = reinterpret_cast<Stream>(stream);
  return a.counts_int16 ? influence_kernels::update_into<int16_t>(a, s) : influence_kernels::update_into<int32_t>(a, s);
}

}  // namespace SUMMIT_CUDA_NS
}  // namespace summit

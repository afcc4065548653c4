// Per-channel spatial max (and min) over a set of sampled positions, for any layout and
// element type: the activation op's z (SPEC.md A.1) and the 1x1 influence shortcut's
// max/min over the sampled padded input (SPEC.md B) share this one reduction.
#pragma once
#include <algorithm>
#include <limits>
#include <vector>

#include "cpu_common.h"

namespace summit {

// The distinct real indices one axis of a sampled grid reads (ascending), and whether some
// sampled coordinate falls on zero padding. Duplicates do not matter for a max or min.
struct AxisSamples {
  std::vector<int64_t> idx;
  bool reads_zero = false;
  int64_t step = 0;  // > 0 when idx is an arithmetic progression with this step

  static AxisSamples full(int64_t n) { return sampled(n, 1, n, 0, PadMode::zeros); }

  // Coordinates q = 0, step, 2*step, ... (count of them) of an axis of n real elements
  // padded by lo in front.
  static AxisSamples sampled(int64_t count, int64_t step, int64_t n, int64_t lo, PadMode mode) {
    AxisSamples s;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = padded_source(i * step, n, lo, mode);
      if (r < 0) s.reads_zero = true; else s.idx.push_back(r);
    }
    std::sort(s.idx.begin(), s.idx.end());
    s.idx.erase(std::unique(s.idx.begin(), s.idx.end()), s.idx.end());
    s.step = s.idx.size() > 1 ? s.idx[1] - s.idx[0] : 1;
    for (size_t i = 2; i < s.idx.size() && s.step; ++i)
      if (s.idx[i] - s.idx[i - 1] != s.step) s.step = 0;
    return s;
  }
};

template <class K>
constexpr K lowest_key() {
  return std::numeric_limits<K>::has_infinity ? -std::numeric_limits<K>::infinity() : std::numeric_limits<K>::lowest();
}
template <class K>
constexpr K highest_key() {
  return std::numeric_limits<K>::has_infinity ? std::numeric_limits<K>::infinity() : std::numeric_limits<K>::max();
}

// Extrema of n elements p[0], p[step], ...; folded into mx (and mn when kMin).
template <class E, bool kMin>
inline void reduce_run(const typename E::raw* p, int64_t n, int64_t step, typename E::key& mx, typename E::key& mn) {
  using K = typename E::key;
  // Contiguous runs: 64 bytes of independent accumulators per step (four SSE registers), so
  // the loop is bound by loads rather than by the latency of one max chain. gcc vectorises
  // the ternary form, not std::max. The last block may overlap the previous one: a max or min
  // does not mind elements seen twice.
  constexpr int64_t W = 64 / sizeof(K);
  if (step == 1 && n >= W) {
    K am[W], bm[W];
    for (int64_t l = 0; l < W; ++l) am[l] = mx, bm[l] = mn;
    auto block = [&](const typename E::raw* q) {
#pragma omp simd
      for (int64_t l = 0; l < W; ++l) {
        const K k = E::to_key(q[l]);
        am[l] = k > am[l] ? k : am[l];
        if (kMin) bm[l] = k < bm[l] ? k : bm[l];
      }
    };
    int64_t i = 0;
    for (; i + W <= n; i += W) block(p + i);
    if (i < n) block(p + n - W);
    K a = mx, z = mn;  // a vectorised fold (gcc emits a shuffle tree for the reduction)
#pragma omp simd reduction(max : a) reduction(min : z)
    for (int64_t l = 0; l < W; ++l) {
      a = am[l] > a ? am[l] : a;
      if (kMin) z = bm[l] < z ? bm[l] : z;
    }
    mx = a;
    mn = z;
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const K k = E::to_key(p[i * step]);
    mx = k > mx ? k : mx;
    if (kMin) mn = k < mn ? k : mn;
  }
}

// Channels [c0, c1) of image b, channel-strided layout (NCHW-like): one plane at a time.
template <class E, bool kMin>
void planes_extrema(const View4& t, int64_t b, int64_t c0, int64_t c1, const AxisSamples& rows,
                    const AxisSamples& cols, typename E::key* mx, typename E::key* mn) {
  using Raw = typename E::raw;
  const int64_t sh = t.stride[2], sw = t.stride[3];
  const int64_t nr = static_cast<int64_t>(rows.idx.size()), nc = static_cast<int64_t>(cols.idx.size());
  const int64_t col_step = cols.step * sw;
  // Rows that follow each other in memory with contiguous columns form one run (e.g. a
  // whole contiguous 7x7 plane is one 49-element run instead of seven short ones).
  const bool one_run = col_step == 1 && rows.step > 0 && rows.step * sh == nc;
  for (int64_t c = c0; c < c1; ++c) {
    const Raw* base = static_cast<const Raw*>(t.data) + b * t.stride[0] + c * t.stride[1];
    auto& a = mx[c - c0];
    auto& z = mn[c - c0];
    if (nr == 0 || nc == 0) continue;
    if (one_run) {
      reduce_run<E, kMin>(base + rows.idx[0] * sh + cols.idx[0] * sw, nr * nc, 1, a, z);
      continue;
    }
    for (int64_t r : rows.idx) {
      const Raw* row = base + r * sh;
      if (col_step > 0) {
        reduce_run<E, kMin>(row + cols.idx[0] * sw, nc, col_step, a, z);
      } else {
        for (int64_t col : cols.idx) reduce_run<E, kMin>(row + col * sw, 1, 1, a, z);
      }
    }
  }
}

// Channels [c0, c1) of image b, channels contiguous (channels_last), at the given position
// offsets: vectorised across the channel block, four positions per pass over the
// accumulators (the last group repeats its last position, which a max or min ignores).
template <class E, bool kMin>
void positions_extrema(const View4& t, int64_t b, int64_t c0, int64_t c1, const std::vector<int64_t>& offsets,
                       typename E::key* mx, typename E::key* mn) {
  using Raw = typename E::raw;
  using K = typename E::key;
  const int64_t n = c1 - c0, np = static_cast<int64_t>(offsets.size());
  const Raw* base = static_cast<const Raw*>(t.data) + b * t.stride[0] + c0;
  for (int64_t j = 0; j < np; j += 4) {
    const Raw* q[4];
    for (int64_t u = 0; u < 4; ++u) q[u] = base + offsets[std::min(j + u, np - 1)];
    // The accumulator stores fill the store buffer while loads wait on DRAM, which limits
    // the misses in flight; prefetching two groups ahead keeps the memory busy (2-3x here).
    for (int64_t u = j + 8; u < std::min(j + 12, np); ++u)
      for (int64_t o = 0; o < n; o += 64 / static_cast<int64_t>(sizeof(Raw))) __builtin_prefetch(base + offsets[u] + o);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const K k0 = E::to_key(q[0][i]), k1 = E::to_key(q[1][i]), k2 = E::to_key(q[2][i]), k3 = E::to_key(q[3][i]);
      const K a01 = k0 > k1 ? k0 : k1, a23 = k2 > k3 ? k2 : k3, a = a01 > a23 ? a01 : a23;
      mx[i] = a > mx[i] ? a : mx[i];
      if (kMin) {
        const K b01 = k0 < k1 ? k0 : k1, b23 = k2 < k3 ? k2 : k3, z = b01 < b23 ? b01 : b23;
        mn[i] = z < mn[i] ? z : mn[i];
      }
    }
  }
}

// out_max[b*C + c] (and out_min, when not null) for every image and channel, over the
// positions rows x cols (plus a zero when the grid touches zero padding). Call it inside an
// OpenMP parallel region: it shares the (image, channel block) tasks among the threads.
template <class E>
void all_channel_extrema(const View4& t, const AxisSamples& rows, const AxisSamples& cols, double* out_max,
                         double* out_min) {
  using K = typename E::key;
  const int64_t B = t.shape[0], C = t.shape[1];
  const bool channels_inner = t.stride[1] == 1 && C > 1;
  // Channels inner: whole images per task read memory sequentially; split an image's
  // channels (in 64-byte multiples) only when there are fewer than 8 images to share out.
  const int64_t line = 64 / static_cast<int64_t>(sizeof(typename E::raw));
  const int64_t per_image = (C + (8 + B - 1) / B - 1) / ((8 + B - 1) / B);
  const int64_t block = channels_inner ? (per_image + line - 1) / line * line : 16;
  const int64_t blocks = (C + block - 1) / block;
  const bool zero = rows.reads_zero || cols.reads_zero;
  std::vector<K> mx(block), mn(block);
  std::vector<int64_t> offsets;  // element offsets of the positions, for the channels-inner path
  if (channels_inner)
    for (int64_t r : rows.idx)
      for (int64_t c : cols.idx) offsets.push_back(r * t.stride[2] + c * t.stride[3]);
#pragma omp for schedule(dynamic, 1)
  for (int64_t task = 0; task < B * blocks; ++task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * block, c1 = std::min(C, c0 + block);
    std::fill(mx.begin(), mx.end(), lowest_key<K>());
    std::fill(mn.begin(), mn.end(), highest_key<K>());
    if (channels_inner) {
      if (out_min) positions_extrema<E, true>(t, b, c0, c1, offsets, mx.data(), mn.data());
      else positions_extrema<E, false>(t, b, c0, c1, offsets, mx.data(), mn.data());
    } else {
      if (out_min) planes_extrema<E, true>(t, b, c0, c1, rows, cols, mx.data(), mn.data());
      else planes_extrema<E, false>(t, b, c0, c1, rows, cols, mx.data(), mn.data());
    }
    const bool any_real = !rows.idx.empty() && !cols.idx.empty();
    for (int64_t c = c0; c < c1; ++c) {
      double hi = any_real ? E::key_value(mx[c - c0]) : 0.0;
      double lo = any_real ? E::key_value(mn[c - c0]) : 0.0;
      if (zero) {
        hi = hi > 0.0 ? hi : 0.0;
        lo = lo < 0.0 ? lo : 0.0;
      }
      out_max[b * C + c] = hi;
      if (out_min) out_min[b * C + c] = lo;
    }
  }
}

}  // namespace summit

// Per-channel spatial max (and min) over a set of sampled positions, for any layout and
// element type: the activation op's z (SPEC.md A.1) and the 1x1 influence shortcut's
// max/min over the sampled padded input (SPEC.md B) share this one reduction. The activation
// op can also ask where each max first occurs (the dataset examples' positions).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/common.h"

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

// Element types whose keys are equal exactly when the float32 values are, so that the first
// position of the max key is the first position of the float32 max (what torch's max(dim)
// returns on the tensor converted with .float()): float32 as it is; float16 and bfloat16 with
// -0 and +0 on one key (key = sign * magnitude bits); float64 read as the float32 it rounds to
// (rounding can make distinct doubles equal).
template <class E>
struct SignedMagnitude : E {
  using typename E::key;
  using typename E::raw;
  static key to_key(raw v) {
    const key k = E::to_key(v);  // -1 - magnitude for negative values
    return static_cast<key>(k + (k < 0));
  }
  static double key_value(key k) { return E::key_value(static_cast<key>(k - (k < 0))); }
};

struct F64AsF32 {
  using raw = double;
  using key = float;
  static key to_key(raw v) { return static_cast<float>(v); }
  static double key_value(key k) { return k; }
};

template <class E> struct Float32Order { using type = E; };
template <> struct Float32Order<F16> { using type = SignedMagnitude<F16>; };
template <> struct Float32Order<BF16> { using type = SignedMagnitude<BF16>; };
template <> struct Float32Order<F64> { using type = F64AsF32; };

// Keys in 64 bytes: the lanes of the contiguous-run reductions (four SSE registers).
template <class E>
constexpr int64_t lanes_of() { return 64 / static_cast<int64_t>(sizeof(typename E::key)); }

// Extrema of n elements p[0], p[step], ...; folded into mx (and mn when kMin).
template <class E, bool kMin>
inline void reduce_run(const typename E::raw* p, int64_t n, int64_t step, typename E::key& mx, typename E::key& mn) {
  using K = typename E::key;
  // Contiguous runs: 64 bytes of independent accumulators per step (four SSE registers), so
  // the loop is bound by loads rather than by the latency of one max chain. gcc vectorises
  // the ternary form, not std::max. The last block may overlap the previous one: a max or min
  // does not mind elements seen twice.
  constexpr int64_t W = lanes_of<E>();
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

// Same-width signed integers for per-lane block numbers beside the keys (one blend per vector).
template <class K>
using LaneIndex = std::conditional_t<sizeof(K) == 2, int16_t, std::conditional_t<sizeof(K) == 4, int32_t, int64_t>>;

// The max of n >= 1 elements p[0], p[step], ... into mx, and the index of its first occurrence,
// without branches. Contiguous runs: W lanes over 64-byte blocks as in reduce_run (the last
// block overlapping the previous one), each lane also keeping the first block where its max
// rose to its final value; the lanes holding the run's max then name its first position (an
// element the overlapping block shows a lane again, another lane saw at the same index before).
// Runs longer than the lanes' block numbers (or int32) can count are taken in pieces.
template <class E>
inline int64_t max_first(const typename E::raw* p, int64_t n, int64_t step, typename E::key& mx) {
  using K = typename E::key;
  using I = LaneIndex<K>;
  constexpr int64_t W = lanes_of<E>();
  constexpr int64_t kPiece = sizeof(I) == 2 ? int64_t{std::numeric_limits<I>::max()} * W : int64_t{1} << 30;
  if (step != 1 || n < W) {
    K m = E::to_key(p[0]);
    int64_t first = 0;
    for (int64_t i = 1; i < n; ++i) {
      const K k = E::to_key(p[i * step]);
      first = k > m ? i : first;
      m = k > m ? k : m;
    }
    mx = m;
    return first;
  }
  if (n > kPiece) {  // pieces in order: a later one takes over only with a larger max
    int64_t first = max_first<E>(p, kPiece, 1, mx);
    for (int64_t s = kPiece; s < n; s += kPiece) {
      K m;
      const int64_t i = max_first<E>(p + s, std::min(kPiece, n - s), 1, m);
      first = m > mx ? s + i : first;
      mx = m > mx ? m : mx;
    }
    return first;
  }
  K am[W];
  I ib[W];
  for (int64_t l = 0; l < W; ++l) am[l] = lowest_key<K>(), ib[l] = 0;
  auto block = [&](const typename E::raw* q, I number) {
#pragma omp simd
    for (int64_t l = 0; l < W; ++l) {
      // The block number follows from the new max (off the max's dependency chain), and in
      // this form gcc vectorises it as a blend for float keys too.
      const K k = E::to_key(q[l]), a = am[l], top = k > a ? k : a;
      const I was = ib[l];
      ib[l] = top == a ? was : number;
      am[l] = top;
    }
  };
  const int64_t blocks = n / W;
  for (int64_t j = 0; j < blocks; ++j) block(p + j * W, static_cast<I>(j));
  if (blocks * W < n) block(p + n - W, static_cast<I>(blocks));  // block number `blocks` starts at n - W
  K m = am[0];
#pragma omp simd reduction(max : m)
  for (int64_t l = 0; l < W; ++l) m = am[l] > m ? am[l] : m;
  const int32_t last = static_cast<int32_t>(n - W), none = std::numeric_limits<int32_t>::max();
  int32_t first = none;  // in int32, so that gcc vectorises this fold too
#pragma omp simd reduction(min : first)
  for (int64_t l = 0; l < W; ++l) {
    const int32_t start = static_cast<int32_t>(ib[l]) * static_cast<int32_t>(W);
    const int32_t at = (start < last ? start : last) + static_cast<int32_t>(l);
    const int32_t here = am[l] == m ? at : none;
    first = here < first ? here : first;
  }
  mx = m;
  return first;
}

// Channels [c0, c1) of image b, channel-strided layout (NCHW-like): one plane at a time. With
// kPos, pos gets the index (in rows x cols, row-major) of each max's first position.
template <class E, bool kMin, bool kPos>
void planes_extrema(const View4& t, int64_t b, int64_t c0, int64_t c1, const AxisSamples& rows,
                    const AxisSamples& cols, typename E::key* mx, typename E::key* mn, int64_t* pos) {
  static_assert(!(kMin && kPos), "positions are found for maxima alone");
  using Raw = typename E::raw;
  using K = typename E::key;
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
    if (kPos && one_run) {
      pos[c - c0] = max_first<E>(base + rows.idx[0] * sh + cols.idx[0] * sw, nr * nc, 1, a);
    } else if (kPos) {  // row by row; a later row takes over only with a larger max
      for (int64_t i = 0; i < nr; ++i) {
        const Raw* row = base + rows.idx[i] * sh;
        K m = lowest_key<K>();
        int64_t j = 0;
        if (col_step > 0) {
          j = max_first<E>(row + cols.idx[0] * sw, nc, col_step, m);
        } else {
          for (int64_t u = 0; u < nc; ++u) {
            const K k = E::to_key(row[cols.idx[u] * sw]);
            j = k > m || u == 0 ? u : j;
            m = k > m || u == 0 ? k : m;
          }
        }
        pos[c - c0] = m > a || i == 0 ? i * nc + j : pos[c - c0];
        a = m > a || i == 0 ? m : a;
      }
    } else if (one_run) {
      reduce_run<E, kMin>(base + rows.idx[0] * sh + cols.idx[0] * sw, nr * nc, 1, a, z);
    } else {
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
}

// Channels [c0, c1) of image b, channels contiguous (channels_last), at the given position
// offsets: vectorised across the channel block, one position after the other, so that on a
// full grid the reads follow memory. (Four positions per pass, i.e. four streams a few KB
// apart, read 13-17 GB/s from DRAM on one core here, one position per pass 23-32 GB/s, with
// or without software prefetching.) With kPos, each channel also keeps the position where
// its max first rose to its final value: pos gets that position.
template <class E, bool kMin, bool kPos>
void positions_extrema(const View4& t, int64_t b, int64_t c0, int64_t c1, const std::vector<int64_t>& offsets,
                       typename E::key* mx, typename E::key* mn, int32_t* first, int64_t* pos) {
  static_assert(!(kMin && kPos), "positions are found for maxima alone");
  using Raw = typename E::raw;
  using K = typename E::key;
  const int64_t n = c1 - c0, np = static_cast<int64_t>(offsets.size());
  const Raw* base = static_cast<const Raw*>(t.data) + b * t.stride[0] + c0;
  if (kPos) std::fill(first, first + n, 0);
  for (int64_t j = 0; j < np; ++j) {
    const Raw* q = base + offsets[j];
    const int32_t at = static_cast<int32_t>(j);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const K k = E::to_key(q[i]), m = mx[i], top = k > m ? k : m;
      if (kPos) {  // as in max_first: the form gcc vectorises for float keys
        const int32_t was = first[i];
        first[i] = top == m ? was : at;
      }
      mx[i] = top;
      if (kMin) mn[i] = k < mn[i] ? k : mn[i];
    }
  }
  if (kPos) std::copy(first, first + n, pos);
}

// The (image, channel block) tasks of all_channel_extrema and all_channel_max_first.
template <class E, bool kMin, bool kPos>
void channel_blocks(const View4& t, const AxisSamples& rows, const AxisSamples& cols, double* out_max,
                    double* out_min, int64_t* out_pos) {
  using K = typename E::key;
  const int64_t B = t.shape[0], C = t.shape[1];
  const bool channels_inner = t.stride[1] == 1 && C > 1;
  // Whole images per task read memory sequentially, in either layout; an image's channels are
  // split (channels inner: in 64-byte multiples) only when there are fewer than 8 images to
  // share out. (NCHW tasks of 16 channels, taken by the threads in turn, made each thread's
  // reads jump every few KB: 14x14 layers read 19 GB/s with two threads, whole images 31.)
  const int64_t line = 64 / static_cast<int64_t>(sizeof(typename E::raw));
  const int64_t per_image = (C + (8 + B - 1) / B - 1) / ((8 + B - 1) / B);
  const int64_t block = channels_inner ? (per_image + line - 1) / line * line : per_image;
  const int64_t blocks = (C + block - 1) / block;
  const bool zero = rows.reads_zero || cols.reads_zero;
  std::vector<K> mx(block), mn(block);
  std::vector<int32_t> first(kPos ? block : 0);  // positions_extrema's scratch
  std::vector<int64_t> offsets;  // element offsets of the positions, for the channels-inner path
  if (channels_inner)
    for (int64_t r : rows.idx)
      for (int64_t c : cols.idx) offsets.push_back(r * t.stride[2] + c * t.stride[3]);
#pragma omp for schedule(dynamic, 1)
  for (int64_t task = 0; task < B * blocks; ++task) {
    const int64_t b = task / blocks, c0 = (task % blocks) * block, c1 = std::min(C, c0 + block);
    int64_t* pos = kPos ? out_pos + b * C + c0 : nullptr;
    std::fill(mx.begin(), mx.end(), lowest_key<K>());
    std::fill(mn.begin(), mn.end(), highest_key<K>());
    if (channels_inner) positions_extrema<E, kMin, kPos>(t, b, c0, c1, offsets, mx.data(), mn.data(), first.data(), pos);
    else planes_extrema<E, kMin, kPos>(t, b, c0, c1, rows, cols, mx.data(), mn.data(), pos);
    const bool any_real = !rows.idx.empty() && !cols.idx.empty();
    for (int64_t c = c0; c < c1; ++c) {
      double hi = any_real ? E::key_value(mx[c - c0]) : 0.0;
      double lo = any_real ? E::key_value(mn[c - c0]) : 0.0;
      if (zero) {
        hi = hi > 0.0 ? hi : 0.0;
        lo = lo < 0.0 ? lo : 0.0;
      }
      out_max[b * C + c] = hi;
      if (kMin) out_min[b * C + c] = lo;
    }
  }
}

// out_max[b*C + c] (and out_min, when not null) for every image and channel, over the
// positions rows x cols (plus a zero when the grid touches zero padding). Call it inside an
// OpenMP parallel region: it shares the (image, channel block) tasks among the threads.
template <class E>
void all_channel_extrema(const View4& t, const AxisSamples& rows, const AxisSamples& cols, double* out_max,
                         double* out_min) {
  if (out_min) channel_blocks<E, true, false>(t, rows, cols, out_max, out_min, nullptr);
  else channel_blocks<E, false, false>(t, rows, cols, out_max, nullptr, nullptr);
}

// out_max as above over a grid of real positions (no padding), and out_pos[b*C + c] the index
// of the first position of that max in rows x cols, row-major (h * W + w on the full grid);
// fewer than 2^31 positions. With keys in Float32Order these are the positions torch's
// max(dim) finds in the float32 values.
template <class E>
void all_channel_max_first(const View4& t, const AxisSamples& rows, const AxisSamples& cols, double* out_max,
                           int64_t* out_pos) {
  channel_blocks<E, false, true>(t, rows, cols, out_max, nullptr, out_pos);
}

}  // namespace summit

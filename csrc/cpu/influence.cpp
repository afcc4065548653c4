// Influence aggregation (SPEC.md B): L[b, j, i] = max over the sampled output grid of source
// i's contribution to target j, top-k sources per (b, j), count update. 1x1 convs use the
// exact max/min shortcut; kxk convs compute contributions one source plane at a time, in
// cache-sized tiles of positions, keeping only a running max per (b, j, i).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "cpu/extrema.h"
#include "cpu/kernels.h"
#include "cpu/select.h"

// Vector types are used only inside always-inlined code, never across an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__GNUC__) && defined(__x86_64__)
// The package is built for baseline x86-64-v2 (SSE4.2); the kxk kernel also gets an
// AVX2+FMA build chosen at run time, which is about twice as fast where available.
#define SUMMIT_AVX2_DISPATCH 1
#endif

namespace summit {
namespace {

// One 32-byte vector: an AVX register, or two SSE registers in the baseline build.
typedef float vec_f32 __attribute__((vector_size(32)));
typedef double vec_f64 __attribute__((vector_size(32)));
template <class Acc> struct Vec;
template <> struct Vec<float> { using type = vec_f32; static constexpr int lanes = 8; };
template <> struct Vec<double> { using type = vec_f64; static constexpr int lanes = 4; };
template <class Acc> constexpr int64_t kPositionBlock = 2 * Vec<Acc>::lanes;  // positions per micro-kernel step

#define SUMMIT_ALWAYS_INLINE inline __attribute__((always_inline))

// Shared, read-only description of one kxk call.
template <class Acc>
struct KxkPlan {
  int64_t T;                    // taps kh*kw
  int64_t used_h, used_w;       // extent of the padded input the sampled grid reads
  std::vector<int64_t> row_src, col_src;  // padded coordinate -> real index, -1 for zero
  int64_t inner_lo, inner_hi;   // padded columns [inner_lo, inner_hi) are real columns, in order
  std::vector<int64_t> tap_offset;  // per tap, offset into the padded plane
  int64_t out_h, out_w, step_h, step_w;
  int64_t tile_rows;            // output rows per tile
  int64_t tile_max_np;          // positions of the largest tile, padded to kPositionBlock
  std::vector<Acc> panels;      // per source: its group's targets x taps weights
  int64_t cin_g, cout_g;
  bool direct;                  // few targets per source: read the padded plane without im2col
};

// lmax[jj] = max(lmax[jj], max over the tile's positions p of sum_t w[jj*T + t] * P[t*np + p])
// for JB targets; two vectors of positions per step, all sums in registers.
template <int JB, class Acc>
SUMMIT_ALWAYS_INLINE void tile_max(const Acc* P, int64_t np, int64_t T, const Acc* w, Acc* lmax) {
  using V = typename Vec<Acc>::type;
  constexpr int L = Vec<Acc>::lanes;
  V mx[JB];
  for (int jj = 0; jj < JB; ++jj) mx[jj] = V{} - std::numeric_limits<Acc>::infinity();
  for (int64_t p = 0; p < np; p += 2 * L) {
    V a0[JB], a1[JB];
    for (int jj = 0; jj < JB; ++jj) a0[jj] = a1[jj] = V{};
    for (int64_t t = 0; t < T; ++t) {
      V p0, p1;
      __builtin_memcpy(&p0, P + t * np + p, sizeof p0);
      __builtin_memcpy(&p1, P + t * np + p + L, sizeof p1);
      for (int jj = 0; jj < JB; ++jj) {
        const Acc wt = w[jj * T + t];
        a0[jj] += wt * p0;
        a1[jj] += wt * p1;
      }
    }
    for (int jj = 0; jj < JB; ++jj) {
      const V m = a0[jj] > a1[jj] ? a0[jj] : a1[jj];
      mx[jj] = m > mx[jj] ? m : mx[jj];
    }
  }
  for (int jj = 0; jj < JB; ++jj) {
    Acc m = lmax[jj];
    for (int l = 0; l < L; ++l) m = mx[jj][l] > m ? mx[jj][l] : m;
    lmax[jj] = m;
  }
}

// The same maxima for small groups (depthwise convs), where im2col would cost more than the
// products: the taps read the padded plane directly, one vector of output columns at a time
// (stride 1; the last vector of a row overlaps the previous one, which a max ignores).
template <int JB, class Acc>
SUMMIT_ALWAYS_INLINE void direct_max(const Acc* xp, const KxkPlan<Acc>& plan, const Acc* w, Acc* lmax) {
  using V = typename Vec<Acc>::type;
  constexpr int L = Vec<Acc>::lanes;
  const int64_t T = plan.T;
  V mx[JB];
  for (int jj = 0; jj < JB; ++jj) mx[jj] = V{} - std::numeric_limits<Acc>::infinity();
  for (int64_t y = 0; y < plan.out_h; ++y) {
    const Acc* row = xp + y * plan.step_h * plan.used_w;
    for (int64_t x0 = 0;; x0 += L) {
      const Acc* at = row + std::min(x0, plan.out_w - L);
      V acc[JB];
      for (int jj = 0; jj < JB; ++jj) acc[jj] = V{};
      for (int64_t t = 0; t < T; ++t) {
        V p;
        __builtin_memcpy(&p, at + plan.tap_offset[t], sizeof p);
        for (int jj = 0; jj < JB; ++jj) acc[jj] += w[jj * T + t] * p;
      }
      for (int jj = 0; jj < JB; ++jj) mx[jj] = acc[jj] > mx[jj] ? acc[jj] : mx[jj];
      if (x0 + L >= plan.out_w) break;
    }
  }
  for (int jj = 0; jj < JB; ++jj) {
    Acc m = lmax[jj];
    for (int l = 0; l < L; ++l) m = mx[jj][l] > m ? mx[jj][l] : m;
    lmax[jj] = m;
  }
}

// Scores of one source plane (image b, source i) against n targets of its group, whose taps
// are panel[n' * T, (n' + 1) * T): lrow[n'] for n' < n. Each target's score is computed the
// same way whichever targets it is computed with (the pruned path relies on that). xp and P
// are per-thread scratch buffers.
template <class E, class Acc>
SUMMIT_ALWAYS_INLINE void source_scores(const View4& x, const KxkPlan<Acc>& plan, int64_t b, int64_t i,
                                        const Acc* panel, int64_t n_targets, Acc* xp, Acc* P, Acc* lrow) {
  using Raw = typename E::raw;
  // The padded input plane, converted once; the taps below read it without branches.
  const Raw* plane = static_cast<const Raw*>(x.data) + b * x.stride[0] + i * x.stride[1];
  const int64_t sw = x.stride[3];
  for (int64_t qr = 0; qr < plan.used_h; ++qr) {
    const int64_t r = plan.row_src[qr];
    Acc* out = xp + qr * plan.used_w;
    if (r < 0) {
      std::fill(out, out + plan.used_w, Acc(0));
      continue;
    }
    const Raw* row = plane + r * x.stride[2];
    for (int64_t qc = 0; qc < plan.used_w; ++qc) {
      if (qc == plan.inner_lo) qc = plan.inner_hi;  // the interior is converted below
      if (qc >= plan.used_w) break;
      const int64_t c = plan.col_src[qc];
      out[qc] = c < 0 ? Acc(0) : Acc(E::to_float(row[c * sw]));
    }
    const Raw* inner = row + (plan.inner_lo < plan.inner_hi ? plan.col_src[plan.inner_lo] * sw : 0);
#pragma omp simd
    for (int64_t qc = plan.inner_lo; qc < plan.inner_hi; ++qc) out[qc] = Acc(E::to_float(inner[(qc - plan.inner_lo) * sw]));
  }
  const int64_t T = plan.T, cout_g = n_targets, out_w = plan.out_w, block = kPositionBlock<Acc>;
  std::fill(lrow, lrow + cout_g, -std::numeric_limits<Acc>::infinity());
  if (plan.direct) {  // plan.cout_g < 4 targets
    switch (cout_g) {
      case 3: direct_max<3>(xp, plan, panel, lrow); break;
      case 2: direct_max<2>(xp, plan, panel, lrow); break;
      case 1: direct_max<1>(xp, plan, panel, lrow); break;
      default: break;
    }
    return;
  }
  for (int64_t y0 = 0; y0 < plan.out_h; y0 += plan.tile_rows) {
    // im2col of whole output rows, P[t][p]: row copies (contiguous when step_w is 1), then
    // the tail up to a multiple of the micro-kernel's block repeats the last position, which
    // leaves a max unchanged.
    const int64_t rows = std::min(plan.tile_rows, plan.out_h - y0), n = rows * out_w;
    const int64_t np = (n + block - 1) / block * block;
    for (int64_t t = 0; t < T; ++t) {
      Acc* dst = P + t * np;
      for (int64_t r = 0; r < rows; ++r) {
        const Acc* src = xp + (y0 + r) * plan.step_h * plan.used_w + plan.tap_offset[t];
        Acc* d = dst + r * out_w;
        if (plan.step_w == 1) {
#pragma omp simd
          for (int64_t xo = 0; xo < out_w; ++xo) d[xo] = src[xo];
        } else {
          for (int64_t xo = 0; xo < out_w; ++xo) d[xo] = src[xo * plan.step_w];
        }
      }
      std::fill(dst + n, dst + np, dst[n - 1]);
    }
    int64_t j = 0;
    for (; j + 4 <= cout_g; j += 4) tile_max<4>(P, np, T, panel + j * T, lrow + j);
    switch (cout_g - j) {
      case 3: tile_max<3>(P, np, T, panel + j * T, lrow + j); break;
      case 2: tile_max<2>(P, np, T, panel + j * T, lrow + j); break;
      case 1: tile_max<1>(P, np, T, panel + j * T, lrow + j); break;
      default: break;
    }
  }
}

template <class E, class Acc>
void source_scores_baseline(const View4& x, const KxkPlan<Acc>& plan, int64_t b, int64_t i, const Acc* panel,
                            int64_t n_targets, Acc* xp, Acc* P, Acc* lrow) {
  source_scores<E, Acc>(x, plan, b, i, panel, n_targets, xp, P, lrow);
}

#ifdef SUMMIT_AVX2_DISPATCH
template <class E, class Acc>
__attribute__((target("avx2,fma"))) void source_scores_avx2(const View4& x, const KxkPlan<Acc>& plan, int64_t b,
                                                             int64_t i, const Acc* panel, int64_t n_targets, Acc* xp,
                                                             Acc* P, Acc* lrow) {
  source_scores<E, Acc>(x, plan, b, i, panel, n_targets, xp, P, lrow);
}
#endif

template <class E, class Acc>
auto pick_source_scores() {
#ifdef SUMMIT_AVX2_DISPATCH
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &source_scores_avx2<E, Acc>;
#endif
  return &source_scores_baseline<E, Acc>;
}

template <class Acc>
KxkPlan<Acc> make_plan(const InfluenceArgs& a) {
  const ConvGeometry& g = a.geo;
  KxkPlan<Acc> plan;
  plan.T = g.kh * g.kw;
  plan.cin_g = a.x.shape[1] / a.groups;
  plan.cout_g = a.c_out / a.groups;
  plan.used_h = (g.out_h - 1) * g.step_h + (g.kh - 1) * g.dil_h + 1;
  plan.used_w = (g.out_w - 1) * g.step_w + (g.kw - 1) * g.dil_w + 1;
  for (int64_t q = 0; q < plan.used_h; ++q) plan.row_src.push_back(padded_source(q, a.x.shape[2], g.pad_top, g.mode));
  for (int64_t q = 0; q < plan.used_w; ++q) plan.col_src.push_back(padded_source(q, a.x.shape[3], g.pad_left, g.mode));
  plan.inner_lo = std::min(g.pad_left, plan.used_w);
  plan.inner_hi = std::min(g.pad_left + a.x.shape[3], plan.used_w);
  for (int64_t u = 0; u < g.kh; ++u)
    for (int64_t v = 0; v < g.kw; ++v) plan.tap_offset.push_back(u * g.dil_h * plan.used_w + v * g.dil_w);
  plan.out_h = g.out_h;
  plan.out_w = g.out_w;
  plan.step_h = g.step_h;
  plan.step_w = g.step_w;
  // A tile of about 16 KiB of im2col values stays in L1 while every target block reads it.
  const int64_t block = kPositionBlock<Acc>;
  plan.tile_rows = std::max<int64_t>(1, 16384 / static_cast<int64_t>(sizeof(Acc)) / plan.T / g.out_w);
  plan.tile_max_np = (std::min(plan.tile_rows, g.out_h) * g.out_w + block - 1) / block * block;
  plan.direct = plan.cout_g < 4 && g.step_w == 1 && g.out_w >= Vec<Acc>::lanes;
  // Weight panels: source i = (group, s) -> its targets' T taps, contiguous.
  const Acc* w = static_cast<const Acc*>(a.weight);
  plan.panels.resize(static_cast<size_t>(a.c_out * plan.cin_g * plan.T));
  for (int64_t i = 0; i < a.x.shape[1]; ++i) {
    const int64_t grp = i / plan.cin_g, s = i % plan.cin_g;
    for (int64_t jl = 0; jl < plan.cout_g; ++jl)
      std::copy_n(w + ((grp * plan.cout_g + jl) * plan.cin_g + s) * plan.T, plan.T,
                  plan.panels.data() + (i * plan.cout_g + jl) * plan.T);
  }
  return plan;
}

// For every target j and image b in [b0, b1): keep the top k of j's scores over its group's
// sources s; counts are (K, C_out, C_in/groups), sources indexed within j's group. Threads own
// whole blocks of targets, so no two threads touch one count. scores(b, j, buffer) returns a
// pointer to the cin_g scores, filling buffer if it needs to. N is the count type.
template <class V, class N, class F>
void count_top_sources(const InfluenceArgs& a, int64_t b0, int64_t b1, F&& scores) {
  const int64_t cin_g = a.x.shape[1] / a.groups, block = 16;
  std::vector<V> buffer(cin_g);
  std::vector<int64_t> chosen(cin_g);
  SelectScratch scratch;
#pragma omp for schedule(dynamic, 1)
  for (int64_t j0 = 0; j0 < a.c_out; j0 += block) {
    const int64_t j1 = std::min(a.c_out, j0 + block);
    for (int64_t b = b0; b < b1; ++b) {
      // Targets inner: one image's count rows of consecutive targets are adjacent in memory.
      N* rows = static_cast<N*>(a.counts) + (a.labels[b] * a.c_out + j0) * cin_g;
      for (int64_t j = j0; j < j1; ++j, rows += cin_g) {
        // Count rows of 1000-class tensors are cold; short rows (where the selection is quick)
        // are fetched two targets ahead. 1.4x on MobileNetV2's 1x1 expand convs.
        if (cin_g <= 256 && j + 2 < j1)
          for (int64_t o = 0; o < cin_g; o += 64 / sizeof(N)) __builtin_prefetch(rows + 2 * cin_g + o, 1);
        const int64_t m = select_top_k(scores(b, j, buffer.data()), cin_g, a.k, chosen.data(), scratch);
        for (int64_t n = 0; n < m; ++n) rows[chosen[n]] += 1;
      }
    }
  }
}

// 1x1: L = W * max(x) where W >= 0, W * min(x) otherwise, in double (exact for float32 inputs).
template <class E, class Acc, class N>
void influence_1x1(const InfluenceArgs& a) {
  const ConvGeometry& g = a.geo;
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1], cin_g = c_in / a.groups, cout_g = a.c_out / a.groups;
  const AxisSamples rows = AxisSamples::sampled(g.out_h, g.step_h, a.x.shape[2], g.pad_top, g.mode);
  const AxisSamples cols = AxisSamples::sampled(g.out_w, g.step_w, a.x.shape[3], g.pad_left, g.mode);
  std::vector<double> mx(static_cast<size_t>(B * c_in)), mn(mx.size());
  const Acc* wa = static_cast<const Acc*>(a.weight);
  const std::vector<double> w(wa, wa + a.c_out * cin_g);
#pragma omp parallel if (B * (c_in * g.out_h * g.out_w + a.c_out * cin_g) >= kParallelWork)
  {
    all_channel_extrema<E>(a.x, rows, cols, mx.data(), mn.data());
    count_top_sources<double, N>(a, 0, B, [&](int64_t b, int64_t j, double* v) {
      const double* wj = w.data() + j * cin_g;
      const double* hi = mx.data() + b * c_in + (j / cout_g) * cin_g;
      const double* lo = mn.data() + b * c_in + (j / cout_g) * cin_g;
      // Both loads unconditional: a select instead of a branch on random weight signs.
#pragma omp simd
      for (int64_t s = 0; s < cin_g; ++s) {
        const double h = hi[s], l = lo[s];
        v[s] = wj[s] * (wj[s] >= 0.0 ? h : l);
      }
      return static_cast<const double*>(v);
    });
  }
}

template <class E, class Acc, class N>
void influence_kxk(const InfluenceArgs& a) {
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1];
  const KxkPlan<Acc> plan = make_plan<Acc>(a);
  const int64_t cin_g = plan.cin_g, cout_g = plan.cout_g;
  // Scores of a chunk of images: (images, C_out, cin_g), bounded to ~32 MiB.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 23) / (a.c_out * cin_g));
  std::vector<Acc> L(static_cast<size_t>(std::min(chunk, B) * a.c_out * cin_g));
  const auto scores_fn = pick_source_scores<E, Acc>();
#pragma omp parallel if (B * a.c_out * cin_g * plan.T * plan.out_h * plan.out_w >= kParallelWork)
  {
    std::vector<Acc> xp(plan.used_h * plan.used_w), P(plan.tile_max_np * plan.T), lrow(cout_g);
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t b1 = std::min(B, b0 + chunk);
#pragma omp for schedule(dynamic, 4)
      for (int64_t task = 0; task < (b1 - b0) * c_in; ++task) {
        const int64_t b = b0 + task / c_in, i = task % c_in;
        scores_fn(a.x, plan, b, i, plan.panels.data() + i * cout_g * plan.T, cout_g, xp.data(), P.data(), lrow.data());
        const int64_t grp = i / cin_g, s = i % cin_g;
        Acc* out = L.data() + ((b - b0) * a.c_out + grp * cout_g) * cin_g + s;
        for (int64_t jl = 0; jl < cout_g; ++jl) out[jl * cin_g] = lrow[jl];
      }
      count_top_sources<Acc, N>(a, b0, b1, [&](int64_t b, int64_t j, Acc*) {
        return static_cast<const Acc*>(L.data() + ((b - b0) * a.c_out + j) * cin_g);
      });
    }
  }
}

// ---------------------------------------------------------------- exact bound pruning
// Most sources cannot reach a target's top k, and a bound that needs no products shows it:
// only the other sources' scores are computed. The counts are those of influence_kxk, exactly.
//
// Bound. Every value a tap of source plane i reads on the sampled grid lies in [lo_i, hi_i],
// the extrema of the padded region the grid reads (0 included where that is zero padding), so
// every real sum  sum_t w_t x_t <= sum_t max(w_t hi, w_t lo) = hi * Pos + lo * Neg, where Pos
// (Neg) is the sum of the positive (negative) taps of W[j, s]. (Extrema per spatial tile of the
// grid made no measurable difference on InceptionV1's photo activations, which are dense.)
// Rounding. The kernels compute fl(sum_t w_t x_t) in Acc from values exact in Acc (weights and
// inputs), one rounding per product and per add (fewer with FMA), in some order, so
// |fl(sum) - sum| <= gamma_T A + T eta, where A = sum_t |w_t| max(|hi|, |lo|) >= sum_t |w_t x_t|,
// gamma_T = T u / (1 - T u), u the unit roundoff of Acc and eta its smallest subnormal (the
// error of an underflowing operation). The bound is computed in double, each of Pos, Neg, A and
// the products within (T + 3) u_double A. The margin 4 (T + 3) (u A + eta) covers both with room
// (gamma_T <= 1.01 T u when T u < 0.01; larger kernels get no bounds), the final additions'
// rounding included. Where A could reach max(Acc) / 4 a sum might overflow to inf in Acc: that
// bound is +inf (always computed), as is one from non-finite extrema.
// Selection. Round 1 computes each (b, j)'s 2k best sources by bound, and any tied with the
// 2k-th (rather than k: on InceptionV1's photo activations that halved what round 2 computes);
// the k-th best of their exact scores, t, is at most the final k-th best. Round 2 computes every
// other source whose bound is not below t (a tie with t may win on a lower index). Every
// uncomputed source then scores below k computed ones and cannot be selected, so the top k of
// the computed scores (the others -inf) is the top k of all scores. A computed NaN score (NaN
// inputs, which the extrema skip) makes its row fully computed; NaN inputs leave the selection
// without a defined order in influence_kxk too.
struct BoundTerms {
  std::vector<double> pos, neg, abs;  // per (j, s): sums of W[j, s]'s positive, negative, absolute taps
  double rel = 0.0, eta = 0.0, limit = 0.0;
};

template <class Acc>
BoundTerms make_bound_terms(const Acc* w, int64_t pairs, int64_t T) {
  BoundTerms bt;
  bt.pos.resize(pairs);
  bt.neg.resize(pairs);
  bt.abs.resize(pairs);
  for (int64_t p = 0; p < pairs; ++p) {
    double sp = 0.0, sn = 0.0, sa = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      // Arithmetic rather than a select, which gcc makes a branch on random signs; exact
      // (a too large weight makes sa infinite, and its bound +inf).
      const double v = w[p * T + t], m = std::fabs(v);
      sp += (v + m) * 0.5;
      sn += (v - m) * 0.5;
      sa += m;
    }
    bt.pos[p] = sp, bt.neg[p] = sn, bt.abs[p] = sa;
  }
  const double n = 4.0 * static_cast<double>(T + 3);
  bt.rel = n * std::numeric_limits<Acc>::epsilon() / 2;
  bt.eta = n * std::numeric_limits<Acc>::denorm_min();
  const bool small_error = n / 4 * std::numeric_limits<Acc>::epsilon() / 2 < 0.01;  // (T + 3) u
  bt.limit = small_error ? static_cast<double>(std::numeric_limits<Acc>::max()) / 4 : 0.0;  // 0: no A is below
  return bt;
}

// out[s] >= every score the kernels can compute for target j and its group's source s, whose
// extrema are hi[s] and lo[s].
inline void bound_row(const BoundTerms& bt, int64_t j, int64_t cin_g, const double* hi, const double* lo, double* out) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double *pos = bt.pos.data() + j * cin_g, *neg = bt.neg.data() + j * cin_g, *abs = bt.abs.data() + j * cin_g;
#pragma omp simd
  for (int64_t s = 0; s < cin_g; ++s) {
    const double h = hi[s], l = lo[s], amax = std::max(std::fabs(h), std::fabs(l)), A = abs[s] * amax;
    out[s] = A < bt.limit && amax < inf ? h * pos[s] + l * neg[s] + (bt.rel * A + bt.eta) : inf;
  }
}

template <class E, class Acc, class N>
InfluenceStats influence_kxk_pruned(const InfluenceArgs& a) {
  const ConvGeometry& g = a.geo;
  const int64_t B = a.x.shape[0], c_in = a.x.shape[1];
  const KxkPlan<Acc> plan = make_plan<Acc>(a);
  const int64_t cin_g = plan.cin_g, cout_g = plan.cout_g, T = plan.T;
  const BoundTerms bt = make_bound_terms(static_cast<const Acc*>(a.weight), a.c_out * cin_g, T);
  // The padded region the sampled grid reads: every value under a tap is in it.
  const AxisSamples rows = AxisSamples::sampled(plan.used_h, 1, a.x.shape[2], g.pad_top, g.mode);
  const AxisSamples cols = AxisSamples::sampled(plan.used_w, 1, a.x.shape[3], g.pad_left, g.mode);
  std::vector<double> hi(static_cast<size_t>(B * c_in)), lo(hi.size());
  // Per chunk of images: scores, bounds and whether each score is computed, (images, C_out, cin_g),
  // ~52 MiB; and the scores to compute next, by source: (images, C_in, cout_g), all 0 between rounds.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / (a.c_out * cin_g));
  const size_t pairs = static_cast<size_t>(std::min(chunk, B) * a.c_out * cin_g);
  std::vector<Acc> L(pairs);
  std::vector<double> bound(pairs);
  std::vector<uint8_t> done(pairs), need(pairs);
  const auto scores_fn = pick_source_scores<E, Acc>();
  int64_t computed = 0;
#pragma omp parallel if (B * a.c_out * cin_g * plan.T * plan.out_h * plan.out_w >= kParallelWork) reduction(+ : computed)
  {
    all_channel_extrema<E>(a.x, rows, cols, hi.data(), lo.data());
    std::vector<Acc> xp(plan.used_h * plan.used_w), P(plan.tile_max_np * plan.T), lrow(cout_g), panel(cout_g * T);
    std::vector<int64_t> targets(cout_g);
    std::vector<double> known(cin_g);  // a row's bounds (round 1) or computed scores (round 2)
    // The exact scores of every pair in `need`, source plane by source plane (reading `need`
    // by source keeps this scan sequential; the pairs are marked by target).
    auto compute_needed = [&](int64_t b0, int64_t b1) {
#pragma omp for schedule(dynamic, 4)
      for (int64_t task = 0; task < (b1 - b0) * c_in; ++task) {
        const int64_t b = b0 + task / c_in, i = task % c_in, grp = i / cin_g, s = i % cin_g;
        const size_t at = static_cast<size_t>(((b - b0) * a.c_out + grp * cout_g) * cin_g + s);
        // Locals, as the byte stores below may alias anything the compiler would reload.
        uint8_t* st = done.data() + at;
        uint8_t* nd = need.data() + ((b - b0) * c_in + i) * cout_g;
        Acc* out = L.data() + at;
        const Acc* src = plan.panels.data() + i * cout_g * T;
        Acc* dst = panel.data();
        int64_t* tj = targets.data();
        const int64_t stride = cin_g, taps = T, targets_g = cout_g;
        int64_t n = 0;
        for (int64_t jl = 0; jl < targets_g; ++jl) {
          tj[n] = jl;
          n += nd[jl];
        }
        if (n == 0) continue;
        std::fill_n(nd, targets_g, uint8_t{0});
        for (int64_t m = 0; m < n; ++m)
          for (int64_t t = 0; t < taps; ++t) dst[m * taps + t] = src[tj[m] * taps + t];
        scores_fn(a.x, plan, b, i, dst, n, xp.data(), P.data(), lrow.data());
        for (int64_t m = 0; m < n; ++m) {
          out[tj[m] * stride] = lrow[m];
          st[tj[m] * stride] = 1;
        }
        computed += n;
      }
    };
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t b1 = std::min(B, b0 + chunk), nrows = (b1 - b0) * a.c_out;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < nrows; ++r) {  // round 1: the 2k best by bound
        const int64_t b = b0 + r / a.c_out, j = r % a.c_out, at = b * c_in + (j / cout_g) * cin_g;
        double* bd = bound.data() + r * cin_g;
        bound_row(bt, j, cin_g, hi.data() + at, lo.data() + at, bd);
        std::fill_n(L.data() + r * cin_g, cin_g, -std::numeric_limits<Acc>::infinity());
        std::fill_n(done.data() + r * cin_g, cin_g, uint8_t{0});
        uint8_t* nd = need.data() + ((b - b0) * c_in + (j / cout_g) * cin_g) * cout_g + j % cout_g;
        // Any candidates would do: the 2k-th largest bound (without the tie rule) and those not below it.
        const int64_t m = std::min(2 * a.k, cin_g);
        std::copy_n(bd, cin_g, known.begin());
        std::nth_element(known.begin(), known.begin() + (m - 1), known.begin() + cin_g, std::greater<double>());
        const double v = known[m - 1];
        for (int64_t s = 0; s < cin_g; ++s)
          if (!(bd[s] < v)) nd[s * cout_g] = 1;
      }
      compute_needed(b0, b1);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < nrows; ++r) {  // round 2: every source whose bound reaches the k-th exact score
        const int64_t b = b0 + r / a.c_out, j = r % a.c_out;
        const int64_t n = cin_g, stride = cout_g;  // locals: the byte stores below may alias anything else
        const Acc* l = L.data() + r * n;
        const double* bd = bound.data() + r * n;
        const uint8_t* st = done.data() + r * n;
        uint8_t* nd = need.data() + ((b - b0) * c_in + (j / cout_g) * cin_g) * cout_g + j % cout_g;
        int64_t m = 0;
        bool nan = false;
        for (int64_t s = 0; s < n; ++s) {  // without branches: the states are in no order
          known[m] = l[s];
          nan |= l[s] != l[s];
          m += st[s];
        }
        // The k-th best computed score (m >= k of them); a NaN makes the row fully computed.
        if (!nan) std::nth_element(known.begin(), known.begin() + (a.k - 1), known.begin() + m, std::greater<double>());
        const double t = nan ? -std::numeric_limits<double>::infinity() : known[a.k - 1];
        for (int64_t s = 0; s < n; ++s)
          if (!st[s] && !(bd[s] < t)) nd[s * stride] = 1;
      }
      compute_needed(b0, b1);
      count_top_sources<Acc, N>(a, b0, b1, [&](int64_t b, int64_t j, Acc*) {
        return static_cast<const Acc*>(L.data() + ((b - b0) * a.c_out + j) * cin_g);
      });
    }
  }
  return {computed, B * a.c_out * cin_g};
}

template <class N>
InfluenceStats influence_update_into(const InfluenceArgs& a) {
  const int64_t cin_g = a.x.shape[1] / a.groups, total = a.x.shape[0] * a.c_out * cin_g;
  if (a.k >= cin_g) {
    // Every target keeps all of its sources (depthwise convs, for one): the scores cannot
    // change the counts, so none are computed.
    for (int64_t b = 0; b < a.x.shape[0]; ++b) {
      N* rows = static_cast<N*>(a.counts) + a.labels[b] * a.c_out * cin_g;
      for (int64_t n = 0; n < a.c_out * cin_g; ++n) rows[n] += 1;
    }
    return {0, total};
  }
  return dispatch_dtype(a.x.dtype, [&](auto e) -> InfluenceStats {
    using E = decltype(e);
    auto run = [&](auto acc) -> InfluenceStats {
      using Acc = decltype(acc);
      if (a.geo.kh == 1 && a.geo.kw == 1) {
        influence_1x1<E, Acc, N>(a);  // every score, from the extrema
        return {total, total};
      }
      if (a.prune) return influence_kxk_pruned<E, Acc, N>(a);
      influence_kxk<E, Acc, N>(a);
      return {total, total};
    };
    return a.weight_f64 ? run(double{}) : run(float{});
  });
}

}  // namespace

InfluenceStats influence_update(const InfluenceArgs& a) {
  return a.counts_int16 ? influence_update_into<int16_t>(a) : influence_update_into<int32_t>(a);
}

}  // namespace summit

// Deterministic selections shared by both ops: top-k (SPEC.md A topk and B step 3) and the
// mass rule (SPEC.md A). Order is by value descending, ties by ascending index.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace summit {

// The mass rule, resumable: takes candidates in the selection order (q descending, ties by
// lower index) while the mass already taken is below a threshold, which may later be raised
// and the taking resumed. Sorts only as far as the taking reaches (32, 128, 512, ...
// candidates), usually a few for small thresholds.
struct MassOrder {
  std::vector<int64_t> order;  // the candidates, indices into q; order[0, taken) are taken
  int64_t sorted = 0, taken = 0;  // order[0, sorted) is in final order
  double total = 0.0, taken_mass = 0.0;

  // Starts over with the candidates now in `order` (q >= 0 on them).
  void start(const double* q) {
    sorted = taken = 0;
    total = taken_mass = 0.0;
    for (const int64_t i : order) total += q[i];
  }

  // Takes candidates while the mass taken before each is < threshold; returns how many are taken in all.
  int64_t take_below(const double* q, double threshold) {
    auto before = [q](int64_t a, int64_t b) { return q[a] > q[b] || (q[a] == q[b] && a < b); };
    const int64_t n = static_cast<int64_t>(order.size());
    for (; taken < n && taken_mass < threshold; ++taken) {
      if (taken == sorted) {  // extend the sorted prefix
        const int64_t next = std::min(n, std::max<int64_t>(32, sorted * 4));
        std::partial_sort(order.begin() + sorted, order.begin() + next, order.end(), before);
        sorted = next;
      }
      taken_mass += q[order[taken]];
    }
    return taken;
  }
};

// Reusable buffers of the selections (one per thread, to avoid allocations per row).
struct SelectScratch {
  std::vector<int64_t> idx;
  std::vector<double> block_max, work;
  MassOrder mass;
};

// The k largest of v[0..n) (ties: lower index first) into out; returns how many (min(k, n)).
// The order within out is unspecified.
template <class V>
int64_t select_top_k(const V* v, int64_t n, int64_t k, int64_t* out, SelectScratch& s) {
  if (k >= n) {
    std::iota(out, out + n, int64_t{0});
    return n;
  }
  auto before = [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  s.idx.resize(n);
  int64_t count = n;
  if (blocks > k) {
    // The k-th largest block max t is at most the k-th largest value (k blocks reach it), so
    // only elements >= t can be selected: usually a few more than k, gathered without branches
    // from the blocks whose max reaches t.
    s.block_max.resize(blocks);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
      V m = v[i0];
#pragma omp simd reduction(max : m)
      for (int64_t i = i0; i < i1; ++i) m = v[i] > m ? v[i] : m;
      s.block_max[b] = m;
    }
    s.work.assign(s.block_max.begin(), s.block_max.end());
    std::nth_element(s.work.begin(), s.work.begin() + (blocks - k), s.work.end());
    const double t = s.work[blocks - k];
    count = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      if (s.block_max[b] < t) continue;
      for (int64_t i = b * kBlock; i < std::min(n, b * kBlock + kBlock); ++i) {
        s.idx[count] = i;
        count += v[i] >= t;
      }
    }
  } else {
    std::iota(s.idx.begin(), s.idx.end(), int64_t{0});
  }
  // The k best candidates (value descending, lower index first) to the front.
  std::nth_element(s.idx.begin(), s.idx.begin() + (k - 1), s.idx.begin() + count, before);
  std::copy(s.idx.begin(), s.idx.begin() + k, out);
  return k;
}

// The mass rule on q >= 0: channel c is selected iff the sum of q over the channels before it
// in the order is < tau * sum(q) (float64). Returns how many indices were written to out.
inline int64_t select_mass(const double* q, int64_t n, double tau, int64_t* out, SelectScratch& s) {
  MassOrder& order = s.mass;
  order.order.resize(n);
  std::iota(order.order.begin(), order.order.end(), int64_t{0});
  order.start(q);
  const int64_t taken = order.take_below(q, tau * order.total);
  std::copy_n(order.order.begin(), taken, out);
  return taken;
}

}  // namespace summit

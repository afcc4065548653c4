// Widest paths through an intermediate tensor with SPEC.md C.2's top-n rule, without forming
// the max-min product: per target row, a k-way merge over its intermediates' path lists, each
// sorted by width descending, yields the row's candidates in decreasing value; the merge stops
// once n distinct sources are found and no tie with the n-th remains.
#include <algorithm>
#include <cstring>
#include <utility>

#include "graph/kernels.h"

namespace summit {
namespace {

bool wider(const Entry& x, const Entry& y) { return x.value != y.value ? x.value > y.value : x.index < y.index; }

// Of found[0..n) (by value descending, as the merge yields it), the first `keep` by wider():
// all entries above the keep-th's value, then its ties by ascending index. Returns the count.
size_t keep_widest(Entry* found, size_t n, size_t keep) {
  if (n <= keep) return n;
  const int32_t nth = found[keep - 1].value;
  Entry* ties = std::find_if(found, found + n, [nth](const Entry& e) { return e.value == nth; });
  Entry* ties_end = std::find_if(ties, found + n, [nth](const Entry& e) { return e.value != nth; });
  std::nth_element(ties, found + (keep - 1), ties_end, wider);
  return keep;
}

// The largest and second largest of v[0..n), n a multiple of kLanes (the largest twice when
// it occurs twice), from per-lane top twos.
constexpr size_t kLanes = 4;
typedef int32_t Lanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

std::pair<int32_t, int32_t> top_two(const int32_t* v, size_t n) {
  Lanes first = {0, 0, 0, 0}, second = first;
  for (size_t i = 0; i < n; i += kLanes) {
    Lanes x;
    std::memcpy(&x, v + i, sizeof x);
    const Lanes low = x < first ? x : first;
    first = x > first ? x : first;
    second = low > second ? low : second;
  }
  int32_t best = 0, runner_up = 0;
  for (size_t l = 0; l < kLanes; ++l) {
    runner_up = std::max({runner_up, second[l], std::min(best, first[l])});
    best = std::max(best, first[l]);
  }
  return {best, runner_up};
}

}  // namespace

void sort_rows_by_value(SparseRows& rows) {
  for (int64_t r = 0; r < rows.rows(); ++r)
    std::sort(rows.entries.begin() + rows.start[r], rows.entries.begin() + rows.start[r + 1],
              [](const Entry& x, const Entry& y) { return x.value > y.value; });
}

void widest_rows(const SparseRows& targets, const SparseRows& paths, int64_t sources, int64_t keep_n,
                 const uint8_t* excluded_rows, WidestScratch& s, SparseRows& out) {
  if (static_cast<int64_t>(s.seen.size()) < sources) s.seen.assign(sources, 0u), s.found.resize(sources);
  const size_t keep = static_cast<size_t>(std::min(keep_n, sources));
  const Entry* path = paths.entries.data();
  for (int64_t j = 0; j < targets.rows(); ++j) {
    if (excluded_rows && excluded_rows[j]) {
      out.end_row();
      continue;
    }
    if (++s.stamp == 0) {  // wrapped: old stamps would read as "seen"
      std::fill(s.seen.begin(), s.seen.end(), 0u);
      s.stamp = 1;
    }
    // the row's cursors; values padded with zeros to whole vectors
    const int64_t most = targets.start[j + 1] - targets.start[j];
    const size_t padded = static_cast<size_t>((most + kLanes - 1) / kLanes * kLanes);
    if (s.value.size() < padded) {
      s.value.resize(padded), s.cap.resize(padded), s.pos.resize(padded), s.end.resize(padded);
    }
    // raw pointers and locals below: the compiler may not keep vector members in registers
    // across the stores into `found`
    int32_t* value = s.value.data();
    int32_t* cap = s.cap.data();
    int64_t* pos = s.pos.data();
    int64_t* end = s.end.data();
    uint32_t* seen = s.seen.data();
    Entry* found = s.found.data();
    const uint32_t stamp = s.stamp;
    size_t n = 0;
    for (int64_t t = targets.start[j]; t < targets.start[j + 1]; ++t) {
      const Entry& target = targets.entries[t];
      const int64_t first = paths.start[target.index], last = paths.start[target.index + 1];
      if (first == last) continue;
      value[n] = std::min(target.value, path[first].value);
      cap[n] = target.value, pos[n] = first, end[n] = last;
      ++n;
    }
    std::fill(value + n, value + padded, 0);
    // A row has a few dozen cursors: a vector scan for the widest and the runner-up beats a
    // heap's unpredictable branches. Follow the widest while it stays at least as wide as the
    // runner-up: its candidates come in the merge's order with one scan per run.
    size_t found_n = 0;
    int32_t nth_value = 0;  // the width at which the keep-th source was found
    bool done = false;
    while (!done && n > 0) {
      const auto [best, runner_up] = top_two(value, padded);
      if (best <= 0) break;  // only non-positive counts left (none in a valid result)
      const size_t c = std::find(value, value + n, best) - value;
      const int64_t stop = end[c];
      const int32_t cap_c = cap[c];
      int64_t p = pos[c];
      for (; p < stop; ++p) {
        const Entry e = path[p];
        const int32_t width = std::min(cap_c, e.value);
        if (width < runner_up) break;
        if (found_n >= keep && width < nth_value) {  // no tie with the keep-th left
          done = true;
          break;
        }
        if (seen[e.index] != stamp) {  // a source's first candidate is its widest path
          seen[e.index] = stamp;
          found[found_n++] = {e.index, width};
          if (found_n == keep) nth_value = width;
        }
      }
      if (p < stop) {
        pos[c] = p;
        value[c] = std::min(cap_c, path[p].value);
      } else {  // exhausted: the last cursor takes its place
        --n;
        value[c] = value[n], cap[c] = cap[n], pos[c] = pos[n], end[c] = end[n];
        value[n] = 0;
      }
    }
    found_n = keep_widest(found, found_n, keep);
    out.entries.insert(out.entries.end(), found, found + found_n);
    out.end_row();
  }
}

}  // namespace summit

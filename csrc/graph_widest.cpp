// Widest paths through an intermediate tensor with SPEC.md C.2's top-n rule, without forming
// the max-min product: per target row, a k-way merge over its intermediates' path lists, each
// sorted by width descending, yields the row's candidates in decreasing value; the merge stops
// once n distinct sources are found and no tie with the n-th remains.
#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>

#include "graph_kernels.h"

namespace summit {
namespace {

bool wider(const Entry& x, const Entry& y) { return x.value != y.value ? x.value > y.value : x.index < y.index; }

// Of `found` (by value descending, as the merge yields it), the first `keep` by wider(): all
// entries above the keep-th's value, then its ties by ascending index.
void keep_widest(std::vector<Entry>& found, size_t keep) {
  if (found.size() <= keep) return;
  const int32_t nth = found[keep - 1].value;
  const auto ties = std::find_if(found.begin(), found.end(), [nth](const Entry& e) { return e.value == nth; });
  const auto ties_end = std::find_if(ties, found.end(), [nth](const Entry& e) { return e.value != nth; });
  std::nth_element(ties, found.begin() + (keep - 1), ties_end, wider);
  found.resize(keep);
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
  if (static_cast<int64_t>(s.seen.size()) < sources) s.seen.assign(sources, 0u);
  const size_t keep = static_cast<size_t>(std::min(keep_n, sources));
  for (int64_t j = 0; j < targets.rows(); ++j) {
    if (excluded_rows && excluded_rows[j]) {
      out.end_row();
      continue;
    }
    if (++s.stamp == 0) {  // wrapped: old stamps would read as "seen"
      std::fill(s.seen.begin(), s.seen.end(), 0u);
      s.stamp = 1;
    }
    s.found.clear();
    // the row's cursors; values padded with zeros to whole vectors
    const int64_t most = targets.start[j + 1] - targets.start[j];
    const size_t padded = static_cast<size_t>((most + kLanes - 1) / kLanes * kLanes);
    if (s.value.size() < padded) {
      s.value.resize(padded), s.cap.resize(padded), s.pos.resize(padded), s.end.resize(padded);
    }
    size_t n = 0;
    for (int64_t t = targets.start[j]; t < targets.start[j + 1]; ++t) {
      const Entry& target = targets.entries[t];
      const int64_t first = paths.start[target.index], end = paths.start[target.index + 1];
      if (first == end) continue;
      s.value[n] = std::min(target.value, paths.entries[first].value);
      s.cap[n] = target.value, s.pos[n] = first, s.end[n] = end;
      ++n;
    }
    std::fill(s.value.begin() + n, s.value.begin() + padded, 0);
    // A row has a few dozen cursors: a vector scan for the widest and the runner-up beats a
    // heap's unpredictable branches. Follow the widest while it stays at least as wide as the
    // runner-up: its candidates come in the merge's order with one scan per run.
    int32_t nth_value = 0;  // the width at which the keep-th source was found
    bool done = false;
    while (!done && n > 0) {
      const auto [best, runner_up] = top_two(s.value.data(), padded);
      if (best <= 0) break;  // only non-positive counts left (none in a valid result)
      const size_t c = std::find(s.value.begin(), s.value.begin() + n, best) - s.value.begin();
      int64_t pos = s.pos[c];
      const int32_t cap = s.cap[c];
      for (; pos < s.end[c]; ++pos) {
        const Entry& path = paths.entries[pos];
        const int32_t value = std::min(cap, path.value);
        if (value < runner_up) break;
        if (s.found.size() >= keep && value < nth_value) {  // no tie with the keep-th left
          done = true;
          break;
        }
        if (s.seen[path.index] != s.stamp) {  // a source's first candidate is its widest path
          s.seen[path.index] = s.stamp;
          s.found.push_back({path.index, value});
          if (s.found.size() == keep) nth_value = value;
        }
      }
      if (pos < s.end[c]) {
        s.pos[c] = pos;
        s.value[c] = std::min(cap, paths.entries[pos].value);
      } else {  // exhausted: the last cursor takes its place
        --n;
        s.value[c] = s.value[n], s.cap[c] = s.cap[n], s.pos[c] = s.pos[n], s.end[c] = s.end[n];
        s.value[n] = 0;
      }
    }
    keep_widest(s.found, keep);
    out.entries.insert(out.entries.end(), s.found.begin(), s.found.end());
    out.end_row();
  }
}

}  // namespace summit

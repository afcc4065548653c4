// The edges of a class's attribution graph (SPEC.md C.2): direct branches and skips straight
// from the dense counts, chains through widest_rows, rows appended as they come; then the
// class's CSR matrix, rows in slot order.
#include <algorithm>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "graph/kernels.h"

namespace summit {
namespace {

// Rows [first_row, first_row + rows) of a class's emitted rows are a layer's channels from
// slot `slot` on; their entries are channels of the previous layer, slots from prev_slot on.
struct Segment {
  int64_t slot, first_row, rows, prev_slot;
};

// One class's edges as emitted: the rows of every conv branch and skip, by segment.
struct ClassEdges {
  SparseRows rows;
  std::vector<Segment> segments;
};

// A thread's work space.
struct ClassScratch {
  ClassEdges edges;
  SparseRows targets, paths, widest_paths;
  WidestScratch widest;
  std::vector<Entry> staging;  // one row's nonzero counts
  // merge_overlaps: the counting sort's fill pointers; per slot, its entry in the current row
  // and the row that last set it (-1: none); the merged rows
  std::vector<int64_t> fill, where, row_of;
  SparseRows merged;
};

// Bit u set where p[u] != 0, u < 16.
inline uint32_t nonzero_mask16(const int32_t* p) {
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  const __m128i a = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), zero);
  const __m128i b = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 4)), zero);
  const __m128i c = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)), zero);
  const __m128i d = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 12)), zero);
  const __m128i is_zero = _mm_packs_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d));  // one byte per count
  return ~static_cast<uint32_t>(_mm_movemask_epi8(is_zero)) & 0xffffu;
#else
  uint32_t mask = 0;
  for (int u = 0; u < 16; ++u) mask |= static_cast<uint32_t>(p[u] != 0) << u;
  return mask;
#endif
}

inline int count_bits(uint32_t mask) {
#if defined(__GNUC__)
  return __builtin_popcount(mask);
#else
  int n = 0;
  for (; mask; mask &= mask - 1) ++n;
  return n;
#endif
}

inline int lowest_bit(uint32_t mask) {  // mask != 0
#if defined(__GNUC__)
  return __builtin_ctz(mask);
#else
  int b = 0;
  while (!(mask & 1u)) mask >>= 1, ++b;
  return b;
#endif
}

// Appends conv c's rows for class k to `rows`: each row's nonzero counts as (source channel,
// count), leaving out sources marked in `dropped_sources` and every entry of rows marked in
// `dropped_rows` (either may be null). Returns the number of nonzero counts, dropped included.
int64_t append_conv_rows(const ConvCounts& c, int64_t k, const uint8_t* dropped_sources, const uint8_t* dropped_rows,
                         std::vector<Entry>& staging, SparseRows& rows) {
  const int32_t* data = c.data + k * c.out * c.per_target;
  const int64_t per_group = c.out / c.groups;
  if (static_cast<int64_t>(staging.size()) < c.per_target) staging.resize(c.per_target);
  int64_t nonzero = 0;
  for (int64_t j = 0; j < c.out; ++j) {
    const int32_t* row = data + j * c.per_target;
    const int64_t base = (j / per_group) * c.per_target;  // the group's first input channel
    const bool keep_row = !dropped_rows || !dropped_rows[j];
    Entry* to = staging.data();
    auto take = [&](int64_t s) {
      if (keep_row && (!dropped_sources || !dropped_sources[base + s]))
        *to++ = {static_cast<int32_t>(base + s), row[s]};
    };
    int64_t s = 0;
    for (; s + 16 <= c.per_target; s += 16) {  // counts are sparse: 16 at a time
      uint32_t mask = nonzero_mask16(row + s);
      nonzero += count_bits(mask);
      for (; mask; mask &= mask - 1) take(s + lowest_bit(mask));
    }
    for (; s < c.per_target; ++s)
      if (row[s]) ++nonzero, take(s);
    rows.entries.insert(rows.entries.end(), staging.data(), to);
    rows.end_row();
  }
  return nonzero;
}

int64_t count_nonzero(const ConvCounts& c, int64_t k) {
  const int32_t* data = c.data + k * c.out * c.per_target;
  int64_t nonzero = 0;
  for (int64_t e = 0; e < c.out * c.per_target; ++e) nonzero += data[e] != 0;
  return nonzero;
}

void begin_segment(ClassEdges& out, const LayerPlan& layer, int64_t first_channel) {
  out.segments.push_back({layer.slot + first_channel, out.rows.rows(), 0, layer.prev_slot});
}

void end_segment(ClassEdges& out) { out.segments.back().rows = out.rows.rows() - out.segments.back().first_row; }

// A chain's rows for class k: widest paths from the previous layer into each intermediate,
// starting at the reader; every path is kept until the last conv, where the top-n rule applies.
void chain_rows(const LayerPlan& layer, const BranchPlan& b, int64_t k, int64_t n, ClassScratch& s,
                ClassEdges& out) {
  s.paths.clear();
  append_conv_rows(b.chain.back(), k, layer.prev_excluded, nullptr, s.staging, s.paths);
  sort_rows_by_value(s.paths);
  for (size_t c = b.chain.size() - 2; c >= 1; --c) {
    s.targets.clear();
    append_conv_rows(b.chain[c], k, nullptr, nullptr, s.staging, s.targets);
    s.widest_paths.clear();
    widest_rows(s.targets, s.paths, layer.prev_channels, layer.prev_channels, nullptr, s.widest, s.widest_paths);
    std::swap(s.paths, s.widest_paths);
  }
  s.targets.clear();
  append_conv_rows(b.chain[0], k, nullptr, nullptr, s.staging, s.targets);
  begin_segment(out, layer, b.offset);
  widest_rows(s.targets, s.paths, layer.prev_channels, n, layer.excluded + b.offset, s.widest, out.rows);
  end_segment(out);
}

void skip_rows(const LayerPlan& layer, const SkipPlan& skip, int64_t k, ClassEdges& out) {
  const int32_t* counts = skip.data + k * skip.channels;
  begin_segment(out, layer, skip.target_offset);
  for (int64_t t = 0; t < skip.channels; ++t) {
    const int64_t target = skip.target_offset + t, source = skip.source_offset + t;
    if (counts[t] && !layer.excluded[target] && !layer.prev_excluded[source])
      out.rows.entries.push_back({static_cast<int32_t>(source), counts[t]});
    out.rows.end_row();
  }
  end_segment(out);
}

void layer_rows(const LayerPlan& layer, int64_t k, ClassScratch& s, ClassEdges& out) {
  // the top-n rule's n: the mean number of nonzero sources of the direct branches' target
  // channels (of the chains' last convs when there is no direct branch), at least 1
  int64_t direct_nonzero = 0, direct_channels = 0, chain_channels = 0;
  for (const BranchPlan& b : layer.branches) {
    if (b.chain.size() == 1) {
      begin_segment(out, layer, b.offset);
      direct_nonzero += append_conv_rows(b.chain[0], k, layer.prev_excluded, layer.excluded + b.offset, s.staging,
                                         out.rows);
      end_segment(out);
      direct_channels += b.chain[0].out;
    } else {
      chain_channels += b.chain[0].out;
    }
  }
  int64_t n = std::max<int64_t>(1, direct_nonzero / std::max<int64_t>(direct_channels, 1));
  if (!direct_channels && chain_channels) {
    int64_t chain_nonzero = 0;
    for (const BranchPlan& b : layer.branches) chain_nonzero += count_nonzero(b.chain[0], k);
    n = std::max<int64_t>(1, chain_nonzero / chain_channels);
  }
  for (const BranchPlan& b : layer.branches)
    if (b.chain.size() > 1) chain_rows(layer, b, k, n, s, out);
  for (const SkipPlan& skip : layer.skips) skip_rows(layer, skip, k, out);
}

// Regroups a class's rows by slot where segments overlap: one segment over all `width` slots,
// entries as class-local slots, an edge given twice with its largest weight.
void merge_overlaps(ClassEdges& e, int64_t width, ClassScratch& s) {
  s.fill.assign(width + 1, 0);
  for (const Segment& seg : e.segments)
    for (int64_t r = 0; r < seg.rows; ++r)
      s.fill[seg.slot + r + 1] += e.rows.start[seg.first_row + r + 1] - e.rows.start[seg.first_row + r];
  for (int64_t r = 0; r < width; ++r) s.fill[r + 1] += s.fill[r];
  s.merged.start.assign(s.fill.begin(), s.fill.end());
  s.merged.entries.resize(e.rows.entries.size());
  for (const Segment& seg : e.segments)
    for (int64_t r = 0; r < seg.rows; ++r)
      for (int64_t x = e.rows.start[seg.first_row + r]; x < e.rows.start[seg.first_row + r + 1]; ++x)
        s.merged.entries[s.fill[seg.slot + r]++] = {static_cast<int32_t>(seg.prev_slot + e.rows.entries[x].index),
                                                    e.rows.entries[x].value};
  s.where.resize(width);
  s.row_of.assign(width, -1);
  int64_t kept = 0;
  for (int64_t r = 0; r < width; ++r) {
    const int64_t first = s.merged.start[r], end = s.merged.start[r + 1];
    s.merged.start[r] = kept;
    for (int64_t x = first; x < end; ++x) {
      const Entry entry = s.merged.entries[x];
      if (s.row_of[entry.index] == r) {
        Entry& earlier = s.merged.entries[s.where[entry.index]];
        earlier.value = std::max(earlier.value, entry.value);
      } else {
        s.row_of[entry.index] = r;
        s.where[entry.index] = kept;
        s.merged.entries[kept++] = entry;
      }
    }
  }
  s.merged.start[width] = kept;
  s.merged.entries.resize(kept);
  std::swap(e.rows, s.merged);  // s.merged is rebuilt whole by the next call
  e.segments.assign(1, {0, 0, width, 0});
}

// The class's rows (segments disjoint) as CSR over `width` slots.
void to_csr(ClassEdges& e, int64_t width, Csr& out) {
  std::sort(e.segments.begin(), e.segments.end(),
            [](const Segment& x, const Segment& y) { return x.slot < y.slot; });
  out.indptr.resize(width + 1);
  out.indices.resize(e.rows.entries.size());
  out.weights.resize(e.rows.entries.size());
  int64_t slot = 0, at = 0;
  for (const Segment& seg : e.segments) {
    for (; slot < seg.slot; ++slot) out.indptr[slot] = at;  // channels without edges
    for (int64_t r = seg.first_row; r < seg.first_row + seg.rows; ++r, ++slot) {
      out.indptr[slot] = at;
      for (int64_t x = e.rows.start[r]; x < e.rows.start[r + 1]; ++x, ++at) {
        out.indices[at] = static_cast<int32_t>(seg.prev_slot + e.rows.entries[x].index);
        out.weights[at] = static_cast<float>(e.rows.entries[x].value);
      }
    }
  }
  for (; slot <= width; ++slot) out.indptr[slot] = at;
}

}  // namespace

bool has_overlaps(const ChunkPlan& plan) {
  for (const LayerPlan& layer : plan.layers) {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const BranchPlan& b : layer.branches) ranges.emplace_back(b.offset, b.offset + b.chain[0].out);
    for (const SkipPlan& skip : layer.skips)
      ranges.emplace_back(skip.target_offset, skip.target_offset + skip.channels);
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second) return true;
  }
  return false;
}

void class_graph(const ChunkPlan& plan, int64_t k, Csr& out) {
  ClassScratch& s = per_thread<ClassScratch>();
  s.edges.rows.clear();
  s.edges.segments.clear();
  for (const LayerPlan& layer : plan.layers) layer_rows(layer, k, s, s.edges);
  if (plan.overlapping) merge_overlaps(s.edges, plan.width, s);
  to_csr(s.edges, plan.width, out);
}

void mark_nodes(const CsrView& g, int64_t width, std::vector<uint8_t>& is_node) {
  is_node.assign(width, 0);
  for (int64_t u = 0; u < width; ++u) {
    if (g.indptr[u] == g.indptr[u + 1]) continue;
    is_node[u] = 1;
    for (int64_t e = g.indptr[u]; e < g.indptr[u + 1]; ++e) is_node[g.indices[e]] = 1;
  }
}

Adjacency chunk_adjacency(const ChunkPlan& plan) {
  const int64_t classes = plan.classes, width = plan.width;
  std::vector<Csr> graphs(classes);
#pragma omp parallel for schedule(dynamic, 1) if (classes > 1)
  for (int64_t k = 0; k < classes; ++k) class_graph(plan, k, graphs[k]);
  Adjacency adj;
  adj.csr.indptr.assign(1, 0);
  adj.groups.assign(classes * width, -1);
  std::vector<uint8_t> is_node;
  for (int64_t k = 0; k < classes; ++k) {
    const Csr& g = graphs[k];
    const int64_t base = k * width, first = adj.csr.indptr.back();
    mark_nodes(g.view(), width, is_node);
    for (int64_t slot = 0; slot < width; ++slot) {
      adj.csr.indptr.push_back(first + g.indptr[slot + 1]);
      if (is_node[slot]) adj.groups[base + slot] = k;
    }
    for (const int32_t source : g.indices) adj.csr.indices.push_back(static_cast<int32_t>(base + source));
    adj.csr.weights.insert(adj.csr.weights.end(), g.weights.begin(), g.weights.end());
  }
  return adj;
}

}  // namespace summit

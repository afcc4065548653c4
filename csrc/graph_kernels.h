// Native kernels of attribution-graph building (SPEC.md C), free of Python: the caller
// (graph_ops.cpp) checks every argument and releases the GIL around them.
#pragma once
#include <cstdint>
#include <vector>

namespace summit {

// A per-thread object kept between calls (fresh memory costs a page fault per page). Bind it
// to a reference once: not inlined, so the compiler cannot redo the thread-local lookup (a
// call) at every use.
template <class T>
[[gnu::noinline]] T& per_thread() {
  thread_local T object;
  return object;
}

// ---------------------------------------------------------------- sparse rows
struct Entry {
  int32_t index;  // a column: a source channel, or an intermediate channel
  int32_t value;  // a count, or a widest-path width (always > 0)
};

// Rows of one class's sparse counts: row r holds entries[start[r] .. start[r + 1]).
struct SparseRows {
  std::vector<int64_t> start{0};
  std::vector<Entry> entries;

  int64_t rows() const { return static_cast<int64_t>(start.size()) - 1; }
  void clear() {
    start.assign(1, 0);
    entries.clear();
  }
  void end_row() { start.push_back(static_cast<int64_t>(entries.size())); }
};

// Each row's entries by value descending (ties in no particular order).
void sort_rows_by_value(SparseRows& rows);

// Work space of widest_rows, one per thread. A cursor is one intermediate of a target row: its
// path list from pos to end, capped at the target's count cap; value = its current width.
struct WidestScratch {
  std::vector<int32_t> value, cap;
  std::vector<int64_t> pos, end;
  std::vector<Entry> found;
  std::vector<uint32_t> seen;  // per source: the row stamp when last found
  uint32_t stamp = 0;
};

// SPEC.md C.2's widest paths with the top-n rule, for one class. For each target row j (rows of
// `targets`, entries = (intermediate m, count)) not marked in `excluded_rows` (may be null):
// w[i] = max over m of min(count, width of path m -> i), over `paths` (rows = intermediates,
// sorted by sort_rows_by_value, indices < sources), and the top `keep` sources by w, ties by
// ascending i. Appends one row per target row to `out`, entries by w descending (ties in no
// particular order), so `out` can serve as the paths of a further conv.
void widest_rows(const SparseRows& targets, const SparseRows& paths, int64_t sources, int64_t keep,
                 const uint8_t* excluded_rows, WidestScratch& scratch, SparseRows& out);

// ---------------------------------------------------------------- a chunk's edges
// One conv's counts for the chunk's classes: C-contiguous int32 (classes, out, per_target);
// count (j, s) is source channel (j / (out / groups)) * per_target + s (a grouped conv's
// compact counts).
struct ConvCounts {
  const int32_t* data = nullptr;
  int64_t out = 0, per_target = 0, groups = 1;
};

// Convs from the one that writes summary-layer channels [offset, offset + chain[0].out) back to
// the one that reads the previous summary layer (size 1: a direct branch).
struct BranchPlan {
  std::vector<ConvCounts> chain;
  int64_t offset = 0;
};

// Identity edges: channel source_offset + t of the previous layer -> target_offset + t, weighted
// by counts (classes, channels).
struct SkipPlan {
  const int32_t* data = nullptr;
  int64_t channels = 0, source_offset = 0, target_offset = 0;
};

// The edges into one summary layer (not the first). Slots: a class's nodes are numbered
// layer by layer; this layer's channel c is slot `slot + c`, the previous one's `prev_slot + c`.
struct LayerPlan {
  std::vector<BranchPlan> branches;
  std::vector<SkipPlan> skips;
  const uint8_t* excluded = nullptr;       // (channels,)
  const uint8_t* prev_excluded = nullptr;  // (prev_channels,)
  int64_t channels = 0, prev_channels = 0, slot = 0, prev_slot = 0;
};

struct ChunkPlan {
  std::vector<LayerPlan> layers;
  int64_t classes = 0, width = 0;  // width: slots per class
};

// The chunk's graphs as one CSR matrix over classes * width slots: each edge once, in the row
// of its node in the later layer; where several convs (or a skip) give the same edge, the
// largest weight. Weights are counts, exact in float32 below 2**24. groups: per slot, its
// class when it has an edge (a node of the graph), else -1.
struct Adjacency {
  std::vector<int64_t> indptr, groups;
  std::vector<int32_t> indices;
  std::vector<float> weights;
};
Adjacency chunk_adjacency(const ChunkPlan& plan);

// ---------------------------------------------------------------- selection
// SPEC.md C.4 on a chunk's graphs (the layout of chunk_adjacency, each class's slots layer by
// layer from layer_slot[l] on): per class and layer, the nodes by PageRank descending (ties by
// slot) and the shortest prefix whose sum reaches tau_l times the layer's; while a layer l >= 1
// has no kept edge to a kept node of layer l-1, tau_l and tau_{l-1} take one more step (at
// most max_steps: tau 1.0). Classes run in parallel.
struct SelectArgs {
  const int64_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  const double* ranks = nullptr;
  const int64_t* groups = nullptr;
  const int64_t* layer_slot = nullptr;  // (layers + 1,): slot offsets within a class
  int64_t classes = 0, width = 0, layers = 0, max_steps = 0;
  double tau0 = 0.075, tau_step = 0.005;
  uint8_t* kept = nullptr;  // out (classes * width,)
  double* tau = nullptr;    // out (classes, layers)
};
void select_nodes(const SelectArgs& a);

// ---------------------------------------------------------------- PageRank
// Personalised PageRank, as networkx.pagerank, of many graphs at once (one per group), on a
// CSR matrix (row = from) whose entries never join two groups nor touch a non-node (group -1).
// Each group starts uniform and stops on its own when its L1 change is below size * tol.
// Returns false when an entry breaks that rule (the outputs are then incomplete).
struct PagerankArgs {
  const int64_t* indptr = nullptr;  // (n + 1,)
  const int32_t* indices = nullptr;
  const float* weights = nullptr;
  const double* personalization = nullptr;  // (n,), >= 0; normalised within each group
  const int64_t* groups = nullptr;          // (n,) in [-1, num_groups)
  int64_t n = 0, num_groups = 0;
  bool undirected = false;  // each edge listed once, walked both ways
  double alpha = 0.85, tol = 1e-6;
  int64_t max_iter = 100;
  double* ranks = nullptr;        // out (n,), 0 for non-nodes
  int64_t* iterations = nullptr;  // out (num_groups,)
  uint8_t* converged = nullptr;   // out (num_groups,)
};
bool pagerank(const PagerankArgs& a);

}  // namespace summit

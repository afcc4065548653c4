// Native kernels of attribution-graph building (SPEC.md C), free of Python: the caller
// (graph_ops.cpp) checks every argument and releases the GIL around them.
#pragma once
#include <cstdint>
#include <utility>
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
  bool overlapping = false;        // two branches or skips of a layer write the same channels
};

// Whether two branches or skips of some layer of the plan write the same channels (a residual sum).
bool has_overlaps(const ChunkPlan& plan);

// A CSR matrix over node slots (row = from): row u's entries are indices and weights
// [indptr[u], indptr[u + 1]).
struct CsrView {
  const int64_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  const float* weights = nullptr;
};

struct Csr {
  std::vector<int64_t> indptr;
  std::vector<int32_t> indices;
  std::vector<float> weights;
  CsrView view() const { return {indptr.data(), indices.data(), weights.data()}; }
};

// Class k's graph as CSR over its plan.width slots (class-local): each edge once, in the row of
// its node in the later layer; where several convs (or a skip) give the same edge, the largest
// weight. Weights are counts, exact in float32 below 2**24. Uses per-thread scratch.
void class_graph(const ChunkPlan& plan, int64_t k, Csr& out);

// Which of a class graph's `width` slots are nodes: those at either end of an edge.
void mark_nodes(const CsrView& g, int64_t width, std::vector<uint8_t>& is_node);

// The chunk's graphs as one CSR matrix over classes * width slots (class k's slots from
// k * width on), and per slot its class when it has an edge (a node), else -1.
struct Adjacency {
  Csr csr;
  std::vector<int64_t> groups;
};
Adjacency chunk_adjacency(const ChunkPlan& plan);

// ---------------------------------------------------------------- PageRank
struct WalkParams {
  bool undirected = false;  // each edge listed once, walked both ways
  double alpha = 0.85, tol = 1e-6;
  int64_t max_iter = 100;
};

// Personalised PageRank, as networkx.pagerank, of one graph: its nodes (slots, ascending) and
// their rows of `g`, whose entries stay among them (not checked). Starts uniform, stops when the
// L1 change is below size * tol. Writes ranks[node]; returns (iterations, converged).
std::pair<int64_t, bool> pagerank_graph(const CsrView& g, const int64_t* nodes, int64_t size,
                                        const double* personalization, const WalkParams& walk, double* ranks);

// pagerank_graph for many graphs at once (one per group), in parallel, on a CSR matrix whose
// entries never join two groups nor touch a non-node (group -1). Returns false when an entry
// breaks that rule (the outputs are then incomplete).
struct PagerankArgs {
  CsrView g;
  const double* personalization = nullptr;  // (n,), >= 0; normalised within each group
  const int64_t* groups = nullptr;          // (n,) in [-1, num_groups)
  int64_t n = 0, num_groups = 0;
  WalkParams walk;
  double* ranks = nullptr;        // out (n,), 0 for non-nodes
  int64_t* iterations = nullptr;  // out (num_groups,)
  uint8_t* converged = nullptr;   // out (num_groups,)
};
bool pagerank(const PagerankArgs& a);

// ---------------------------------------------------------------- selection
struct SelectParams {
  double tau0 = 0.075, tau_step = 0.005;
  int64_t max_steps = 0;  // steps that take tau to 1.0
};

// SPEC.md C.4 for one class: `g` its graph (class-local slots, a row per later-layer node),
// is_node and ranks per slot, layer l's slots [layer_slot[l], layer_slot[l + 1]). Per layer the
// nodes by rank descending (ties by slot) and the shortest prefix whose sum reaches tau_l times
// the layer's; while a layer l >= 1 has no kept edge to a kept node of layer l-1, tau_l and
// tau_{l-1} take one more step. Writes kept[slot] and tau[l].
void select_class(const CsrView& g, const uint8_t* is_node, const double* ranks, const int64_t* layer_slot,
                  int64_t layers, const SelectParams& params, uint8_t* kept, double* tau);

// ---------------------------------------------------------------- a chunk's graphs
// SPEC.md C.2-C.4 for each class of a chunk, one class per thread: class_graph, pagerank_graph
// on its nodes, select_class. Outputs per slot (classes * width), class or (classes, layers).
struct ChunkGraphsArgs {
  const ChunkPlan* plan = nullptr;
  const double* personalization = nullptr;  // per slot
  const int64_t* layer_slot = nullptr;      // (layers + 1,): slot offsets within a class
  int64_t layers = 0;
  WalkParams walk;
  SelectParams select;
  double* ranks = nullptr;        // 0 for slots that are not nodes
  uint8_t* kept = nullptr;
  double* tau = nullptr;          // (classes, layers)
  int64_t* nodes = nullptr;       // per class: slots with an edge
  int64_t* iterations = nullptr;  // per class
  uint8_t* converged = nullptr;   // per class
};
// The kept edges: from a kept node to a kept node of the previous layer (chunk slots).
struct KeptEdges {
  std::vector<int64_t> from, to;
  std::vector<float> weight;
};
KeptEdges chunk_graphs(const ChunkGraphsArgs& a);

}  // namespace summit

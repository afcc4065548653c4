// SPEC.md C.4's per-layer selection with relaxation, for one class. Kept nodes only grow as
// tau grows, so each layer's kept prefix is extended, never recomputed, and a layer once linked
// to the previous one stays linked.
#include <algorithm>

#include "graph_kernels.h"

namespace summit {
namespace {

// One layer's nodes, taken by rank, highest first: a heap of those not yet kept.
struct LayerNodes {
  std::vector<int64_t> heap;  // max-heap by rank, ties by lower slot
  std::vector<int64_t> kept;  // the kept prefix, in order
  double total = 0.0, kept_mass = 0.0;
};

// A thread's work space.
struct Selection {
  std::vector<LayerNodes> nodes;
  std::vector<int64_t> steps;
  std::vector<uint8_t> is_linked, unlinked;
};

// Whether some kept node of the layer (its row lists its previous-layer neighbours) has a kept
// neighbour.
bool linked(const CsrView& g, const uint8_t* kept, const LayerNodes& layer) {
  for (const int64_t u : layer.kept)
    for (int64_t e = g.indptr[u]; e < g.indptr[u + 1]; ++e)
      if (kept[g.indices[e]]) return true;
  return false;
}

}  // namespace

void select_class(const CsrView& g, const uint8_t* is_node, const double* ranks, const int64_t* layer_slot,
                  int64_t layers, const SelectParams& params, uint8_t* kept, double* tau) {
  Selection& s = per_thread<Selection>();
  // kept nodes are a prefix of the order by rank: only that prefix is ever sorted (a heap)
  auto narrower = [&](int64_t x, int64_t y) { return ranks[x] != ranks[y] ? ranks[x] < ranks[y] : x > y; };
  s.nodes.resize(layers);
  for (int64_t l = 0; l < layers; ++l) {
    LayerNodes& layer = s.nodes[l];
    layer.heap.clear();
    layer.kept.clear();
    layer.total = layer.kept_mass = 0.0;
    for (int64_t slot = layer_slot[l]; slot < layer_slot[l + 1]; ++slot)
      if (is_node[slot]) layer.heap.push_back(slot), layer.total += ranks[slot];
    std::make_heap(layer.heap.begin(), layer.heap.end(), narrower);
  }
  std::fill(kept, kept + layer_slot[layers], 0);
  std::vector<int64_t>& steps = s.steps;
  steps.assign(layers, 0);
  s.is_linked.assign(layers, 0);
  s.unlinked.assign(layers, 0);
  while (true) {
    for (int64_t l = 0; l < layers; ++l) {  // a node is kept while the mass ahead of it is below tau
      LayerNodes& layer = s.nodes[l];
      tau[l] = std::min(1.0, params.tau0 + params.tau_step * static_cast<double>(steps[l]));
      while (!layer.heap.empty() && layer.kept_mass < tau[l] * layer.total) {
        std::pop_heap(layer.heap.begin(), layer.heap.end(), narrower);
        const int64_t u = layer.heap.back();
        layer.heap.pop_back();
        layer.kept.push_back(u);
        layer.kept_mass += ranks[u];
        kept[u] = 1;
      }
    }
    bool relaxed = false;
    for (int64_t l = 1; l < layers; ++l) {
      if (!s.is_linked[l]) s.is_linked[l] = linked(g, kept, s.nodes[l]);
      s.unlinked[l] = !s.is_linked[l] && (steps[l] < params.max_steps || steps[l - 1] < params.max_steps);
      relaxed |= s.unlinked[l];
    }
    if (!relaxed) return;
    for (int64_t l = 1; l < layers; ++l)
      if (s.unlinked[l]) ++steps[l], ++steps[l - 1];
    for (int64_t& step : steps) step = std::min(step, params.max_steps);
  }
}

}  // namespace summit

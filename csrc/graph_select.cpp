// SPEC.md C.4's per-layer selection with relaxation, one class per thread. Kept nodes only
// grow as tau grows, so each layer's kept prefix is extended, never recomputed, and a layer
// once linked to the previous one stays linked.
#include <algorithm>

#include "graph_kernels.h"

namespace summit {
namespace {

// One layer's nodes of a class, taken by rank, highest first: a heap of those not yet kept.
struct LayerNodes {
  std::vector<int64_t> heap;  // max-heap by rank, ties by lower slot
  std::vector<int64_t> kept;  // the kept prefix, in order
  double total = 0.0, kept_mass = 0.0;
};

// Whether some kept node of the layer (its row lists its previous-layer neighbours) has a kept
// neighbour.
bool linked(const SelectArgs& a, const LayerNodes& layer) {
  for (const int64_t u : layer.kept)
    for (int64_t e = a.indptr[u]; e < a.indptr[u + 1]; ++e)
      if (a.kept[a.indices[e]]) return true;
  return false;
}

// Per-thread work space.
struct Selection {
  std::vector<LayerNodes> nodes;
  std::vector<int64_t> steps;
  std::vector<uint8_t> is_linked, unlinked;
};

void select_class(const SelectArgs& a, int64_t k, Selection& s) {
  // kept nodes are a prefix of the order by rank: only that prefix is ever sorted (a heap)
  auto narrower = [&](int64_t x, int64_t y) { return a.ranks[x] != a.ranks[y] ? a.ranks[x] < a.ranks[y] : x > y; };
  s.nodes.resize(a.layers);
  for (int64_t l = 0; l < a.layers; ++l) {
    LayerNodes& layer = s.nodes[l];
    layer.heap.clear();
    layer.kept.clear();
    layer.total = layer.kept_mass = 0.0;
    for (int64_t slot = k * a.width + a.layer_slot[l]; slot < k * a.width + a.layer_slot[l + 1]; ++slot)
      if (a.groups[slot] >= 0) layer.heap.push_back(slot), layer.total += a.ranks[slot];
    std::make_heap(layer.heap.begin(), layer.heap.end(), narrower);
  }
  std::fill(a.kept + k * a.width, a.kept + (k + 1) * a.width, 0);
  std::vector<int64_t>& steps = s.steps;
  steps.assign(a.layers, 0);
  s.is_linked.assign(a.layers, 0);
  s.unlinked.assign(a.layers, 0);
  double* tau = a.tau + k * a.layers;
  while (true) {
    for (int64_t l = 0; l < a.layers; ++l) {  // a node is kept while the mass ahead of it is below tau
      LayerNodes& layer = s.nodes[l];
      tau[l] = std::min(1.0, a.tau0 + a.tau_step * static_cast<double>(steps[l]));
      while (!layer.heap.empty() && layer.kept_mass < tau[l] * layer.total) {
        std::pop_heap(layer.heap.begin(), layer.heap.end(), narrower);
        const int64_t u = layer.heap.back();
        layer.heap.pop_back();
        layer.kept.push_back(u);
        layer.kept_mass += a.ranks[u];
        a.kept[u] = 1;
      }
    }
    bool relaxed = false;
    for (int64_t l = 1; l < a.layers; ++l) {
      if (!s.is_linked[l]) s.is_linked[l] = linked(a, s.nodes[l]);
      s.unlinked[l] = !s.is_linked[l] && (steps[l] < a.max_steps || steps[l - 1] < a.max_steps);
      relaxed |= s.unlinked[l];
    }
    if (!relaxed) return;
    for (int64_t l = 1; l < a.layers; ++l)
      if (s.unlinked[l]) ++steps[l], ++steps[l - 1];
    for (int64_t& step : steps) step = std::min(step, a.max_steps);
  }
}

}  // namespace

void select_nodes(const SelectArgs& a) {
#pragma omp parallel if (a.classes > 1)
  {
    Selection s;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < a.classes; ++k) select_class(a, k, s);
  }
}

}  // namespace summit

// SPEC.md C.4's per-layer selection with relaxation, for one class. Kept nodes only grow as
// tau grows, so each layer's kept prefix is extended, never recomputed (the mass rule's
// resumable MassOrder), and a layer once linked to the previous one stays linked.
#include <algorithm>

#include "cpu/select.h"
#include "graph/kernels.h"

namespace summit {
namespace {

// A thread's work space.
struct Selection {
  std::vector<MassOrder> nodes;  // per layer: its node slots, kept ones first
  std::vector<int64_t> steps;
  std::vector<uint8_t> is_linked, unlinked;
};

// Whether some kept node of the layer (its row lists its previous-layer neighbours) has a kept
// neighbour.
bool linked(const CsrView& g, const uint8_t* kept, const MassOrder& layer) {
  for (int64_t n = 0; n < layer.taken; ++n)
    for (int64_t u = layer.order[n], e = g.indptr[u]; e < g.indptr[u + 1]; ++e)
      if (kept[g.indices[e]]) return true;
  return false;
}

}  // namespace

void select_class(const CsrView& g, const uint8_t* is_node, const double* ranks, const int64_t* layer_slot,
                  int64_t layers, const SelectParams& params, uint8_t* kept, double* tau) {
  Selection& s = per_thread<Selection>();
  s.nodes.resize(layers);
  for (int64_t l = 0; l < layers; ++l) {
    MassOrder& layer = s.nodes[l];
    layer.order.clear();
    for (int64_t slot = layer_slot[l]; slot < layer_slot[l + 1]; ++slot)
      if (is_node[slot]) layer.order.push_back(slot);
    layer.start(ranks);
  }
  std::fill(kept, kept + layer_slot[layers], 0);
  std::vector<int64_t>& steps = s.steps;
  steps.assign(layers, 0);
  s.is_linked.assign(layers, 0);
  s.unlinked.assign(layers, 0);
  while (true) {
    for (int64_t l = 0; l < layers; ++l) {  // a node is kept while the mass ahead of it is below tau
      MassOrder& layer = s.nodes[l];
      tau[l] = std::min(1.0, params.tau0 + params.tau_step * static_cast<double>(steps[l]));
      const int64_t was_taken = layer.taken;
      layer.take_below(ranks, tau[l] * layer.total);
      for (int64_t n = was_taken; n < layer.taken; ++n) kept[layer.order[n]] = 1;
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

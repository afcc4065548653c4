// A chunk's attribution graphs (SPEC.md C.2-C.4), one class per thread from its counts to its
// kept nodes: the class's graph stays in this thread's cache from building to selection, and
// the chunk is one parallel region.
#include <algorithm>

#include "graph/kernels.h"

namespace summit {
namespace {

// A thread's work space: the class's graph, which slots are nodes, and those nodes.
struct ClassWork {
  Csr graph;
  std::vector<uint8_t> is_node;
  std::vector<int64_t> nodes;
};

}  // namespace

KeptEdges chunk_graphs(const ChunkGraphsArgs& a) {
  const ChunkPlan& plan = *a.plan;
  const int64_t classes = plan.classes, width = plan.width;
  std::vector<KeptEdges> kept_edges(classes);
#pragma omp parallel for schedule(dynamic, 1) if (classes > 1)
  for (int64_t k = 0; k < classes; ++k) {
    ClassWork& w = per_thread<ClassWork>();
    class_graph(plan, k, w.graph);
    const CsrView g = w.graph.view();
    mark_nodes(g, width, w.is_node);
    w.nodes.clear();
    for (int64_t u = 0; u < width; ++u)
      if (w.is_node[u]) w.nodes.push_back(u);
    a.nodes[k] = static_cast<int64_t>(w.nodes.size());
    double* ranks = a.ranks + k * width;
    std::fill(ranks, ranks + width, 0.0);
    const auto [iterations, converged] = pagerank_graph(g, w.nodes.data(), a.nodes[k], a.personalization + k * width,
                                                        a.walk, ranks);
    a.iterations[k] = iterations;
    a.converged[k] = converged;
    uint8_t* kept = a.kept + k * width;
    select_class(g, w.is_node.data(), ranks, a.layer_slot, a.layers, a.select, kept, a.tau + k * a.layers);
    KeptEdges& out = kept_edges[k];
    for (int64_t u = 0; u < width; ++u) {
      if (!kept[u]) continue;
      for (int64_t e = g.indptr[u]; e < g.indptr[u + 1]; ++e) {
        if (!kept[g.indices[e]]) continue;
        out.from.push_back(k * width + u);
        out.to.push_back(k * width + g.indices[e]);
        out.weight.push_back(g.weights[e]);
      }
    }
  }
  KeptEdges all;
  for (const KeptEdges& e : kept_edges) {
    all.from.insert(all.from.end(), e.from.begin(), e.from.end());
    all.to.insert(all.to.end(), e.to.begin(), e.to.end());
    all.weight.insert(all.weight.end(), e.weight.begin(), e.weight.end());
  }
  return all;
}

}  // namespace summit

// Personalised PageRank with networkx.pagerank's conventions: one graph per call of
// pagerank_graph, straight on the caller's CSR rows; pagerank() runs many graphs in parallel.
#include <algorithm>
#include <cmath>

#include "graph/kernels.h"

namespace summit {
namespace {

// A thread's vectors over the slots its graphs use (a graph reads and writes only its nodes').
struct WalkVectors {
  std::vector<double> inv_out;  // 1 / out-weight (both directions when undirected), 0 if dangling
  std::vector<double> p;        // personalisation, sums to 1 over the graph
  std::vector<double> z, next;
  std::vector<int64_t> dangling;

  void fit(int64_t slots) {
    if (static_cast<int64_t>(inv_out.size()) >= slots) return;
    inv_out.resize(slots), p.resize(slots), z.resize(slots), next.resize(slots);
  }
};

void prepare(const CsrView& g, const int64_t* nodes, int64_t size, const double* personalization, bool undirected,
             WalkVectors& v) {
  for (int64_t i = 0; i < size; ++i) v.inv_out[nodes[i]] = 0.0;  // the out-weight, until inverted
  for (int64_t i = 0; i < size; ++i) {
    const int64_t u = nodes[i];
    for (int64_t e = g.indptr[u]; e < g.indptr[u + 1]; ++e) {
      v.inv_out[u] += g.weights[e];
      if (undirected) v.inv_out[g.indices[e]] += g.weights[e];
    }
  }
  v.dangling.clear();
  double p_sum = 0.0;
  for (int64_t i = 0; i < size; ++i) {
    const int64_t u = nodes[i];
    if (v.inv_out[u] == 0.0) v.dangling.push_back(u);
    v.inv_out[u] = v.inv_out[u] != 0.0 ? 1.0 / v.inv_out[u] : 0.0;
    p_sum += personalization[u];
  }
  for (int64_t i = 0; i < size; ++i)  // an all-zero personalisation: uniform
    v.p[nodes[i]] = p_sum > 0.0 ? personalization[nodes[i]] / p_sum : 1.0 / static_cast<double>(size);
}

// Power iteration from the uniform vector into x; returns (iterations, converged). Each edge is
// read once per iteration: it carries rank along its direction (a scatter), and when
// undirected also back (a gather into its row's node).
template <bool kUndirected>
std::pair<int64_t, bool> iterate(const CsrView& g, const int64_t* nodes, int64_t size, const WalkParams& walk,
                                 WalkVectors& v, double* x) {
  for (int64_t i = 0; i < size; ++i) x[nodes[i]] = 1.0 / static_cast<double>(size);
  for (int64_t it = 1; it <= walk.max_iter; ++it) {
    double lost = 0.0;  // rank of dangling nodes, sent where the personalisation points
    for (const int64_t d : v.dangling) lost += x[d];
    for (int64_t i = 0; i < size; ++i) v.z[nodes[i]] = x[nodes[i]] * v.inv_out[nodes[i]], v.next[nodes[i]] = 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const int64_t u = nodes[i];
      const double zu = v.z[u];
      double back[4] = {0.0, 0.0, 0.0, 0.0};  // independent sums: no add-latency chain
      int64_t e = g.indptr[u];
      const int64_t end = g.indptr[u + 1];
      for (; e + 4 <= end; e += 4) {
        for (int l = 0; l < 4; ++l) {
          const int64_t t = g.indices[e + l];
          v.next[t] += g.weights[e + l] * zu;
          if (kUndirected) back[l] += g.weights[e + l] * v.z[t];
        }
      }
      for (; e < end; ++e) {
        v.next[g.indices[e]] += g.weights[e] * zu;
        if (kUndirected) back[0] += g.weights[e] * v.z[g.indices[e]];
      }
      v.next[u] += (back[0] + back[1]) + (back[2] + back[3]);
    }
    double change = 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const int64_t u = nodes[i];
      const double updated = walk.alpha * v.next[u] + ((1.0 - walk.alpha) + walk.alpha * lost) * v.p[u];
      change += std::fabs(updated - x[u]);
      x[u] = updated;
    }
    if (change < static_cast<double>(size) * walk.tol) return {it, true};
  }
  return {walk.max_iter, false};
}

// Whether every entry of the group's rows stays in the group.
bool stays_in_group(const PagerankArgs& a, const int64_t* nodes, int64_t size, int64_t group) {
  for (int64_t i = 0; i < size; ++i)
    for (int64_t e = a.g.indptr[nodes[i]]; e < a.g.indptr[nodes[i] + 1]; ++e)
      if (a.g.indices[e] < 0 || a.g.indices[e] >= a.n || a.groups[a.g.indices[e]] != group) return false;
  return true;
}

}  // namespace

std::pair<int64_t, bool> pagerank_graph(const CsrView& g, const int64_t* nodes, int64_t size,
                                        const double* personalization, const WalkParams& walk, double* ranks) {
  if (size == 0) return {0, true};
  WalkVectors& v = per_thread<WalkVectors>();
  v.fit(nodes[size - 1] + 1);
  prepare(g, nodes, size, personalization, walk.undirected, v);
  return walk.undirected ? iterate<true>(g, nodes, size, walk, v, ranks)
                         : iterate<false>(g, nodes, size, walk, v, ranks);
}

bool pagerank(const PagerankArgs& a) {
  std::vector<int64_t> group_start(a.num_groups + 1, 0), nodes;  // each group's nodes, ascending
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] >= 0) ++group_start[a.groups[u] + 1];
  for (int64_t g = 0; g < a.num_groups; ++g) group_start[g + 1] += group_start[g];
  nodes.resize(group_start[a.num_groups]);
  std::vector<int64_t> fill(group_start.begin(), group_start.end() - 1);
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] >= 0) nodes[fill[a.groups[u]]++] = u;
  for (int64_t u = 0; u < a.n; ++u)  // a non-node has no entries
    if (a.groups[u] < 0 && a.g.indptr[u] != a.g.indptr[u + 1]) return false;
  std::fill(a.ranks, a.ranks + a.n, 0.0);
  bool ok = true;
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : ok) if (a.num_groups > 1)
  for (int64_t g = 0; g < a.num_groups; ++g) {
    const int64_t size = group_start[g + 1] - group_start[g];
    const int64_t* group_nodes = nodes.data() + group_start[g];
    if (!stays_in_group(a, group_nodes, size, g)) {
      ok = false;
      continue;
    }
    const auto [iterations, converged] = pagerank_graph(a.g, group_nodes, size, a.personalization, a.walk, a.ranks);
    a.iterations[g] = iterations;
    a.converged[g] = converged;
  }
  return ok;
}

}  // namespace summit

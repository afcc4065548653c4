// Personalised PageRank with networkx.pagerank's conventions, many graphs at once: each group's
// graph is copied into compact local CSR (local indices, float weights) and iterated on one
// thread, where its vectors stay in cache; groups run in parallel.
#include <algorithm>
#include <cmath>

#include "graph_kernels.h"

namespace summit {
namespace {

// One group's graph in local indices: row u's entries (its edges as given, from u) are
// target[start[u] .. start[u + 1]) with weight[...].
struct LocalGraph {
  std::vector<int64_t> start;
  std::vector<int32_t> target;
  std::vector<float> weight;
  std::vector<double> inv_out;  // 1 / out-weight (both directions when undirected), 0 if dangling
  std::vector<int32_t> dangling;
  std::vector<double> p;  // personalisation, sums to 1
  std::vector<double> x, z, next;
};

// Builds the group's local graph from the rows of its nodes; false when an entry leaves the group.
bool build_local(const PagerankArgs& a, const int64_t* nodes, int64_t size, int64_t group, const int32_t* local,
                 LocalGraph& lg) {
  lg.start.resize(size + 1);
  lg.target.clear();
  lg.weight.clear();
  int64_t entries = 0;
  for (int64_t u = 0; u < size; ++u) entries += a.indptr[nodes[u] + 1] - a.indptr[nodes[u]];
  lg.target.reserve(entries);
  lg.weight.reserve(entries);
  std::vector<double> out_weight(size, 0.0);
  lg.start[0] = 0;
  for (int64_t u = 0; u < size; ++u) {
    for (int64_t e = a.indptr[nodes[u]]; e < a.indptr[nodes[u] + 1]; ++e) {
      const int64_t v = a.indices[e];
      if (v < 0 || v >= a.n || a.groups[v] != group) return false;
      lg.target.push_back(local[v]);
      lg.weight.push_back(a.weights[e]);
      out_weight[u] += a.weights[e];
      if (a.undirected) out_weight[local[v]] += a.weights[e];
    }
    lg.start[u + 1] = static_cast<int64_t>(lg.target.size());
  }
  lg.inv_out.resize(size);
  lg.dangling.clear();
  double p_sum = 0.0;
  for (int64_t u = 0; u < size; ++u) {
    lg.inv_out[u] = out_weight[u] != 0.0 ? 1.0 / out_weight[u] : 0.0;
    if (out_weight[u] == 0.0) lg.dangling.push_back(static_cast<int32_t>(u));
    p_sum += a.personalization[nodes[u]];
  }
  lg.p.resize(size);
  for (int64_t u = 0; u < size; ++u)  // an all-zero personalisation: uniform
    lg.p[u] = p_sum > 0.0 ? a.personalization[nodes[u]] / p_sum : 1.0 / static_cast<double>(size);
  return true;
}

// Power iteration from the uniform vector; returns (iterations, converged). Each edge is read
// once per iteration: it carries rank along its direction (a scatter), and when undirected
// also back (a gather into its row's node).
std::pair<int64_t, bool> iterate(const PagerankArgs& a, LocalGraph& lg) {
  const int64_t size = static_cast<int64_t>(lg.p.size());
  lg.x.assign(size, 1.0 / static_cast<double>(size));
  lg.z.resize(size);
  lg.next.resize(size);
  for (int64_t it = 1; it <= a.max_iter; ++it) {
    double lost = 0.0;  // rank of dangling nodes, sent where the personalisation points
    for (const int32_t d : lg.dangling) lost += lg.x[d];
    for (int64_t u = 0; u < size; ++u) lg.z[u] = lg.x[u] * lg.inv_out[u];
    std::fill(lg.next.begin(), lg.next.end(), 0.0);
    for (int64_t u = 0; u < size; ++u) {
      const double zu = lg.z[u];
      double back = 0.0;
      for (int64_t e = lg.start[u]; e < lg.start[u + 1]; ++e) {
        const int32_t v = lg.target[e];
        lg.next[v] += lg.weight[e] * zu;
        if (a.undirected) back += lg.weight[e] * lg.z[v];
      }
      lg.next[u] += back;
    }
    double change = 0.0;
    for (int64_t v = 0; v < size; ++v) {
      lg.next[v] = a.alpha * lg.next[v] + ((1.0 - a.alpha) + a.alpha * lost) * lg.p[v];
      change += std::fabs(lg.next[v] - lg.x[v]);
    }
    std::swap(lg.x, lg.next);
    if (change < static_cast<double>(size) * a.tol) return {it, true};
  }
  return {a.max_iter, false};
}

}  // namespace

bool pagerank(const PagerankArgs& a) {
  std::vector<int64_t> group_start(a.num_groups + 1, 0), nodes;
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] >= 0) ++group_start[a.groups[u] + 1];
  for (int64_t g = 0; g < a.num_groups; ++g) group_start[g + 1] += group_start[g];
  nodes.resize(group_start[a.num_groups]);
  std::vector<int64_t> fill(group_start.begin(), group_start.end() - 1);
  std::vector<int32_t> local(a.n, -1);
  for (int64_t u = 0; u < a.n; ++u) {
    if (a.groups[u] < 0) continue;
    local[u] = static_cast<int32_t>(fill[a.groups[u]] - group_start[a.groups[u]]);
    nodes[fill[a.groups[u]]++] = u;
  }
  // a node's entries must stay in its group, and a non-node has none
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] < 0 && a.indptr[u] != a.indptr[u + 1]) return false;
  std::fill(a.ranks, a.ranks + a.n, 0.0);
  bool ok = true;
#pragma omp parallel if (a.num_groups > 1)
  {
    // kept per thread between calls: fresh memory costs a page fault per page
    thread_local LocalGraph lg;
#pragma omp for schedule(dynamic, 1) reduction(&& : ok)
    for (int64_t g = 0; g < a.num_groups; ++g) {
      const int64_t size = group_start[g + 1] - group_start[g];
      const int64_t* group_nodes = nodes.data() + group_start[g];
      a.iterations[g] = 0;
      a.converged[g] = 1;
      if (size == 0) continue;
      if (!build_local(a, group_nodes, size, g, local.data(), lg)) {
        ok = false;
        continue;
      }
      const auto [iterations, converged] = iterate(a, lg);
      a.iterations[g] = iterations;
      a.converged[g] = converged;
      for (int64_t u = 0; u < size; ++u) a.ranks[group_nodes[u]] = lg.x[u];
    }
  }
  return ok;
}

}  // namespace summit

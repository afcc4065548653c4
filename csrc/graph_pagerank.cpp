// Personalised PageRank with networkx.pagerank's conventions, many graphs at once: each group
// is iterated on one thread, straight on the caller's CSR matrix; a chunk's classes are
// contiguous slot ranges, so each group's vectors stay in cache. Groups run in parallel.
#include <algorithm>
#include <cmath>

#include "graph_kernels.h"

namespace summit {
namespace {

// Vectors over all n slots; a group reads and writes only its own nodes' entries.
struct Vectors {
  std::vector<double> inv_out;  // 1 / out-weight (both directions when undirected), 0 if dangling
  std::vector<double> p;        // personalisation, sums to 1 over each group
  std::vector<double> z, next;
};

// Out-weights and personalisation of the group's nodes; false when an entry leaves the group.
bool prepare(const PagerankArgs& a, const int64_t* nodes, int64_t size, int64_t group, Vectors& v,
             std::vector<int64_t>& dangling) {
  for (int64_t i = 0; i < size; ++i) v.inv_out[nodes[i]] = 0.0;  // the out-weight, until inverted
  for (int64_t i = 0; i < size; ++i) {
    const int64_t u = nodes[i];
    for (int64_t e = a.indptr[u]; e < a.indptr[u + 1]; ++e) {
      const int64_t t = a.indices[e];
      if (t < 0 || t >= a.n || a.groups[t] != group) return false;
      v.inv_out[u] += a.weights[e];
      if (a.undirected) v.inv_out[t] += a.weights[e];
    }
  }
  dangling.clear();
  double p_sum = 0.0;
  for (int64_t i = 0; i < size; ++i) {
    const int64_t u = nodes[i];
    if (v.inv_out[u] == 0.0) dangling.push_back(u);
    v.inv_out[u] = v.inv_out[u] != 0.0 ? 1.0 / v.inv_out[u] : 0.0;
    p_sum += a.personalization[u];
  }
  for (int64_t i = 0; i < size; ++i)  // an all-zero personalisation: uniform
    v.p[nodes[i]] = p_sum > 0.0 ? a.personalization[nodes[i]] / p_sum : 1.0 / static_cast<double>(size);
  return true;
}

// Power iteration from the uniform vector into a.ranks; returns (iterations, converged). Each
// edge is read once per iteration: it carries rank along its direction (a scatter), and when
// undirected also back (a gather into its row's node).
template <bool kUndirected>
std::pair<int64_t, bool> iterate(const PagerankArgs& a, const int64_t* nodes, int64_t size,
                                 const std::vector<int64_t>& dangling, Vectors& v) {
  double* x = a.ranks;
  for (int64_t i = 0; i < size; ++i) x[nodes[i]] = 1.0 / static_cast<double>(size);
  for (int64_t it = 1; it <= a.max_iter; ++it) {
    double lost = 0.0;  // rank of dangling nodes, sent where the personalisation points
    for (const int64_t d : dangling) lost += x[d];
    for (int64_t i = 0; i < size; ++i) v.z[nodes[i]] = x[nodes[i]] * v.inv_out[nodes[i]], v.next[nodes[i]] = 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const int64_t u = nodes[i];
      const double zu = v.z[u];
      double back[4] = {0.0, 0.0, 0.0, 0.0};  // independent sums: no add-latency chain
      int64_t e = a.indptr[u];
      const int64_t end = a.indptr[u + 1];
      for (; e + 4 <= end; e += 4) {
        for (int l = 0; l < 4; ++l) {
          const int64_t t = a.indices[e + l];
          v.next[t] += a.weights[e + l] * zu;
          if (kUndirected) back[l] += a.weights[e + l] * v.z[t];
        }
      }
      for (; e < end; ++e) {
        v.next[a.indices[e]] += a.weights[e] * zu;
        if (kUndirected) back[0] += a.weights[e] * v.z[a.indices[e]];
      }
      v.next[u] += (back[0] + back[1]) + (back[2] + back[3]);
    }
    double change = 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const int64_t u = nodes[i];
      const double updated = a.alpha * v.next[u] + ((1.0 - a.alpha) + a.alpha * lost) * v.p[u];
      change += std::fabs(updated - x[u]);
      x[u] = updated;
    }
    if (change < static_cast<double>(size) * a.tol) return {it, true};
  }
  return {a.max_iter, false};
}

}  // namespace

bool pagerank(const PagerankArgs& a) {
  std::vector<int64_t> group_start(a.num_groups + 1, 0), nodes;  // each group's nodes, ascending
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] >= 0) ++group_start[a.groups[u] + 1];
  for (int64_t g = 0; g < a.num_groups; ++g) group_start[g + 1] += group_start[g];
  nodes.resize(group_start[a.num_groups]);
  std::vector<int64_t> fill(group_start.begin(), group_start.end() - 1);
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] >= 0) nodes[fill[a.groups[u]]++] = u;
  // a node's entries must stay in its group, and a non-node has none
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] < 0 && a.indptr[u] != a.indptr[u + 1]) return false;
  std::fill(a.ranks, a.ranks + a.n, 0.0);
  Vectors v;
  v.inv_out.resize(a.n), v.p.resize(a.n), v.z.resize(a.n), v.next.resize(a.n);
  bool ok = true;
#pragma omp parallel if (a.num_groups > 1)
  {
    std::vector<int64_t> dangling;
#pragma omp for schedule(dynamic, 1) reduction(&& : ok)
    for (int64_t g = 0; g < a.num_groups; ++g) {
      const int64_t size = group_start[g + 1] - group_start[g];
      const int64_t* group_nodes = nodes.data() + group_start[g];
      a.iterations[g] = 0;
      a.converged[g] = 1;
      if (size == 0) continue;
      if (!prepare(a, group_nodes, size, g, v, dangling)) {
        ok = false;
        continue;
      }
      const auto [iterations, converged] = a.undirected ? iterate<true>(a, group_nodes, size, dangling, v)
                                                        : iterate<false>(a, group_nodes, size, dangling, v);
      a.iterations[g] = iterations;
      a.converged[g] = converged;
    }
  }
  return ok;
}

}  // namespace summit

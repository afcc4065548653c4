// Python bindings of the graph kernels: numpy arrays in and out; every argument is checked
// here, before the GIL is released.
#include "bind_graph.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "graph/kernels.h"

namespace py = pybind11;

namespace summit {
namespace {

// C-contiguous arrays; pybind11 converts only where numpy casts safely (int32 -> int64).
template <class T>
using Array = py::array_t<T, py::array::c_style>;

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {  // hands the vector's storage to numpy, no copy
  auto* owner = new std::vector<T>(std::move(v));
  py::capsule free_owner(owner, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(static_cast<py::ssize_t>(owner->size()), owner->data(), free_owner);
}

std::string str(int64_t v) { return std::to_string(v); }

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

// For checks in loops: the message is a literal, so nothing is built unless the check fails.
void require(bool ok, const char* message) {
  if (!ok) fail(message);
}

template <class T>
const T* checked(const Array<T>& a, int64_t size, const std::string& what) {
  if (a.size() != size) fail(what + " has " + str(a.size()) + " entries, expected " + str(size));
  return a.data();
}

// ---------------------------------------------------------------- top_widest (one call = one product)
using CooArrays = std::tuple<Array<int64_t>, Array<int64_t>, Array<int64_t>, Array<int32_t>>;

// A (k, row, col, val) list of a (classes, rows, cols) tensor with positive values, as one
// SparseRows per class.
std::vector<SparseRows> coo_rows(const CooArrays& coo, int64_t classes, int64_t rows, int64_t cols,
                                 const std::string& what) {
  const auto& [k, row, col, val] = coo;
  const int64_t size = val.size();
  if (cols > INT32_MAX) fail(what + ": more than 2**31 - 1 columns");  // columns are stored as int32
  if (k.size() != size || row.size() != size || col.size() != size)
    fail(what + ": k, row, col and val must have the same length");
  std::vector<int64_t> start(classes * rows + 1, 0);
  for (int64_t e = 0; e < size; ++e) {
    if (k.data()[e] < 0 || k.data()[e] >= classes || row.data()[e] < 0 || row.data()[e] >= rows || col.data()[e] < 0 ||
        col.data()[e] >= cols)
      fail(what + ": entry " + str(e) + " is outside (" + str(classes) + ", " + str(rows) + ", " + str(cols) + ")");
    if (val.data()[e] <= 0) fail(what + ": counts must be positive, entry " + str(e) + " is " + str(val.data()[e]));
    ++start[k.data()[e] * rows + row.data()[e] + 1];
  }
  for (int64_t r = 0; r < classes * rows; ++r) start[r + 1] += start[r];
  std::vector<Entry> sorted(size);
  for (int64_t e = 0; e < size; ++e)
    sorted[start[k.data()[e] * rows + row.data()[e]]++] = {static_cast<int32_t>(col.data()[e]), val.data()[e]};
  std::vector<SparseRows> out(classes);  // start[r] is now the end of row r
  for (int64_t c = 0; c < classes; ++c) {
    for (int64_t r = c * rows; r < (c + 1) * rows; ++r) {
      const int64_t first = r == 0 ? 0 : start[r - 1];
      out[c].entries.insert(out[c].entries.end(), sorted.begin() + first, sorted.begin() + start[r]);
      out[c].end_row();
    }
  }
  return out;
}

py::tuple py_top_widest(const CooArrays& targets, const CooArrays& paths, int64_t classes, int64_t rows,
                        int64_t mids, int64_t sources, const Array<int64_t>& keep, const Array<bool>& row_ok) {
  require(classes >= 0 && rows >= 0 && mids >= 0 && sources >= 0 && sources <= INT32_MAX,
          "top_widest: classes, rows, mids and sources must be >= 0 (sources < 2**31)");
  const int64_t* keep_n = checked(keep, classes, "top_widest: keep");
  for (int64_t k = 0; k < classes; ++k) require(keep_n[k] >= 1, "top_widest: keep must be >= 1");
  const bool* ok = checked(row_ok, rows, "top_widest: row_ok");
  std::vector<uint8_t> excluded(ok, ok + rows);
  for (uint8_t& e : excluded) e = !e;
  std::vector<SparseRows> target_rows = coo_rows(targets, classes, rows, mids, "top_widest targets");
  std::vector<SparseRows> path_rows = coo_rows(paths, classes, mids, sources, "top_widest paths");
  std::vector<SparseRows> out(classes);
  {
    py::gil_scoped_release release;
#pragma omp parallel if (classes > 1)
    {
      WidestScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < classes; ++k) {
        sort_rows_by_value(path_rows[k]);
        widest_rows(target_rows[k], path_rows[k], sources, keep_n[k], excluded.data(), scratch, out[k]);
      }
    }
  }
  std::vector<int64_t> k_out, row_out, col_out;
  std::vector<int32_t> val_out;
  for (int64_t k = 0; k < classes; ++k) {
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t e = out[k].start[j]; e < out[k].start[j + 1]; ++e) {
        k_out.push_back(k), row_out.push_back(j);
        col_out.push_back(out[k].entries[e].index), val_out.push_back(out[k].entries[e].value);
      }
    }
  }
  return py::make_tuple(to_numpy(std::move(k_out)), to_numpy(std::move(row_out)), to_numpy(std::move(col_out)),
                        to_numpy(std::move(val_out)));
}

// ---------------------------------------------------------------- a chunk's plan
using ConvTuple = std::tuple<Array<int32_t>, int64_t>;            // counts, groups
using BranchTuple = std::tuple<std::vector<ConvTuple>, int64_t>;  // chain, offset
using SkipTuple = std::tuple<Array<int32_t>, int64_t, int64_t>;   // counts, source/target offset
using LayerTuple = std::tuple<std::vector<BranchTuple>, std::vector<SkipTuple>, Array<bool>, Array<bool>, int64_t,
                              int64_t>;  // branches, skips, excluded, prev_excluded, slot, prev_slot

ConvCounts checked_conv(const ConvTuple& conv, int64_t classes, int64_t in_channels, const std::string& what) {
  const auto& [counts, groups] = conv;
  if (counts.ndim() != 3 || counts.shape(0) != classes)
    fail(what + ": counts must be (classes=" + str(classes) + ", out, sources per target)");
  ConvCounts c;
  c.data = counts.data();
  c.out = counts.shape(1), c.per_target = counts.shape(2), c.groups = groups;
  if (groups < 1 || c.out % groups != 0 || c.per_target * groups != in_channels)
    fail(what + ": counts (" + str(c.out) + ", " + str(c.per_target) + ") with groups=" + str(groups) +
         " do not fit " + str(in_channels) + " input channels");
  return c;
}

// The plan over the caller's arrays (they outlive the call: the arguments hold them).
ChunkPlan checked_plan(const std::vector<LayerTuple>& layers, int64_t classes, int64_t width) {
  require(classes >= 0 && width >= 0 && classes * width <= INT32_MAX,
          "need classes, width >= 0 and classes * width < 2**31 node slots");
  ChunkPlan plan;
  plan.classes = classes, plan.width = width;
  for (size_t li = 0; li < layers.size(); ++li) {
    const auto& [branches, skips, excluded, prev_excluded, slot, prev_slot] = layers[li];
    const std::string where = "plan layer " + str(static_cast<int64_t>(li));
    LayerPlan layer;
    layer.channels = excluded.size(), layer.prev_channels = prev_excluded.size();
    layer.excluded = reinterpret_cast<const uint8_t*>(excluded.data());
    layer.prev_excluded = reinterpret_cast<const uint8_t*>(prev_excluded.data());
    layer.slot = slot, layer.prev_slot = prev_slot;
    if (slot < 0 || slot + layer.channels > width || prev_slot < 0 || prev_slot + layer.prev_channels > width)
      fail(where + ": its slots do not fit the width " + str(width));
    for (const auto& [chain, offset] : branches) {
      if (chain.empty()) fail(where + ": a branch without convs");
      BranchPlan b;
      b.offset = offset;
      for (size_t c = chain.size(); c-- > 0;) {  // reader first: it fixes the next one's input channels
        const int64_t in_channels = c + 1 == chain.size() ? layer.prev_channels : b.chain.front().out;
        b.chain.insert(b.chain.begin(), checked_conv(chain[c], classes, in_channels,
                                                     where + " conv " + str(static_cast<int64_t>(c))));
      }
      if (offset < 0 || offset + b.chain.front().out > layer.channels)
        fail(where + ": a branch writes past the layer's " + str(layer.channels) + " channels");
      layer.branches.push_back(std::move(b));
    }
    for (const auto& [counts, source_offset, target_offset] : skips) {
      SkipPlan s;
      if (counts.ndim() != 2 || counts.shape(0) != classes) fail(where + ": skip counts must be (classes, channels)");
      s.data = counts.data();
      s.channels = counts.shape(1), s.source_offset = source_offset, s.target_offset = target_offset;
      if (source_offset < 0 || source_offset + s.channels > layer.prev_channels || target_offset < 0 ||
          target_offset + s.channels > layer.channels)
        fail(where + ": a skip's channels do not fit its layers");
      layer.skips.push_back(s);
    }
    plan.layers.push_back(std::move(layer));
  }
  plan.overlapping = has_overlaps(plan);  // once per chunk, not per class
  return plan;
}

WalkParams checked_walk(bool undirected, double alpha, int64_t max_iter, double tol) {
  require(max_iter >= 1 && alpha >= 0.0 && alpha <= 1.0 && tol >= 0.0,
          "need max_iter >= 1, 0 <= alpha <= 1 and tol >= 0");
  WalkParams walk;
  walk.undirected = undirected, walk.alpha = alpha, walk.max_iter = max_iter, walk.tol = tol;
  return walk;
}

// ---------------------------------------------------------------- chunk_adjacency, chunk_graphs
py::tuple py_chunk_adjacency(const std::vector<LayerTuple>& layers, int64_t classes, int64_t width) {
  const ChunkPlan plan = checked_plan(layers, classes, width);
  Adjacency adj;
  {
    py::gil_scoped_release release;
    adj = chunk_adjacency(plan);
  }
  return py::make_tuple(to_numpy(std::move(adj.csr.indptr)), to_numpy(std::move(adj.csr.indices)),
                        to_numpy(std::move(adj.csr.weights)), to_numpy(std::move(adj.groups)));
}

py::tuple py_chunk_graphs(const std::vector<LayerTuple>& layers, int64_t classes, const Array<int64_t>& layer_slot,
                          const Array<double>& personalization, double alpha, int64_t max_iter, double tol,
                          double tau0, double tau_step, int64_t max_steps) {
  ChunkGraphsArgs a;
  a.layers = layer_slot.size() - 1;
  require(a.layers >= 1, "chunk_graphs: layer_slot needs at least two entries");
  a.layer_slot = layer_slot.data();
  require(a.layer_slot[0] == 0, "chunk_graphs: bad layer_slot");
  for (int64_t l = 0; l < a.layers; ++l)
    require(a.layer_slot[l] <= a.layer_slot[l + 1], "chunk_graphs: bad layer_slot");
  const int64_t width = a.layer_slot[a.layers];
  const ChunkPlan plan = checked_plan(layers, classes, width);
  // Plan layer l holds the edges into summary layer l + 1: its slots must be layer_slot's.
  require(static_cast<int64_t>(plan.layers.size()) == a.layers - 1,
          "chunk_graphs: need one plan layer per summary layer after the first");
  for (int64_t l = 0; l + 1 < a.layers; ++l) {
    const LayerPlan& p = plan.layers[l];
    if (p.prev_slot != a.layer_slot[l] || p.slot != a.layer_slot[l + 1] ||
        p.prev_channels != a.layer_slot[l + 1] - a.layer_slot[l] || p.channels != a.layer_slot[l + 2] - a.layer_slot[l + 1])
      fail("chunk_graphs: plan layer " + str(l) + " does not match layer_slot");
  }
  a.plan = &plan;
  a.personalization = checked(personalization, classes * width, "chunk_graphs: personalization");
  a.walk = checked_walk(true, alpha, max_iter, tol);
  require(tau0 > 0.0 && tau0 <= 1.0 && tau_step > 0.0 && max_steps >= 0,
          "chunk_graphs: need 0 < tau0 <= 1, tau_step > 0 and max_steps >= 0");
  a.select.tau0 = tau0, a.select.tau_step = tau_step, a.select.max_steps = max_steps;
  py::array_t<double> ranks(classes * width);
  py::array_t<bool> kept(classes * width), converged(classes);
  py::array_t<double> tau({classes, a.layers});
  py::array_t<int64_t> nodes(classes), iterations(classes);
  a.ranks = ranks.mutable_data(), a.kept = reinterpret_cast<uint8_t*>(kept.mutable_data());
  a.tau = tau.mutable_data(), a.nodes = nodes.mutable_data(), a.iterations = iterations.mutable_data();
  a.converged = reinterpret_cast<uint8_t*>(converged.mutable_data());
  KeptEdges edges;
  {
    py::gil_scoped_release release;
    edges = chunk_graphs(a);
  }
  return py::make_tuple(ranks, kept, tau, nodes, iterations, converged,
                        py::make_tuple(to_numpy(std::move(edges.from)), to_numpy(std::move(edges.to)),
                                       to_numpy(std::move(edges.weight))));
}

// ---------------------------------------------------------------- pagerank
py::tuple py_pagerank(const Array<int64_t>& indptr, const Array<int32_t>& indices, const Array<float>& weights,
                      const Array<double>& personalization, const Array<int64_t>& groups, int64_t num_groups,
                      bool undirected, double alpha, int64_t max_iter, double tol) {
  PagerankArgs a;
  a.n = personalization.size();
  require(num_groups >= 0, "pagerank: num_groups must be >= 0");
  a.num_groups = num_groups;
  a.g.indptr = checked(indptr, a.n + 1, "pagerank: indptr");
  a.g.indices = checked(indices, a.g.indptr[a.n], "pagerank: indices");
  a.g.weights = checked(weights, a.g.indptr[a.n], "pagerank: weights");
  require(a.g.indptr[0] == 0, "pagerank: indptr must start at 0");
  for (int64_t u = 0; u < a.n; ++u) require(a.g.indptr[u] <= a.g.indptr[u + 1], "pagerank: indptr must not decrease");
  a.personalization = personalization.data();
  a.groups = checked(groups, a.n, "pagerank: groups");
  for (int64_t u = 0; u < a.n; ++u)
    if (a.groups[u] < -1 || a.groups[u] >= num_groups) fail("pagerank: group " + str(a.groups[u]) + " out of range");
  a.walk = checked_walk(undirected, alpha, max_iter, tol);
  py::array_t<double> ranks(a.n);
  py::array_t<int64_t> iterations(num_groups);
  py::array_t<bool> converged(num_groups);
  a.ranks = ranks.mutable_data();
  a.iterations = iterations.mutable_data();
  a.converged = reinterpret_cast<uint8_t*>(converged.mutable_data());
  bool ok;
  {
    py::gil_scoped_release release;
    ok = pagerank(a);
  }
  require(ok, "pagerank: an entry joins two groups or touches a non-node (group -1)");
  return py::make_tuple(ranks, iterations, converged);
}

}  // namespace

void bind_graph_ops(py::module_& m) {
  m.def("top_widest", &py_top_widest, py::arg("targets"), py::arg("paths"), py::arg("classes"), py::arg("rows"),
        py::arg("mids"), py::arg("sources"), py::arg("keep"), py::arg("row_ok"),
        "SPEC.md C.2's widest paths with the top-n rule (the kernel the chunk functions run per chain). targets: "
        "(k, row, col, val) of a (classes, rows, mids) count tensor; paths: the same of (classes, mids, sources); "
        "int64 indices, int32 positive counts, any order. For every class k and row j with row_ok[j]: w[i] = max "
        "over m of min(targets[k, j, m], paths[k, m, i]), and the top keep[k] sources by w (descending, ties by "
        "ascending i). Returns (k, row, col, w) by (k, row), each row by w descending.");
  m.def("chunk_adjacency", &py_chunk_adjacency, py::arg("layers"), py::arg("classes"), py::arg("width"),
        "The edges of a chunk of classes' attribution graphs (SPEC.md C.2; what chunk_graphs ranks, for inspection) "
        "as CSR (int64 indptr, int32 indices, "
        "float32 weights), and per slot its class if it has an edge else -1 (int64 groups), over "
        "classes * width node slots, each edge once in the row of its later-layer node. layers: per summary layer "
        "after the first, (branches, skips, excluded, prev_excluded, slot, prev_slot); a branch is (chain, "
        "offset), its chain the convs from the one writing the layer back to the one reading the previous layer, "
        "each (int32 counts (classes, out, in / groups), groups); a skip is (int32 counts (classes, channels), "
        "source_offset, target_offset).");
  m.def("chunk_graphs", &py_chunk_graphs, py::arg("layers"), py::arg("classes"), py::arg("layer_slot"),
        py::arg("personalization"), py::arg("alpha"), py::arg("max_iter"), py::arg("tol"), py::arg("tau0"),
        py::arg("tau_step"), py::arg("max_steps"),
        "SPEC.md C.2-C.4 for a chunk of classes, one class per thread: the edges (layers as for chunk_adjacency), "
        "personalised PageRank (as networkx.pagerank) on the nodes, the per-layer selection with relaxation. "
        "layer_slot: (layers + 1,) slot offsets within a class; personalization per slot. Returns (ranks, kept, "
        "tau (classes, layers), nodes per class, iterations per class, converged per class, (from, to, weight) "
        "of the kept edges: a kept node to a kept node of the previous layer).");
  m.def("pagerank", &py_pagerank, py::arg("indptr"), py::arg("indices"), py::arg("weights"),
        py::arg("personalization"), py::arg("groups"), py::arg("num_groups"), py::arg("undirected"), py::arg("alpha"),
        py::arg("max_iter"), py::arg("tol"),
        "Personalised PageRank as networkx.pagerank of the graphs of a CSR matrix (row = from; int64 indptr, int32 "
        "indices, float32 weights), one per group (-1: not a node), in parallel. Returns (ranks, iterations per "
        "group, converged per group).");
}

}  // namespace summit

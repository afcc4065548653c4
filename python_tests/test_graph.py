# Test dependencies: networkx (the PageRank reference), numpy, torch.
"""Attribution graphs (SPEC.md C): summit_fast.graph against a brute-force oracle and networkx."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from summit_fast.convspec import ConvSpec
from summit_fast.discovery import ConvEdge, ModelGraph
from summit_fast.graph import build_graphs, class_graph, pagerank
from summit_fast.result import SummitResult


# ---------------------------------------------------------------------------------------------
# Hand-made model graphs
# ---------------------------------------------------------------------------------------------
def make_graph(layers: dict[str, int], convs: list[tuple], input_node: str = "input",
               input_channels: int = 3) -> ModelGraph:
    """convs: (name, source, target, offset, in, out[, groups]); a conv whose target is its own
    name produces an intermediate tensor."""
    edges, channels = [], {input_node: input_channels}
    for name, source, target, offset, c_in, c_out, *groups in convs:
        spec = ConvSpec(groups=groups[0] if groups else 1)
        edges.append(ConvEdge(name, source, target, offset, c_in, c_out, (1, 1), spec))
        if target == name:
            channels[name] = c_out
    channels.update(layers)
    return ModelGraph(list(layers), input_node, channels, edges)


INCEPTION_LIKE = make_graph(  # direct branches, a two-conv chain and a three-conv chain (expand, depthwise, project)
    {"L0": 6, "L1": 7, "L2": 9},
    [("a0", "input", "L0", 0, 3, 6),
     ("d1", "L0", "L1", 0, 6, 3), ("b1", "L0", "b1", 0, 6, 4), ("c1", "b1", "L1", 3, 4, 4),
     ("d2", "L1", "L2", 0, 7, 2), ("e2", "L1", "e2", 0, 7, 5), ("f2", "e2", "f2", 0, 5, 5, 5),
     ("g2", "f2", "L2", 2, 5, 4), ("h2", "L1", "L2", 6, 7, 3)])

RESIDUAL_LIKE = make_graph(  # two convs summed into the same channels (a ResNet downsample block)
    {"R0": 5, "R1": 6},
    [("stem", "input", "R0", 0, 3, 5), ("main", "R0", "R1", 0, 5, 6), ("down", "R0", "R1", 0, 5, 6)])

GROUPED = make_graph(  # grouped convs (2 groups), whose counts are compact: (C_out, C_in / groups)
    {"G0": 4, "G1": 8},
    [("stem", "input", "G0", 0, 3, 4), ("gd", "G0", "G1", 0, 4, 4, 2), ("ge", "G0", "ge", 0, 4, 6, 2),
     ("gp", "ge", "G1", 4, 6, 4, 2)])

CHAIN_ONLY = make_graph(  # no direct branch: n comes from the chain's last conv
    {"M0": 5, "M1": 4},
    [("stem", "input", "M0", 0, 3, 5), ("exp", "M0", "exp", 0, 5, 8), ("proj", "exp", "M1", 0, 8, 4)])


def random_result(graph: ModelGraph, num_classes: int, seed: int, density: float = 0.45,
                  excluded: dict | None = None) -> SummitResult:
    gen = torch.Generator().manual_seed(seed)
    result = SummitResult.zeros(graph, num_classes, {"excluded": excluded or {}})
    for a in result.activation.values():
        a.copy_(torch.randint(0, 60, a.shape, generator=gen) * (torch.rand(a.shape, generator=gen) < 0.6))
    for e in graph.edges:
        t = result.influence[e.conv]
        t.copy_(torch.randint(1, 40, t.shape, generator=gen) * (torch.rand(t.shape, generator=gen) < density))
    result.images_per_class.fill_(50)
    return result


# ---------------------------------------------------------------------------------------------
# The oracle: SPEC.md C written out with dense loops and networkx
# ---------------------------------------------------------------------------------------------
def reference_graph(result: SummitResult, c: int, tau0: float = 0.075, step: float = 0.005,
                    chosen: list[str] | None = None):
    graph = result.graph
    layers = graph.layers
    excluded = {l: set(v) for l, v in result.params.get("excluded", {}).items()}
    by_name = {e.conv: e for e in graph.edges}
    counts = {name: by_name[name].dense(t[c]).numpy().astype(np.int64)  # grouped convs: (C_out, C_in)
              for name, t in result.influence.items()}

    def widest(conv, prev):  # (out, C_prev): max over paths of the min along the path
        e = by_name[conv]
        if e.source == prev:
            return counts[conv]
        inner = widest(e.source, prev)
        return np.max(np.minimum(counts[conv][:, :, None], inner[None, :, :]), axis=1)

    full_edges = {}  # full layer index -> {(j, i): weight} of its edges from the layer before
    for li in range(1, len(layers)):
        layer, prev = layers[li], layers[li - 1]
        writers = [e for e in graph.edges if e.target == layer]
        direct = [e for e in writers if e.source == prev]
        basis = direct or writers
        n = max(1, math.floor(np.mean([np.count_nonzero(counts[e.conv][j]) for e in basis
                                       for j in range(e.out_channels)])))
        weights = {}
        for e in writers:
            w = widest(e.conv, prev)
            for jp in range(e.out_channels):
                j = e.target_offset + jp
                if j in excluded.get(layer, ()):
                    continue
                row = [(int(w[jp, i]), i) for i in range(w.shape[1])
                       if w[jp, i] > 0 and i not in excluded.get(prev, ())]
                if e.source != prev:
                    row = sorted(row, key=lambda t: (-t[0], t[1]))[:n]
                for wt, i in row:
                    weights[(j, i)] = max(weights.get((j, i), 0), wt)
        full_edges[li] = weights
    index = [layers.index(l) for l in (chosen or layers)]
    g = nx.Graph()
    for p in range(1, len(index)):
        weights = full_edges[index[p - 1] + 1]
        for li in range(index[p - 1] + 2, index[p] + 1):  # widest paths through the layers left out
            targets = {j for j, _ in full_edges[li]}
            weights = {(j, i): max(min(w_jm, weights.get((m, i), 0)) for (jj, m), w_jm in full_edges[li].items()
                                   if jj == j)
                       for j in targets for i in range(graph.channels[layers[index[p - 1]]])}
            weights = {key: w for key, w in weights.items() if w > 0}
        for (j, i), wt in weights.items():
            g.add_edge((p, j), (p - 1, i), weight=wt)
    layers = [layers[i] for i in index]
    if not len(g):
        return {}, {}
    pers = {}
    for li, ch in g.nodes:
        a = result.activation[layers[li]][c].numpy().astype(float)
        a[list(excluded.get(layers[li], ()))] = 0.0
        pers[(li, ch)] = a[ch] / a.max() if a.max() > 0 else 0.0
    pr = nx.pagerank(g, alpha=0.85, personalization=pers, weight="weight")
    n_layers = len(layers)
    max_steps = math.ceil((1.0 - tau0) / step - 1e-9)
    steps = [0] * n_layers
    while True:
        tau = [min(1.0, tau0 + step * s) for s in steps]
        kept = set()
        for li in range(n_layers):
            nodes = sorted((v for v in g if v[0] == li), key=lambda v: (-pr[v], v[1]))
            total, before = sum(pr[v] for v in nodes), 0.0
            for v in nodes:
                if before >= tau[li] * total:
                    break
                kept.add(v)
                before += pr[v]
        unlinked = [li for li in range(1, n_layers)
                    if not any(u[0] == li and w[0] == li - 1 and u in kept and w in kept for u, w in
                               ((a, b) if a[0] > b[0] else (b, a) for a, b in g.edges))
                    and (steps[li] < max_steps or steps[li - 1] < max_steps)]
        if not unlinked:
            break
        for li in unlinked:
            steps[li] = min(max_steps, steps[li] + 1)
            steps[li - 1] = min(max_steps, steps[li - 1] + 1)
    nodes = {}
    for li, ch in kept:
        prev = sorted(((p[1], g.edges[(li, ch), p]["weight"]) for p in g[(li, ch)] if p[0] == li - 1 and p in kept),
                      key=lambda t: (-t[1], t[0]))
        nodes[(layers[li], ch)] = (pr[(li, ch)], prev, int(result.activation[layers[li]][c, ch]))
    return nodes, dict(zip(layers, tau))


def attr_reference(result: SummitResult, c: int, layer: str, ch: int) -> list[tuple[int, int]]:
    e = next(e for e in result.graph.edges if e.target == layer and e.target_offset <= ch < e.target_offset + e.out_channels)
    row = e.dense(result.influence[e.conv][c]).numpy()[ch - e.target_offset]
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:3]
    return [(i, int(row[i])) for i in order if row[i] > 0]


def assert_matches_reference(result: SummitResult, graphs: dict, tau0: float = 0.075, chosen: list[str] | None = None):
    for c, graph in graphs.items():
        expected, tau = reference_graph(result, c, tau0, chosen=chosen)
        got = {(n.layer, n.channel): n for nodes in graph.nodes.values() for n in nodes}
        assert set(got) == set(expected), f"class {c}"
        for key, (pr, prev, count) in expected.items():
            node = got[key]
            assert abs(node.pagerank - pr) < 1e-6
            assert node.prev_channels == prev, f"class {c} node {key}"
            assert node.count == count
            assert node.attr_channels == attr_reference(result, c, *key)
        if expected:
            assert graph.tau == pytest.approx(tau)


# ---------------------------------------------------------------------------------------------
# PageRank
# ---------------------------------------------------------------------------------------------
def test_pagerank_matches_networkx_on_random_graphs():
    rng = np.random.default_rng(0)
    sizes = [40, 1, 25, 9, 60]
    offsets = np.cumsum([0] + sizes)
    rows, cols, weights, graphs = [], [], [], []
    for gi, size in enumerate(sizes):
        g = nx.Graph()
        g.add_nodes_from(range(size))  # isolated nodes are dangling
        for u, v in zip(rng.integers(0, size, 2 * size), rng.integers(0, size, 2 * size)):
            if u != v:
                g.add_edge(int(u), int(v), weight=float(rng.integers(1, 50)))
        graphs.append(g)
        for u, v, d in g.edges(data=True):
            rows += [offsets[gi] + u, offsets[gi] + v]
            cols += [offsets[gi] + v, offsets[gi] + u]
            weights += [d["weight"]] * 2
    n = offsets[-1]
    personalization = rng.random(n) * (rng.random(n) < 0.7)
    personalization[offsets[1]] = 1.0  # the one-node graph needs a nonzero personalisation for networkx
    groups = np.repeat(np.arange(len(sizes)), sizes)
    both_ways = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    once = sp.csr_matrix((weights[::2], (rows[::2], cols[::2])), shape=(n, n))  # each undirected edge once
    for ranks, iterations in (pagerank(both_ways, personalization, groups, len(sizes)),
                              pagerank(once, personalization, groups, len(sizes), undirected=True)):
        for gi, g in enumerate(graphs):
            p = {u: personalization[offsets[gi] + u] for u in g}
            expected = nx.pagerank(g, alpha=0.85, personalization=p, weight="weight")
            for u in g:
                assert abs(ranks[offsets[gi] + u] - expected[u]) < 1e-6
        assert (iterations >= 1).all() and ranks[offsets[-2]:].sum() == pytest.approx(1.0)


def test_pagerank_directed_graph_matches_networkx():
    rng = np.random.default_rng(5)
    g = nx.DiGraph()
    g.add_nodes_from(range(30))
    for u, v in zip(rng.integers(0, 30, 90), rng.integers(0, 30, 90)):
        if u != v:
            g.add_edge(int(u), int(v), weight=float(rng.integers(1, 9)))
    p = rng.random(30)
    adjacency = nx.to_scipy_sparse_array(g, nodelist=range(30), weight="weight", format="csr")
    ranks, _ = pagerank(adjacency, p, np.zeros(30, dtype=int), 1)
    expected = nx.pagerank(g, alpha=0.85, personalization=dict(enumerate(p)), weight="weight")
    assert max(abs(ranks[u] - expected[u]) for u in range(30)) < 1e-6


def test_pagerank_non_nodes_and_zero_personalisation():
    adjacency = sp.csr_matrix(np.array([[0, 2, 0], [2, 0, 0], [0, 0, 0]], dtype=float))
    ranks, _ = pagerank(adjacency, np.zeros(3), np.array([0, 0, -1]), 1)  # all-zero personalisation: uniform
    assert ranks == pytest.approx([0.5, 0.5, 0.0])


def test_pagerank_rejects_edges_between_groups_and_warns_when_not_converged():
    adjacency = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    with pytest.raises(ValueError, match="two groups"):
        pagerank(adjacency, np.ones(3), np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="non-node"):
        pagerank(adjacency, np.ones(3), np.array([0, 0, -1]), 1)
    with pytest.warns(UserWarning, match="did not converge"):
        ranks, iterations = pagerank(adjacency, np.array([1.0, 0, 0]), np.zeros(3, dtype=int), 1, max_iter=2)
    assert iterations.tolist() == [2] and ranks.sum() == pytest.approx(1.0)


def test_two_node_graph_has_the_closed_form_pagerank():
    graph = make_graph({"A": 2, "B": 2}, [("s", "input", "A", 0, 3, 2), ("ab", "A", "B", 0, 2, 2)])
    result = SummitResult.zeros(graph, 1)
    result.influence["ab"][0, 0, 0] = 3  # one edge: B0 - A0, weight 3
    result.activation["A"][0] = torch.tensor([10, 0], dtype=torch.int32)  # p(A0) = 1, p(B0) = 0
    g = class_graph(result, 0)
    alpha = 0.85
    (a0,), (b0,) = g.nodes["A"], g.nodes["B"]
    assert (a0.channel, b0.channel) == (0, 0)
    assert a0.pagerank == pytest.approx(1 / (1 + alpha), abs=1e-5)  # x_A = (1-a) + a x_B, x_B = a x_A
    assert b0.pagerank == pytest.approx(alpha / (1 + alpha), abs=1e-5)
    assert b0.prev_channels == [(0, 3)] and a0.prev_channels == []
    assert (a0.count, b0.count) == (10, 0)
    assert g.num_candidates == 2


# ---------------------------------------------------------------------------------------------
# Whole graphs against the oracle
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", [INCEPTION_LIKE, RESIDUAL_LIKE, GROUPED, CHAIN_ONLY],
                         ids=["inception", "residual", "grouped", "chain"])
@pytest.mark.parametrize("tau", [0.075, 0.3])
def test_graphs_match_the_reference(graph, tau):
    result = random_result(graph, num_classes=5, seed=len(graph.edges))
    assert_matches_reference(result, build_graphs(result, tau=tau, chunk_size=2), tau0=tau)


# Layers wide enough that a selection takes more than 32 nodes (the native selection sorts
# lazily, 32 nodes first, then more as the threshold rises).
WIDE = make_graph({"L0": 40, "L1": 70, "L2": 50},
                  [("a0", "input", "L0", 0, 3, 40), ("d1", "L0", "L1", 0, 40, 70), ("d2", "L1", "L2", 0, 70, 50)])


@pytest.mark.parametrize("tau", [0.075, 0.7])
def test_wide_layers_match_the_reference(tau):
    result = random_result(WIDE, num_classes=3, seed=5, density=0.6)
    graphs = build_graphs(result, tau=tau)
    assert_matches_reference(result, graphs, tau0=tau)
    if tau > 0.5:
        assert max(len(g.nodes["L1"]) for g in graphs.values()) > 32


def test_sparse_counts_and_non_contiguous_classes():
    result = random_result(INCEPTION_LIKE, num_classes=6, seed=3, density=0.15)
    result.influence["d1"][4].zero_()  # a class with fewer edges
    graphs = build_graphs(result, classes=[5, 1, 4])
    assert list(graphs) == [5, 1, 4]
    assert_matches_reference(result, graphs)


DEEP = make_graph(  # five layers: direct branches, a chain and two convs writing the same channels
    {"L0": 6, "L1": 7, "L2": 5, "L3": 8, "L4": 6},
    [("a0", "input", "L0", 0, 3, 6), ("d1", "L0", "L1", 0, 6, 7), ("e2", "L1", "e2", 0, 7, 4),
     ("p2", "e2", "L2", 0, 4, 5), ("d3", "L2", "L3", 0, 5, 8), ("s3", "L2", "L3", 0, 5, 8),
     ("d4", "L3", "L4", 0, 8, 6)])


@pytest.mark.parametrize("chosen", [["L0", "L2", "L4"], ["L1", "L4"], ["L4", "L3", "L0", "L3"], ["L2", "L3"]])
def test_layer_subsets_join_chosen_layers_by_widest_paths(chosen):
    """Between chosen layers that are not neighbours, an edge is the widest path over the full
    graph's edges; the graph's layers are the chosen ones in model order."""
    result = random_result(DEEP, num_classes=4, seed=11, density=0.3, excluded={"L2": [1]})
    graphs = build_graphs(result, layers=chosen, chunk_size=3)
    in_order = [l for l in DEEP.layers if l in chosen]
    assert all(g.layers == in_order for g in graphs.values())
    assert_matches_reference(result, graphs, chosen=in_order)


def test_all_layers_chosen_is_the_full_graph_and_unknown_layers_are_one_line():
    result = random_result(DEEP, num_classes=2, seed=2)
    assert build_graphs(result, layers=DEEP.layers) == build_graphs(result)
    with pytest.raises(ValueError, match=r"^unknown layer\(s\) 'L9'; the summary layers are L0, L1, L2, L3, L4$"):
        build_graphs(result, layers=["L0", "L9"])
    with pytest.raises(ValueError, match=r"^a graph needs at least two layers, got \['L1'\]"):
        build_graphs(result, layers=["L1", "L1"])


def test_class_without_counts_has_an_empty_graph():
    result = random_result(INCEPTION_LIKE, num_classes=2, seed=1)
    for t in result.influence.values():
        t[1].zero_()
    g = class_graph(result, 1)
    assert all(nodes == [] for nodes in g.nodes.values()) and g.num_candidates == 0
    assert g.to_summit() == {"L2": [], "L1": [], "L0": []}


# ---------------------------------------------------------------------------------------------
# The rules, one at a time
# ---------------------------------------------------------------------------------------------
def test_widest_path_and_top_n_rule():
    graph = make_graph({"P": 4, "Q": 3},
                       [("s", "input", "P", 0, 3, 4), ("dir", "P", "Q", 0, 4, 1),
                        ("neck", "P", "neck", 0, 4, 2), ("out", "neck", "Q", 1, 2, 2)])
    result = SummitResult.zeros(graph, 1)
    result.activation["P"][0] = torch.tensor([5, 5, 5, 5], dtype=torch.int32)
    result.activation["Q"][0] = torch.tensor([5, 5, 5], dtype=torch.int32)
    result.influence["dir"][0, 0] = torch.tensor([7, 0, 2, 0])  # 2 nonzero sources: n = 2
    result.influence["neck"][0] = torch.tensor([[9, 1, 4, 0], [2, 6, 0, 3]])  # neck <- P
    result.influence["out"][0] = torch.tensor([[5, 3], [1, 8]])  # Q1, Q2 <- neck
    g = class_graph(result, 0, tau=1.0)  # keep every node, so every edge shows
    prev = {n.channel: n.prev_channels for n in g.nodes["Q"]}
    # Q1 (out row 0): P0 max(min(5,9), min(3,2)) = 5; P1 max(1, 3) = 3; P2 4; P3 3 -> top 2: (P0 5), (P2 4)
    assert prev[1] == [(0, 5), (2, 4)]
    # Q2 (out row 1): P0 max(1, 2) = 2; P1 max(1, 6) = 6; P2 1; P3 3 -> (P1 6), (P3 3)
    assert prev[2] == [(1, 6), (3, 3)]
    assert prev[0] == [(0, 7), (2, 2)]  # a direct branch keeps every nonzero source
    # attr_channels of a chain's channel are in the intermediate's index space
    attr = {n.channel: n.attr_channels for n in g.nodes["Q"]}
    assert attr[2] == [(1, 8), (0, 1)]
    assert g.to_summit()["Q"][0]["attr_channels"][0]["prev_channel"] in {"0", "1"}


def coo(t: np.ndarray, shuffle: np.random.Generator | None = None) -> tuple[np.ndarray, ...]:
    """Nonzero entries of a (K, R, C) array as the native kernels take them: int64 (k, row, col),
    int32 values; in a random order when ``shuffle`` is given (the kernel takes any order)."""
    k, row, col = np.nonzero(t)
    order = shuffle.permutation(len(k)) if shuffle is not None else np.arange(len(k))
    return k[order], row[order], col[order], t[k, row, col][order].astype(np.int32)


def widest_oracle(targets, paths, keep, row_ok) -> list[tuple[int, int, int, int]]:
    """SPEC.md C.2's top-n rule written out: for every class k and kept row j, w[i] = max over m of
    min(targets[k][j][m], paths[k][m][i]) over positive counts, and the top keep[k] sources by
    (w descending, i ascending); as sorted (k, j, i, w)."""
    out = []
    for k, rows in enumerate(targets):
        for j, row in enumerate(rows):
            if not row_ok[j]:
                continue
            width = {}
            for m, a in enumerate(row):
                for i, p in enumerate(paths[k][m]):
                    if a > 0 and p > 0:
                        width[i] = max(width.get(i, 0), min(a, p))
            best = sorted(width.items(), key=lambda t: (-t[1], t[0]))[:keep[k]]
            out += [(k, j, i, w) for i, w in best]
    return sorted(out)


def native_top_widest(targets: np.ndarray, paths: np.ndarray, keep, row_ok, shuffle=None) -> list[tuple]:
    from summit_fast._C import top_widest

    kc, rows, mids = targets.shape
    out = top_widest(coo(targets, shuffle), coo(paths, shuffle), kc, rows, mids, paths.shape[2],
                     np.asarray(keep, dtype=np.int64), np.asarray(row_ok, dtype=bool))
    return sorted(zip(*(x.tolist() for x in out)))


@pytest.mark.parametrize("max_count", [3, 1000])
def test_top_widest_matches_brute_force(max_count):
    """The native kernel behind the top-n rule, on several shapes, with many ties."""
    rng = np.random.default_rng(max_count)
    for kc, j, m, c in [(3, 7, 5, 9), (3, 4, 6, 11), (3, 9, 3, 4)]:
        a = rng.integers(1, max_count + 1, (kc, j, m)) * (rng.random((kc, j, m)) < 0.5)
        b = rng.integers(1, max_count + 1, (kc, m, c)) * (rng.random((kc, m, c)) < 0.5)
        n = rng.integers(1, 6, kc)
        row_ok = rng.random(j) < 0.8
        assert native_top_widest(a, b, n, row_ok) == widest_oracle(a.tolist(), b.tolist(), n.tolist(), row_ok)


@pytest.mark.parametrize("seed", range(6))
def test_top_widest_random_orders_and_ties(seed):
    """Larger rows than a real conv's, entries in any order, counts 1-4 (ties everywhere), n from
    1 to beyond the number of sources."""
    rng = np.random.default_rng(100 + seed)
    kc, j, m, c = 4, 23, 37, 61
    a = rng.integers(1, 5, (kc, j, m)) * (rng.random((kc, j, m)) < rng.random())
    b = rng.integers(1, 5, (kc, m, c)) * (rng.random((kc, m, c)) < rng.random())
    n = rng.integers(1, c + 10, kc)
    row_ok = rng.random(j) < 0.9
    expected = widest_oracle(a.tolist(), b.tolist(), n.tolist(), row_ok)
    assert native_top_widest(a, b, n, row_ok, shuffle=rng) == expected


def test_top_widest_edge_cases():
    """An empty class, a row with fewer sources than n, an intermediate without paths, an
    excluded row, and no entries at all."""
    a = np.zeros((3, 4, 3), dtype=np.int64)
    b = np.zeros((3, 3, 5), dtype=np.int64)
    a[0, 0] = [2, 7, 0]  # class 0, row 0: through m0 (cap 2) and m1 (cap 7)
    b[0, 0] = [0, 5, 0, 0, 1]
    b[0, 1] = [3, 0, 0, 9, 0]
    a[0, 1] = [0, 0, 4]  # row 1 reads m2, which has no paths: no edges
    a[0, 2] = [1, 1, 0]  # row 2 is excluded below
    a[2, 3] = [6, 0, 0]  # class 2 has one source: fewer than n
    b[2, 0] = [0, 0, 8, 0, 0]
    keep = [10, 10, 10]  # n beyond the sources of any row; class 1 is empty
    row_ok = [True, True, False, True]
    got = native_top_widest(a, b, keep, row_ok)
    assert got == widest_oracle(a.tolist(), b.tolist(), keep, row_ok)
    assert got == [(0, 0, 0, 3), (0, 0, 1, 2), (0, 0, 3, 7), (0, 0, 4, 1), (2, 3, 2, 6)]
    assert native_top_widest(a, b, [1, 1, 1], row_ok) == [(0, 0, 3, 7), (2, 3, 2, 6)]
    empty = np.zeros((2, 3, 4), dtype=np.int64)
    assert native_top_widest(empty, np.zeros((2, 4, 5), dtype=np.int64), [2, 2], [True] * 3) == []


def test_top_widest_rejects_bad_input():
    from summit_fast._C import top_widest

    a, b = np.ones((1, 2, 3), dtype=np.int64), np.ones((1, 3, 4), dtype=np.int64)
    keep, ok = np.array([1]), np.ones(2, dtype=bool)
    with pytest.raises(ValueError, match="outside"):
        top_widest(coo(a), coo(b), 1, 2, 2, 4, keep, ok)  # mids=2, but the targets read m=2
    with pytest.raises(ValueError, match="positive"):
        top_widest(coo(a), tuple(x[:] for x in coo(b)[:3]) + (-coo(b)[3],), 1, 2, 3, 4, keep, ok)
    with pytest.raises(ValueError, match="keep"):
        top_widest(coo(a), coo(b), 1, 2, 3, 4, np.array([0]), ok)


def test_native_chunk_functions_reject_bad_plans():
    from summit_fast._C import chunk_adjacency, chunk_graphs

    counts = np.ones((2, 3, 4), dtype=np.int32)  # 2 classes, a conv 4 -> 3
    ok = np.zeros(3, dtype=bool), np.zeros(4, dtype=bool)
    plan = [([([(counts, 1)], 0)], [], *ok, 4, 0)]  # layer 1 (3 channels) from slot 4, layer 0 from 0
    indptr, indices, weights, groups = chunk_adjacency(plan, 2, 7)
    assert len(indices) == 2 * 3 * 4 and (groups >= 0).all()
    with pytest.raises(ValueError, match="input channels"):
        chunk_adjacency([([([(counts, 1)], 0)], [], np.zeros(3, dtype=bool), np.zeros(5, dtype=bool), 5, 0)], 2, 8)
    with pytest.raises(ValueError, match="classes"):
        chunk_adjacency(plan, 3, 7)
    with pytest.raises(ValueError, match="past the layer"):
        chunk_adjacency([([([(counts, 1)], 1)], [], *ok, 4, 0)], 2, 7)
    with pytest.raises(ValueError, match="width"):
        chunk_adjacency(plan, 2, 6)
    layer_slot = np.array([0, 4, 7])
    args = (np.ones(14), 0.85, 100, 1e-6, 0.075, 0.005, 185)
    ranks, kept, tau, nodes, iterations, converged, (u, v, w) = chunk_graphs(plan, 2, layer_slot, *args)
    assert nodes.tolist() == [7, 7] and converged.all() and ranks.reshape(2, 7).sum(axis=1) == pytest.approx(1.0)
    assert kept[u].all() and kept[v].all() and (w == 1).all()
    with pytest.raises(ValueError, match="personalization"):
        chunk_graphs(plan, 2, layer_slot, np.ones(13), *args[1:])
    with pytest.raises(ValueError, match="layer_slot"):
        chunk_graphs(plan, 2, np.array([0, 5, 4]), *args)
    with pytest.raises(ValueError, match="plan layer 0 does not match layer_slot"):
        chunk_graphs(plan, 2, np.array([0, 3, 7]), *args)  # the plan puts layer 1 at slot 4
    with pytest.raises(ValueError, match="one plan layer per summary layer"):
        chunk_graphs(plan, 2, np.array([0, 4, 7, 9]), np.ones(18), *args[1:])


LONG_CHAIN = make_graph(  # four convs in a chain, two of them grouped, beside a direct branch
    {"A": 6, "B": 5},
    [("s", "input", "A", 0, 3, 6), ("direct", "A", "B", 0, 6, 2), ("c1", "A", "c1", 0, 6, 8),
     ("c2", "c1", "c2", 0, 8, 8, 4), ("c3", "c2", "c3", 0, 8, 4, 2), ("c4", "c3", "B", 2, 4, 3)])


@pytest.mark.parametrize("density", [0.2, 0.6])
def test_long_chain_matches_the_reference(density):
    result = random_result(LONG_CHAIN, num_classes=4, seed=int(density * 10), density=density,
                           excluded={"A": [1], "B": [3]})
    for a in result.activation.values():  # networkx needs some personalisation on every graph
        a.add_(1)
    assert_matches_reference(result, build_graphs(result, tau=1.0), tau0=1.0)
    assert_matches_reference(result, build_graphs(result, chunk_size=3))


def test_three_conv_chain_widest_path():
    graph = make_graph({"X": 3, "Y": 2},
                       [("s", "input", "X", 0, 3, 3), ("exp", "X", "exp", 0, 3, 3),
                        ("dw", "exp", "dw", 0, 3, 3, 3), ("proj", "dw", "Y", 0, 3, 2)])
    result = SummitResult.zeros(graph, 1)
    result.activation["X"][0] = torch.tensor([1, 1, 1], dtype=torch.int32)
    result.activation["Y"][0] = torch.tensor([1, 1], dtype=torch.int32)
    result.influence["exp"][0] = torch.tensor([[9, 0, 0], [0, 4, 7], [2, 2, 2]])
    result.influence["dw"][0] = torch.tensor([[3], [8], [5]])  # depthwise: one source per channel (compact)
    result.influence["proj"][0] = torch.tensor([[6, 6, 0], [0, 9, 1]])
    g = class_graph(result, 0, tau=1.0)
    prev = {n.channel: n.prev_channels for n in g.nodes["Y"]}
    # paths X -> exp -> dw -> Y; n = floor(mean nonzero of proj rows) = 2
    # Y0: via dw0 (min 3 with exp row0: X0 9) -> X0 3; via dw1 (min 6, 8, exp row1: X1 4, X2 7) -> X1 4, X2 6
    assert prev[0] == [(2, 6), (1, 4)]
    # Y1: via dw1 (9, 8): X1 4, X2 7; via dw2 (1, 5): X0 1, X1 1, X2 1 -> X2 7, X1 4
    assert prev[1] == [(2, 7), (1, 4)]


def test_relaxation_grows_tau_until_layers_connect():
    graph = make_graph({"A": 4, "B": 4}, [("s", "input", "A", 0, 3, 4), ("ab", "A", "B", 0, 4, 4)])
    result = SummitResult.zeros(graph, 1)
    # The heaviest nodes are A0 and B0, which are not joined: B0 - A1, B1 - A0, B2 - A2, B3 - A3
    result.activation["A"][0] = torch.tensor([100, 30, 20, 10], dtype=torch.int32)
    result.activation["B"][0] = torch.tensor([100, 30, 20, 10], dtype=torch.int32)
    for j, i in [(0, 1), (1, 0), (2, 2), (3, 3)]:
        result.influence["ab"][0, j, i] = 5
    g = class_graph(result, 0)
    kept_a = {n.channel for n in g.nodes["A"]}
    kept_b = {n.channel for n in g.nodes["B"]}
    assert g.tau["A"] > 0.075 and g.tau["B"] > 0.075
    assert any(i in kept_a for n in g.nodes["B"] for i, _ in n.prev_channels)
    assert kept_b >= {0} and kept_a >= {0}
    assert_matches_reference(result, {0: g})


def test_excluded_channels_are_never_kept():
    excluded = {"L0": [0, 1, 2], "L1": [0, 4], "L2": [2, 3, 4, 5]}
    result = random_result(INCEPTION_LIKE, num_classes=4, seed=7, density=0.7, excluded=excluded)
    graphs = build_graphs(result, tau=1.0)
    for g in graphs.values():
        for layer, nodes in g.nodes.items():
            assert nodes, "tau=1 keeps every non-excluded node"
            layers = INCEPTION_LIKE.layers
            prev_layer = layers[layers.index(layer) - 1] if layer != layers[0] else None
            for n in nodes:
                assert n.channel not in excluded[layer]
                assert all(p not in excluded.get(prev_layer, []) for p, _ in n.prev_channels)
    assert_matches_reference(result, graphs, tau0=1.0)


def test_summit_json_shape():
    result = random_result(INCEPTION_LIKE, num_classes=1, seed=11)
    summit = class_graph(result, 0).to_summit()
    assert list(summit) == ["L2", "L1", "L0"]
    for layer, nodes in summit.items():
        for node in nodes:
            assert set(node) == {"channel", "count", "layer", "pagerank", "prev_channels", "attr_channels"}
            assert node["layer"] == layer
            assert isinstance(node["channel"], int) and isinstance(node["count"], int)
            assert isinstance(node["pagerank"], float)
            assert all(isinstance(p["prev_channel"], int) and isinstance(p["inf"], int) for p in node["prev_channels"])
            assert all(isinstance(p["prev_channel"], str) and isinstance(p["inf"], int) for p in node["attr_channels"])


def test_invalid_arguments():
    result = random_result(INCEPTION_LIKE, num_classes=2, seed=0)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] not counted in this result; its classes \(result.class_ids\) are 0..1"):
        build_graphs(result, classes=[2])
    with pytest.raises(ValueError, match="tau"):
        build_graphs(result, tau=0.0)

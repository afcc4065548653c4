"""Per-class attribution graphs (SPEC.md C) from the counts of a :class:`SummitResult`.

Public API::

    build_graphs(result, classes=None, layers=None) -> {class: ClassGraph}   # all (or some) classes
    attr_sources(result)               -> per layer, which conv and tensor attr_channels count in
    iter_graphs(result, classes=None)  -> Iterator[ClassGraph]  # the same, streamed chunk by chunk
    class_graph(result, c)             -> ClassGraph
    ClassGraph.to_summit()             -> Summit's ag-{c}.json layout (layers last to first)
    pagerank(adjacency, personalization, groups, num_groups)   # many graphs at once, as networkx

Classes are the model's class indices, ``result.class_ids`` (the rows' classes: 0..K-1 unless
the run counted only some classes).

What a graph is. For class c, the nodes are the summary-layer channels with at least one edge;
an edge joins channel i of layer l-1 and channel j of layer l with weight

- ``I_e[c, j', i]`` through a conv ``e`` that reads layer l-1 and writes j (a direct branch), or
- the widest path through intermediate tensors (a chain of convs ``l-1 -> mid -> ... -> l`` of
  any length): the max over paths of the min of the counts along the path; per target j only
  the top ``n`` sources are kept (ties by ascending source), ``n = max(1, floor(mean over the
  direct-branch channels of layer l of their number of nonzero sources))`` (Summit's rule). A
  layer without a direct branch takes that mean over the channels written by its chains' last convs.

A grouped conv's compact counts (C_out, C_in/groups) are mapped to its real input channels.
Where two convs write the same channel (a residual sum of two branches), the larger weight wins.
Excluded channels (``result.params["excluded"]``) are removed first: never nodes, edges or kept.

Importance is personalised PageRank on the undirected weighted graph (alpha 0.85,
personalisation from A_l[c] normalised per layer by its max over non-excluded channels, dangling
nodes redistribute by the personalisation, at most 100 iterations, stop when the L1 change is
below N * 1e-6: the conventions of ``networkx.pagerank``, which the tests compare against). A
class whose nodes all have zero activation counts gets a uniform personalisation (networkx
would raise ZeroDivisionError).

Layer subsets (``layers=[...]``, in any order; the graph keeps the model's order): the edges
between consecutive chosen layers ``a`` and ``b`` with layers between them are the widest paths
through the full graph's edges (the edges above, between every pair of consecutive summary layers):
``w(i, j) = max over routes i -> m_1 -> ... -> j of the min of the edge weights along it``. No
top-``n`` rule applies to them again (the edges they are made of had it already); chosen layers
that are neighbours in the model are joined as above.

Selection, per layer: the shortest prefix of the channels by PageRank (descending, ties by
channel) whose sum reaches ``tau_l`` times the layer's sum, ``tau_l = 0.075`` to begin with;
while some layer l > 0 has no kept edge to a kept node of layer l-1, ``tau_l`` and ``tau_{l-1}``
grow by 0.005 for every such l (capped at 1.0), and selection runs again. ``attr_channels``: the
top 3 raw sources of the conv that writes the channel, in that conv's input channels.

How it runs. A chunk of classes is one call into ``summit_fast._C`` (``chunk_graphs``, GIL
released), one class per OpenMP thread from its dense counts to its kept nodes: the class's
edges as CSR rows (the widest-path top-n rule is a merge over path lists sorted by width that
stops at the n-th source, never forming the max-min product), PageRank on them while they are
in cache, then selection. Python turns the kept nodes into :class:`Node` objects. See
bench/RESULTS.md for timings.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ._native import import_error, native
from .discovery import ModelGraph
from .result import SummitResult

ALPHA = 0.85
MAX_ITER = 100
TOL = 1.0e-6
TAU = 0.075
TAU_STEP = 0.005
ATTR_TOP = 3
CHUNK = 8  # classes per native call (one class per thread at a time)


# ---------------------------------------------------------------------------------------------
# Public result types
# ---------------------------------------------------------------------------------------------
@dataclass
class Node:
    """One kept channel of a class graph.

    ``prev_channels``: (channel of the previous layer, edge weight) for every kept edge to a kept
    node of the previous layer, by weight descending then channel. ``attr_channels``: the top
    ``ATTR_TOP`` (source channel, count) of the raw influence counts of the conv that writes this
    channel, in that conv's source index space (an intermediate's channels for a chain).
    """

    layer: str
    channel: int
    count: int
    pagerank: float
    prev_channels: list[tuple[int, int]] = field(default_factory=list)
    attr_channels: list[tuple[int, int]] = field(default_factory=list)

    def to_summit(self) -> dict:
        """The node as in Summit's ``ag-{c}.json`` (attr_channels' source is a string there)."""
        return {"channel": self.channel, "count": self.count, "layer": self.layer, "pagerank": self.pagerank,
                "prev_channels": [{"prev_channel": ch, "inf": w} for ch, w in self.prev_channels],
                "attr_channels": [{"prev_channel": str(ch), "inf": w} for ch, w in self.attr_channels]}


@dataclass
class ClassGraph:
    """The attribution graph of one class: kept nodes per layer (first layer first), each layer's
    nodes by PageRank descending, and the final selection threshold of every layer."""

    target_class: int  # the model's class index (one of result.class_ids)
    nodes: dict[str, list[Node]]
    tau: dict[str, float]
    num_candidates: int  # nodes of the full graph before selection

    @property
    def layers(self) -> list[str]:
        return list(self.nodes)

    def to_summit(self) -> dict:
        """``{layer: [node, ...]}`` with layers from last to first, as Summit's ``ag-{c}.json``."""
        return {layer: [n.to_summit() for n in self.nodes[layer]] for layer in reversed(self.nodes)}


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def build_graphs(result: SummitResult, classes: Iterable[int] | None = None, *, tau: float = TAU,
                 tau_step: float = TAU_STEP, chunk_size: int = CHUNK,
                 layers: Iterable[str] | None = None) -> dict[int, ClassGraph]:
    """Attribution graphs of ``classes`` (the model's class indices, default: all of
    ``result.class_ids``), as ``{class: ClassGraph}``; ``layers``: over these summary layers only
    (default all; see the module's docstring)."""
    return {g.target_class: g for g in iter_graphs(result, classes, tau=tau, tau_step=tau_step,
                                                   chunk_size=chunk_size, layers=layers)}


def class_graph(result: SummitResult, c: int, *, tau: float = TAU, tau_step: float = TAU_STEP,
                layers: Iterable[str] | None = None) -> ClassGraph:
    """The attribution graph of class ``c`` (the model's class index, one of ``result.class_ids``)."""
    return next(iter_graphs(result, [c], tau=tau, tau_step=tau_step, layers=layers))


def iter_graphs(result: SummitResult, classes: Iterable[int] | None = None, *, tau: float = TAU,
                tau_step: float = TAU_STEP, chunk_size: int = CHUNK,
                layers: Iterable[str] | None = None) -> Iterator[ClassGraph]:
    """Yield the graphs of ``classes`` in order, ``chunk_size`` classes computed at a time
    (bounded memory: use this to stream thousands of classes); ``layers``: over these summary
    layers only (at least two; default all)."""
    if not 0.0 < tau <= 1.0 or not tau_step > 0.0:
        raise ValueError(f"need 0 < tau <= 1 and tau_step > 0, got tau={tau}, tau_step={tau_step}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not result.params.get("influence", True):
        raise ValueError("the result has no influence counts (it was aggregated with influence=False); "
                         "attribution graphs need them")
    row_of = {c: k for k, c in enumerate(result.class_ids)}
    classes = list(row_of) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if c not in row_of]
    if bad:
        raise ValueError(f"class(es) {bad[:5]} not counted in this result; its classes (result.class_ids) are "
                         f"{_ranges(result.class_ids)}")
    layout = _Layout(result.graph, result.params.get("excluded", {}))
    if layers is not None:
        layout = layout.restricted(chosen_layers(result.layers, layers))
    for start in range(0, len(classes), chunk_size):
        part = classes[start:start + chunk_size]
        yield from _Chunk(result, layout, [row_of[c] for c in part], part, tau, tau_step).graphs()


def chosen_layers(all_layers: list[str], layers: Iterable[str]) -> list[str]:
    """``layers`` checked against the summary layers ``all_layers`` and put in their order; raises
    a one-line ValueError for an unknown layer or fewer than two layers."""
    names = list(dict.fromkeys(layers))
    unknown = [name for name in names if name not in all_layers]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(map(repr, unknown))}; the summary layers are "
                         f"{', '.join(all_layers)}")
    if len(names) < 2:
        raise ValueError(f"a graph needs at least two layers, got {names}; the summary layers are "
                         f"{', '.join(all_layers)}")
    return [name for name in all_layers if name in names]


def attr_sources(result: SummitResult, layers: Iterable[str] | None = None) -> dict[str, list[dict]]:
    """What ``attr_channels`` count in, per summary layer (default all): for each conv that writes
    the layer, ``{"offset", "channels", "conv", "source"}``: its output lands in channels
    ``[offset, offset + channels)`` and its sources are channels of ``source`` (the previous
    summary layer, the input node, or an intermediate: the output of the conv of that name). A
    channel that two convs write takes the first that covers it, as ``attr_channels`` does."""
    chosen = result.layers if layers is None else list(layers)
    return {layer: [{"offset": e.target_offset, "channels": e.out_channels, "conv": e.conv, "source": e.source}
                    for e in result.graph.edges if e.target == layer and e.target != e.conv] for layer in chosen}


def _ranges(ids: list[int]) -> str:
    """``0..999`` for consecutive ids, else the first few."""
    if len(ids) > 2 and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")


def pagerank(adjacency: sp.spmatrix, personalization: np.ndarray, groups: np.ndarray, num_groups: int, *,
             undirected: bool = False, alpha: float = ALPHA, max_iter: int = MAX_ITER,
             tol: float = TOL) -> tuple[np.ndarray, np.ndarray]:
    """Personalised PageRank of many independent graphs at once, as ``networkx.pagerank``.

    Args:
        adjacency: (n, n) weighted adjacency, row = from; entries never join two groups.
        personalization: (n,) nonnegative; normalised to sum 1 within each group (uniform within a
            group whose sum is 0).
        groups: (n,) the graph each node belongs to, or -1 for a slot that is not a node.
        num_groups: number of graphs.
        undirected: the graph is undirected and ``adjacency`` lists each edge once (u, v), in
            either triangle: the walk uses it in both directions.

    Returns (ranks (n,), 0 for non-nodes; iterations used per group). Each group starts from the
    uniform vector and stops on its own when its L1 change falls below ``N_group * tol``; a
    group that does not converge in ``max_iter`` iterations keeps its last iterate (with a
    warning) where networkx would raise. Runs natively, one group per thread; the walk's
    weights are float32 (exact for counts below 2**24), everything else float64.
    """
    adjacency = sp.csr_matrix(adjacency)
    n = len(groups)
    if adjacency.shape != (n, n):
        raise ValueError(f"adjacency is {adjacency.shape}, expected ({n}, {n})")
    if n >= 2**31:
        raise ValueError(f"pagerank takes fewer than 2**31 nodes, got {n}")
    as_array = np.ascontiguousarray
    ranks, iterations, converged = _native().pagerank(
        as_array(adjacency.indptr, np.int64), as_array(adjacency.indices, np.int32),
        as_array(adjacency.data, np.float32), as_array(personalization, np.float64), as_array(groups, np.int64),
        num_groups, undirected, alpha, max_iter, tol)
    _warn_unconverged(~converged, max_iter, "groups", np.arange(num_groups))
    return ranks, iterations


def _warn_unconverged(late: np.ndarray, max_iter: int, what: str, ids) -> None:
    if late.any():
        warnings.warn(f"pagerank: {int(late.sum())} graph(s) did not converge in {max_iter} iterations "
                      f"({what} {[int(ids[i]) for i in np.flatnonzero(late)[:5]]}); keeping the last iterate",
                      stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Static layout: which convs connect which layers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Branch:
    """Convs from the one writing summary layer channels from ``offset`` on back to the one
    reading the previous summary layer (``chain[0]`` writes the layer; length 1 = direct)."""

    chain: tuple[str, ...]
    offset: int


class _Layout:
    """The static structure of a model graph that every class shares."""

    def __init__(self, graph: ModelGraph, excluded: dict):
        self.layers = list(graph.layers)
        self.channels = [graph.channels[l] for l in self.layers]
        self.offsets = np.concatenate([[0], np.cumsum(self.channels)]).astype(np.int64)
        self.width = int(self.offsets[-1])  # node slots per class
        self.layer_of_slot = np.repeat(np.arange(len(self.layers)), self.channels)
        self.excluded = []
        for layer, c in zip(self.layers, self.channels):
            mask = np.zeros(c, dtype=bool)
            mask[list(excluded.get(layer, []))] = True
            self.excluded.append(mask)
        producer = {e.conv: e for e in graph.edges if e.target == e.conv}
        self.writers: list[list[tuple[str, int, int]]] = [[] for _ in self.layers]  # (conv, offset, out)
        self.branches: list[list[_Branch]] = [[] for _ in self.layers]
        for e in graph.edges:
            if e.target == e.conv:
                continue
            if e.target not in self.layers:
                raise ValueError(f"conv {e.conv!r} writes {e.target!r}, which is neither a summary layer nor "
                                 "its own intermediate")
            li = self.layers.index(e.target)
            self.writers[li].append((e.conv, e.target_offset, e.out_channels))
            if li == 0:
                continue  # the input node is not part of the graph: attr_channels only
            chain, source = [e.conv], e.source
            while source in producer:
                chain.append(source)
                source = producer[source].source
            if source != self.layers[li - 1]:
                raise ValueError(f"conv {chain[-1]!r} on the way into layer {e.target!r} reads {source!r}, "
                                 f"not the previous summary layer {self.layers[li - 1]!r}")
            self.branches[li].append(_Branch(tuple(chain), e.target_offset))
        # identity edges: skips from the previous summary layer (residual additions)
        self.skips: list[list] = [[] for _ in self.layers]
        for skip in graph.counted_skips():
            self.skips[self.layers.index(skip.target)].append(skip)
        self.convs = {e.conv: e for e in graph.edges}
        self.full, self.index = self, list(range(len(self.layers)))

    def restricted(self, layers: list[str]) -> _Layout:
        """This layout's node slots over some of its summary layers (in model order): ``index``
        maps each to its position in ``full``, whose branches and skips the edges come from."""
        sub = copy.copy(self)
        sub.index = [self.layers.index(layer) for layer in layers]
        sub.layers = list(layers)
        sub.channels = [self.channels[i] for i in sub.index]
        sub.offsets = np.concatenate([[0], np.cumsum(sub.channels)]).astype(np.int64)
        sub.width = int(sub.offsets[-1])
        sub.layer_of_slot = np.repeat(np.arange(len(layers)), sub.channels)
        sub.excluded = [self.excluded[i] for i in sub.index]
        sub.writers = [self.writers[i] for i in sub.index]
        return sub


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _native():
    """The compiled module, or an error that says why it is missing."""
    if native is None:
        raise RuntimeError(f"attribution graphs need the native kernels: {import_error}")
    return native


def _top_sources(rows: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of counts (n, C): the ``top`` largest (index, count), count descending then index
    ascending; entries with count 0 come back with count 0 (the caller drops them)."""
    n, c = rows.shape
    t = min(top, c)
    key = rows.astype(np.int64) * c + (c - 1 - np.arange(c))  # one total order: count desc, index asc
    part = np.argpartition(-key, t - 1, axis=1)[:, :t]
    idx = np.take_along_axis(part, np.argsort(-np.take_along_axis(key, part, axis=1), axis=1), axis=1)
    return idx, np.take_along_axis(rows, idx, axis=1)


# ---------------------------------------------------------------------------------------------
# One chunk of classes
# ---------------------------------------------------------------------------------------------
class _Chunk:
    """The graphs of a few classes (count ``rows``, whose model class indices are ``classes``),
    computed together: node slot ``k * width + offset[l] + ch`` is channel ch of layer l for the
    chunk's k-th class."""

    def __init__(self, result: SummitResult, layout: _Layout, rows: list[int], classes: list[int], tau: float,
                 tau_step: float):
        self.result, self.layout, self.rows, self.classes = result, layout, rows, classes
        self.tau0, self.tau_step = tau, tau_step
        self.kc = len(classes)
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._full_adjacency: sp.csr_matrix | None = None

    def _counts(self, name: str, kind: str = "influence") -> np.ndarray:
        """This chunk's slice of a count tensor (``kind``: influence, activation or skip), as numpy
        (a view when the classes are contiguous)."""
        key = (kind, name)
        if key not in self._cache:
            t = getattr(self.result, kind)[name]
            lo, hi = self.rows[0], self.rows[-1] + 1
            part = t[lo:hi] if self.rows == list(range(lo, hi)) else t[torch.as_tensor(self.rows)]
            self._cache[key] = part.detach().cpu().numpy()
        return self._cache[key]

    def _plan(self) -> list[tuple]:
        """What the native chunk functions take per summary layer after the first: its branches
        (conv chains with this chunk's counts), skips, excluded masks and first slots. Between
        chosen layers that are not neighbours in the model: one branch of the widest-path weights."""
        lay = self.layout
        plan = []
        for p in range(1, len(lay.layers)):
            a, b = lay.index[p - 1], lay.index[p]
            edges = self._edges_into(b) if b == a + 1 else ([([(self._widest_through(a, b), 1)], 0)], [])
            plan.append((*edges, lay.excluded[p], lay.excluded[p - 1], int(lay.offsets[p]), int(lay.offsets[p - 1])))
        return plan

    def _edges_into(self, li: int) -> tuple[list, list]:
        """(branches, skips) into the full layout's layer ``li`` from layer ``li - 1``."""
        full = self.layout.full
        branches = [([(self._counts(conv), full.convs[conv].spec.groups) for conv in br.chain], br.offset)
                    for br in full.branches[li]]
        skips = [(self._counts(skip.key, "skip"), skip.source_offset, skip.target_offset) for skip in full.skips[li]]
        return branches, skips

    def _widest_through(self, a: int, b: int) -> np.ndarray:
        """(classes, C_b, C_a) int32: per class the widest path from each channel of the full
        layout's layer ``a`` to each of layer ``b`` over the full graph's edges."""
        full = self.layout.full
        if self._full_adjacency is None:
            plan = [(*self._edges_into(li), full.excluded[li], full.excluded[li - 1], int(full.offsets[li]),
                     int(full.offsets[li - 1])) for li in range(1, len(full.layers))]
            indptr, indices, weights, _ = _native().chunk_adjacency(plan, self.kc, full.width)
            n = self.kc * full.width
            self._full_adjacency = sp.csr_matrix((weights.astype(np.int32), indices, indptr), shape=(n, n))
        # from the widest paths into layer li - 1, those into li: for each edge m -> j of class k,
        # min(its weight, the paths into m) is a candidate for j, and the widest candidate wins
        width = torch.eye(full.channels[a], dtype=torch.int32).mul_(np.iinfo(np.int32).max).expand(self.kc, -1, -1)
        for li in range(a + 1, b + 1):
            k, j, m, w = self._edges_of(li)
            candidates = torch.minimum(w[:, None], width[k, m])
            out = torch.zeros(self.kc * full.channels[li], full.channels[a], dtype=torch.int32)
            index = (k * full.channels[li] + j)[:, None].expand_as(candidates)
            width = out.scatter_reduce_(0, index, candidates, "amax").view(self.kc, full.channels[li], -1)
        return width.numpy()

    def _edges_of(self, li: int) -> tuple[torch.Tensor, ...]:
        """The full graph's edges into the full layout's layer ``li`` as (class, channel of li,
        channel of li - 1, weight), each a 1-D tensor."""
        full, adjacency = self.layout.full, self._full_adjacency
        rows, cols = int(full.offsets[li]), int(full.offsets[li - 1])
        parts = []
        for k in range(self.kc):
            base = k * full.width
            block = adjacency[base + rows:base + rows + full.channels[li], base + cols:base + cols + full.channels[li - 1]]
            block = block.tocoo()
            parts.append(np.stack([np.full(block.nnz, k), block.row, block.col, block.data]).astype(np.int64))
        k, j, m, w = torch.from_numpy(np.concatenate(parts, axis=1))
        return k, j, m, w.to(torch.int32)

    def _adjacency(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The chunk's full graphs (what PageRank ranks; the benchmark hands them to networkx):
        CSR (indptr, indices, weights) over the chunk's slots, each edge once in the row of its
        node in the later layer, and per slot its class when it is a node, else -1."""
        indptr, indices, weights, groups = _native().chunk_adjacency(self._plan(), self.kc, self.layout.width)
        return (indptr, indices, weights), groups

    # -- graphs -----------------------------------------------------------------------------
    def graphs(self) -> list[ClassGraph]:
        max_steps = int(np.ceil((1.0 - self.tau0) / self.tau_step - 1e-9))  # steps that take tau to 1.0
        ranks, kept, tau, node_counts, _, converged, kept_edges = _native().chunk_graphs(
            self._plan(), self.kc, self.layout.offsets, self._personalization(), ALPHA, MAX_ITER, TOL, self.tau0,
            self.tau_step, max_steps)
        _warn_unconverged(~converged, MAX_ITER, "classes", self.classes)
        return self._assemble(ranks, kept, tau, node_counts, kept_edges)

    def _personalization(self) -> np.ndarray:
        """Per slot: A_l[c, ch] / max over non-excluded channels of A_l[c, :] (0 when that is 0)."""
        parts = []
        for li, layer in enumerate(self.layout.layers):
            a = self._counts(layer, "activation").astype(np.float64)
            a[:, self.layout.excluded[li]] = 0.0
            top = a.max(axis=1, keepdims=True)
            parts.append(np.divide(a, top, out=np.zeros_like(a), where=top > 0))
        return np.concatenate(parts, axis=1).reshape(-1)

    def _assemble(self, ranks, kept, tau, node_counts, kept_edges) -> list[ClassGraph]:
        """The ClassGraphs from chunk_graphs' outputs: per slot rank and kept mask, tau per class
        and layer, nodes per class, and the kept edges (from, to, weight) as chunk slots."""
        lay = self.layout
        width = lay.width
        # kept nodes by class, then PageRank descending, then slot (channel within a layer)
        slots = np.flatnonzero(kept)
        slots = slots[np.lexsort((slots, -ranks[slots], slots // width))]
        k, local = np.divmod(slots, width)
        layer = lay.layer_of_slot[local]
        activation = np.concatenate([self._counts(name, "activation") for name in lay.layers], axis=1)
        attr = self._attr_channels(slots)
        u, nbr, w = kept_edges
        order = np.lexsort((nbr, -w, u))
        nbr_local = nbr[order] % width
        prev: dict[int, list[tuple[int, int]]] = {}
        for s, t, wt in zip(u[order].tolist(), (nbr_local - lay.offsets[lay.layer_of_slot[nbr_local]]).tolist(),
                            w[order].astype(np.int64).tolist()):
            prev.setdefault(s, []).append((t, wt))
        columns = zip(slots.tolist(), layer.tolist(), (local - lay.offsets[layer]).tolist(),
                      activation[k, local].tolist(), ranks[slots].tolist())
        class_end = np.searchsorted(k, np.arange(1, self.kc + 1)).tolist()
        graphs, done = [], 0
        for kk, c in enumerate(self.classes):
            nodes: dict[str, list[Node]] = {name: [] for name in lay.layers}
            for _, (s, li, ch, count, rank) in zip(range(class_end[kk] - done), columns):
                name = lay.layers[li]
                nodes[name].append(Node(name, ch, count, rank, prev.get(s, []), attr.get(s, [])))
            done = class_end[kk]
            graphs.append(ClassGraph(c, nodes, {l: float(t) for l, t in zip(lay.layers, tau[kk])},
                                     int(node_counts[kk])))
        return graphs

    def _attr_channels(self, kept_slots: np.ndarray) -> dict[int, list[tuple[int, int]]]:
        """Per kept slot: the top raw sources of the first conv that writes its channel."""
        lay = self.layout
        width = lay.width
        k, local = kept_slots // width, kept_slots % width
        li = lay.layer_of_slot[local]
        ch = local - lay.offsets[li]
        out: dict[int, list[tuple[int, int]]] = {}
        claimed = np.zeros(len(kept_slots), dtype=bool)
        for layer_index, writers in enumerate(lay.writers):
            for conv, offset, n_out in writers:
                sel = np.flatnonzero(~claimed & (li == layer_index) & (ch >= offset) & (ch < offset + n_out))
                if not len(sel):
                    continue
                claimed[sel] = True
                idx, val = _top_sources(self._counts(conv)[k[sel], ch[sel] - offset], ATTR_TOP)
                idx = lay.convs[conv].source_channel((ch[sel] - offset)[:, None], idx)
                for s, i_row, v_row in zip(kept_slots[sel].tolist(), idx.tolist(), val.tolist()):
                    out[int(s)] = [(i, v) for i, v in zip(i_row, v_row) if v > 0]
        return out

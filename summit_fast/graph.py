"""Per-class attribution graphs (SPEC.md C) from the counts of a :class:`SummitResult`.

Public API::

    build_graphs(result, classes=None) -> {class: ClassGraph}   # all (or some) classes
    iter_graphs(result, classes=None)  -> Iterator[ClassGraph]  # the same, streamed chunk by chunk
    class_graph(result, c)             -> ClassGraph
    ClassGraph.to_summit()             -> Summit's ag-{c}.json layout (layers last to first)
    pagerank(adjacency, personalization, groups, num_groups)   # many graphs at once, as networkx

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

Selection, per layer: the shortest prefix of the channels by PageRank (descending, ties by
channel) whose sum reaches ``tau_l`` times the layer's sum, ``tau_l = 0.075`` to begin with;
while some layer l > 0 has no kept edge to a kept node of layer l-1, ``tau_l`` and ``tau_{l-1}``
grow by 0.005 for every such l (capped at 1.0), and selection runs again. ``attr_channels``: the
top 3 raw sources of the conv that writes the channel, in that conv's input channels.

How it runs. A chunk of classes is computed at once with numpy/scipy, no Python loop over
classes, edges or nodes: counts become coordinate lists; the widest-path top-n rule runs as a
band-by-band search in decreasing value that never forms the full max-min product
(:func:`_top_widest`); PageRank is one power iteration over a block-diagonal sparse matrix
holding the chunk's graphs, each class stopping on its own; selection and its relaxation loop
run on the whole chunk. On the 2-core development VM an InceptionV1-sized class takes ~25-55 ms
(bench/bench_graph.py; Summit's NetworkX code took ~30 s).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .discovery import ModelGraph
from .result import SummitResult

ALPHA = 0.85
MAX_ITER = 100
TOL = 1.0e-6
TAU = 0.075
TAU_STEP = 0.005
ATTR_TOP = 3
CHUNK = 8  # classes per vectorised chunk (more only adds cache misses)


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

    target_class: int
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
                 tau_step: float = TAU_STEP, chunk_size: int = CHUNK) -> dict[int, ClassGraph]:
    """Attribution graphs of ``classes`` (default: all), as ``{class: ClassGraph}``."""
    return {g.target_class: g for g in iter_graphs(result, classes, tau=tau, tau_step=tau_step,
                                                   chunk_size=chunk_size)}


def class_graph(result: SummitResult, c: int, *, tau: float = TAU, tau_step: float = TAU_STEP) -> ClassGraph:
    """The attribution graph of class ``c``."""
    return next(iter_graphs(result, [c], tau=tau, tau_step=tau_step))


def iter_graphs(result: SummitResult, classes: Iterable[int] | None = None, *, tau: float = TAU,
                tau_step: float = TAU_STEP, chunk_size: int = CHUNK) -> Iterator[ClassGraph]:
    """Yield the graphs of ``classes`` in order, ``chunk_size`` classes computed at a time
    (bounded memory: use this to stream thousands of classes)."""
    if not 0.0 < tau <= 1.0 or not tau_step > 0.0:
        raise ValueError(f"need 0 < tau <= 1 and tau_step > 0, got tau={tau}, tau_step={tau_step}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not result.params.get("influence", True):
        raise ValueError("the result has no influence counts (it was aggregated with influence=False); "
                         "attribution graphs need them")
    k_total = result.num_classes
    classes = list(range(k_total)) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < k_total]
    if bad:
        raise ValueError(f"class index(es) {bad[:5]} out of range for {k_total} classes")
    layout = _Layout(result.graph, result.params.get("excluded", {}))
    scratch = _scratch(min(chunk_size, len(classes)) * layout.merged_keys)
    for start in range(0, len(classes), chunk_size):
        try:
            graphs = _Chunk(result, layout, classes[start:start + chunk_size], tau, tau_step, scratch).graphs()
        except BaseException:
            _SCRATCH.buffer = None  # may hold a partial state
            raise
        yield from graphs


_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """A zeroed int64 work buffer of at least ``size`` entries for _top_widest, kept per thread
    between calls: fresh memory costs a page fault per page on first use."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.buffer = np.zeros(size, dtype=np.int64)
    return buffer


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
    warning) where networkx would raise. The sparse products run in float32 (their rounding moves
    a rank by ~1e-10, far below the 1e-6 the tests allow), everything else in float64.
    """
    adjacency = sp.csr_matrix(adjacency)
    groups = np.asarray(groups)
    is_node = groups >= 0
    g = np.where(is_node, groups, num_groups)  # non-nodes go to a spare last bin

    def per_group(values=None):  # sums over each group's nodes, and the spare bin
        return np.bincount(g, weights=values, minlength=num_groups + 1)

    sizes = per_group()
    sizes[-1] = 0
    p = np.where(is_node, np.asarray(personalization, dtype=np.float64), 0.0)
    p = np.where(is_node & (per_group(p) == 0)[g], 1.0, p)  # an all-zero group: uniform
    p /= np.maximum(per_group(p), 1e-300)[g]
    out_weight = np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel()
    if undirected:
        out_weight += np.asarray(adjacency.sum(axis=0), dtype=np.float64).ravel()
    inv_out = np.divide(1.0, out_weight, out=np.zeros_like(out_weight), where=out_weight != 0)
    dangling = np.flatnonzero(is_node & (out_weight == 0))
    # float32 copy built from the arrays (scipy's astype would sort the indices first)
    walk = sp.csr_matrix((adjacency.data.astype(np.float32), adjacency.indices, adjacency.indptr), shape=adjacency.shape)
    teleport = (1.0 - alpha) * p
    x = np.where(is_node, 1.0 / np.maximum(sizes, 1)[g], 0.0)
    active = sizes > 0
    iterations = np.zeros(num_groups + 1, dtype=np.int64)
    for _ in range(max_iter):
        z = (x * inv_out).astype(np.float32)
        new = walk.T @ z  # x @ A
        if undirected:
            new += walk @ z
        new = alpha * new + teleport
        if len(dangling):  # their rank goes where the personalisation points
            lost = np.bincount(g[dangling], weights=x[dangling], minlength=num_groups + 1)
            new += alpha * lost[g] * p
        change = per_group(np.abs(new - x))
        if not active.all():
            new = np.where(active[g], new, x)
        x = new
        iterations += active
        active &= change >= sizes * tol
        if not active.any():
            break
    if active.any():
        warnings.warn(f"pagerank: {int(active.sum())} graph(s) did not converge in {max_iter} iterations "
                      f"(groups {np.flatnonzero(active)[:5].tolist()}); keeping the last iterate", stacklevel=2)
    return x, iterations[:num_groups]


# ---------------------------------------------------------------------------------------------
# Static layout: which convs connect which layers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Branch:
    """Convs from the one writing summary layer channels [offset, offset+out) back to the one
    reading the previous summary layer (``chain[0]`` writes the layer; length 1 = direct)."""

    chain: tuple[str, ...]
    offset: int
    out: int


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
            self.branches[li].append(_Branch(tuple(chain), e.target_offset, e.out_channels))
        # identity edges: skips from the previous summary layer (residual additions)
        self.skips: list[list] = [[] for _ in self.layers]
        for skip in graph.counted_skips():
            self.skips[self.layers.index(skip.target)].append(skip)
        self.overlapping = [_overlaps([(b.offset, b.out) for b in bs]) or bool(sk)
                            for bs, sk in zip(self.branches, self.skips)]
        # per class, the (target, source) pairs of all chains: the size of _top_widest's scratch
        self.merged_keys = sum(b.out * self.channels[li - 1] for li, bs in enumerate(self.branches)
                               for b in bs if len(b.chain) > 1)
        self.convs = {e.conv: e for e in graph.edges}


def _overlaps(ranges: list[tuple[int, int]]) -> bool:
    covered = np.zeros(max((o + n for o, n in ranges), default=0), dtype=np.int64)
    for o, n in ranges:
        covered[o:o + n] += 1
    return bool((covered > 1).any())


# ---------------------------------------------------------------------------------------------
# Sparse helpers (a chunk's counts as flat coordinate lists)
# ---------------------------------------------------------------------------------------------
@dataclass
class _Coo:
    """Nonzero entries of a (classes, rows, cols) tensor, sorted by (class, row, col)."""

    k: np.ndarray
    row: np.ndarray
    col: np.ndarray
    val: np.ndarray

    @classmethod
    def from_dense(cls, t: np.ndarray) -> "_Coo":
        flat = np.flatnonzero(t != 0)  # numpy finds nonzeros of a bool array ~3x faster
        val = t.reshape(-1)[flat]
        rows, cols = t.shape[1:]
        k, rc = np.divmod(flat, rows * cols)
        row, col = np.divmod(rc, cols)
        return cls(k, row, col, val)

    def select(self, mask: np.ndarray) -> "_Coo":
        return _Coo(self.k[mask], self.row[mask], self.col[mask], self.val[mask])


def _max_dedupe(k, row, col, val, shape) -> _Coo:
    """Unique (k, row, col) with the max of their values, sorted."""
    buf = np.zeros(int(np.prod(shape)), dtype=val.dtype)
    np.maximum.at(buf, (k * shape[1] + row) * shape[2] + col, val)
    return _Coo.from_dense(buf.reshape(shape))


def _widest(ca: _Coo, b: _Coo, kc: int, m_dim: int) -> tuple[np.ndarray, ...]:
    """Candidates of the max-min product of ``ca`` (K, J, M) and ``b`` (K, M, I): for every path
    j <- m <- i, ``(k, j, i, min(ca[k, j, m], b[k, m, i]))``, not yet deduplicated."""
    row_counts = np.bincount(b.k * m_dim + b.row, minlength=kc * m_dim)
    row_start = np.cumsum(row_counts) - row_counts
    g = ca.k * m_dim + ca.col
    src, pos = _expand(row_start[g], row_counts[g])
    return ca.k[src], ca.row[src], b.col[pos], np.minimum(ca.val[src], b.val[pos])


def _expand(start: np.ndarray, length: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [start, start + length): (id of the range (default: its index), position) of
    every element."""
    which = np.repeat(np.arange(len(start)) if ids is None else ids, length)
    pos = np.arange(len(which)) + np.repeat(start - np.cumsum(length) + length, length)
    return which, pos


@dataclass
class _Product:
    """One max-min product whose rows keep their top ``n`` entries: targets (a conv's outputs)
    <- ``targets`` (K, J, M) counts <- ``paths`` (K, M, C) widest paths from the previous layer."""

    targets: _Coo
    shape: tuple[int, int, int]  # (K, J, M)
    paths: _Coo
    n: np.ndarray  # (K,) entries kept per row
    sources: int  # C
    row_ok: np.ndarray  # (J,) False for excluded targets


def _level(values: np.ndarray) -> np.ndarray:
    """A nondecreasing coarse level of positive counts (eighth octaves); only its monotonicity matters."""
    return np.floor(8.0 * np.log2(values)).astype(np.int64)


def _top_widest(products: list[_Product], scratch: np.ndarray | None = None) -> list[_Coo]:
    """For every product and row (k, j): the top ``n[k]`` sources i by w = max over m of
    min(a[k, j, m], paths[k, m, i]), ties by ascending i; returned as (k, j, i, w) per product.

    Exact, without materialising the full product: paths are generated band by band in
    decreasing value (a path's band is the level of its min, so each path appears once); a row
    is finished in the band where it reaches n distinct sources, and only that band's entries
    are sorted to break its ties. Rows of all products share one loop.

    ``scratch``: optional zeroed int64 array of at least sum(K * J * C) entries, reused across
    calls (a fresh one costs page faults); it is zeroed again on return.
    """
    rows, qs, vals, key_base, n_row = [], [], [], [], []
    b_q, b_col, b_val = [], [], []
    row_off = q_off = key_off = 0
    spans = []
    for pr in products:
        kc, n_j, n_m = pr.shape
        ca = pr.targets.select(pr.row_ok[pr.targets.row])
        rows.append(row_off + ca.k * n_j + ca.row)
        qs.append(q_off + ca.k * n_m + ca.col)
        vals.append(ca.val)
        b_q.append(q_off + pr.paths.k * n_m + pr.paths.row)
        b_col.append(pr.paths.col)
        b_val.append(pr.paths.val)
        key_base.append(key_off + np.arange(kc * n_j, dtype=np.int64) * pr.sources)
        n_row.append(np.repeat(pr.n, n_j))
        spans.append((row_off, kc * n_j, n_j))
        row_off, q_off, key_off = row_off + kc * n_j, q_off + kc * n_m, key_off + kc * n_j * pr.sources
    a_row, a_q, a_val = np.concatenate(rows), np.concatenate(qs), np.concatenate(vals)
    b_q, b_col, b_val = np.concatenate(b_q), np.concatenate(b_col), np.concatenate(b_val)
    key_base, n_row = np.concatenate(key_base), np.concatenate(n_row)
    if not len(a_val) or not len(b_val):
        return [_Coo(*(np.zeros(0, np.int64) for _ in range(4))) for _ in products]
    a_lvl, b_lvl = _level(a_val), _level(b_val)  # counts >= 1: levels >= 0
    top = int(max(a_lvl.max(), b_lvl.max())) + 1

    # Paths are bucketed by group q (the intermediate channel), each group's paths by level
    # descending: a counting sort filled in band by band inside the loop (no comparison sort).
    q_size = np.bincount(b_q, minlength=q_off)
    q_start = np.cumsum(q_size) - q_size
    b_order = np.argsort((top - 1 - b_lvl).astype(np.uint8), kind="stable")  # q stays sorted per level
    b_end = np.cumsum(np.bincount(b_lvl, minlength=top)[::-1])[::-1]  # paths of level >= l: a prefix
    col_sorted, val_sorted = np.empty_like(b_col), np.empty_like(b_val)
    at_least = np.zeros(q_off, dtype=np.int64)  # paths of group q with level >= the current band

    # the targets' entries by level descending (stable: row order within a level)
    by_level = np.argsort((top - 1 - a_lvl).astype(np.uint8), kind="stable")
    a_row, a_q, a_val, a_lvl = a_row[by_level], a_q[by_level], a_val[by_level], a_lvl[by_level]
    level_end = np.cumsum(np.bincount(a_lvl, minlength=top)[::-1])[::-1]  # entries of level >= l: a prefix

    # best[key_base[row] + i]: (w << 32) + 2**32 - 1 - candidate index of source i of the row's
    # best path once found (0: not yet); one maximum.at keeps the max w and, among ties, one path
    best = scratch[:key_off] if scratch is not None and len(scratch) >= key_off else np.zeros(key_off, np.int64)
    a_key = key_base[a_row]
    touched = []
    found = np.zeros(row_off, dtype=np.int64)
    active = np.ones(row_off, dtype=bool)
    pending = np.zeros(0, dtype=np.int64)  # entries of a higher level whose row is still active
    out_row, out_col, out_val = [], [], []
    present = np.bincount(a_lvl, minlength=top) + np.bincount(b_lvl, minlength=top)
    for lvl in np.flatnonzero(present)[::-1]:
        if not active.any():
            break
        above = at_least
        paths = b_order[b_end[lvl + 1] if lvl + 1 < top else 0:b_end[lvl]]  # this band's, by q
        if len(paths):
            q = b_q[paths]
            idx = np.arange(len(q))
            run_start = np.maximum.accumulate(np.where(np.r_[True, q[1:] != q[:-1]], idx, 0))
            dest = q_start[q] + above[q] + idx - run_start
            col_sorted[dest], val_sorted[dest] = b_col[paths], b_val[paths]
            at_least = above + np.bincount(q, minlength=q_off)
        block = np.arange(level_end[lvl + 1] if lvl + 1 < top else 0, level_end[lvl])
        block = block[active[a_row[block]]]
        # a target entry of this level meets every path of level >= lvl; a higher one, those of lvl
        q_new, q_old = a_q[block], a_q[pending]
        e, pos = _expand(np.r_[q_start[q_new], q_start[q_old] + above[q_old]],
                         np.r_[at_least[q_new], at_least[q_old] - above[q_old]], np.r_[block, pending])
        pending = np.r_[pending, block]
        if not len(pos):
            continue
        key = a_key[e] + col_sorted[pos]
        fresh = np.flatnonzero(best[key] == 0)  # sources already found came through a higher band
        e, pos, key = e[fresh], pos[fresh], key[fresh]
        packed = (np.minimum(a_val[e], val_sorted[pos]).astype(np.int64) << 32) + (2**32 - 1 - np.arange(len(e)))
        np.maximum.at(best, key, packed)
        win = np.flatnonzero(best[key] == packed)  # one path per new source: the best, first on ties
        key, row, col = key[win], a_row[e[win]], col_sorted[pos[win]]
        val = (packed[win] >> 32).astype(a_val.dtype)
        touched.append(key)
        added = np.bincount(row, minlength=row_off)
        need = n_row - found
        ends = active & (added >= need) & (added > 0)
        last = ends[row]
        out_row.append(row[~last]), out_col.append(col[~last]), out_val.append(val[~last])
        if last.any():  # the finishing band: its best `need` sources, value descending then index
            r, c, v = _sort_within_rows(row[last], col[last], val[last])
            first = np.r_[True, r[1:] != r[:-1]]
            idx = np.arange(len(r))
            keep = idx - np.maximum.accumulate(np.where(first, idx, 0)) < need[r]
            out_row.append(r[keep]), out_col.append(c[keep]), out_val.append(v[keep])
        found += added
        active &= ~ends
        pending = pending[active[a_row[pending]]]
    best[np.concatenate(touched or [np.zeros(0, np.int64)])] = 0
    row, col, val = np.concatenate(out_row), np.concatenate(out_col), np.concatenate(out_val)
    result = []
    for off, size, n_j in spans:
        sel = (row >= off) & (row < off + size)
        k, j = np.divmod(row[sel] - off, n_j)
        result.append(_Coo(k, j, col[sel], val[sel]))
    return result


def _sort_within_rows(row: np.ndarray, col: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, col, val) sorted by row, then value descending, then col: one packed-key sort."""
    span = int(val.max() - val.min()) + 1 if len(val) else 1
    col_bits, val_bits = int(col.max(initial=0)).bit_length(), span.bit_length()
    if int(row.max(initial=0)).bit_length() + val_bits + col_bits > 62:
        order = np.lexsort((col, -val, row))
        return row[order], col[order], val[order]
    top = int(val.max())
    key = np.sort((row << (val_bits + col_bits)) | ((top - val).astype(np.int64) << col_bits) | col)
    mask = (1 << col_bits) - 1
    return key >> (val_bits + col_bits), key & mask, (top - ((key >> col_bits) & ((1 << val_bits) - 1))).astype(val.dtype)


def _csr(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, n: int) -> sp.csr_matrix:
    """The (n, n) CSR matrix of unique entries (rows, cols, weight), by a counting sort on the
    row (a radix sort when n < 2**16) instead of scipy's COO conversion."""
    order = np.argsort(rows.astype(np.uint16) if n < 2**16 else rows, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((weight[order].astype(np.float64), cols[order], indptr), shape=(n, n))


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
    """The graphs of a few classes, computed together: node slot ``k * width + offset[l] + ch``
    is channel ch of layer l for the chunk's k-th class."""

    def __init__(self, result: SummitResult, layout: _Layout, classes: list[int], tau: float, tau_step: float,
                 scratch: np.ndarray | None = None):
        self.result, self.layout, self.classes, self.scratch = result, layout, classes, scratch
        self.tau0, self.tau_step = tau, tau_step
        self.kc = len(classes)
        self._cache: dict[str, np.ndarray] = {}

    def _counts(self, name: str, activation: bool = False) -> np.ndarray:
        """This chunk's slice of a count tensor, as numpy (a view when the classes are contiguous)."""
        key = ("A:" if activation else "I:") + name
        if key not in self._cache:
            t = (self.result.activation if activation else self.result.influence)[name]
            lo, hi = self.classes[0], self.classes[-1] + 1
            part = t[lo:hi] if self.classes == list(range(lo, hi)) else t[torch.as_tensor(self.classes)]
            self._cache[key] = part.detach().cpu().numpy()
        return self._cache[key]

    # -- edges ------------------------------------------------------------------------------
    def _edges(self) -> list[_Coo]:
        """Per layer li >= 1, the edges into it for every class of the chunk: (k, j in li, i in li-1, w)."""
        lay = self.layout
        parts: list[list[_Coo]] = [[] for _ in lay.layers]
        products, owners = [], []
        for li in range(1, len(lay.layers)):
            excl_src, excl_tgt = lay.excluded[li - 1], lay.excluded[li]
            nonzero = {True: np.zeros(self.kc, np.int64), False: np.zeros(self.kc, np.int64)}  # by "direct"
            channels = {True: 0, False: 0}
            writers = {}
            for br in lay.branches[li]:
                direct = len(br.chain) == 1
                writers[br] = e = self._sources(br.chain[0])
                nonzero[direct] += np.bincount(e.k, minlength=self.kc)
                channels[direct] += br.out
                if direct:
                    e.row += br.offset
                    parts[li].append(e.select(~excl_src[e.col] & ~excl_tgt[e.row]))
            basis = bool(channels[True])  # Summit's rule counts the direct branches when there are any
            n = np.maximum(1, nonzero[basis] // max(channels[basis], 1))
            for br in lay.branches[li]:
                if len(br.chain) > 1:
                    paths = self._chain_paths(br, li)
                    writer = lay.convs[br.chain[0]]
                    products.append(_Product(writers[br],
                                             (self.kc, br.out, writer.in_channels),
                                             paths.select(~excl_src[paths.col]), n, lay.channels[li - 1],
                                             ~excl_tgt[br.offset:br.offset + br.out]))
                    owners.append((li, br.offset))
        for (li, offset), e in zip(owners, _top_widest(products, self.scratch) if products else []):
            e.row += offset
            parts[li].append(e)
        for li in range(1, len(lay.layers)):
            for skip in lay.skips[li]:
                e = self._skip_edges(skip)
                parts[li].append(e.select(~lay.excluded[li - 1][e.col] & ~lay.excluded[li][e.row]))
        edges = [_Coo(*(np.zeros(0, np.int64) for _ in range(4)))]
        for li in range(1, len(lay.layers)):
            e = _Coo(*(np.concatenate([getattr(p, f) for p in parts[li]] or [np.zeros(0, np.int64)])
                       for f in ("k", "row", "col", "val")))
            if lay.overlapping[li]:
                e = _max_dedupe(e.k, e.row, e.col, e.val, (self.kc, lay.channels[li], lay.channels[li - 1]))
            edges.append(e)
        return edges

    def _skip_edges(self, skip) -> _Coo:
        """Identity edges source_offset + t -> target_offset + t, weighted by the skip's counts."""
        t = self.result.skip[skip.key]
        part = t[torch.as_tensor(self.classes)].detach().cpu().numpy()
        k, ch = np.nonzero(part)
        return _Coo(k.astype(np.int64), (skip.target_offset + ch).astype(np.int64),
                    (skip.source_offset + ch).astype(np.int64), part[k, ch].astype(np.int64))

    def _chain_paths(self, br: _Branch, li: int) -> _Coo:
        """Widest paths from layer li-1 to the sources of ``br.chain[0]`` (the intermediate it reads)."""
        paths = self._sources(br.chain[-1])  # the conv that reads layer li-1
        for conv in reversed(br.chain[1:-1]):  # longer chains: intermediates in between
            e = self.layout.convs[conv]
            paths = _max_dedupe(*_widest(self._sources(conv), paths, self.kc, e.in_channels),
                                (self.kc, e.out_channels, self.layout.channels[li - 1]))
        return paths

    def _sources(self, conv: str) -> _Coo:
        """A conv's nonzero counts (k, output channel, input channel, count); a grouped conv's
        compact source index is mapped to its input channel."""
        e = _Coo.from_dense(self._counts(conv))
        edge = self.layout.convs[conv]
        if edge.spec.groups > 1:
            e.col = edge.source_channel(e.row, e.col)
        return e

    # -- graphs -----------------------------------------------------------------------------
    def graphs(self) -> list[ClassGraph]:
        lay = self.layout
        width, n_slots = lay.width, self.kc * lay.width
        tgt, src, weight = [], [], []
        for li, e in enumerate(self._edges()):
            if li == 0:
                continue
            tgt.append(e.k * width + lay.offsets[li] + e.row)
            src.append(e.k * width + lay.offsets[li - 1] + e.col)
            weight.append(e.val)
        tgt, src = np.concatenate([np.zeros(0, np.int64), *tgt]), np.concatenate([np.zeros(0, np.int64), *src])
        weight = np.concatenate([np.zeros(0, np.int32), *weight])
        # each edge once, row = its node in the later layer: a row lists that node's previous-layer neighbours
        adjacency = _csr(tgt, src, weight, n_slots)
        degree = np.diff(adjacency.indptr) + np.bincount(adjacency.indices, minlength=n_slots)
        groups = np.where(degree > 0, np.repeat(np.arange(self.kc), width), -1)
        ranks, _ = pagerank(adjacency, self._personalization(), groups, self.kc, undirected=True)
        kept, tau = self._select(adjacency, ranks, groups)
        return self._assemble(adjacency, ranks, kept, tau, groups)

    def _personalization(self) -> np.ndarray:
        """Per slot: A_l[c, ch] / max over non-excluded channels of A_l[c, :] (0 when that is 0)."""
        parts = []
        for li, layer in enumerate(self.layout.layers):
            a = self._counts(layer, activation=True).astype(np.float64)
            a[:, self.layout.excluded[li]] = 0.0
            top = a.max(axis=1, keepdims=True)
            parts.append(np.divide(a, top, out=np.zeros_like(a), where=top > 0))
        return np.concatenate(parts, axis=1).reshape(-1)

    def _select(self, adjacency, ranks, groups) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer mass selection with relaxation: (kept mask over slots, tau (kc, L))."""
        lay = self.layout
        n_layers = len(lay.layers)
        slots = np.flatnonzero(groups >= 0)
        k = groups[slots]
        layer = lay.layer_of_slot[slots % lay.width]
        r = ranks[slots]
        # channel order within a layer is slot order, so a stable sort by (k, layer, -rank) breaks
        # ties by channel; `before` = PageRank mass ahead of the node in its (class, layer)
        order = np.lexsort((-r, layer, k))
        seg = (k * n_layers + layer)[order]
        csum = np.cumsum(r[order])
        first = np.r_[True, seg[1:] != seg[:-1]]
        seg_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        base = np.where(seg_start > 0, csum[seg_start - 1], 0.0)
        before = np.empty(len(order))
        before[order] = csum - r[order] - base
        total = np.zeros(self.kc * n_layers)
        np.maximum.at(total, seg, csum - base)
        total = total[k * n_layers + layer]
        max_steps = int(np.ceil((1.0 - self.tau0) / self.tau_step - 1e-9))  # tau reaches 1.0
        steps = np.zeros((self.kc, n_layers), dtype=np.int64)
        while True:
            tau = np.minimum(1.0, self.tau0 + self.tau_step * steps)
            kept = np.zeros(len(ranks), dtype=bool)
            kept[slots] = before < tau[k, layer] * total
            unlinked = ~self._linked(adjacency, kept)
            unlinked[:, 0] = False
            unlinked[:, 1:] &= (steps[:, 1:] < max_steps) | (steps[:, :-1] < max_steps)
            if not unlinked.any():
                return kept, tau
            steps[:, 1:] += unlinked[:, 1:]
            steps[:, :-1] += unlinked[:, 1:]
            np.minimum(steps, max_steps, out=steps)

    def _kept_prev_edges(self, adjacency, kept) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges from kept slots u to kept slots of the previous layer: (u, neighbour, weight)."""
        u = np.flatnonzero(kept)
        which, pos = _expand(adjacency.indptr[u], np.diff(adjacency.indptr)[u])
        u, nbr = u[which], adjacency.indices[pos]
        ok = kept[nbr]
        return u[ok], nbr[ok], adjacency.data[pos][ok]

    def _linked(self, adjacency, kept) -> np.ndarray:
        """(kc, L): whether layer l of class k has a kept edge to a kept node of layer l-1."""
        u, _, _ = self._kept_prev_edges(adjacency, kept)
        linked = np.zeros((self.kc, len(self.layout.layers)), dtype=bool)
        linked[u // self.layout.width, self.layout.layer_of_slot[u % self.layout.width]] = True
        return linked

    def _assemble(self, adjacency, ranks, kept, tau, groups) -> list[ClassGraph]:
        lay = self.layout
        width = lay.width
        kept_slots = np.flatnonzero(kept)
        attr = self._attr_channels(kept_slots)
        u, nbr, w = self._kept_prev_edges(adjacency, kept)
        order = np.lexsort((nbr, -w, u))
        prev: dict[int, list[tuple[int, int]]] = {}
        for s, t, wt in zip(u[order].tolist(), nbr[order].tolist(), w[order].tolist()):
            prev.setdefault(s, []).append((t % width - int(lay.offsets[lay.layer_of_slot[t % width]]), int(wt)))
        counts = [self._counts(layer, activation=True) for layer in lay.layers]
        candidates = np.bincount(groups[groups >= 0], minlength=self.kc)
        graphs = []
        for k, c in enumerate(self.classes):
            nodes: dict[str, list[Node]] = {layer: [] for layer in lay.layers}
            block = kept_slots[(kept_slots >= k * width) & (kept_slots < (k + 1) * width)]
            for s in block[np.lexsort((block, -ranks[block]))].tolist():
                li = int(lay.layer_of_slot[s % width])
                ch = s % width - int(lay.offsets[li])
                nodes[lay.layers[li]].append(Node(lay.layers[li], ch, int(counts[li][k, ch]), float(ranks[s]),
                                                  prev.get(s, []), attr.get(s, [])))
            graphs.append(ClassGraph(c, nodes, {l: float(t) for l, t in zip(lay.layers, tau[k])}, int(candidates[k])))
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

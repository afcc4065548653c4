"""Benchmark: attribution graphs (SPEC.md C) for all classes of an InceptionV1-sized result.

The result is synthetic: the real InceptionV1 model graph (9 summary layers, 54 conv edges)
with counts shaped like a real run's over ``--images`` images per class. Per class and target
channel, the influence counts have ``--head`` sources drawn from a per-channel pool of 8 (the
channel's strong inputs, shared by every class; counts 30-100 % of the images) plus a tail of
on average ``--tail`` weaker sources anywhere (counts 1-5 % of the images): each image's top-5
sources are mostly the same few channels. Activation counts: 40 channels per layer and class,
heavy-tailed.

How many distinct sources does a target collect? Measured on real weights (MobileNetV2, the 1x1
convs with 384-960 inputs, the 100 ImageNet photos of ../shared/data as one class): 27-80
(mean 26 over all 1x1 convs; 13 over 10 images, 19 over 30, 26 over 100). So ``--tail 30``
(35 sources per target) is the realistic fill for a 1300-image class; ``--tail 10`` is a light one.

The full InceptionV1 influence state at K=1000 is ~10 GB of int32, so classes are generated and
processed in chunks of ``--chunk`` classes (one ``build_graphs`` call each); only graph building
is timed (wall and CPU). ``--networkx`` also times networkx.pagerank on one class's full graph,
the step that took Summit ~30 s per class.

    python bench/bench_graph.py [--classes 1000] [--tails 10,30] [--networkx] [--stages]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import torch

import summit_fast.models
from summit_fast.discovery import discover
from summit_fast.graph import build_graphs
from summit_fast.result import SummitResult


def inception_graph():
    model = summit_fast.models.inception_v1()
    return discover(model, torch.zeros(1, 3, 224, 224), model.SUMMARY_LAYERS)


def synthetic_result(graph, num_classes: int, images: int, head: int, tail: float, seed: int) -> SummitResult:
    """A result over ``num_classes`` classes whose counts look like a real run's (see the module doc)."""
    gen = torch.Generator().manual_seed(seed)
    pools = torch.Generator().manual_seed(12345)  # each channel's strong inputs: the same in every chunk
    result = SummitResult.zeros(graph, num_classes)
    result.images_per_class.fill_(images)
    for a in result.activation.values():
        idx = torch.randint(0, a.shape[1], (num_classes, 40), generator=gen)
        a.scatter_(1, idx, (images * torch.rand(num_classes, 40, generator=gen) ** 4).to(torch.int32) + 1)
    for e in graph.edges:
        t = result.influence[e.conv]
        k, out, src = t.shape
        pool = torch.randint(0, src, (out, 8), generator=pools)
        head_idx = pool.expand(k, out, 8).gather(2, torch.randint(0, 8, (k, out, head), generator=gen))
        head_cnt = (images * (0.3 + 0.7 * torch.rand(k, out, head, generator=gen))).to(torch.int32)
        slots = int(2 * tail)
        tail_idx = torch.randint(0, src, (k, out, slots), generator=gen)
        tail_cnt = ((0.01 + 0.04 * torch.rand(k, out, slots, generator=gen)) * images).to(torch.int32)
        tail_cnt *= (torch.rand(k, out, slots, generator=gen) < 0.5).to(torch.int32)  # Binomial(2 tail, 1/2)
        t.scatter_(2, tail_idx, tail_cnt)
        t.scatter_(2, head_idx, head_cnt)  # heads win where a tail index collides
    return result


def run(graph, classes: int, chunk: int, images: int, head: int, tail: float) -> dict:
    wall = cpu = 0.0
    nonzero = nodes = kept = edges = 0
    for start in range(0, classes, chunk):
        n = min(chunk, classes - start)
        result = synthetic_result(graph, n, images, head, tail, seed=start)
        nonzero += sum(int(torch.count_nonzero(t)) for t in result.influence.values())
        t0, c0 = time.perf_counter(), time.process_time()
        graphs = build_graphs(result)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        nodes += sum(g.num_candidates for g in graphs.values())
        kept += sum(len(v) for g in graphs.values() for v in g.nodes.values())
        edges += sum(len(node.prev_channels) for g in graphs.values() for v in g.nodes.values() for node in v)
    targets = sum(e.out_channels for e in graph.edges)
    return {"tail": tail, "per_target": nonzero / classes / targets, "nodes": nodes / classes,
            "kept": kept / classes, "wall": wall, "cpu": cpu, "classes": classes}


def networkx_seconds(graph, images: int, head: int, tail: float) -> tuple[float, int]:
    """networkx.pagerank on class 0's full graph (the nodes and edges build_graphs ranks)."""
    import networkx as nx

    from summit_fast.graph import _Chunk, _Layout

    result = synthetic_result(graph, 1, images, head, tail, seed=0)
    (indptr, indices, weights), _ = _Chunk(result, _Layout(result.graph, {}), [0], 0.075, 0.005)._adjacency()
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    g = nx.Graph()
    g.add_weighted_edges_from(zip(rows.tolist(), indices.tolist(), weights.tolist()))
    personalization = {node: 1.0 for node in g}
    t0 = time.perf_counter()
    nx.pagerank(g, alpha=0.85, personalization=personalization, weight="weight")
    return time.perf_counter() - t0, g.number_of_edges()


def stage_times(graph, images: int, head: int, tail: float, classes: int = 8) -> dict[str, tuple[float, float]]:
    """(CPU, wall) ms per class of build_graphs' parts on one chunk (best of 3 each)."""
    from summit_fast.graph import _Chunk, _Layout

    result = synthetic_result(graph, classes, images, head, tail, seed=0)
    chunk = _Chunk(result, _Layout(result.graph, {}), list(range(classes)), 0.075, 0.005)

    def best_of(f):
        cpu, wall = [], []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        return 1000 * min(cpu) / classes, 1000 * min(wall) / classes

    return {"edges alone (native chunk_adjacency)": best_of(chunk._adjacency),
            "whole chunk: native chunk_graphs (edges, PageRank, selection) + Python nodes out": best_of(chunk.graphs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=100, help="classes generated (and held in memory) at a time")
    ap.add_argument("--images", type=int, default=1300, help="images per class")
    ap.add_argument("--head", type=int, default=5)
    ap.add_argument("--tails", default="10,30", help="mean numbers of weak sources per target, one run each")
    ap.add_argument("--networkx", action="store_true", help="also time networkx.pagerank on one class's graph")
    ap.add_argument("--stages", action="store_true", help="also time the edges alone on one chunk of 8 classes")
    args = ap.parse_args()
    graph = inception_graph()
    rows = [run(graph, args.classes, args.chunk, args.images, args.head, float(t)) for t in args.tails.split(",")]
    print(f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"load average before the last run {os.getloadavg()[0]:.1f}")
    print("| fill (tail) | sources per target | nodes/class | kept/class | classes | wall s | CPU s | ms/class (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tail']:g} | {r['per_target']:.1f} | {r['nodes']:.0f} | {r['kept']:.1f} | {r['classes']} "
              f"| {r['wall']:.1f} | {r['cpu']:.1f} | {1000 * r['wall'] / r['classes']:.1f} |")
    if args.stages:
        tails = args.tails.split(",")
        stages = [stage_times(graph, args.images, args.head, float(t)) for t in tails]
        print("| part (ms/class, 8-class chunk, CPU / wall) | " + " | ".join(f"tail {t}" for t in tails) + " |")
        print("|---|" + "---|" * len(tails))
        for name in stages[0]:
            print(f"| {name} | " + " | ".join(f"{s[name][0]:.1f} / {s[name][1]:.1f}" for s in stages) + " |")
    if args.networkx:
        for t in args.tails.split(","):
            seconds, n_edges = networkx_seconds(graph, args.images, args.head, float(t))
            print(f"networkx.pagerank alone, one class (tail {t}, {n_edges} edges): {seconds:.2f} s")


if __name__ == "__main__":
    main()

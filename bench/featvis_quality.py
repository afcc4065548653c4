"""Feature-visualisation quality on a real run: for every channel of the run's exported graphs
(or a seeded random sample of them), does its feature visualisation excite the channel (spatial
max of the layer's output) more than every dataset image of the run does? Goal: >= 95% of the
graph's channels.

The rule: a channel is a success when its feature visualisation's spatial max is strictly above
the best dataset image's, or when both reach the layer's activation ceiling (a tie at the cap: a
layer whose output is a ReLU6 cannot exceed 6, so a channel whose best photo already reaches 6
can only be equalled). A layer's ceiling is the ``max_val`` of the ``nn.Hardtanh`` (``nn.ReLU6``
is one) whose output the layer's output is, found in one forward pass; other layers have none.
The strict fraction is printed too.

The dataset side needs no images: a run with dataset examples (``summit-fast run``'s default
``--examples``) records each channel's largest spatial maxima over its images
(``result.examples[layer]["value"]``), so the best dataset image's value is the first of them.
The rendered image goes through the model's own preprocessing, as in rendering.

    python bench/featvis_quality.py RUN_DIR --model mobilenet_v2 --tf-padding --weights FILE \\
        [--size 128 --steps 256 --batch 64 --device cuda --amp bf16] [--layers L ...] [--limit N]
        [--sample N --seed S] [--threads T]

RUN_DIR is a ``summit-fast run`` output folder (result/ and viewer/ag/). Prints a table per
layer and the overall fractions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn

from summit_fast import SummitResult
from summit_fast._allocator import keep_freed_memory
from summit_fast.featvis import FeatureVisSettings, render_channels
from summit_fast.models.loading import load_model


def graph_channels(viewer: Path) -> dict[str, list[int]]:
    """Every (layer, channel) that is a node of some exported graph, by layer."""
    channels: dict[str, set[int]] = defaultdict(set)
    for path in sorted((viewer / "ag").glob("ag-*.json")):
        for layer, nodes in json.loads(path.read_text()).items():
            channels[layer].update(int(node["channel"]) for node in nodes)
    return {layer: sorted(c) for layer, c in channels.items()}


def sample_channels(chosen: dict[str, list[int]], n: int, seed: int) -> dict[str, list[int]]:
    """``n`` of the (layer, channel) pairs of ``chosen``, drawn uniformly without replacement with
    ``random.Random(seed)`` from them in the graphs' layer order, kept in that order."""
    pairs = [(layer, c) for layer, cs in chosen.items() for c in cs]
    drawn = set(random.Random(seed).sample(pairs, min(n, len(pairs))))
    sampled = {layer: [c for c in cs if (layer, c) in drawn] for layer, cs in chosen.items()}
    return {layer: cs for layer, cs in sampled.items() if cs}


def forward_captured(model, x: torch.Tensor, layers: set[str]) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """The outputs of ``layers`` for input ``x``, and (output, max_val) of every ``nn.Hardtanh``
    (ReLU6 included) the forward pass ran."""
    captured, capped = {}, []
    hooks = [module.register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o))
             for layer, module in model.named_modules() if layer in layers]
    hooks += [module.register_forward_hook(lambda m, i, o: capped.append((o, m.max_val)))
              for module in model.modules() if isinstance(module, nn.Hardtanh)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured, capped


def ceilings(model, layers: set[str], side: int, device) -> dict[str, float]:
    """Each layer's activation ceiling: ``max_val`` of the Hardtanh whose output tensor is the
    layer's output (the same storage), else infinity."""
    captured, capped = forward_captured(model, torch.zeros(1, 3, side, side, device=device), layers)
    return {layer: next((float(top) for o, top in capped if o.data_ptr() == out.data_ptr() and o.shape == out.shape),
                        math.inf) for layer, out in captured.items()}


def channel_maxima(model, images: torch.Tensor, preprocess, targets: list[tuple[str, int]]) -> torch.Tensor:
    """Spatial max of each target's channel for its own image (images (N, 3, S, S) in 0..1)."""
    mean = torch.tensor(preprocess.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).view(1, 3, 1, 1)
    captured, _ = forward_captured(model, (images * 255 - mean) / std, {layer for layer, _ in targets})
    return torch.stack([captured[layer][n, c].float().amax() for n, (layer, c) in enumerate(targets)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a summit-fast run output folder")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", type=Path)
    p.add_argument("--tf-padding", action="store_true")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["bf16"], default=None)
    p.add_argument("--layers", nargs="*", help="only these layers (default: every graph layer)")
    p.add_argument("--limit", type=int, default=None, help="at most this many channels per layer")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="a seeded random sample of N of the (chosen) graph channels")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    keep_freed_memory()  # speed only, as the summit-fast command does
    if args.threads:
        torch.set_num_threads(args.threads)

    result = SummitResult.load(args.run / "result")
    if not result.examples:
        raise SystemExit(f"{args.run / 'result'} has no dataset examples (run with --examples N)")
    model = load_model(args.model, args.weights, args.tf_padding).to(args.device).eval()
    graph = graph_channels(args.run / "viewer")
    chosen = {l: c[:args.limit] for l, c in graph.items() if not args.layers or l in args.layers}
    population = sum(len(c) for c in chosen.values())
    if args.sample is not None:
        chosen = sample_channels(chosen, args.sample, args.seed)
    targets = [(layer, c) for layer, cs in chosen.items() for c in cs]
    settings = FeatureVisSettings(size=args.size, steps=args.steps, diversity=0, amp=args.amp)
    start = time.perf_counter()
    images = render_channels(model, targets, settings, batch=args.batch, device=args.device, progress=True)
    seconds = time.perf_counter() - start
    rendered = torch.cat([channel_maxima(model, images[i:i + args.batch].to(args.device), model.PREPROCESS,
                                         targets[i:i + args.batch]) for i in range(0, len(targets), args.batch)]).cpu()
    dataset = torch.tensor([float(result.examples[layer]["value"][c].max()) for layer, c in targets])
    cap = ceilings(model, set(chosen), args.size + 12, args.device)
    ceiling = torch.tensor([cap[layer] for layer, _ in targets])
    strict = rendered > dataset
    tied = ~strict & (rendered >= ceiling) & (dataset >= ceiling)  # both at the cap: nothing can do better
    success = strict | tied
    sampled = f"a sample of {len(targets)} (seed {args.seed}) of {population}" if args.sample is not None else \
        f"{len(targets)}"
    print(f"{args.model}, {sampled} graph channels, {args.size} px, {args.steps} steps, {args.device}"
          f"{', bf16' if args.amp else ''}, {torch.get_num_threads()} thread(s): rendered in {seconds:.1f} s "
          f"({seconds / len(targets):.3f} s per channel)")
    print("success: the rendered spatial max is strictly above every dataset image's, or both reach the layer's "
          "activation ceiling (a tie at the cap)\n")
    print("| layer | ceiling | channels | strictly above | strict fraction | tied at the ceiling | success fraction "
          "| median rendered / dataset max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def row(name: str, part, top: str) -> str:
        ratio = statistics.median((rendered[part] / dataset[part].clamp(min=1e-6)).tolist())
        return (f"| {name} | {top} | {len(rendered[part])} | {int(strict[part].sum())} | "
                f"{float(strict[part].float().mean()):.1%} | {int(tied[part].sum())} | "
                f"{float(success[part].float().mean()):.1%} | {ratio:.2f} |")

    n = 0
    for layer, cs in chosen.items():
        print(row(layer, slice(n, n + len(cs)), "-" if math.isinf(cap[layer]) else f"{cap[layer]:g}"))
        n += len(cs)
    print(row("all", slice(0, n), ""))


if __name__ == "__main__":
    main()

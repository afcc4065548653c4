"""Feature-visualisation quality on a real run: for every channel of the run's exported graphs,
does its feature visualisation excite the channel (spatial max of the layer's output) more than
every dataset image of the run does? Goal: >= 95% of the graph's channels.

The dataset side needs no images: a run with dataset examples (``summit-fast run``'s default
``--examples``) records each channel's largest spatial maxima over its images
(``result.examples[layer]["value"]``), so the best dataset image's value is the first of them.
The rendered image goes through the model's own preprocessing, as in rendering.

    python bench/featvis_quality.py RUN_DIR --model mobilenet_v2 --tf-padding --weights FILE \\
        [--size 128 --steps 256 --batch 64 --device cuda --amp bf16] [--layers L ...] [--limit N]

RUN_DIR is a ``summit-fast run`` output folder (result/ and viewer/ag/). Prints a table per
layer and the overall fraction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from summit_fast import SummitResult
from summit_fast.featvis import FeatureVisSettings, render_channels
from summit_fast.models.loading import load_model


def graph_channels(viewer: Path) -> dict[str, list[int]]:
    """Every (layer, channel) that is a node of some exported graph, by layer."""
    channels: dict[str, set[int]] = defaultdict(set)
    for path in sorted((viewer / "ag").glob("ag-*.json")):
        for layer, nodes in json.loads(path.read_text()).items():
            channels[layer].update(int(node["channel"]) for node in nodes)
    return {layer: sorted(c) for layer, c in channels.items()}


def channel_maxima(model, images: torch.Tensor, preprocess, targets: list[tuple[str, int]]) -> torch.Tensor:
    """Spatial max of each target's channel for its own image (images (N, 3, S, S) in 0..1)."""
    mean = torch.tensor(preprocess.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).view(1, 3, 1, 1)
    modules = dict(model.named_modules())
    captured = {}
    hooks = [modules[layer].register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o))
             for layer in {layer for layer, _ in targets}]
    try:
        with torch.no_grad():
            model((images * 255 - mean) / std)
    finally:
        for h in hooks:
            h.remove()
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
    args = p.parse_args()

    result = SummitResult.load(args.run / "result")
    if not result.examples:
        raise SystemExit(f"{args.run / 'result'} has no dataset examples (run with --examples N)")
    model = load_model(args.model, args.weights, args.tf_padding).to(args.device).eval()
    chosen = {l: c[:args.limit] for l, c in graph_channels(args.run / "viewer").items()
              if not args.layers or l in args.layers}
    targets = [(layer, c) for layer, cs in chosen.items() for c in cs]
    settings = FeatureVisSettings(size=args.size, steps=args.steps, diversity=0, amp=args.amp)
    start = time.perf_counter()
    images = render_channels(model, targets, settings, batch=args.batch, device=args.device, progress=True)
    seconds = time.perf_counter() - start
    rendered = torch.cat([channel_maxima(model, images[i:i + args.batch].to(args.device), model.PREPROCESS,
                                         targets[i:i + args.batch]) for i in range(0, len(targets), args.batch)])
    dataset = torch.tensor([float(result.examples[layer]["value"][c].max()) for layer, c in targets])
    beats = rendered.cpu() > dataset
    reaches = rendered.cpu() >= dataset  # a capped activation (ReLU6) cannot be beaten, only reached
    print(f"{args.model}, {len(targets)} graph channels, {args.size} px, {args.steps} steps, {args.device}"
          f"{', bf16' if args.amp else ''}: rendered in {seconds:.1f} s ({seconds / len(targets):.3f} s per channel)\n")
    print("| layer | channels | beat every dataset image | fraction | at least as high | median rendered / dataset max |")
    print("|---|---:|---:|---:|---:|---:|")
    n = 0
    for layer, cs in chosen.items():
        part = slice(n, n + len(cs))
        ratio = statistics.median((rendered[part].cpu() / dataset[part].clamp(min=1e-6)).tolist())
        print(f"| {layer} | {len(cs)} | {int(beats[part].sum())} | {float(beats[part].float().mean()):.1%} | "
              f"{float(reaches[part].float().mean()):.1%} | {ratio:.2f} |")
        n += len(cs)
    print(f"| all | {len(targets)} | {int(beats.sum())} | {float(beats.float().mean()):.1%} | "
          f"{float(reaches.float().mean()):.1%} | {statistics.median((rendered.cpu() / dataset.clamp(min=1e-6)).tolist()):.2f} |")


if __name__ == "__main__":
    main()

"""Benchmark of exact bound pruning in the cpu backend's kxk influence update.

Per kxk conv edge of InceptionV1 (random weights, the bundled model's default), on the conv
inputs of real photos (/work/shared/data's ImageNet sample, through the model's PREPROCESS;
random noise would make the bounds unrealistically loose): median times of the cpu backend
with pruning on and off and of the float32 torch reference, and the fraction of scores
L[b, j, i] that pruning skipped. The counts of both cpu paths are checked to be equal.

    python bench/bench_pruning.py                  # 16 images, all 18 kxk edges, a few minutes on 2 cores
    python bench/bench_pruning.py --layers mixed3b mixed4d --threads 1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from bench_cpu import INFLUENCE_K, NUM_CLASSES, median_time, seconds
from summit_fast._native import native
from summit_fast.backends.cpu import CpuBackend
from summit_fast.backends.torch_ref import TorchBackend
from summit_fast.convspec import ConvSpec
from summit_fast.images import ImageFolderDataset
from summit_fast.models import inception_v1

IMAGES = Path(__file__).resolve().parents[1] / "../shared/data/images/imagenet-sample-images-subset"


def conv_inputs(model, images: torch.Tensor, convs: list[str]) -> dict:
    """The input tensor of each named conv for ``images``."""
    modules = dict(model.named_modules())
    inputs = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0])) for n in convs]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of ImageNet-named photos")
    parser.add_argument("--batch", type=int, default=16, help="images per influence update")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each cpu path (median)")
    parser.add_argument("--layers", nargs="+", default=None, help="mixed layers (default: all nine)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and OpenMP threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native.set_num_threads(args.threads)

    torch.manual_seed(0)  # the random weights, the same in every run
    model = inception_v1().eval()
    data = ImageFolderDataset(args.images, model.PREPROCESS)
    images = torch.stack([data[i][0] for i in range(min(args.batch, len(data)))])
    labels = torch.tensor(data.targets[: images.shape[0]])
    layers = args.layers or model.SUMMARY_LAYERS
    convs = [f"{layer}_{branch}_pre_relu_conv" for layer in layers for branch in ("3x3", "5x5")]
    inputs = conv_inputs(model, images, convs)
    modules = dict(model.named_modules())
    ref, pruned, unpruned = TorchBackend(torch.float32), CpuBackend(prune=True), CpuBackend(prune=False)

    print(f"# {images.shape[0]} photos, {native.num_threads()} OpenMP threads, k = {INFLUENCE_K}, K = {NUM_CLASSES}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| edge | shape | torch ms | unpruned ms | pruned ms | pruned vs unpruned | scores pruned |")
    print("|---|---|---:|---:|---:|---:|---:|")
    total_exact = total_scores = 0
    sums = [0.0, 0.0, 0.0]
    for name in convs:
        x, conv = inputs[name], modules[name]
        spec, weight = ConvSpec.from_module(conv), conv.weight.detach()
        counts = {p: torch.zeros(NUM_CLASSES, *weight.shape[:2], dtype=torch.int32) for p in ("on", "off")}
        pruned.influence_update(x, weight, spec, labels, counts["on"], INFLUENCE_K)
        unpruned.influence_update(x, weight, spec, labels, counts["off"], INFLUENCE_K)
        if not torch.equal(counts["on"], counts["off"]):
            raise SystemExit(f"{name}: pruned and unpruned counts differ")
        exact, total = pruned.last_influence_stats
        total_exact, total_scores = total_exact + exact, total_scores + total
        t_ref = seconds(lambda: ref.influence_update(x, weight, spec, labels, counts["off"], INFLUENCE_K))
        t_off = median_time(lambda: unpruned.influence_update(x, weight, spec, labels, counts["off"], INFLUENCE_K),
                            args.repeats)
        t_on = median_time(lambda: pruned.influence_update(x, weight, spec, labels, counts["on"], INFLUENCE_K),
                           args.repeats)
        sums = [sums[0] + t_ref, sums[1] + t_off, sums[2] + t_on]
        shape = f"{x.shape[1]}->{weight.shape[0]} {weight.shape[2]}x{weight.shape[3]} @{x.shape[2]}"
        print(f"| {name.removesuffix('_pre_relu_conv')} | {shape} | {t_ref * 1e3:.1f} | {t_off * 1e3:.1f} | "
              f"{t_on * 1e3:.1f} | {t_off / t_on:.2f}x | {1 - exact / total:.0%} |", flush=True)
    print(f"| all | | {sums[0] * 1e3:.0f} | {sums[1] * 1e3:.0f} | {sums[2] * 1e3:.0f} | {sums[1] / sums[2]:.2f}x | "
          f"{1 - total_exact / total_scores:.0%} |")
    print(f"\n# torch: one run; cpu: median of {args.repeats} after a warm-up; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

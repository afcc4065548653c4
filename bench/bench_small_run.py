"""A small run on the CPU: the whole ``summit_fast.aggregate`` call on a few images, against the
plain forward pass of the same images and against a naive per-image port of Summit's notebooks.

What a user waits for on a first try: setup (graph discovery, the weights digest, allocating
the counts) and the first writes into fresh count pages are all inside the call. InceptionV1
(random weights, 1008 classes), images at 224 px, one batch; activation + influence.

- forward: ``model(images)`` under ``torch.no_grad`` (the floor);
- summit_fast: ``aggregate(model, [(images, labels)], backend="cpu")``;
- naive port: what Summit's notebooks did, one image at a time in plain PyTorch:
  ``aggregate`` with the torch reference backend over batches of one image.

Each is timed ``--repeats`` times (median printed; a fresh model copy per run is not needed:
nothing is cached between calls). Ratios come from the same run.

    python bench/bench_small_run.py [--images 8] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

import summit_fast
from summit_fast._native import native
from summit_fast.models import inception_v1


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenMP threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        native.set_num_threads(args.threads)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    model = inception_v1().eval()
    images = torch.randn(args.images, 3, 224, 224)
    labels = torch.randint(0, 1008, (args.images,))
    with torch.no_grad():
        model(images)  # warm-up: first-call allocations are not the forward's cost

    def forward():
        with torch.no_grad():
            model(images)

    def fast():
        summit_fast.aggregate(model, [(images, labels)], backend="cpu", progress=False)

    def naive():
        summit_fast.aggregate(model, list(zip(images.split(1), labels.split(1))), backend="torch", progress=False)

    rows = [("forward", timed(forward, args.repeats)), ("summit_fast (cpu backend)", timed(fast, args.repeats)),
            ("naive port (torch, one image at a time)", timed(naive, args.repeats))]
    base = rows[0][1]
    print(f"\n{args.images} images, InceptionV1, 1008 classes, activation + influence, median of {args.repeats}\n")
    print("| run | seconds | vs forward |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f}x |")
    print(f"\nsummit_fast is {rows[2][1] / rows[1][1]:.1f}x faster than the naive port; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

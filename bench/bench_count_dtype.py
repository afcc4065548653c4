"""Cost of int16 counts (issue 7): steady-state ``Aggregator.update`` time per batch with
``count_dtype="int16"`` against the default int32, activation + influence, with the bundled
InceptionV1 (random weights; 16 images of 224 px a batch, labels drawn from ``--classes``
classes, as in an ImageNet pass where a batch spans about as many classes as images).
Prints the median time per batch, the ratio, and the size of the count state.

    python bench/bench_count_dtype.py [--backend cpu] [--batches 6] [--classes 200]
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
from summit_fast.models import inception_v1

BATCH = 16


def seconds_per_batch(model, data, backend: str, count_dtype: str, classes: int) -> tuple[float, int]:
    """Median update time over ``data[1:]`` (the first batch discovers layers and allocates
    the counts), and the count state's bytes."""
    aggregator = summit_fast.Aggregator(model, backend=backend, count_dtype=count_dtype, num_classes=classes)
    aggregator.update(*data[0])
    times = []
    for images, labels in data[1:]:
        start = time.perf_counter()
        aggregator.update(images, labels)
        times.append(time.perf_counter() - start)
    return statistics.median(times), aggregator.result.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--batches", type=int, default=6, help="batches per run; the first is not timed")
    parser.add_argument("--classes", type=int, default=200, help="number of classes (rows of the counts)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per count type, interleaved")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(BATCH, 3, 224, 224, generator=g), torch.randint(0, args.classes, (BATCH,), generator=g))
            for _ in range(args.batches)]
    model = inception_v1()
    print(f"# {datetime.date.today()} {platform.node()} {torch.get_num_threads()} threads, backend {args.backend}, "
          f"{args.classes} classes, {args.batches - 1} timed batches of {BATCH}, load {os.getloadavg()[0]:.1f}")
    runs = {"int32": [], "int16": []}
    size = {}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits both
        for count_dtype in runs:
            t, size[count_dtype] = seconds_per_batch(model, data, args.backend, count_dtype, args.classes)
            runs[count_dtype].append(t)
    print("| count type | count state (MiB) | s/batch (median of runs) | vs int32 |")
    print("|---|---:|---:|---:|")
    base = statistics.median(runs["int32"])
    for count_dtype, times in runs.items():
        t = statistics.median(times)
        print(f"| {count_dtype} | {size[count_dtype] / 2**20:.0f} | {t:.3f} | {t / base:.2f}x |")
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

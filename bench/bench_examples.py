"""Cost of dataset-example tracking (issue 6): ``aggregate(..., examples=10)`` against
``examples=0`` on the CPU backend, end to end (forward + activation + influence), with the
bundled InceptionV1 and MobileNetV2 (random weights; 16 images of 224 px a batch; 10 classes
so that the count state stays small). Prints a table of medians (the runs with and without
examples taken in turn) and the overhead ratio.

    python bench/bench_examples.py [--batches 3] [--repeats 3] [--threads N]

The load average (1 min) is printed before and after each model: on a shared machine, numbers
taken under load are not comparable.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics

import torch

import summit_fast
from bench_cpu import seconds
from summit_fast._native import native
from summit_fast.models import inception_v1, mobilenet_v2

BATCH = 16


def interleaved_medians(fns, repeats: int) -> list[float]:
    """Median wall time of each of ``fns`` after one warm-up each, the runs taken in turn so that
    a change of the machine's load weighs on all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(seconds(fn))
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads of torch and of the OpenMP kernels (default: torch's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if native is not None:
        native.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(BATCH, 3, 224, 224, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
            for _ in range(args.batches)]
    print(f"# {datetime.date.today()} {platform.node()} {torch.get_num_threads()} threads, backend {args.backend}, "
          f"{args.batches} batches of {BATCH}, median of {args.repeats}")
    print("| model | examples=0 (s) | examples=10 (s) | overhead | load average |")
    print("|---|---|---|---|---|")
    for name, model in (("inception_v1", inception_v1()), ("mobilenet_v2", mobilenet_v2())):
        def run(n):
            return lambda: summit_fast.aggregate(model, data, backend=args.backend, examples=n, classes=list(range(10)),
                                                 progress=False)
        load = os.getloadavg()[0]
        base, tracked = interleaved_medians([run(0), run(10)], args.repeats)
        print(f"| {name} | {base:.2f} | {tracked:.2f} | {tracked / base - 1:+.1%} | "
              f"{load:.1f}-{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

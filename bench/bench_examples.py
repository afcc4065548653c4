"""Cost of dataset-example tracking (issue 6): ``aggregate(..., examples=10)`` against
``examples=0`` on the CPU backend, end to end (forward + activation + influence), with the
bundled InceptionV1 and MobileNetV2 (random weights; 16 images of 224 px a batch; 10 classes
so that the count state stays small). Prints a table of medians and the overhead ratio.

    python bench/bench_examples.py [--batches 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import platform

import torch

import summit_fast
from bench_cpu import median_time
from summit_fast.models import inception_v1, mobilenet_v2

BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="cpu")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(BATCH, 3, 224, 224, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
            for _ in range(args.batches)]
    print(f"# {datetime.date.today()} {platform.node()} {torch.get_num_threads()} threads, backend {args.backend}, "
          f"{args.batches} batches of {BATCH}, median of {args.repeats}")
    print("| model | examples=0 (s) | examples=10 (s) | overhead |")
    print("|---|---|---|---|")
    for name, model in (("inception_v1", inception_v1()), ("mobilenet_v2", mobilenet_v2())):
        def run(n):
            return lambda: summit_fast.aggregate(model, data, backend=args.backend, examples=n, classes=list(range(10)),
                                                 progress=False)
        base, tracked = median_time(run(0), args.repeats), median_time(run(10), args.repeats)
        print(f"| {name} | {base:.2f} | {tracked:.2f} | {tracked / base - 1:+.1%} |", flush=True)


if __name__ == "__main__":
    main()

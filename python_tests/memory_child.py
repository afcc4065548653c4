"""Child process for the memory test: aggregate many batches and print the peak RSS (kB)
after the 10th batch and after the last one."""

import sys

import torch

import summit_fast
from tiny_models import TinyInception


def peak_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def batches(n, marks):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        if i == 10:
            marks.append(peak_rss_kb())
        yield torch.randn(32, 3, 24, 24, generator=g), torch.randint(0, 5, (32,), generator=g)


if __name__ == "__main__":
    backend, n = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    marks = []
    summit_fast.aggregate(TinyInception().eval(), batches(n, marks), backend=backend, progress=False)
    print(marks[0], peak_rss_kb())

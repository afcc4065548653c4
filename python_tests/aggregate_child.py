"""A child process for the kill-and-resume tests: aggregates TinyInception over a deterministic
stream of small batches with checkpoints, optionally SIGKILLing itself at a given batch, and
saves the final result."""

import os
import signal
import sys

import torch

import summit_fast
from tiny_models import TinyInception


def batches(n, kill_at):
    g = torch.Generator().manual_seed(7)
    for i in range(n):
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        yield torch.randn(8, 3, 9, 9, generator=g), torch.randint(0, 5, (8,), generator=g)


if __name__ == "__main__":
    checkpoint_dir, out_dir, n, kill_at, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    torch.manual_seed(0)
    model = TinyInception().eval()
    result = summit_fast.aggregate(model, batches(n, kill_at), backend=backend, progress=False,
                                   checkpoint_dir=None if checkpoint_dir == "-" else checkpoint_dir,
                                   checkpoint_every=1)
    result.save(out_dir)

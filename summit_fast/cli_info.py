"""``summit-fast info``: version, build facts, and which backends can run here (and why not)."""

from __future__ import annotations

import torch

from . import __version__
from ._native import import_error, native
from .backends import backend_names, unavailable_reason


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="version and available backends")
    p.set_defaults(func=run)


def run(args) -> int:
    print(f"summit_fast {__version__} (torch {torch.__version__})")
    if native is None:
        print(f"native module: not available: {import_error}")
    else:
        print(f"native module: OpenMP {'on' if native.with_openmp else 'off'}, {native.num_threads()} threads; "
              f"CUDA: {native.cuda_status()}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("backends:")
    for name in backend_names():
        reasons = {d: unavailable_reason(name, d) for d in devices}
        usable = [d for d, r in reasons.items() if r is None]
        if usable:
            print(f"  {name:7s} available on {', '.join(usable)}")
        else:
            print(f"  {name:7s} unavailable: {'; '.join(sorted(set(reasons.values())))}")
    return 0

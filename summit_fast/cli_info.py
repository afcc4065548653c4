"""``summit-fast info``: version, build facts, and which backends can run here (and why not)."""

from __future__ import annotations

import torch

from . import __version__
from ._native import import_error, native
from .backends import backend_names, unavailable_reason
from .backends.triton import FLOAT64_NOTE
from .models.loading import MODELS
from .result import COUNT_DTYPES


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="version, available backends, count-state size of a model")
    p.add_argument("--model", choices=MODELS, help="also report the count state this bundled model needs")
    p.add_argument("--classes", type=int, default=None, help="number of classes for --model (default 1000)")
    p.add_argument("--count-dtype", choices=tuple(COUNT_DTYPES), default=None,
                   help="integer type of the counts for --model (default int32)")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.model and (args.classes is not None or args.count_dtype is not None):
        raise ValueError("--classes and --count-dtype size a model's count state: give --model too")
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
    print(f"  triton and float64: {FLOAT64_NOTE}")
    if args.model:
        print(count_state_report(args.model, 1000 if args.classes is None else args.classes, args.count_dtype or "int32"))
    return 0


def count_state_report(model_name: str, num_classes: int, count_dtype: str = "int32") -> str:
    """The size of the count state of a bundled model with its preset layers and ``count_dtype``
    counts, without allocating it."""
    from .models.loading import load_model
    from .discovery import discover
    from .result import SummitResult

    if num_classes < 1:
        raise ValueError(f"--classes must be positive, got {num_classes}")
    model = load_model(model_name, None)
    with torch.inference_mode():
        graph = discover(model, torch.zeros(1, *model.INPUT_SHAPE), model.SUMMARY_LAYERS)
    specs = SummitResult.tensor_specs(graph, num_classes, count_dtype=COUNT_DTYPES[count_dtype])
    sizes = {"activation": 0, "influence": 0, "skip": 0, "other": 0}
    for key, (shape, dtype) in specs.items():
        kind = key.split("/")[0]
        sizes[kind if kind in sizes else "other"] += torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    gib = {k: v / 2**30 for k, v in sizes.items()}
    skip = f", skip {gib['skip']:.3f}" if sizes["skip"] else ""
    return (f"count state of {model_name} ({len(graph.layers)} layers, {len(graph.edges)} conv edges) with "
            f"{num_classes} classes and {count_dtype} counts: {sum(gib.values()):.2f} GiB (activation {gib['activation']:.3f}, "
            f"influence {gib['influence']:.2f}{skip}, per-class totals and confusion {gib['other']:.3f})")

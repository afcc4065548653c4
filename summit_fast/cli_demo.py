"""``summit-fast demo --out DIR``: the built-in default run, with no downloads.

Trains the small digits CNN on scikit-learn's bundled handwritten digits (seconds on 2 cores),
aggregates over all 1,797 images, saves the result and exports the per-class attribution graphs
and the viewer's JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset


def register(subparsers) -> None:
    from .backends import backend_names

    p = subparsers.add_parser("demo", help="train a small CNN on bundled digits, aggregate, export")
    p.add_argument("--out", type=Path, default=Path("summit_demo"), help="output folder (default: ./summit_demo)")
    p.add_argument("--backend", default="auto", choices=(*backend_names(), "auto"),
                   help="the engine that counts, on the CPU (default: auto)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from .aggregate import aggregate
    from .backends import get_backend
    from .cli import check_output_folder
    from .export import export
    from .models.digits import load_digits_tensors, train_digits_cnn

    out = args.out
    # Everything that can be refused is refused before the training.
    check_output_folder(out)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    get_backend(args.backend, "cpu")
    print(f"training the digits CNN ({args.epochs} epochs) ...", flush=True)
    t0 = time.perf_counter()
    images, labels = load_digits_tensors()
    model = train_digits_cnn(images, labels, epochs=args.epochs)
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    print(f"trained the digits CNN in {time.perf_counter() - t0:.1f} s (training-set accuracy {accuracy:.3f})")
    loader = DataLoader(TensorDataset(images, labels), batch_size=128)
    t1 = time.perf_counter()
    result = aggregate(model, loader, backend=args.backend, class_names=[str(d) for d in range(10)],
                       progress=not args.no_progress)
    print(f"aggregated {result.num_images} images in {time.perf_counter() - t1:.1f} s: {result}")
    result.save(out / "result")
    viewer_dir = export(result, out / "viewer")
    print(f"result: {out / 'result'}\ngraphs: {viewer_dir / 'ag'}\nviewer: summit-fast view {viewer_dir}")
    return 0

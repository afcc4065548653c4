"""``summit-fast run``: everything for a folder of images — aggregate, graphs, export, dataset
example patches — then how to open the viewer. Under ``torchrun`` each rank aggregates its
shard (:class:`summit_fast.ShardSampler`) and rank 0 writes the outputs."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .result import COUNT_DTYPES

MODELS = ("inception_v1", "mobilenet_v2", "resnet18", "resnet50", "vgg16")
AMP_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="aggregate a folder of images, build graphs, export for the viewer",
                              description=__doc__)
    p.add_argument("--model", required=True, choices=MODELS, help="a bundled model")
    p.add_argument("--weights", type=Path, help="a state-dict file for the model (default: random weights)")
    p.add_argument("--tf-padding", action="store_true",
                   help="mobilenet_v2 only: TensorFlow 'SAME' padding (for weights converted from TensorFlow)")
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="images in class sub-folders, or ImageNet-style <wnid>_<name>.JPEG files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--backend", default="auto", help="torch, cpu, triton or auto (default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=tuple(AMP_CHOICES), default=None,
                   help="autocast the forward pass to this type (GPU throughput; the counts are those of "
                        "the half-precision forward, recorded in the result's params)")
    p.add_argument("--channels-last", action="store_true",
                   help="run the model in channels_last memory format (faster convs on GPUs)")
    p.add_argument("--examples", type=int, default=10, help="dataset examples per channel (default 10; 0: none)")
    p.add_argument("--embedding", choices=("auto", "umap", "pca"), default="auto")
    p.add_argument("--checkpoint-every", type=int, default=100, help="batches between checkpoints (default 100)")
    p.add_argument("--count-dtype", choices=tuple(COUNT_DTYPES), default="int32",
                   help="integer type of the counts; int16 halves their memory and holds up to 32767 images "
                        "per class (default int32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def load_model(name: str, weights: Path | None, tf_padding: bool = False):
    """A bundled model by name, with optional weights."""
    from . import models

    if tf_padding and name != "mobilenet_v2":
        raise ValueError("--tf-padding applies to mobilenet_v2 only")
    factory = getattr(models, name)
    return factory(weights, tf_padding=True) if tf_padding else factory(weights)


def run(args) -> int:
    from torch.utils.data import DataLoader

    from .aggregate import aggregate
    from .distributed import ShardSampler, is_distributed
    from .export import export
    from .images import ImageFolderDataset
    from .patches import PATTERN, export_patches, receptive_fields

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.model, args.weights, args.tf_padding).to(device)
    dataset = ImageFolderDataset(args.images, model.PREPROCESS)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        pin_memory=device.type == "cuda", sampler=ShardSampler(dataset))
    # Count rows only for the classes the images belong to (ImageNet's 1000 rows of influence
    # counts would need gigabytes for a folder of a few classes).
    classes = sorted(set(dataset.targets)) if dataset.classes else None
    names = [dataset.classes[c] for c in classes] if classes else None
    started = time.perf_counter()
    result = aggregate(model, loader, backend=args.backend, device=device, examples=args.examples, classes=classes,
                       count_dtype=args.count_dtype, amp_dtype=AMP_CHOICES.get(args.amp),
                       channels_last=args.channels_last,
                       class_names=names, label_source="target" if classes else "prediction",
                       progress=not args.no_progress,
                       checkpoint_dir=args.out / "checkpoints", checkpoint_every=args.checkpoint_every)
    if is_distributed() and torch.distributed.get_rank() != 0:
        return 0
    print(f"aggregated {result.num_images} images in {time.perf_counter() - started:.1f} s: {result}", flush=True)
    result.save(args.out / "result")
    viewer_dir = export(result, args.out / "viewer", embedding=args.embedding,
                        dataset_examples=PATTERN if args.examples else None)
    if args.examples:
        fields = receptive_fields(model, result.layers, model.INPUT_SHAPE, device=device)
        written = export_patches(result, fields, dataset.paths, model.PREPROCESS, viewer_dir,
                                 progress=not args.no_progress)
        print(f"wrote {written} dataset-example patches", flush=True)
    print(f"result: {args.out / 'result'}\nviewer: summit-fast view {viewer_dir}", flush=True)
    return 0

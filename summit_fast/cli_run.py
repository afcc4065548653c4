"""summit-fast run: everything for a folder of images — aggregate, graphs, export, dataset
example patches, with --feature-vis feature visualisations — then how to open the viewer.

Labels: images in folders named by ImageNet WordNet ids (n01440764/...) or named
<wnid>_<name>.JPEG are labelled with the model's ILSVRC-2012 class indices, and accuracy is
reported. Other class folders (cat/, dog/) group the counts by folder, but they are not the
model's classes, so no accuracy or confusion is computed (a warning says so).

Checkpoints go to OUT/checkpoints, in a sub-folder per list of image files (their paths, sizes
and modification times), labels and batch size: a run with the same model, options and images
resumes where an interrupted one stopped (Ctrl-C says how far it got); changed images start
afresh. They are removed once the result and the viewer folder are written, unless
--keep-checkpoints is given.

Images go to OUT/viewer/feature-vis in Summit's layout. --feature-vis renders the feature
visualisation and --diversity images of every channel in the graphs (on a CPU, at the default
64 px and 128 steps, about 1.5 s of CPU time per channel and 3 s for its 4 diversity images: long
for the hundreds of channels of a large model's graphs, e.g. 722 for MobileNetV2's of 100
classes; `summit-fast featvis OUT --layers ...` renders chosen layers afterwards).
Rendered images are cached in OUT/viewer/feature-vis/.cache, which a re-run keeps: it renders
only what is not cached (other weights or settings render afresh). A re-run without --feature-vis
drops the earlier images (they may be of other weights) but keeps the cache.

OUT/result and OUT/viewer are each replaced as a whole once the new one is complete: a failed
or killed run (a full disk included) leaves the previous ones as they were. One run at a time
writes to an OUT: it holds OUT/.lock, and a second run on the same OUT stops at once, naming
the first's PID.

Under torchrun (torchrun --nproc_per_node=N -m summit_fast.cli run ...) every process joins the
process group (gloo on CPU, NCCL on GPUs with one GPU per process), aggregates its shard of the
images (summit_fast.ShardSampler) with its own checkpoints, and rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ._staging import recover, remove_stale, replacing, temporary
from ._text import few
from .cli_export import add_layers_option, layers_from
from .graph import chosen_layers
from .featvis import FeatureVisSettings
from .images import ImageLoader
from .models.loading import MODELS, RANDOM_WEIGHTS_SEED, load_model
from .result import COUNT_DTYPES

AMP_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LABEL_CHOICES = ("auto", "imagenet", "folders", "none")
CHECKPOINTS = "checkpoints"  # OUT/checkpoints
OLD_PATCHES = "examples"  # where the viewer folder held the patches before Summit's layout: not carried over
# --feature-vis's settings by device kind: featvis's defaults (meant for a GPU), and on a CPU the
# smallest that give recognisable images (see summit_fast.featvis).
FEATURE_VIS_DEFAULTS = {"gpu": FeatureVisSettings(), "cpu": FeatureVisSettings(size=64, steps=128)}
FEATURE_VIS_BATCH = {"gpu": 64, "cpu": 32}
FEATURE_VIS_OPTIONS = ("feature_vis_size", "feature_vis_steps", "diversity", "feature_vis_batch")  # None: the default


def _int_at_least(low: int):
    """An argparse type: an int >= ``low``, else a usage error naming the option and the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0, else a usage error naming the value."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < float("inf"):  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="aggregate a folder of images, build graphs, export for the viewer",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODELS, help="a bundled model")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help=f"a state-dict file for the model (default: random weights drawn with seed "
                        f"{RANDOM_WEIGHTS_SEED}, i.e. the summary of an untrained network)")
    p.add_argument("--tf-padding", action="store_true",
                   help="mobilenet_v2 only: TensorFlow 'SAME' padding (for weights converted from TensorFlow)")
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="images in class sub-folders (folders named by ImageNet WordNet ids, e.g. n01440764/, "
                        "are the model's classes), or ImageNet-style <wnid>_<name>.JPEG files")
    p.add_argument("--labels", choices=LABEL_CHOICES, default="auto",
                   help="where labels come from: 'imagenet': WordNet ids of the folders (n01440764/) or of the file "
                        "names (<wnid>_<name>.JPEG), i.e. the model's ILSVRC-2012 classes, with accuracy; 'folders': "
                        "one class per sub-folder, not the model's classes, so without accuracy; 'none': unlabeled, "
                        "grouped by the model's predictions (every class of the model gets counts: see summit-fast "
                        "info --model M --classes N for their memory); 'auto': imagenet when every image has a "
                        "WordNet id, else folders (default auto)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder: result/, viewer/ and, during the run, checkpoints/")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, metavar="N", help="images per batch (default 32)")
    p.add_argument("--workers", type=_int_at_least(0), default=2, metavar="N",
                   help="DataLoader worker processes (default 2; 0: read images in the main process)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out image files that cannot be read (not counted; listed at the end) instead of "
                        "stopping at the first")
    p.add_argument("--backend", default="auto", help="torch, cpu, triton or auto (default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=tuple(AMP_CHOICES), default=None,
                   help="autocast the forward pass to this type (GPU throughput; the counts are those of "
                        "the half-precision forward, recorded in the result's params)")
    p.add_argument("--channels-last", action="store_true",
                   help="run the model in channels_last memory format (faster convs on GPUs)")
    p.add_argument("--examples", type=_int_at_least(0), default=10, metavar="N",
                   help="dataset examples per channel (default 10; 0: none)")
    p.add_argument("--all-patches", action="store_true",
                   help="write the dataset-example patches of every channel (default: only of the channels that "
                        "are nodes of some attribution graph, the only ones the viewer shows)")
    p.add_argument("--feature-vis", action="store_true",
                   help="render the feature visualisation and diversity images of every channel in the graphs "
                        "(see above for the time it takes)")
    p.add_argument("--feature-vis-size", type=_int_at_least(8), default=None, metavar="PX",
                   help=f"their side in pixels (default {FEATURE_VIS_DEFAULTS['gpu'].size} on a GPU, "
                        f"{FEATURE_VIS_DEFAULTS['cpu'].size} on a CPU)")
    p.add_argument("--feature-vis-steps", type=_int_at_least(1), default=None, metavar="N",
                   help=f"optimisation steps per image (default {FEATURE_VIS_DEFAULTS['gpu'].steps} on a GPU, "
                        f"{FEATURE_VIS_DEFAULTS['cpu'].steps} on a CPU)")
    p.add_argument("--diversity", type=_int_at_least(0), default=None, metavar="D",
                   help=f"diversity images per channel (default {FEATURE_VIS_DEFAULTS['cpu'].diversity}, as Summit; "
                        "0: none)")
    p.add_argument("--feature-vis-batch", type=_int_at_least(1), default=None, metavar="B",
                   help=f"images optimised at once (default {FEATURE_VIS_BATCH['gpu']} on a GPU, "
                        f"{FEATURE_VIS_BATCH['cpu']} on a CPU; the images do not depend on it)")
    p.add_argument("--embedding", choices=("auto", "umap", "pca"), default="auto",
                   help="how the viewer's map places the classes: umap (needs umap-learn), pca, or auto: UMAP when "
                        "umap-learn is installed and there are more than 15 classes, else PCA (default auto)")
    p.add_argument("--checkpoint-every", type=_int_at_least(1), default=100, metavar="N",
                   help="batches between checkpoints (default 100)")
    p.add_argument("--checkpoint-seconds", type=_seconds, default=60.0, metavar="S",
                   help="seconds between checkpoints, whichever of this and --checkpoint-every comes first "
                        "(default 60; 0: by batches alone)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep OUT/checkpoints after a successful run (default: removed; they hold as much as "
                        "the counts, about 10 GiB for InceptionV1 at 1000 classes)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the checkpoints in OUT/checkpoints and start from the first image")
    p.add_argument("--count-dtype", choices=tuple(COUNT_DTYPES), default="int32",
                   help="integer type of the counts; int16 halves their memory and holds up to 32767 images "
                        "per class (default int32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_layers_option(p)
    p.set_defaults(func=run)


# -- the model ------------------------------------------------------------------------------
def model_outputs(model, device: torch.device) -> int | None:
    """How many class scores ``model`` outputs (one forward pass of a blank image), or None
    when its output is not (batch, scores)."""
    with torch.inference_mode():
        output = model(torch.zeros(1, *model.INPUT_SHAPE, device=device))
    output = output[0] if isinstance(output, (tuple, list)) else output
    return int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() == 2 else None


# -- labels ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelPlan:
    """How ``run`` counts a dataset's labels: the options of :func:`summit_fast.aggregate`
    (``classes``, ``class_names``, ``num_classes``, ``label_source``), whether the model's
    predictions can be compared with the labels (``accuracy``), and, when they cannot, why
    (``warning``, for the user)."""

    classes: list[int] | None
    names: list[str] | None
    num_classes: int | None
    label_source: str
    accuracy: bool
    warning: str | None = None


def plan_labels(dataset, outputs: int | None) -> LabelPlan:
    """The :class:`LabelPlan` of ``dataset`` (an ImageFolderDataset) for a model with ``outputs``
    class scores (unused for folder labels).

    - ImageNet labels (WordNet ids) are ILSVRC-2012 class indices: only the classes present get
      rows of counts (ImageNet's 1000 rows of influence counts would need gigabytes for a folder
      of a few classes); accuracy is computed when the model has exactly those 1000 outputs
      (InceptionV1's 1008 are in another order).
    - Folder labels are positions in the list of folders, not the model's classes: counts are
      grouped by folder, and accuracy and confusion are not computed.
    - Unlabeled images are grouped by the model's prediction: every class of the model is
      counted, and accuracy would be 1 by construction, so it is not computed.
    """
    from .imagenet import NUM_IMAGENET_CLASSES, imagenet_class_names

    if dataset.label_mode == "none":
        names = imagenet_class_names() if outputs == NUM_IMAGENET_CLASSES else None
        return LabelPlan(None, names, None, "prediction", False,
                         f"the images are unlabeled: each is counted under the class the model predicts, with rows "
                         f"for all {outputs} of the model's classes (summit-fast info --model M --classes {outputs} "
                         "says how much memory that takes; --count-dtype int16 halves it); no accuracy is computed")
    classes = sorted(set(dataset.targets))
    names = [dataset.classes[c] for c in classes]
    if dataset.label_mode == "imagenet":
        if outputs == NUM_IMAGENET_CLASSES:
            return LabelPlan(classes, names, None, "target", True)
        return LabelPlan(classes, names, NUM_IMAGENET_CLASSES, "target", False,
                         f"the images are labelled with ImageNet's 1000 classes but the model has {outputs} outputs, "
                         "not those classes in their standard order: accuracy and confusion are not computed")
    return LabelPlan(classes, names, len(dataset.classes), "target", False,
                     f"the class folders ({few(dataset.classes)}) are not the model's classes: the counts are "
                     "grouped by folder, and accuracy and confusion are not computed (folders named by ImageNet "
                     "WordNet ids, e.g. n01440764/, give the model's classes)")


# -- the command ----------------------------------------------------------------------------
def run(args) -> int:
    from .aggregate import resolve_device
    from .distributed import rank_and_world_size, torchrun_process_group

    _check_paths(args)  # before anything slow
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    progress = _Progress()
    with torchrun_process_group(device) as device, _lock_out(args.out):
        try:
            return _run(args, device, progress)
        except KeyboardInterrupt:  # Ctrl-C: every temporary is gone (removed on the way out)
            if rank_and_world_size()[0] == 0:
                print(f"summit-fast run: {progress.interrupted()}", file=sys.stderr, flush=True)
            return 130


def _lock_out(out: Path):
    """Rank 0's exclusive lock on ``out`` for the run (the other ranks write only their own
    checkpoint folders)."""
    from ._lock import exclusive
    from .distributed import rank_and_world_size

    if rank_and_world_size()[0] != 0:
        return contextlib.nullcontext()
    return exclusive(out / ".lock", f"--out {out}", "summit-fast run", "wait for it to finish, or choose another --out")


@dataclass
class _Progress:
    """How far a run got, for the message of an interrupted one: the images of the batches
    aggregate has finished (this process's share under torchrun), of how many."""

    images: int = 0
    total: int | None = None

    def interrupted(self) -> str:
        if self.total is None:
            return "interrupted before counting began"
        return (f"interrupted after {self.images} of {self.total} images; re-running the same command resumes "
                "from the last checkpoint")


class _CountingLoader(ImageLoader):
    """An :class:`ImageLoader` that keeps ``progress.images`` up to date: aggregate asks for a
    batch only once it has counted the one before."""

    def __init__(self, dataset, progress: _Progress, **options):
        super().__init__(dataset, **options)
        self.progress = progress
        progress.total = len(self.sampler) if self.sampler is not None else len(dataset)

    def batches_from(self, start: int):
        self._done(start)
        for batch in super().batches_from(start):
            yield batch
            start += 1
            self._done(start)  # the next batch is asked for: this one is counted

    def _done(self, batches: int) -> None:
        self.progress.images = min(batches * self.batch_size, self.progress.total)


def _check_paths(args) -> None:
    from .cli import check_output_folder

    check_output_folder(args.out)
    if not args.images.is_dir():
        raise NotADirectoryError(f"--images {args.images} is not a folder")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    settings = [f"--{name.replace('_', '-')}" for name in FEATURE_VIS_OPTIONS if getattr(args, name) is not None]
    if settings and not args.feature_vis:
        raise ValueError(f"{', '.join(settings)} set{'s' if len(settings) == 1 else ''} how --feature-vis renders: "
                         "add --feature-vis, or leave out what it sets")


def _run(args, device: torch.device, progress: _Progress) -> int:
    from .aggregate import aggregate
    from .checkpoint import CheckpointMismatch
    from .distributed import ShardSampler, rank_and_world_size, rank_directory
    from .images import ImageFolderDataset, UnreadableImageError

    rank, world_size = rank_and_world_size()
    main = rank == 0  # the one that speaks and writes the outputs
    if main:  # what killed runs left (all of them: this one holds OUT's lock)
        recover(args.out / "result")
        recover(args.out / "viewer")
        remove_stale(args.out, ["patches", f"{CHECKPOINTS}.discard"])
    if args.weights is None and main:
        _warn(f"no --weights given: {args.model} has random weights (seed {RANDOM_WEIGHTS_SEED}), so this is the "
              "summary of an untrained network")
    model = load_model(args.model, args.weights, args.tf_padding).to(device)
    if args.layers:  # an unknown layer is an error before anything slow
        chosen_layers(model.SUMMARY_LAYERS, layers_from(args))
    if args.feature_vis:  # so is a size the model cannot take, which rendering would find after the aggregation
        _check_feature_vis_size(model, args, device)
    dataset = ImageFolderDataset(args.images, model.PREPROCESS, labels=args.labels)
    # Only ImageNet labels and predictions depend on the model's classes (a forward pass to count them).
    outputs = model_outputs(model, device) if dataset.label_mode != "folders" else None
    plan = plan_labels(dataset, outputs)
    if plan.warning and main:
        _warn(plan.warning)
    root = args.out / CHECKPOINTS
    checkpoint_dir = _checkpoint_folder(root, dataset, f"batch size {args.batch_size}\n{model.PREPROCESS!r}",
                                        args.fresh, main)
    loader = _CountingLoader(dataset, progress, batch_size=args.batch_size, sampler=ShardSampler(dataset),
                             num_workers=args.workers, pin_memory=device.type == "cuda",
                             skip_unreadable=args.skip_unreadable)
    rows = len(plan.classes) if plan.classes is not None else outputs
    started = time.perf_counter()
    try:
        with _report_resume(len(loader), main), _disk_full_says(
                checkpoint_dir, "a checkpoint of the counts", lambda: _counts_bytes(model, device, rows, args)):
            result = aggregate(model, loader, backend=args.backend, device=device, examples=args.examples,
                               classes=plan.classes, num_classes=plan.num_classes, class_names=plan.names,
                               label_source=plan.label_source, predictions=plan.accuracy,
                               count_dtype=args.count_dtype,
                               amp_dtype=AMP_CHOICES.get(args.amp), channels_last=args.channels_last,
                               progress=main and not args.no_progress,
                               checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every,
                               checkpoint_seconds=args.checkpoint_seconds)
    except UnreadableImageError as exc:
        raise UnreadableImageError(f"{exc} (--skip-unreadable leaves such files out)") from None
    except CheckpointMismatch as exc:
        raise exc.with_remedy(f"pass --fresh to discard {root} and start over, or choose another --out") from None
    skipped = _all_skipped(loader, dataset)  # every rank takes part
    if result.num_images == 0:
        raise ValueError(f"none of the {len(dataset)} images under {args.images} could be read "
                         f"(e.g. {few(skipped)})")
    if not main:
        # Done with its checkpoints (aggregate's all_reduce came after every rank's last save):
        # each rank removes its own, as another machine's disk may hold them.
        if not args.keep_checkpoints:
            _discard(rank_directory(checkpoint_dir))
        return 0
    processes = f" on {world_size} processes" if world_size > 1 else ""
    print(f"aggregated {result.num_images} images in {time.perf_counter() - started:.1f} s{processes} with the "
          f"{result.params['backend']} backend: {result}", flush=True)
    if skipped:
        _warn(f"skipped {len(skipped)} unreadable image file{'s' if len(skipped) > 1 else ''} (not counted): "
              f"{few(skipped)}")
    if plan.accuracy:
        print(f"top-1 accuracy: {result.top1_accuracy_overall:.4f}", flush=True)
    with _disk_full_says(args.out / "result", "the result", lambda: result.nbytes), \
            replacing(args.out / "result") as staged:
        result.save(staged)
        viewer_dir = _write_viewer(result, model, dataset, args, device)  # before the result is replaced
    _report_sizes(result, args, viewer_dir)
    if args.keep_checkpoints:
        print(f"checkpoints kept in {root} ({_mib(_bytes(root))}; --keep-checkpoints)", flush=True)
    else:
        _discard(root)
        print(f"removed the checkpoints in {root} (--keep-checkpoints keeps them)", flush=True)
    print(f"open the viewer: summit-fast view {viewer_dir}", flush=True)
    return 0


def _report_sizes(result, args, viewer_dir: Path) -> None:
    """Say where the result, the viewer folder and the patches went, and their sizes."""
    from .patches import PATTERN, is_placeholder

    examples = viewer_dir / Path(PATTERN).parent
    patch_bytes = _bytes(examples)
    print(f"result: {args.out / 'result'} ({_mib(_bytes(args.out / 'result'))}: the counts of {result.num_images} "
          f"images in {result.num_classes} classes)", flush=True)
    print(f"viewer: {viewer_dir} ({_mib(_bytes(viewer_dir) - patch_bytes)} without the patches; attribution graphs "
          f"of {result.num_classes} classes in {viewer_dir / 'ag'})", flush=True)
    if args.examples:
        which = "every channel (--all-patches)" if args.all_patches else \
            "the channels in the graphs (--all-patches: of every channel)"
        real = sum(not is_placeholder(path) for path in examples.rglob("*.jpg"))  # not Summit's placeholders
        print(f"dataset-example patches: {real} ({_mib(patch_bytes)}) in "
              f"{examples}, of {which}", flush=True)


def _bytes(folder: Path) -> int:
    """The size of the files in ``folder`` and its sub-folders."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _warn(message: str) -> None:
    print(f"summit-fast run: warning: {message}", file=sys.stderr, flush=True)


def _discard(folder: Path) -> None:
    """Remove ``folder`` atomically: renamed first, so that an interruption never leaves a
    half-deleted checkpoint that a later run would find damaged; gone already is fine."""
    doomed = temporary(folder.parent, f"{folder.name}.discard")
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:  # another rank sharing the disk got there first
        return
    shutil.rmtree(doomed, ignore_errors=True)  # renamed: what may be left is no checkpoint any more


def _checkpoint_folder(root: Path, dataset, batching: str, fresh: bool, main: bool) -> Path:
    """The checkpoint folder of this stream of batches: ``root/images-<key>``, the key a digest of
    the images' fingerprint (files, sizes, times, labels) and ``batching`` (batch size and
    preprocessing). A checkpoint counts the first N batches, so changed images (same names,
    other contents) or another batching start afresh instead of resuming counts of other
    inputs (other weights or model graphs are refused by aggregate). With ``fresh`` ``root`` is
    emptied first (each rank empties its own folder too, for machines without a shared disk).
    Every rank must see the same images."""
    import hashlib

    import torch.distributed as dist

    from .distributed import gather_objects, is_distributed, rank_directory

    fingerprint = hashlib.sha256(f"{dataset.fingerprint()}\n{batching}".encode()).hexdigest()
    theirs = gather_objects((fingerprint, len(dataset)))
    other = next((r for r, t in enumerate(theirs) if t[0] != fingerprint), None)
    if other is not None:
        raise ValueError(f"rank {other} sees other image files under {dataset.root} than rank "
                         f"{dist.get_rank()} ({theirs[other][1]} vs {len(dataset)} files, or other sizes, "
                         "times or labels); every process must see the same images")
    folder = root / f"images-{fingerprint[:16]}"
    if fresh:
        _discard(rank_directory(folder))
    if main:
        if fresh and root.exists():
            _discard(root)
            print(f"removed the checkpoints in {root} (--fresh)", flush=True)
        elif root.is_dir() and any(p != folder for p in root.iterdir()):
            print(f"{root} holds checkpoints of other image files, labels, batching or preprocessing: this run "
                  "does not resume them (they are removed when it completes)", flush=True)
    if is_distributed():
        dist.barrier()  # no rank writes a checkpoint before rank 0 has emptied the folder
    return folder


@contextlib.contextmanager
def _report_resume(total_batches: int, enabled: bool):
    """Print "resumed from DIR: N of M batches done" when aggregate resumes from a checkpoint
    (the checkpoint module logs it once it has accepted the checkpoint)."""
    if not enabled:
        yield
        return

    class Say(logging.Handler):
        def emit(self, record):
            print(f"resumed from {record.directory}: {record.batches_done} of {total_batches} batches done",
                  flush=True)

    logger, handler = logging.getLogger("summit_fast.checkpoint"), Say(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _all_skipped(loader, dataset) -> list[str]:
    """The paths of the files every rank skipped as unreadable, in dataset order."""
    from .distributed import gather_objects

    indices = [i for part in gather_objects([index for index, _ in loader.skipped]) for i in part]
    return [str(dataset.paths[i]) for i in sorted(indices)]


def _write_viewer(result, model, dataset, args, device) -> Path:
    """Export ``result`` to OUT/viewer with its images (dataset-example patches, with --feature-vis
    feature visualisations), written into the new folder before it replaces the old one (see
    :func:`summit_fast.export.export`), and the earlier folder's feature-vis cache; returns the folder."""
    from ._staging import _link_tree
    from .export import export
    from .featvis import CACHE, FOLDER, LAYOUT
    from .patches import export_patches, receptive_fields

    viewer = args.out / "viewer"

    def write_images(folder: Path, channels: dict[str, list[int]]) -> None:
        if (viewer / FOLDER / CACHE).is_dir():  # linked, not copied: cached files are replaced, never changed
            (folder / FOLDER).mkdir()
            _link_tree(viewer / FOLDER / CACHE, folder / FOLDER / CACHE)
        if args.examples:
            fields = receptive_fields(model, result.layers, model.INPUT_SHAPE, device=device)
            export_patches(result, fields, dataset.paths, model.PREPROCESS, folder, progress=not args.no_progress,
                           channels=None if args.all_patches else channels)
        if args.feature_vis:
            _render_feature_vis(folder / FOLDER, model, channels, args, device)

    patterns = dict(LAYOUT, dataset_examples=LAYOUT["dataset_examples"] if args.examples else None)
    with _disk_full_says(viewer, "the viewer folder"):
        return export(result, viewer, embedding=args.embedding, **patterns, write_images=write_images,
                      replaces=[FOLDER, OLD_PATCHES], layers=layers_from(args))


def _feature_vis_settings(args, device) -> tuple[FeatureVisSettings, int]:
    """--feature-vis's settings and batch: those given, and the device kind's defaults for the others."""
    from dataclasses import replace

    defaults, batch = feature_vis_defaults(device)
    settings = replace(defaults, size=args.feature_vis_size or defaults.size,
                       steps=args.feature_vis_steps or defaults.steps,
                       diversity=defaults.diversity if args.diversity is None else args.diversity)
    return settings, args.feature_vis_batch or batch


def feature_vis_defaults(device) -> tuple[FeatureVisSettings, int]:
    """The feature-vis settings and batch that ``run --feature-vis`` and ``featvis`` use on
    ``device`` (a torch.device) for what they are not given."""
    kind = "gpu" if device.type == "cuda" else "cpu"
    return FEATURE_VIS_DEFAULTS[kind], FEATURE_VIS_BATCH[kind]


def _check_feature_vis_size(model, args, device) -> None:
    """A one-line error naming --feature-vis-size if the model cannot take images of that size up
    to its deepest summary layer drawn (a forward pass of one blank image)."""
    from .featvis import SizeTooSmall, check_size

    try:
        size = _feature_vis_settings(args, device)[0].size
        check_size(model, layers_from(args) or model.SUMMARY_LAYERS, size, device)
    except SizeTooSmall as exc:
        raise ValueError(exc.for_option("--feature-vis-size")) from None


def _render_feature_vis(folder: Path, model, channels: dict[str, list[int]], args, device) -> None:
    """--feature-vis: the feature visualisations of ``channels`` (the graphs') into ``folder``,
    with the device kind's defaults for the settings not given."""
    from .featvis import write_feature_vis

    settings, batch = _feature_vis_settings(args, device)
    targets = [(layer, c) for layer, layer_channels in channels.items() for c in layer_channels]
    started = time.perf_counter()
    report = write_feature_vis(folder, model, targets, settings, batch=batch, device=device,
                               progress=not args.no_progress)
    print(f"feature visualisations of the {len(targets)} channels in the graphs ({settings.size} px, {settings.steps} "
          f"steps, {settings.diversity} diversity images): rendered {len(report.rendered['channel'])}, "
          f"{len(report.cached['channel'])} from the cache, in {time.perf_counter() - started:.1f} s", flush=True)


# -- a full disk ----------------------------------------------------------------------------
class DiskFull(OSError):
    """The disk ran out of space while the run wrote an output (one line: where, how much it
    needs and how much is free; nothing it was writing replaced an earlier output)."""


@contextlib.contextmanager
def _disk_full_says(folder: Path, what: str, needs: Callable[[], int] | None = None):
    """Turn the disk running out of space in the block, which writes ``what`` into ``folder``,
    into :class:`DiskFull`; ``needs()``: at most how many bytes that takes."""
    try:
        yield
    except Exception as exc:
        if not _out_of_space(exc):
            raise
        free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
        need = f" (up to {_mib(needs())})" if needs is not None else ""
        raise DiskFull(f"no space left on the disk of {folder} for {what}{need}: {_mib(free)} free; free some "
                       "space or choose another --out (earlier outputs were left as they were)") from None


def _out_of_space(exc: Exception) -> bool:
    """Whether ``exc`` says the disk is full: an OSError ENOSPC, or safetensors' SafetensorError,
    which says so only in its message ("... No space left on device (os error 28)")."""
    from safetensors import SafetensorError

    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return isinstance(exc, SafetensorError) and f"(os error {errno.ENOSPC})" in str(exc)


def _counts_bytes(model, device: torch.device, rows: int, args) -> int:
    """The size of the counts of ``model``'s summary layers for ``rows`` classes: at most what a
    checkpoint takes (saves store them compactly)."""
    from .discovery import discover
    from .result import SummitResult

    with torch.inference_mode():
        graph = discover(model, torch.zeros(1, *model.INPUT_SHAPE, device=device), model.SUMMARY_LAYERS)
    specs = SummitResult.tensor_specs(graph, rows, args.examples, count_dtype=COUNT_DTYPES[args.count_dtype])
    return sum(torch.Size(shape).numel() * dtype.itemsize for shape, dtype in specs.values())

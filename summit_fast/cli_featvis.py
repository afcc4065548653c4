"""summit-fast featvis DIR: render the feature visualisations (one image per channel, and D
diversity images) of the channels in a run's attribution graphs, in Summit's layout
(feature-vis/channel/{layer}-{channel}-channel.jpg, feature-vis/diversity-{d}/...; a layer name
with characters other than letters, digits, '_' and '-' has them as '_', e.g. features_14).

DIR is what `summit-fast run` wrote (OUT, holding result/ and viewer/), a viewer folder (from
run or `summit-fast export`: its ag/ag-*.json list the graphs' nodes) or a saved result (its
graphs are built). The images go to DIR/viewer/feature-vis, DIR/feature-vis for a viewer folder,
or --out. A result does not record which bundled model and weights made it, so give the same
--model, --weights and --tf-padding as to `run`; the weights are checked against the result's
digest. Rendered images are cached (--cache; default: .cache/ in the feature-vis folder): a
rerun, or a run resumed after an interruption, renders only the channels not done yet. In a
viewer folder, its index (summit_fast.json) is updated to list the images, which the viewer then shows.

Defaults, as `run --feature-vis`'s: 128 px, 512 steps, 64 images a batch on a GPU; 64 px, 128
steps, 32 a batch on a CPU (MobileNetV2's 722 graph channels: 4 minutes for their channel images
on two cores, and about four times that for their diversity images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .models.loading import MODELS, load_model


def register(subparsers) -> None:
    from .cli_run import FEATURE_VIS_BATCH, FEATURE_VIS_DEFAULTS, _int_at_least
    from .featvis import AMP_DTYPES, FeatureVisSettings

    d = FeatureVisSettings()
    p = subparsers.add_parser("featvis", help="render feature visualisations of a run's graph channels",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, metavar="DIR", help="a run's output folder, a viewer folder or a saved result")
    p.add_argument("--model", required=True, choices=MODELS, help="the bundled model the run used")
    p.add_argument("--weights", type=Path, metavar="FILE", help="the state-dict file the run used (default: random "
                                                                 "weights, as run without --weights)")
    p.add_argument("--tf-padding", action="store_true", help="mobilenet_v2 only: as given to run")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (default: every layer of the graphs)")
    p.add_argument("--out", type=Path, metavar="DIR", help="the feature-vis folder to write (default: see above)")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="cache of rendered images (default: .cache/ in the feature-vis folder)")
    gpu, cpu = FEATURE_VIS_DEFAULTS["gpu"], FEATURE_VIS_DEFAULTS["cpu"]
    p.add_argument("--size", type=_int_at_least(8), default=None, metavar="PX",
                   help=f"image side in pixels (default {gpu.size} on a GPU, {cpu.size} on a CPU)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, metavar="N",
                   help=f"optimisation steps (default {gpu.steps} on a GPU, {cpu.steps} on a CPU)")
    p.add_argument("--diversity", type=_int_at_least(0), default=d.diversity, metavar="D",
                   help=f"diversity images per channel (default {d.diversity}, as Summit; 0: none)")
    p.add_argument("--batch", type=_int_at_least(1), default=None, metavar="B",
                   help=f"images per optimisation (default {FEATURE_VIS_BATCH['gpu']} on a GPU, "
                        f"{FEATURE_VIS_BATCH['cpu']} on a CPU; the images do not depend on it)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the images (default {d.seed})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None, help="autocast the model's forward (GPU speed)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from .aggregate import resolve_device
    from .checkpoint import model_digest
    from .cli import check_output_folder
    from .cli_run import feature_vis_defaults
    from .featvis import FeatureVisSettings, SizeTooSmall, write_feature_vis

    source = _Source.find(args.directory)
    out = args.out or source.default_out
    if out is None:
        raise ValueError(f"{args.directory} is a saved result, not a run or viewer folder: pass --out DIR")
    check_output_folder(out)
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    channels = source.channels()
    targets = _select(channels, args.layers)
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.model, args.weights, args.tf_padding).to(device)
    recorded = source.params.get("model_digest")
    if recorded is not None and recorded != model_digest(model):
        raise ValueError(f"--model {args.model} with {'--weights ' + str(args.weights) if args.weights else 'random weights'} "
                         f"is not the network {args.directory} was aggregated with (its weights digest differs); "
                         "pass the --model, --weights and --tf-padding given to run")
    defaults, batch = feature_vis_defaults(device)
    settings = FeatureVisSettings(size=args.size or defaults.size, steps=args.steps or defaults.steps,
                                  seed=args.seed, diversity=args.diversity, amp=args.amp)
    started = time.perf_counter()
    try:
        report = write_feature_vis(out, model, targets, settings, batch=args.batch or batch, device=device,
                                   cache_dir=args.cache, progress=not args.no_progress)
    except SizeTooSmall as exc:  # raised before anything is rendered
        raise ValueError(exc.for_option("--size")) from None
    rendered = len(set(report.rendered["channel"]) | set(report.rendered["diversity"]))
    seconds = time.perf_counter() - started
    print(f"feature visualisations of {len(targets)} channels in {out}: rendered {len(report.rendered['channel'])} "
          f"channel images and the diversity images of {len(report.rendered['diversity'])} channels in {seconds:.1f} s"
          + (f" ({seconds / rendered:.2f} s per channel)" if rendered else "") + ", the rest from the cache",
          flush=True)
    if source.ag is not None and out == source.default_out:  # the viewer's index lists the images it shows
        from .export import refresh_image_index

        if not refresh_image_index(source.ag.parent, channels):
            print(f"{source.ag.parent} has no summit_fast.json of this version: export it again for the viewer "
                  "to list these images", flush=True)
    return 0


class _Source:
    """Where the channels come from: a viewer folder's graphs or a saved result's, with the
    aggregation's params and the default output folder."""

    def __init__(self, ag: Path | None, result: Path | None, params: dict, default_out: Path | None):
        self.ag, self.result, self.params, self.default_out = ag, result, params, default_out

    @classmethod
    def find(cls, directory: Path) -> "_Source":
        from .export import INDEX_FILE

        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a folder (expected a run's output, a viewer folder or a result)")
        for viewer, out in ((directory / "viewer", directory / "viewer"), (directory, directory)):
            if (viewer / "ag").is_dir():
                return cls(viewer / "ag", None, _params(viewer / INDEX_FILE, "params"), out / "feature-vis")
        if (directory / "manifest.json").is_file():
            return cls(None, directory, _params(directory / "manifest.json", "params"), None)
        raise ValueError(f"{directory} holds neither viewer/ag/ (a run's output), ag/ (a viewer folder) nor "
                         "manifest.json (a saved result)")

    def channels(self) -> dict[str, set[int]]:
        """``{layer: channels}`` of every node of every class graph."""
        found: dict[str, set[int]] = {}
        if self.ag is not None:
            for path in sorted(self.ag.glob("ag-*.json")):
                for layer, nodes in json.loads(path.read_text()).items():
                    found.setdefault(layer, set()).update(int(n["channel"]) for n in nodes)
            return found
        from .graph import iter_graphs
        from .result import SummitResult

        for graph in iter_graphs(SummitResult.load(self.result)):
            for layer, nodes in graph.nodes.items():
                found.setdefault(layer, set()).update(n.channel for n in nodes)
        return found


def _params(path: Path, key: str) -> dict:
    try:
        return dict(json.loads(path.read_text()).get(key) or {})
    except FileNotFoundError:
        return {}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path} is not a summit_fast JSON file ({exc})") from None


def _select(channels: dict[str, set[int]], layers: list[str] | None) -> list[tuple[str, int]]:
    """(layer, channel) of the chosen layers (all by default); ``ValueError`` naming a layer the
    graphs do not have, and those they have."""
    from ._text import few

    for layer in layers or ():
        if layer not in channels:
            raise ValueError(f"--layers {layer}: the graphs have no nodes in layer {layer!r}; their layers are "
                             f"{few(list(channels), 30)}")
    chosen = [(layer, ch) for layer in (layers or channels) for ch in sorted(channels[layer])]
    if not chosen:
        raise ValueError("the graphs have no nodes: nothing to render")
    return chosen

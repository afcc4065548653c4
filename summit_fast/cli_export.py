"""``summit-fast export RESULT_DIR --out DIR``: attribution graphs and the viewer's JSON for a saved result.

DIR is replaced as a whole once the new export is complete (other files in it are kept), so a
failed or interrupted export leaves the earlier one; one export at a time writes to a DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a saved result's attribution graphs and viewer JSON",
                              description=__doc__)
    p.add_argument("result", type=Path, metavar="RESULT_DIR", help="a folder written by SummitResult.save()")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (created if needed)")
    p.add_argument("--class-names", type=Path, metavar="FILE",
                   help="class names, one a line (or a JSON list); default: the result's, else 'class k'")
    p.add_argument("--embedding", choices=("auto", "umap", "pca"), default="auto",
                   help="class embedding per layer (default auto: UMAP when umap-learn is installed, else PCA)")
    p.add_argument("--feature-vis", metavar="PATTERN",
                   help="feature visualisations inside DIR, e.g. 'feature-vis/channel/{layer}-{channel}-channel.jpg'")
    p.add_argument("--dataset-examples", metavar="PATTERN",
                   help="dataset example images inside DIR, with {layer}, {channel} and {i}")
    add_layers_option(p)
    p.set_defaults(func=run)


def add_layers_option(p) -> None:
    """``--layers L1,L2,...`` (or repeated): graphs over these summary layers only (see :func:`layers_from`)."""
    p.add_argument("--layers", action="append", type=lambda text: [l for l in text.split(",") if l], metavar="L1,L2,...",
                   help="attribution graphs over these summary layers only, e.g. every other block (default: all); "
                        "between chosen layers an edge is the widest path through the layers left out")


def layers_from(args) -> list[str] | None:
    """The layer names given with ``--layers``, in the order given, or None when none were."""
    return [layer for part in args.layers for layer in part] if args.layers else None


def run(args) -> int:
    from .export import export
    from .result import SummitResult
    from .viewer.index import read_class_names

    result = SummitResult.load(args.result)
    layers = layers_from(args)
    names = read_class_names(args.class_names) if args.class_names else None
    try:
        out = export(result, args.out, class_names=names, embedding=args.embedding,
                     feature_vis=args.feature_vis, dataset_examples=args.dataset_examples, layers=layers)
    except KeyboardInterrupt:  # the folder is replaced as a whole: nothing half-written to report
        print(f"summit-fast export: interrupted; {args.out} holds a whole export (the earlier one, unless the new "
              "one was already in place)", file=sys.stderr, flush=True)
        return 130
    print(f"wrote {result.num_classes} class graphs to {out}; view them with: summit-fast view {out}", flush=True)
    return 0

"""``summit-fast view DIR``: the interactive viewer for an exported folder (or a folder of Summit's
own graphs), served on 127.0.0.1; or, with ``--static DEST``, written as files that open from disk."""

from __future__ import annotations

import argparse
import sys
import warnings
import webbrowser
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="open the interactive viewer on an exported folder or Summit's graphs",
                              description=__doc__)
    p.add_argument("dir", type=Path, help="an exported folder (summit_fast.json), or a folder with Summit's ag/ag-{c}.json "
                                          "(a `summit-fast run` output folder: its viewer/)")
    p.add_argument("--port", type=_port, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    p.add_argument("--class-names", type=Path, metavar="FILE",
                   help="for a folder of graphs alone: class names, one a line (or a JSON list); "
                        "default: ImageNet's for 1000 classes, else 'class k'")
    p.add_argument("--no-browser", action="store_true", help="only print the address; do not open a browser")
    p.add_argument("--static", type=Path, metavar="DEST",
                   help="instead of serving, write the viewer with all the folder's JSON into DEST and print the page "
                        "to open from disk (a snapshot: write it again after re-exporting)")
    p.set_defaults(func=run)


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {port}")
    return port


def run(args) -> int:
    # Imported here so that other subcommands don't pay for the viewer's imports.
    from .viewer.index import read_class_names
    from .viewer.server import make_server
    from .viewer.standalone import write_standalone

    class_names = read_class_names(args.class_names) if args.class_names else None
    data_dir = _data_folder(args.dir)
    with warnings.catch_warnings():
        warnings.showwarning = _say_warning
        if args.static:
            page = write_standalone(data_dir, args.static, class_names, progress=True)
            print(page.as_uri(), flush=True)
            return 0
        server = make_server(data_dir, args.port, class_names, progress=True)
    print(f"Summit viewer for {data_dir}: {server.url}  (Ctrl+C stops it)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _say_warning(message, *_, **__) -> None:
    """A warning (a graph file skipped, say) as one line, without the code location."""
    print(f"summit-fast view: warning: {message}", file=sys.stderr, flush=True)


def _data_folder(folder: Path) -> Path:
    """The folder to view: ``folder`` itself, or the viewer/ that `summit-fast run` writes beside
    result/ when given its output folder (said in one line)."""
    from .viewer.index import has_export_index

    viewer = folder / "viewer"
    if not has_export_index(folder) and not (folder / "ag").is_dir() and has_export_index(viewer):
        print(f"{folder} is a `summit-fast run` output folder: viewing its {viewer}", file=sys.stderr, flush=True)
        return viewer
    return folder

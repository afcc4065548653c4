"""The ``summit-fast`` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``."""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "summit_fast.cli_demo",
    "summit_fast.cli_export",
    "summit_fast.cli_info",
    "summit_fast.cli_run",
    "summit_fast.cli_view",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="summit-fast", description="Summarise what a CNN has learned over a dataset (a fast Summit).")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:  # user-facing: no traceback
        print(f"summit-fast {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

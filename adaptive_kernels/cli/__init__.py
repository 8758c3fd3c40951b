"""Command line: ``adaptive-kernels {demo,solve,sweep,plot} ...``.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` (taking the parsed args, returning an exit code).
Errors the user can fix (bad files, bad arguments) are printed as one line and exit 2; warnings
are one line each.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

SUBCOMMANDS: tuple[str, ...] = ("demo", "solve", "sweep", "plot")


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptive-kernels",
        description="Saddle-point kernels of finite neural networks (adaptive_kernels).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"adaptive_kernels.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"adaptive-kernels {args.command}"
    shown = set()

    def show(message, *_, **__):  # a library warning (e.g. float16 promoted) is one line, printed once
        if str(message) not in shown:
            shown.add(str(message))
            print(f"{prefix}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return int(args.func(args) or 0)
        except (UsageError, ValueError, TypeError, FileNotFoundError, KeyError) as err:
            print(f"{prefix}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())

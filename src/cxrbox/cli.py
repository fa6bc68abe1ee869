"""The `cxrbox` command line: one subcommand per module in `cxrbox.commands`.

Each command module exposes `register(subparsers)` which adds its parser and sets
`func(args) -> int`. Command modules import heavy libraries inside `func`, so `cxrbox --help`
stays fast. Library errors (`CxrboxError`) become exit code 2 with a one-line message, and so
do operating-system errors on a file (a folder that cannot be written, a full disk): the file
and the reason, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cxrbox import __version__
from cxrbox.commands.arguments import DefaultsHelpFormatter
from cxrbox.errors import CxrboxError

# Module names under cxrbox.commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "train", "eval", "predict", "diagnose", "plot", "bench", "cache", "viz_data", "synth",
    "export", "bench_inference",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrbox",
        description="Box-regression trainer for chest X-rays (RSNA pneumonia format) "
        "with collapse, gradient and schedule monitors.",
    )
    parser.add_argument("--version", action="version", version=f"cxrbox {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cxrbox.commands.{name}").register(subparsers)
    for command in subparsers.choices.values():  # every option's help shows its default
        command.formatter_class = DefaultsHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CxrboxError as exc:
        print(f"cxrbox {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file: a bug to report, with its traceback
            raise
        reason = exc.strerror or type(exc).__name__
        print(f"cxrbox {args.command}: error: {exc.filename}: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxrbox {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

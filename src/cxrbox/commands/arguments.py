"""Command-line options that several subcommands share, declared once."""

from __future__ import annotations

import argparse

from cxrbox.data.unreadable import ON_ERROR_CHOICES, SKIPPED_EXIT_CODE


def score_threshold(text: str) -> float:
    """argparse type of `--score-threshold`: a number in [0, 1], checked before a command starts
    (so a bad value never touches an output file)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a box score), got {text}")
    return value


def add_on_error_arguments(parser: argparse.ArgumentParser, default_sidecar: str) -> None:
    """`--on-error` and `--skipped` for a command that reads a folder of DICOMs."""
    parser.add_argument(
        "--on-error",
        dest="on_error",
        choices=ON_ERROR_CHOICES,
        default="fail",
        help="unreadable DICOM: stop naming it (fail, default) or go on without it (skip: "
        f"listed in --skipped, exit code {SKIPPED_EXIT_CODE})",
    )
    parser.add_argument(
        "--skipped", help=f"CSV of skipped files with reasons (default {default_sidecar})"
    )

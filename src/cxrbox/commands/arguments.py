"""Command-line options that several subcommands share, declared once."""

from __future__ import annotations

import argparse

from cxrbox.data.unreadable import ON_ERROR_CHOICES, SKIPPED_EXIT_CODE


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

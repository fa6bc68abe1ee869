"""Command-line options that several subcommands share, declared once."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from cxrbox.data.unreadable import ON_ERROR_CHOICES, SKIPPED_EXIT_CODE


def add_on_error_arguments(parser: argparse.ArgumentParser, default_sidecar: str) -> None:
    """`--on-error` and `--skipped` for a command that reads a folder of DICOMs."""
    parser.add_argument(
        "--on-error",
        dest="on_error",
        choices=ON_ERROR_CHOICES,
        default="fail",
        help="unreadable DICOM: stop naming it (fail) or go on without it (skip: "
        f"listed in --skipped, exit code {SKIPPED_EXIT_CODE})",
    )
    parser.add_argument(
        "--skipped", help=f"CSV of skipped files with reasons (default {default_sidecar})"
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """`--help` that ends each option's help with its default, "(default: 16)", unless the help
    states it already. Flags (no value) and options whose default is None show none: theirs is
    in their help text (`show_config_defaults` for options that fall back to TrainConfig)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if action.nargs == 0 or default is None or default is argparse.SUPPRESS:
            return text
        if "default" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def show_config_defaults(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """End the help of each option whose dest is in `names` with "(default: TrainConfig's
    epochs = 12)". Those options default to None so that they override a --config file only
    when given; this shows what a run gets from neither. Options of a None field are left."""
    from cxrbox.config import TrainConfig

    config = TrainConfig()
    for action in parser._actions:
        value = getattr(config, action.dest, None) if action.dest in names else None
        if value is None:
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        note = f"(default: TrainConfig's {action.dest} = {shown})"
        action.help = f"{action.help} {note}" if action.help else note


def integer(minimum: int, maximum: int | None = None, multiple_of: int = 1) -> Callable[[str], int]:
    """argparse type: an integer in [minimum, maximum] (no upper bound when None), a multiple
    of `multiple_of`; the error names what was expected and what was given."""
    bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    expected = f"an integer {bound}"
    expected += f" and a multiple of {multiple_of}" if multiple_of > 1 else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum) or value % multiple_of:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = "int"
    return parse


def number(low: float, high: float | None = None) -> Callable[[str], float]:
    """argparse type: a number in [low, high] (no upper bound when None); NaN is refused."""
    expected = f"a number in [{low:g}, {high:g}]" if high is not None else f"a number >= {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (low <= value and (high is None or value <= high)):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def device(text: str) -> str:
    """argparse type of `--device`: cpu, cuda or cuda:N (whether CUDA is there is checked when
    the command runs: `require_device`)."""
    if re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def require_device(name: str, option: str = "--device") -> None:
    """ConfigError when `name` is a CUDA device this machine does not have."""
    if not name.startswith("cuda"):
        return
    import torch

    from cxrbox.errors import ConfigError

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{option} {name}: PyTorch sees no CUDA device here (a CPU-only build or no GPU); "
            "use cpu"
        )
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0"
        )

"""`cxrbox plot`: (re)write the training plots of a run directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="write the training plots (PNG) of a run directory",
        description="Read RUN_DIR/metrics.jsonl and config.json and write RUN_DIR/plots/*.png: "
        "LR per step, loss branches, prediction spread, gradient norms and validation "
        "predictions over epochs.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of cxrbox train")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrbox.engine.plots import write_plots
    from cxrbox.engine.runlog import JSONL_NAME
    from cxrbox.errors import DataError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run directory does not exist")
    missing = [name for name in (JSONL_NAME, "config.json") if not (run_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{run_dir}: not a cxrbox run directory (no {' or '.join(missing)}); "
            "give the --out folder of a `cxrbox train` run"
        )
    paths = write_plots(run_dir)
    if not paths:
        raise DataError(f"{run_dir / JSONL_NAME}: no step records to plot")
    for path in paths:
        print(path)
    return 0

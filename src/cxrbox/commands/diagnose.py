"""`cxrbox diagnose`: run the diagnosis checklist on a configuration and its data."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from cxrbox.commands.arguments import show_config_defaults
from cxrbox.options import HEADS, NORMS

QUICK_SKIPS = ("position_sensitivity", "overfit")  # the two checks that train


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="run the diagnosis checklist (labels, box sync, position, optimizer, LR, overfit)",
        description="Check a configuration and its data against the diagnosis's high-risk "
        "areas: labels and files, boxes in sync with the training transforms, a head that "
        "sees position, an optimizer step that moves every weight, gradients in every layer, "
        "the warmup + cosine schedule, and a tiny-batch overfit on a real sample. Prints "
        "PASS/WARN/FAIL per check; exit code 1 when a check fails. Without --images, the "
        "built-in synthetic data set is used.",
    )
    parser.add_argument("--images", help="folder of <patientId>.dcm files")
    parser.add_argument("--labels", help="RSNA label CSV (patientId,x,y,width,height,Target)")
    parser.add_argument("--head", choices=HEADS, help="box head to check")
    parser.add_argument("--norm", choices=NORMS, help="normalization layers of the backbone")
    parser.add_argument("--config", help="TrainConfig fields in a .toml, .json, .yaml or .yml file")
    parser.add_argument("--json", action="store_true", help="print one JSON array of checks")
    parser.add_argument(
        "--json-out",
        metavar="FILE",
        help="write the JSON array of checks to FILE (atomically) as well: unlike --json on "
        "stdout, a model's own logging cannot mix with it",
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip the two training probes (position, overfit)"
    )
    parser.add_argument(
        "--detector",
        metavar="MODULE:NAME",
        help="run the cxrbox.testing checklist on your own model instead: a Detector, or a "
        "function of no arguments returning one (the current directory is importable)",
    )
    parser.set_defaults(func=run)
    show_config_defaults(parser, OVERRIDES)


OVERRIDES = ("images", "labels", "head", "norm")


def format_result(result: Any) -> str:
    """`PASS  name  message` (status padded to 4, name to 20)."""
    return f"{result.status.upper():<4}  {result.name:<20}  {result.message}"


def json_safe(value: Any) -> Any:
    """Numbers, lists and dicts as strict JSON values (numpy scalars unwrapped, NaN/Inf None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    import logging

    from cxrbox.config import load_config
    from cxrbox.diagnostics.checklist import run_checklist

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.detector:
        return run_detector(args)
    config = load_config(args.config, {name: getattr(args, name) for name in OVERRIDES})
    data = config.images or "built-in synthetic data"
    print(
        f"cxrbox diagnose: head {config.head}, stride {config.stride}, norm {config.norm}, "
        f"width {config.width}, {config.image_size} px, batch {config.batch_size}, on {data}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    results = run_checklist(config, quick=args.quick, progress=progress)
    return report(results, args.json, started, args.json_out)


def progress(name: str) -> None:
    print(f"running {name} ...", file=sys.stderr, flush=True)


def run_detector(args: argparse.Namespace) -> int:
    """`--detector MODULE:NAME`: the kit's checklist on that detector."""
    import os

    from cxrbox.testing.checklist import load_detector, run_detector_checklist

    # like `python -m`: the project's own modules import
    detector = load_detector(args.detector, search_path=os.getcwd())
    print(f"cxrbox diagnose: {detector.name} from {args.detector}", file=sys.stderr)
    started = time.perf_counter()
    skip = QUICK_SKIPS if args.quick else ()
    results = run_detector_checklist(detector, progress=progress, skip=skip)
    return report(results, args.json, started, args.json_out)


def report(results: list[Any], as_json: bool, started: float, json_out: str | None = None) -> int:
    """Print one line per check (or a JSON array) and the verdict, and write the JSON array to
    `json_out` when given; exit code 1 on a failure."""
    import json

    from cxrbox.atomic_write import atomic_path

    failed = [r.name for r in results if r.status == "fail"]
    document = json.dumps([json_safe(r.as_dict()) for r in results], allow_nan=False)
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(document + "\n")
    if as_json:
        print(document)
        return 1 if failed else 0
    for result in results:
        print(format_result(result))
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail")}
    verdict = f"FAILED: {', '.join(failed)}" if failed else "no check failed"
    print(
        f"{len(results)} checks: {counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['fail']} fail in {time.perf_counter() - started:.0f} s -- {verdict}"
    )
    return 1 if failed else 0

"""`cxrbox export`: a checkpoint to ONNX (FP32, and int8 with --int8) plus a parity report."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import integer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (FP32, --int8) with a parity report",
        description="Export the network up to its raw head output [B, 5, Hg, Wg] (dynamic "
        "batch; decode stays in cxrbox.modeling.decode) with the metadata to preprocess and "
        "decode it. "
        "--int8 adds a statically quantized model (ONNX Runtime, QDQ, per-channel) calibrated "
        "on the run's training images. Prints a parity report (PyTorch vs ONNX FP32 vs int8 on "
        "the validation set) and writes it as OUT.report.json and OUT.report.png.",
    )
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    parser.add_argument("--out", required=True, help="the FP32 model (.onnx)")
    parser.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx")
    parser.add_argument("--calibration-n", dest="calibration_n", type=integer(1), default=256,
                        help="calibration images (at most the run's training images)")  # fmt: skip
    parser.add_argument("--calibration-images", dest="calibration_images",
                        help="calibrate on this folder, not the run's training data")  # fmt: skip
    parser.add_argument("--calibration-labels", dest="calibration_labels",
                        help="RSNA label CSV naming the calibration images")  # fmt: skip
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="skip the parity report")  # fmt: skip
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="skip the int8 position probe (trains a probe model)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from cxrbox.deploy.pipeline import export_checkpoint
    from cxrbox.errors import ConfigError

    if not args.out.endswith(".onnx"):
        raise ConfigError(f"--out must end in .onnx, got {args.out}")
    if (args.calibration_images is None) != (args.calibration_labels is None):
        raise ConfigError("give --calibration-images and --calibration-labels together")
    # The pipeline's phases and the calibration images used, on stderr (results on stdout).
    logging.basicConfig(level=logging.INFO, format="cxrbox export: %(message)s", stream=sys.stderr)
    result = export_checkpoint(
        args.checkpoint,
        Path(args.out),
        int8=args.int8,
        calibration_n=args.calibration_n,
        calibration_images=args.calibration_images,
        calibration_labels=args.calibration_labels,
        report=args.report,
        probe=args.probe,
    )
    for path in result.files:
        print(f"cxrbox export: wrote {path}")
    if result.report_text:
        print(result.report_text)
    return 0

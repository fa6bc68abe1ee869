"""`cxrbox bench-inference`: images/s of PyTorch eager, ONNX Runtime FP32 and int8."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-inference",
        help="inference images/s: PyTorch FP32 vs ONNX Runtime FP32 vs int8",
        description="Export --model (a checkpoint) at each image size, quantize it, and time "
        "the raw forward pass of PyTorch eager FP32, ONNX Runtime FP32 and ONNX Runtime int8 "
        "at each batch size, in one run. On a shared machine the figures are indicative.",
    )
    parser.add_argument("--model", required=True, help="a checkpoint (best.pt)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument("--all-int8-settings", dest="all_settings", action="store_true",
                        help="time S8S8, U8S8, U8S8+reduce_range and U8U8")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrbox.deploy.quantize import DEFAULT_SETTINGS, QuantSettings
    from cxrbox.speed.bench_inference import benchmark_inference

    settings = (
        [
            QuantSettings("s8", "s8"),
            QuantSettings("u8", "s8"),
            QuantSettings("u8", "s8", reduce_range=True),
            QuantSettings("u8", "u8"),
        ]
        if args.all_settings
        else [DEFAULT_SETTINGS]
    )
    rows = benchmark_inference(
        args.model, args.sizes, args.batches, settings, args.repeats, args.threads
    )
    for row in rows:
        print(row.line())
    return 0

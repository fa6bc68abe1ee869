"""`cxrbox bench-inference`: images/s of PyTorch eager, ONNX Runtime FP32 and int8."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import integer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-inference",
        help="inference images/s: PyTorch FP32 vs ONNX Runtime FP32 vs int8",
        description="Export --model (a checkpoint) at each image size, quantize it, and time "
        "the raw forward pass of PyTorch eager FP32, ONNX Runtime FP32 and ONNX Runtime int8 "
        "at each batch size, in one run. On a shared machine the figures are indicative.",
    )
    parser.add_argument("--model", required=True,
                        help="a checkpoint (best.pt), exported anew at each size")  # fmt: skip
    parser.add_argument("--sizes", type=integer(32, multiple_of=32), nargs="+", default=[256, 512],
                        help="input sides to time, px")  # fmt: skip
    parser.add_argument("--batches", type=integer(1), nargs="+", default=[1, 16],
                        help="batch sizes to time")  # fmt: skip
    parser.add_argument("--repeats", type=integer(1), default=5,
                        help="timed calls per row (median)")  # fmt: skip
    parser.add_argument("--threads", type=integer(1),
                        help="ONNX Runtime intra-op threads (default: ONNX Runtime's)")  # fmt: skip
    parser.add_argument("--all-int8-settings", dest="all_settings", action="store_true",
                        help="time S8S8, U8S8, U8S8+reduce_range and U8U8")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrbox.deploy.inference import is_onnx
    from cxrbox.deploy.quantize import DEFAULT_SETTINGS, QuantSettings
    from cxrbox.errors import ConfigError
    from cxrbox.speed.bench_inference import benchmark_inference

    if is_onnx(args.model):
        raise ConfigError(
            f"--model {args.model}: bench-inference needs a .pt checkpoint of cxrbox train "
            "(it exports the model at each --sizes); this is an exported ONNX model. Give the "
            "checkpoint it was exported from"
        )
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

"""`cxrbox bench`: images/s of the full training step and the achieved GFLOP/s."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import device, integer, number, require_device
from cxrbox.options import DEFAULT_STRIDE, HEADS, STRIDES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the full training step (images/s, GFLOP/s vs matmul)",
        description="Time the trainer's full step (targets, forward, loss, backward, clipping, "
        "monitors, optimizer, scheduler) on a fixed random batch. On CUDA it uses bf16 "
        "autocast and channels_last.",
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--image-size", dest="image_size", type=int, default=256,
                        help="side of the square input, px (a multiple of 32)")  # fmt: skip
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16,
                        help="images per step")  # fmt: skip
    parser.add_argument("--steps", type=integer(1), default=10,
                        help="timed steps (after 3 warmup)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--head", choices=HEADS, default="grid", help="box head")
    parser.add_argument("--stride", type=int, choices=STRIDES, default=DEFAULT_STRIDE,
                        help="grid stride of the grid heads")  # fmt: skip
    parser.add_argument(
        "--monitor-overhead",
        dest="monitor_overhead",
        action="store_true",
        help="also measure the monitors' share of the step (alternating steps)",
    )
    gate = parser.add_argument_group(
        "speed gate",
        "score = median over rounds of fp32 matmul time / training step time, alternating in "
        "this process (CPU: one thread, CPU time); see cxrbox.speed.gate",
    )
    gate.add_argument("--save-json", dest="save_json", metavar="PATH",
                      help="write this code's speed measurement (a baseline)")  # fmt: skip
    gate.add_argument(
        "--compare",
        metavar="BASELINE.json",
        help="exit 1 when this code's step is slower than the baseline by more than --max-slowdown",
    )
    gate.add_argument("--max-slowdown", dest="max_slowdown", type=number(0.0), default=0.15,
                      help="with --compare: the slowdown allowed, as a fraction")  # fmt: skip
    gate.add_argument("--rounds", type=integer(1), default=7, help="matmul/step rounds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrbox.config import TrainConfig
    from cxrbox.speed.bench_train import benchmark_train_step, monitor_overhead

    require_device(args.device)
    config = TrainConfig(
        device=args.device,
        image_size=args.image_size,
        batch_size=args.batch_size,
        head=args.head,
        stride=args.stride,
        bf16=args.device.startswith("cuda"),
        channels_last=True,
    )
    if args.save_json or args.compare:
        return run_gate(args, config)
    result = benchmark_train_step(config, steps=args.steps, compile_model=args.compile)
    print("\n".join(result.lines()))
    if args.monitor_overhead:
        print(f"monitor overhead: {monitor_overhead(config):+.1%} of a training step")
    return 0


def run_gate(args: argparse.Namespace, config) -> int:
    from cxrbox.speed.gate import SpeedMeasurement, compare, measure_speed

    baseline = SpeedMeasurement.load(args.compare) if args.compare else None
    measured = measure_speed(config.replace(compile=args.compile), rounds=args.rounds)
    print(
        f"score {measured.score:.4f} (median over {args.rounds} rounds of matmul time / step "
        f"time); rounds spread {measured.spread:.0%}"
    )
    if args.save_json:
        measured.save(args.save_json)
    if baseline is None:
        return 0
    verdict = compare(baseline, measured, args.max_slowdown)
    print(verdict.line())
    return 0 if verdict.passed else 1

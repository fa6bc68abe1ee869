"""`cxrbox train`: train on RSNA-format data, or on built-in synthetic data when none is given."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cxrbox.commands.arguments import device, integer, require_device, show_config_defaults
from cxrbox.options import HEADS, IOU_LOSS_NAMES, NORMS, STRIDES

if TYPE_CHECKING:  # the CLI imports torch only when a command runs
    from cxrbox.config import TrainConfig
    from cxrbox.engine.train import TrainResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a box regressor (built-in synthetic data without --images)",
        description="Train on RSNA-format data (a folder of DICOMs + stage_2_train_labels.csv). "
        "Without --images, a synthetic RSNA-format set is generated once and reused. "
        "Without --val-*, the labels are split by patient. Options override --config.",
    )
    parser.add_argument("--images", help="folder of <patientId>.dcm files")
    parser.add_argument("--labels", help="RSNA label CSV (patientId,x,y,width,height,Target)")
    parser.add_argument("--val-images", dest="val_images",
                        help="validation DICOM folder, with --val-labels (default: a split of "
                        "--labels by patient, --images for both)")  # fmt: skip
    parser.add_argument("--val-labels", dest="val_labels", help="validation RSNA label CSV")
    parser.add_argument(
        "--out",
        help="run directory; one that holds a run is refused unless --overwrite or --resume "
        "(default runs/latest, numbered runs/latest-2, -3, ... when that holds a run)",
    )
    parser.add_argument("--epochs", type=int, help="epochs to train")
    parser.add_argument("--image-size", dest="image_size", type=int,
                        help="side of the square network input, px (a multiple of 32)")  # fmt: skip
    parser.add_argument("--batch-size", dest="batch_size", type=int,
                        help="images per step (per process with --nproc)")  # fmt: skip
    parser.add_argument("--lr", type=float, help="peak AdamW learning rate (warmup, then cosine)")
    parser.add_argument("--head", choices=HEADS,
                        help="box head: grid (a box per cell), coordconv (grid with coordinate "
                        "channels) or pooled (one global box: the design that stalls)")  # fmt: skip
    parser.add_argument("--norm", choices=NORMS, help="normalization layers of the backbone")
    parser.add_argument(
        "--stride",
        type=int,
        choices=STRIDES,
        help="grid stride in px: 32 predicts on the backbone's last map (8x8 cells at 256 px), "
        "16 on a top-down merge with the stride-16 map (16x16 cells); not with --head pooled",
    )
    parser.add_argument("--iou-loss", dest="iou_loss", choices=IOU_LOSS_NAMES,
                        help="IoU loss of the box branch")  # fmt: skip
    parser.add_argument("--seed", type=int,
                        help="seed of the split, the initial weights and augmentation")  # fmt: skip
    parser.add_argument("--device", type=device, help="cpu, cuda or cuda:N")
    parser.add_argument("--workers", dest="num_workers", type=int,
                        help="DataLoader worker processes (0: load in the training "
                        "process)")  # fmt: skip
    parser.add_argument(
        "--cache-dir",
        dest="cache_dir",
        metavar="DIR",
        help="folder for the decoded image caches (default: beside each image folder, or "
        "~/.cache/cxrbox/image-cache where that folder is read-only)",
    )
    parser.add_argument("--synthetic-n", dest="synthetic_n", type=int,
                        help="images in the built-in synthetic set")  # fmt: skip
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="bf16 autocast (CUDA)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the training forward")  # fmt: skip
    parser.add_argument(
        "--nproc",
        type=integer(1),
        default=1,
        help="data-parallel processes on this machine (torchrun's elastic agent; "
        "--batch-size is per process)",
    )
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="PyTorch's deterministic algorithms (warns where there are "
                        "none)")  # fmt: skip
    parser.add_argument(
        "--fail-on-collapse",
        dest="fail_on_collapse",
        action="store_true",
        default=None,
        help="stop with an error when predictions collapse",
    )
    parser.add_argument(
        "--no-ema",
        dest="ema",
        action="store_false",
        default=None,
        help="validate and save the raw weights, not their moving average",
    )
    parser.add_argument(
        "--score-threshold",
        dest="score_threshold",
        type=float,
        help="score threshold when it is not tuned on validation",
    )
    parser.add_argument(
        "--no-tune-threshold",
        dest="tune_score_threshold",
        action="store_false",
        default=None,
        help="keep --score-threshold instead of the one with the best validation RSNA mAP",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", default=None,
                        help="write no PNG plots into the run directory")  # fmt: skip
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also log curves, alarms and validation images for TensorBoard into the run "
        "directory (`tensorboard --logdir runs/`); needs pip install 'cxrbox[tensorboard]'",
    )
    parser.add_argument("--config", help="TrainConfig fields in a .toml, .json, .yaml or .yml file")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly (its saved config is used; other options "
        "are ignored)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its metrics, checkpoints and plots are removed once "
        "this run has started)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    show_config_defaults(parser, OVERRIDES)


OVERRIDES = (
    "images", "labels", "val_images", "val_labels", "out", "epochs", "image_size", "batch_size",
    "lr", "head", "norm", "stride", "iou_loss", "seed", "device", "num_workers", "synthetic_n",
    "bf16", "deterministic", "fail_on_collapse", "plots", "compile", "ema", "score_threshold",
    "tune_score_threshold", "tensorboard", "cache_dir",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from cxrbox.config import load_config
    from cxrbox.engine.rundir import config_stamp, resume_hint
    from cxrbox.engine.train import train

    rank0 = os.environ.get("RANK", "0") == "0"
    config = load_config(args.config, {name: getattr(args, name) for name in OVERRIDES})
    require_device(config.device, "--device" if args.device else "device")
    if args.resume is None and args.out is None and not args.overwrite:
        config = numbered_default_out(config, say=rank0)
    run_dir = Path(args.resume if args.resume is not None else config.out)
    stamp = config_stamp(run_dir)  # a run already there, not (yet) this one
    progress, overwrite = not args.quiet, args.overwrite
    try:
        if args.nproc > 1:
            from cxrbox.engine.launch import launch_local

            result = launch_local(args.nproc, config, args.resume, progress, overwrite)
        else:
            from cxrbox.engine import distributed

            distributed.configure_rank_logging()  # under torchrun this process is one rank
            try:
                result = train(config, args.resume, progress, overwrite)
            finally:
                distributed.shutdown()
    except KeyboardInterrupt:
        if rank0:
            started = args.resume is not None or config_stamp(run_dir) != stamp
            print(f"cxrbox train: {resume_hint(run_dir, started)}", file=sys.stderr)
        raise
    if rank0:
        print_training_summary(result)
    return 0


def numbered_default_out(config: TrainConfig, say: bool) -> TrainConfig:
    """The default run folder (runs/latest) is never overwritten: when it holds a run, the
    first free runs/latest-2, -3, ... is used instead (and said when `say`). A folder the user
    named is refused instead (`cxrbox.engine.rundir.check_new_run_dir`)."""
    from pathlib import Path

    from cxrbox.config import TrainConfig
    from cxrbox.engine.rundir import next_free_run_dir

    if config.out != TrainConfig.out:
        return config
    free = next_free_run_dir(config.out)
    if free == Path(config.out):
        return config
    if say:
        print(f"cxrbox train: {config.out} holds a run; this run goes to {free}")
    return config.replace(out=str(free))


def print_training_summary(result: TrainResult) -> None:
    """Per-epoch table, the best epoch, the alarms raised, and where the outputs are."""
    from cxrbox.engine.train import format_epoch

    print(f"\ncxrbox train: {len(result.epochs)} epoch(s) -> {result.run_dir}")
    for record in result.epochs:
        print("  " + format_epoch(record))
    if result.epochs:
        best = max(result.epochs, key=lambda r: _finite_or(r["val_mean_iou"], -1.0))
        print(
            f"best epoch {best['epoch']}: val mean IoU {best['val_mean_iou']:.3f}, "
            f"RSNA mAP {best['val_rsna_map']:.3f} (checkpoint {result.run_dir / 'best.pt'})"
        )
    if result.events:  # a collapsed validation is one (cxrbox.engine.monitor.validation_collapse)
        names = sorted({e.name for e in result.events})
        print(f"alarms raised: {len(result.events)} ({', '.join(names)}); see metrics.jsonl")
        for event in {e.name: e for e in result.events}.values():  # the last of each kind
            print(f"  last {event.name} alarm, step {event.step}: {event.message}")
    else:
        print("alarms raised: none (no collapse, dead gradients, stalled updates)")
    plots = f"  plots: {result.plots_dir}" if result.plots_dir is not None else ""
    print(f"metrics: {result.run_dir / 'metrics.csv'}{plots}")


def _finite_or(value: float, default: float) -> float:
    return value if value == value else default

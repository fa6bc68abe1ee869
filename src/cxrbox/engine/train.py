"""The training loop, readable top to bottom: `train(config)` runs a whole job.

One step: targets assigned on the host -> forward (optional bf16 autocast) -> loss (every branch
on clipped, ordered boxes) -> non-finite check -> backward -> gradient clipping -> monitors ->
`opt.step()` -> `scheduler.step()` (per step: linear warmup, then cosine) -> EMA update.
`last.pt` is written atomically every `checkpoint_every_steps` steps; each epoch ends with an
evaluation of the EMA weights through the shared decode, a score-threshold sweep
(`cxrbox.evaluation.threshold`), the collapse alarm when validation shows one box for every
image (`cxrbox.engine.monitor.validation_collapse`) and `last.pt` / `best.pt`. A resumed run
(`resume=RUN_DIR`) restarts at the step after `last.pt`, mid-epoch if need be, with the RNG
state, optimizer, scheduler and EMA it had, so on CPU it continues exactly
(`cxrbox.engine.resume`). A new run never writes over another (`cxrbox.engine.rundir`).
Under `torchrun` every rank runs this same function (`cxrbox.engine.distributed` holds the setup):
each trains on its shard, validation is sharded and gathered, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cxrbox.atomic_write import atomic_path
from cxrbox.config import TrainConfig, config_from_saved
from cxrbox.data.loaders import Loaders, build_loaders
from cxrbox.engine import distributed
from cxrbox.engine.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from cxrbox.engine.distributed import SINGLE, World
from cxrbox.engine.ema import ModelEMA
from cxrbox.engine.monitor import MonitorEvent, TrainingMonitor, validation_collapse
from cxrbox.engine.plots import PLOTS_DIR, VAL_SAMPLES_NAME, write_plots
from cxrbox.engine.resume import epoch_batches, remove_stale_temporaries, step_checkpoint_due
from cxrbox.engine.rundir import check_new_run_dir, check_resumable, start_run_dir
from cxrbox.engine.runlog import DiscardLog, RunLog, truncate_after_step
from cxrbox.engine.schedule import build_scheduler
from cxrbox.engine.steprecords import PENDING_KEY, PendingSteps, check_finite
from cxrbox.engine.tensorboard_sink import open_tensorboard_sink, summary_writer_class
from cxrbox.errors import CheckpointError, CollapseError
from cxrbox.evaluation.evaluate import (
    evaluate_image_predictions,
    flat_metrics,
    predict_batches,
    rsna_map_above,
)
from cxrbox.evaluation.threshold import ScoreThreshold, ThresholdSweep, sweep_score_thresholds
from cxrbox.modeling.decode import GridCoding
from cxrbox.modeling.model import BoxRegressor, build_model
from cxrbox.modeling.objective import (
    LossParts,
    LossWeights,
    assign_targets,
    compute_loss,
    loss_values_as_floats,
)

log = logging.getLogger("cxrbox.engine.train")

STEP_COLUMNS = (
    "epoch", "step", "loss", "loss_objectness", "loss_iou", "loss_corner", "loss_center_size",
    "n_positive", "target_collisions", "iou_ramp", "lr", "grad_norm", "grad_clipped",
    "clip_fraction", "update_ratio", "pred_cx_mean", "pred_cx_std", "pred_cy_mean", "pred_cy_std",
    "pred_w_mean", "pred_w_std", "pred_h_mean", "pred_h_std", "feature_mean", "feature_std",
    "feature_spatial_std", "dropped_boxes",
)  # fmt: skip
EPOCH_COLUMNS = (
    "train_loss", "val_mean_iou", "val_mae_px", "val_rsna_map", "val_coco_map_50",
    "val_coco_map_50_95", "val_n_images",
    "val_std_cx", "val_std_cy", "val_std_w", "val_std_h", "val_score_threshold",
    "val_rsna_map_config_threshold", "seconds",
)  # fmt: skip


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on conv/linear weights; none on norms and biases (1-D tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@dataclass
class TrainState:
    """Everything a step touches; checkpointed every `checkpoint_every_steps` and each epoch."""

    config: TrainConfig
    model: BoxRegressor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    monitor: TrainingMonitor
    coding: GridCoding
    weights: LossWeights
    device: torch.device
    steps_per_epoch: int
    warmup_steps: int
    total_steps: int
    epoch: int = 0  # epochs completed
    global_step: int = 0
    epoch_step: int = 0  # batches of the current epoch trained
    epoch_loss_sum: float = 0.0
    best_metric: float = -math.inf
    events: list[MonitorEvent] = field(default_factory=list)
    resume_rng: dict[str, Any] | None = None  # a checkpoint's RNG state, until it is restored
    world: World = SINGLE
    forward: Callable | None = None  # images -> (raw, features): DDP / compiled; None: the model
    ema: ModelEMA | None = None  # the averaged weights that validation and best.pt use
    # The score threshold checkpoints carry: tuned at the last validation, or the config's.
    score_threshold: ScoreThreshold = ScoreThreshold(0.0)

    @property
    def eval_model(self) -> BoxRegressor:
        """The weights that are validated and exported: the EMA when on, else the model."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]


def build_state(
    config: TrainConfig,
    steps_per_epoch: int,
    world: World = SINGLE,
    device: torch.device | None = None,
) -> TrainState:
    device = device or torch.device(config.device)
    model = build_model(config.head, config.norm, config.width, stride=config.stride).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    forward = distributed.wrap_for_training(model, world, device, config.norm)  # None: alone
    if config.compile:
        forward = torch.compile(forward or model.forward_with_features)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, fused=device.type == "cuda"
    )
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    scheduler = build_scheduler(optimizer, warmup_steps, total_steps, config.min_lr_ratio)
    coding = GridCoding(prior_w=config.prior_size, prior_h=config.prior_size)
    ema = ModelEMA(model, config.ema_decay, config.ema_ramp_steps) if config.ema else None
    monitor = TrainingMonitor(
        model,
        coding,
        config.grad_clip,
        warmup_steps,
        every=config.monitor_every,
        collapse_std=config.collapse_std,
        patience=config.collapse_patience,
    )
    weights = LossWeights(
        objectness=config.loss_objectness,
        iou=config.loss_iou,
        corner=config.loss_corner,
        center_size=config.loss_center_size,
        iou_kind=config.iou_loss,
    )
    return TrainState(
        config, model, optimizer, scheduler, monitor, coding, weights, device,
        steps_per_epoch, warmup_steps, total_steps, world=world, forward=forward, ema=ema,
        score_threshold=ScoreThreshold.fixed(config.score_threshold),
    )  # fmt: skip


def iou_ramp(state: TrainState) -> float:
    """Weight multiplier of the IoU branch: linear from 0 to 1 over `iou_ramp_epochs`."""
    ramp_steps = state.config.iou_ramp_epochs * state.steps_per_epoch
    return 1.0 if ramp_steps <= 0 else min(1.0, (state.global_step + 1) / ramp_steps)


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if not config.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    state: TrainState, images: torch.Tensor, boxes: list[torch.Tensor], defer: bool = False
) -> dict:
    """One optimisation step on a batch; returns the step's record.

    With `defer`, an unmonitored step reads nothing back from the device: its loss values stay
    a tensor under `PENDING_KEY` for `PendingSteps.drain` (which checks them for non-finite).
    Data-parallel: losses are those of the global batch (all ranks), monitors see all ranks.
    """
    config, model = state.config, state.model
    monitored = state.monitor.active(state.global_step)
    grid = model.grid_size(images.shape[-1])
    targets = assign_targets(boxes, grid, grid).to(state.device, non_blocking=True)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    images = images.to(state.device, non_blocking=True, memory_format=memory_format)
    ramp = iou_ramp(state)

    model.train()
    world = state.world
    with autocast(config, state.device):
        raw, features = (state.forward or model.forward_with_features)(images)
    normaliser = (
        distributed.global_box_normaliser(targets.positive.sum(), world)
        if world.distributed
        else None
    )
    parts: LossParts = compute_loss(raw, targets, state.weights, state.coding, ramp, normaliser)
    loss_values = distributed.global_loss_values(parts.stacked(), world)  # [7], on the device
    host_values = None
    if monitored or not defer:
        host_values = loss_values_as_floats(loss_values.tolist())
        check_finite(host_values, state.global_step, state.epoch + 1)
    state.optimizer.zero_grad(set_to_none=True)
    parts.total.backward()  # DDP: gradients averaged over ranks here
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    if monitored:
        raw_all = distributed.gather_batches(raw.detach(), world)
        state.monitor.observe_forward(raw_all, distributed.gather_batches(features, world))
        state.monitor.observe_gradients(grad_norm)
        state.monitor.before_update()
    state.optimizer.step()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(model)

    record: dict[str, Any] = {"step": state.global_step, "iou_ramp": ramp, "lr": lr}
    record.update({PENDING_KEY: loss_values} if host_values is None else host_values)
    if monitored:
        monitor_record, events = state.monitor.after_update(state.global_step, state.optimizer)
        record.update(monitor_record)
        state.events.extend(events)
    state.global_step += 1
    return record


def train_one_epoch(
    state: TrainState, loaders: Loaders, runlog: RunLog | DiscardLog, progress: bool
) -> float:
    """One pass over the training set; returns the mean loss."""
    epoch = state.epoch
    loaders.sampler.set_epoch(epoch)
    loaders.train.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
    batches = epoch_batches(
        loaders.train, state.epoch_step, state.config.batch_size, state.resume_rng
    )
    state.resume_rng = None
    bar = tqdm(
        batches,
        total=len(loaders.train),
        desc=f"epoch {epoch + 1}/{state.config.epochs}",
        leave=False,
        # A bar only on a terminal; logs get one line per epoch instead of carriage returns.
        disable=not (progress and sys.stderr.isatty() and state.world.is_main),
        file=sys.stderr,
        dynamic_ncols=True,
    )
    pending = PendingSteps()

    def log_pending() -> None:
        """Read the deferred losses; log each step, then stop at the first non-finite one."""
        for done in pending.drain(check=False):
            runlog.write("step", done)
            check_finite(done, done["step"], done["epoch"])
            state.epoch_loss_sum += done["loss"]

    for batch in bar:
        n_events = len(state.events)
        if state.monitor.active(state.global_step):
            log_pending()  # a monitored step reads the device anyway: earlier steps first
        record = train_step(state, batch.images, batch.boxes, defer=True)
        record.update(epoch=epoch + 1, dropped_boxes=batch.n_dropped)
        state.epoch_step += 1
        save_due = step_checkpoint_due(state.global_step, state.config.checkpoint_every_steps)
        # Read the deferred losses (and check them) before a save, so a checkpoint never holds
        # a step that was not logged and checked, and at the end of the epoch.
        if pending.push(record) or save_due or state.epoch_step == state.steps_per_epoch:
            log_pending()
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
        handle_events(state, runlog, state.events[n_events:])
        if save_due and isinstance(runlog, RunLog):  # rank 0: other ranks log (and save) nowhere
            save_checkpoint(checkpoint_state(state), runlog.run_dir / "last.pt")
    return state.epoch_loss_sum / max(state.epoch_step, 1)


def handle_events(
    state: TrainState, runlog: RunLog | DiscardLog, events: list[MonitorEvent]
) -> None:
    for event in events:
        runlog.write("event", event.as_record())
        if state.world.is_main:
            log.warning("step %d: %s: %s", event.step, event.name, event.message)
        if event.name == "collapse" and state.config.fail_on_collapse:
            raise CollapseError(event.message)  # on every rank: the monitors see all of them


def checkpoint_state(state: TrainState) -> dict[str, Any]:
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "epoch_loss_sum": state.epoch_loss_sum,
        "global_step": state.global_step,
        "world_size": state.world.world_size,
        "best_metric": state.best_metric,
        "config": state.config.to_dict(),
        "score_threshold": state.score_threshold.record(),
        **({} if state.ema is None else {"ema": state.ema.state_dict()}),
        "rng": capture_rng_state(),
        "monitor": {
            "low_spread_steps": state.monitor.low_spread_steps,
            "clip_count": state.monitor.clip_count,
            "monitored_steps": state.monitor.monitored_steps,
        },
    }


def restore_state(state: TrainState, checkpoint: dict[str, Any]) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.epoch = checkpoint["epoch"]
    state.global_step = checkpoint["global_step"]
    state.epoch_step = checkpoint["epoch_step"]
    state.epoch_loss_sum = checkpoint["epoch_loss_sum"]
    state.best_metric = checkpoint["best_metric"]
    state.score_threshold = (
        ScoreThreshold.from_record(checkpoint["score_threshold"], "the checkpoint")
        if "score_threshold" in checkpoint
        else ScoreThreshold.fixed(state.config.score_threshold)
    )
    if state.ema is not None:
        if "ema" not in checkpoint:
            raise CheckpointError(
                "the checkpoint has no EMA weights but its config has ema on; it was not "
                "written by this cxrbox's trainer"
            )
        state.ema.load_state_dict(checkpoint["ema"])
    for key, value in checkpoint["monitor"].items():
        setattr(state.monitor, key, value)
    state.resume_rng = checkpoint["rng"]  # restored where the epoch's batches start


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: list[dict[str, Any]]
    events: list[MonitorEvent]
    plots_dir: Path | None = None  # where the plots were written; None: not drawn (plots off)


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Run a training job; `resume` is a run dir whose `last.pt` is continued (config from it).

    A new run refuses a `config.out` that holds a run unless `overwrite`; the old run's files
    are removed, and `config.json` written, only once the start-up has succeeded
    (`cxrbox.engine.rundir`). Started by torchrun, this process is one rank of a data-parallel
    job (see module docstring).
    """
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        check_resumable(run_dir)
        checkpoint = load_checkpoint(run_dir / "last.pt")
        remove_stale_temporaries(run_dir)
        config = config_from_saved(checkpoint["config"], source=str(run_dir / "last.pt"))
    else:
        run_dir = Path(config.out)
        check_new_run_dir(run_dir, overwrite)
    if config.tensorboard:
        summary_writer_class()  # a missing package fails here, before any data is built
    world, device = distributed.init_from_env(config.device)
    seed_everything(config.seed, config.deterministic)

    with distributed.main_first(world):  # one rank generates data and builds the caches
        loaders = build_loaders(config, world.rank, world.world_size)
    state = build_state(config, len(loaders.train), world, device)
    if checkpoint is not None:
        if checkpoint["epoch"] >= config.epochs:
            raise CheckpointError(f"{run_dir} already finished all {config.epochs} epochs")
        saved_world = checkpoint.get("world_size", 1)
        if saved_world != world.world_size:
            raise CheckpointError(
                f"{run_dir / 'last.pt'} was written by a run of {saved_world} process(es); resume "
                f"it with the same number (now {world.world_size}): its steps, LR schedule and "
                "data shards depend on it"
            )
        restore_state(state, checkpoint)
    if world.is_main:  # the start-up succeeded: only now is the run's folder written
        start_run_dir(run_dir, config, replace=checkpoint is None and overwrite)
        if checkpoint is not None:
            truncate_after_step(run_dir, state.global_step - 1, epochs_done=state.epoch)
    if world.is_main and world.distributed:
        log.info(
            "data-parallel on %d ranks: global batch %d x %d = %d, lr %g (not scaled: the loss "
            "is averaged over the global batch)",
            world.world_size, config.batch_size, world.world_size,
            config.batch_size * world.world_size, config.lr,
        )  # fmt: skip
    log.info(  # rank 0 only: the CLI raises other ranks' log level to warnings
        "training on %d images, validating on %d (%s data); %d steps/epoch, warmup %d steps",
        loaders.n_train, loaders.n_val, "synthetic" if loaders.source.synthetic else "user",
        state.steps_per_epoch, state.warmup_steps,
    )  # fmt: skip

    epochs: list[dict[str, Any]] = []
    columns = (*STEP_COLUMNS, *EPOCH_COLUMNS)
    opened = None
    if world.is_main:  # rank 0 writes; TensorBoard events start at this run's first step
        sinks = (
            [open_tensorboard_sink(run_dir, state.global_step, config.score_threshold)]
            if config.tensorboard
            else []
        )
        opened = RunLog(run_dir, columns, append=checkpoint is not None, sinks=sinks)
    with opened or DiscardLog() as runlog:
        if checkpoint is None and world.is_main:
            runlog.write("run", run_record(state, loaders))
            save_val_samples(loaders, run_dir / VAL_SAMPLES_NAME)
        while state.epoch < config.epochs:
            started = time.perf_counter()
            train_loss = train_one_epoch(state, loaders, runlog, progress)
            record = validate_epoch(state, loaders, runlog, train_loss, started)
            epochs.append(record)
            if world.is_main:
                log.info(format_epoch(record) + format_eta(epochs, config.epochs - state.epoch))
            alarm = validation_collapse(record, config.collapse_std, state.warmup_steps)
            if alarm is not None:  # logged like a step's alarm; stops the run on fail_on_collapse
                state.events.append(alarm)
                handle_events(state, runlog, [alarm])
            save_epoch_checkpoints(state, run_dir, record)
    plots_dir = run_dir / PLOTS_DIR if config.plots and world.is_main else None
    if plots_dir is not None:
        write_plots(run_dir)
    distributed.barrier(world)  # no rank leaves while rank 0 still writes
    return TrainResult(run_dir, epochs, state.events, plots_dir)


def validate_epoch(
    state: TrainState,
    loaders: Loaders,
    runlog: RunLog | DiscardLog,
    train_loss: float,
    started: float,
) -> dict[str, Any]:
    """End an epoch: validate `state.eval_model` (sharded, gathered), sweep the score threshold
    (and keep the best when tuned), log the sweep, the sample predictions and the epoch record;
    returns that record. `started`: `time.perf_counter()` at the epoch's start."""
    config, world = state.config, state.world
    shard = list(predict_batches(state.eval_model, loaders.val, state.coding, config, state.device))
    predictions = distributed.gather_shards(shard, list(loaders.val.sampler), loaders.n_val, world)
    state.epoch, state.epoch_step, state.epoch_loss_sum = state.epoch + 1, 0, 0.0
    sweep = score_threshold_sweep(predictions)
    if config.tune_score_threshold:
        state.score_threshold = ScoreThreshold.from_sweep(sweep, state.epoch)
    result = evaluate_image_predictions(predictions, state.score_threshold.value)
    runlog.write("threshold_sweep", {"epoch": state.epoch, "step": state.global_step - 1,
                                     **sweep.record()})  # fmt: skip
    runlog.write("val_samples", val_sample_record(state, predictions))
    record = {
        "epoch": state.epoch,
        "step": state.global_step - 1,
        "train_loss": train_loss,
        **{f"val_{k}": v for k, v in flat_metrics(result).items()},
        "val_score_threshold": state.score_threshold.value,
        "val_rsna_map_config_threshold": (
            rsna_map_above(predictions, config.score_threshold)
            if config.tune_score_threshold
            else result.rsna_map
        ),
        "seconds": time.perf_counter() - started,
    }
    runlog.write("epoch", record)
    return record


def save_epoch_checkpoints(state: TrainState, run_dir: Path, record: dict[str, Any]) -> None:
    """Track the best val mean IoU (every rank); rank 0 writes `best.pt` when this epoch is the
    best so far, then `last.pt` (best.pt first: a crash between the two redoes this epoch)."""
    mean_iou = record["val_mean_iou"]
    metric = mean_iou if math.isfinite(mean_iou) else -math.inf
    is_best = metric > state.best_metric
    if is_best:
        state.best_metric = metric
    if state.world.is_main:
        snapshot = checkpoint_state(state)
        if is_best:
            save_checkpoint(snapshot, run_dir / "best.pt")
        save_checkpoint(snapshot, run_dir / "last.pt")


def score_threshold_sweep(predictions: list) -> ThresholdSweep:
    """RSNA mAP, precision and recall of the validation predictions over score thresholds."""
    return sweep_score_thresholds(
        [p.detections.boxes for p in predictions],
        [p.detections.scores for p in predictions],
        [p.truth for p in predictions],
    )


N_VAL_SAMPLES = 6


def run_record(state: TrainState, loaders: Loaders) -> dict[str, Any]:
    return {
        "step": -1,
        "steps_per_epoch": state.steps_per_epoch,
        "warmup_steps": state.warmup_steps,
        "total_steps": state.total_steps,
        "n_train": loaders.n_train,
        "n_val": loaders.n_val,
        "synthetic": loaders.source.synthetic,
        "images": str(loaders.source.images),
    }


def save_val_samples(loaders: Loaders, path: Path) -> None:
    """The first validation images (eval transforms, uint8) that the prediction plot shows."""
    dataset = loaders.val.dataset
    n = min(N_VAL_SAMPLES, len(dataset))  # type: ignore[arg-type]
    images = [(dataset[i].image[0] * 255).round().to(torch.uint8).numpy() for i in range(n)]
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, images=np.stack(images))


def val_sample_record(state: TrainState, predictions: list) -> dict[str, Any]:
    chosen = predictions[:N_VAL_SAMPLES]
    return {
        "epoch": state.epoch,
        "step": state.global_step - 1,
        "boxes": [p.detections.boxes.tolist() for p in chosen],
        "scores": [p.detections.scores.tolist() for p in chosen],
        "truth": [p.truth.tolist() for p in chosen],
        "score_threshold": state.score_threshold.value,
    }


def format_eta(epochs: list[dict[str, Any]], epochs_left: int) -> str:
    """The live epoch line's estimate, `  ETA 3 min 20 s (2 more epochs)`: the mean `seconds`
    of the epoch records this process ran, times the epochs left ("" when none is left). Not
    in the run log, which stays free of wall-clock guesses."""
    if epochs_left <= 0 or not epochs:
        return ""
    seconds = round(sum(r["seconds"] for r in epochs) / len(epochs) * epochs_left)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"
    return f"  ETA {text} ({epochs_left} more epoch{'s' if epochs_left > 1 else ''})"


def format_epoch(record: dict[str, Any]) -> str:
    return (
        f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
        f"val mean IoU {record['val_mean_iou']:.3f}  MAE {record['val_mae_px']:.1f} px  "
        f"RSNA mAP {record['val_rsna_map']:.3f} (score >= {record['val_score_threshold']:.2f})  "
        f"centre std "
        f"{max(record['val_std_cx'], record['val_std_cy']):.3f}  ({record['seconds']:.1f} s)"
    )

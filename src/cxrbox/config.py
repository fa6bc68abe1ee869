"""The training configuration: one frozen dataclass, loaded from a file, overridden from the CLI.

Files are TOML (`.toml`) or JSON (`.json`) with the field names below as keys. The resolved
configuration is written to `<run dir>/config.json` so every run records what it ran with.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cxrbox.atomic_write import atomic_path
from cxrbox.errors import ConfigError
from cxrbox.options import (
    BACKBONE_STRIDE,
    DEFAULT_STRIDE,
    HEADS,
    INTENSITY_RULES,
    IOU_LOSS_NAMES,
    NORMS,
    STRIDES,
)

DEFAULT_SYNTHETIC_DIR = Path.home() / ".cache" / "cxrbox" / "synthetic"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Paths are strings so the config is JSON-clean."""

    # Data. Without `images`, a synthetic RSNA-format set is generated (or reused).
    images: str | None = None
    labels: str | None = None
    val_images: str | None = None
    val_labels: str | None = None
    val_fraction: float = 0.2
    synthetic_dir: str = str(DEFAULT_SYNTHETIC_DIR)
    synthetic_n: int = 400
    synthetic_seed: int = 0
    synthetic_image_size: int = 1024
    use_cache: bool = True
    num_workers: int = 0
    # DICOMs without a window: "auto" (8-bit: value / 255; more bits: 0.5/99.5 percentile
    # window), "percentile" or "bit-range"; see cxrbox.data.dicom.
    intensity: str = "auto"

    # Model.
    head: str = "grid"
    norm: str = "batch"
    width: float = 1.0
    # Grid stride in px, 16 or 32 (cxrbox.modeling.model): 256 px -> a 16x16 or 8x8 grid. Configs
    # saved before this field existed load as 32 whatever this default is (`config_from_saved`).
    stride: int = DEFAULT_STRIDE
    image_size: int = 256
    prior_size: float = 0.25

    # Optimisation.
    out: str = "runs/latest"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    # Loose: only spikes are clipped. A healthy 70-epoch grid run on 600 synthetic images had a
    # median total gradient norm of 11.6, p99 28, max 85; the former 10.0 clipped 67 % of steps.
    grad_clip: float = 50.0
    iou_loss: str = "giou"
    loss_objectness: float = 1.0
    loss_iou: float = 2.0
    loss_corner: float = 5.0
    loss_center_size: float = 5.0
    iou_ramp_epochs: float = 1.0
    augment: bool = True
    bf16: bool = False
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    # Also write last.pt every this many steps (0: at epoch ends only); see cxrbox.engine.resume.
    # Default config on this CPU (under load; tests/benchmarks/test_bench_train.py): a step took
    # 2.9 s, a save 0.12 s (21 MB), so 0.02 % at 200 steps; < 2 % for steps > 30 ms. A crash
    # loses <= 200 steps.
    checkpoint_every_steps: int = 200
    # Exponential moving average of the weights for validation, best.pt, eval, predict and
    # export (cxrbox.engine.ema): decay * (1 - exp(-step / ema_ramp_steps)) per step.
    ema: bool = True
    ema_decay: float = 0.998
    ema_ramp_steps: float = 200.0

    # Evaluation and decode. With tune_score_threshold, each validation sweeps the score
    # threshold (cxrbox.evaluation.threshold) and checkpoints store the one with the best RSNA mAP,
    # which eval / predict / export then use; score_threshold is the fixed one otherwise.
    score_threshold: float = 0.3
    tune_score_threshold: bool = True
    nms_iou: float = 0.5
    top_k: int = 4

    # Monitors.
    monitor_every: int = 1
    collapse_std: float = 0.02
    collapse_patience: int = 20
    fail_on_collapse: bool = False
    plots: bool = True
    # Also log curves, alarms and validation images for TensorBoard into the run directory
    # (cxrbox.engine.tensorboard_sink); needs `pip install 'cxrbox[tensorboard]'`.
    tensorboard: bool = False

    def __post_init__(self) -> None:
        _check_choice("head", self.head, HEADS)
        _check_choice("norm", self.norm, NORMS)
        check_head_stride(self.head, self.stride)
        _check_choice("iou_loss", self.iou_loss, IOU_LOSS_NAMES)
        _check_choice("device", self.device.split(":")[0], ("cpu", "cuda"))
        _check_choice("intensity", self.intensity, INTENSITY_RULES)
        if self.image_size <= 0 or self.image_size % 32:
            raise ConfigError(
                f"image_size must be a positive multiple of 32, got {self.image_size}"
            )
        for name in ("epochs", "batch_size", "synthetic_n", "top_k", "monitor_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every_steps < 0:
            raise ConfigError(
                f"checkpoint_every_steps must be >= 0 (0: epoch ends only), "
                f"got {self.checkpoint_every_steps}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0 or self.ema_ramp_steps < 0:
            raise ConfigError(
                f"ema_decay must be in [0, 1) and ema_ramp_steps >= 0, got {self.ema_decay} "
                f"and {self.ema_ramp_steps}"
            )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.lr <= 0 or self.grad_clip <= 0 or self.prior_size <= 0:
            raise ConfigError("lr, grad_clip and prior_size must be > 0")
        if (self.images is None) != (self.labels is None):
            raise ConfigError("give both images and labels, or neither (built-in synthetic data)")
        if (self.val_images is None) != (self.val_labels is None):
            raise ConfigError("give both val_images and val_labels, or neither")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping; unknown keys are an error naming the source."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


# What a run saved before a field existed did: its model has stride 32, it kept no EMA and its
# score threshold was the fixed one. Today's defaults may differ.
SAVED_BEFORE_FIELD_EXISTED: dict[str, Any] = {
    "stride": BACKBONE_STRIDE,
    "ema": False,
    "tune_score_threshold": False,
}


def config_from_saved(values: dict[str, Any], source: str) -> TrainConfig:
    """The TrainConfig a run saved (checkpoint, exported model): `config_from_dict`, except that
    a field missing from a run saved before it existed gets what that run did
    (`SAVED_BEFORE_FIELD_EXISTED`), not today's default."""
    return config_from_dict({**SAVED_BEFORE_FIELD_EXISTED, **values}, source)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- file (TOML or JSON) <- overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
            ) from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a table/object of settings")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, source=str(path) if path else "config")


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `config` as sorted JSON to `path`, atomically (`cxrbox.atomic_write`)."""
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(text)


def check_head_stride(head: str, stride: int) -> None:
    """ConfigError unless `stride` is in STRIDES and `head` has a grid of that stride."""
    if stride not in STRIDES:
        raise ConfigError(f"stride must be one of {STRIDES}, got {stride!r}")
    if head == "pooled" and stride != BACKBONE_STRIDE:
        raise ConfigError(
            f"stride {stride} needs a grid head: the pooled head has a 1x1 grid; "
            f"use head 'grid' or 'coordconv', or stride {BACKBONE_STRIDE}"
        )

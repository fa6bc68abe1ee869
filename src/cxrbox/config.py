"""The training configuration: one frozen dataclass, loaded from a file, overridden from the CLI.

Files are TOML (`.toml`), JSON (`.json`) or YAML (`.yaml`, `.yml`) with the field names below
as keys; any other suffix is refused. The resolved configuration is written to
`<run dir>/config.json` so every run records what it ran with.

Every value is checked against its field's type before anything else (`check_field_types`), so
a file with `epochs = "ten"` is refused naming the key, the value and the type expected. No
value changes type silently: a string is never read as a number or a boolean, a float never as
an int. The one deliberate widening: an int where a float is expected (`lr = 1`) is that float.
YAML files are read with `yaml.safe_load`'s rules (YAML 1.1: `true`/`false`, also `yes`/`no`,
are booleans) except for numbers, read as YAML 1.2 reads them: `lr: 1e-3` is a float, as in
TOML and JSON, not the string YAML 1.1 makes of it.

The checks are written by hand from the dataclass's own field types (`dataclasses.fields` and
`typing.get_type_hints`) rather than with pydantic: five kinds of field need a dozen lines,
this module stays import-light for `cxrbox --help` (pydantic adds a dependency and its import
time) and pydantic's default lax mode would accept exactly the coercions refused here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import numbers
import tomllib
import typing
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
    # Folder of the decoded image caches (cxrbox.data.cache.cache_location). None: beside each
    # image folder, or ~/.cache/cxrbox/image-cache (with a warning) where that is read-only.
    cache_dir: str | None = None
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
        check_field_types(self)
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
        for name in ("lr", "grad_clip", "prior_size", "width"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(
                f"num_workers must be >= 0 (0: load in this process), got {self.num_workers}"
            )
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


def _describe_type(kind: Any) -> str:
    """The type a field expects, in a config file's words."""
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if kind is type(None):
        return "null"
    return " or ".join(_describe_type(k) for k in typing.get_args(kind))


def _describe_value(value: Any) -> str:
    """`value` and what it is: "'ten' (a string)", "1.5 (a float)"."""
    if isinstance(value, bool):
        what = "true or false"
    elif isinstance(value, numbers.Integral):
        what = "an integer"
    elif isinstance(value, numbers.Real):
        what = "a float"
    elif isinstance(value, str):
        what = "a string"
    elif value is None:
        what = "null"
    else:
        what = f"a {type(value).__name__}"
    return f"{value!r} ({what})"


def _typed(kind: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value` is a `kind`, the value to store). Only an int for a float widens."""
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if kind is type(None):
        return value is None, value
    for option in typing.get_args(kind):  # a union such as str | None
        ok, converted = _typed(option, value)
        if ok:
            return True, converted
    return False, value


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def check_value(name: str, value: Any) -> Any:
    """`value` as TrainConfig field `name` holds it (an int for a float field becomes that
    float); ConfigError naming the key, the value and the type expected when it is not of the
    field's type."""
    kind = _field_types()[name]
    ok, converted = _typed(kind, value)
    if not ok:
        raise ConfigError(f"{name} = {_describe_value(value)}: expected {_describe_type(kind)}")
    return converted


def check_field_types(config: TrainConfig) -> None:
    """`check_value` on every field of `config`, in field order (the first bad one raises)."""
    for field in fields(config):
        value = getattr(config, field.name)
        converted = check_value(field.name, value)
        if converted is not value:
            object.__setattr__(config, field.name, converted)


def _unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping; unknown keys are an error naming the source and,
    for each, the known key it is closest to ("did you mean")."""
    known = sorted(f.name for f in fields(TrainConfig))
    unknown = sorted(set(values) - set(known))
    if unknown:
        named = ", ".join(_unknown_key_message(str(key), known) for key in unknown)
        raise ConfigError(f"{source}: unknown key(s) {named}; known keys: {', '.join(known)}")
    for key, value in values.items():
        try:
            check_value(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
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


CONFIG_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- file (TOML, JSON or YAML, by suffix) <- overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        values = read_config_file(path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, source=str(path) if path else "config")


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a .toml, .json, .yaml or .yml file as a dict (ConfigError otherwise)."""
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"config file {path}: cannot tell its format from the suffix "
            f"{suffix or '(none)'!r}; expected one of {', '.join(CONFIG_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text ({exc})") from exc
    kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
    try:
        if kind == "TOML":
            values = tomllib.loads(text)
        elif kind == "JSON":
            values = json.loads(text)
        else:
            values = _load_yaml(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a table/mapping of settings (key = value), "
            f"got {_describe_value(values)}"
        )
    return values


# YAML 1.2's floats (PyYAML implements YAML 1.1, where `1e-3` without a dot is a string).
_YAML_FLOAT = (
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def _load_yaml(text: str) -> Any:
    """`yaml.safe_load` with YAML 1.2 floats; a syntax error becomes a ValueError."""
    import re

    import yaml  # imported here: only YAML configs need it

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(_YAML_FLOAT), list("-+0123456789.")
    )
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:  # its text spans lines: make it one
        raise ValueError(" ".join(str(exc).split())) from exc


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

"""Run-time monitors: the alarms whose absence let the original run stall silently.

Per monitored step (every `every` steps) a `TrainingMonitor` records:
- `pred_{cx,cy,w,h}_{mean,std}`: the top-scoring box per image, spread across the batch.
  A collapse alarm fires when the centre spread stays under `collapse_std` for `patience`
  monitored steps after warmup (the original stall: one constant box for every image). The
  same alarm fires at an epoch's end when validation shows it: `validation_collapse` reads the
  spread of the top box over the validation images from the epoch record;
- `feature_mean`, `feature_std`: backbone output statistics; `feature_spatial_std` is the spread
  over positions, which global pooling or dead activations drive to zero;
- `grad_norm` (total, before clipping), `grad_clipped`, per-layer norms, zero-gradient layers;
- `update_ratio`: ||w_after - w_before|| / ||w_before|| over all trainable parameters (near 0 means
  the optimizer is not moving the weights: LR 0, a skipped step, frozen parameters);
- `lr_group{i}` for every param group.
Alarms become `MonitorEvent`s; the trainer logs them and, for collapse with
`fail_on_collapse`, stops with `CollapseError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cxrbox.boxes import xyxy_to_cxcywh
from cxrbox.modeling.decode import GridCoding, decode_grid

DEAD_GRADIENT_NORM = 1e-12  # below this a layer's gradient counts as zero
DEAD_UPDATE_RATIO = 1e-8  # relative update size of the whole model counted as "not moving"
FLAT_FEATURE_STD = 1e-4  # spatial std of the backbone output counted as flattened


@dataclass(frozen=True)
class MonitorEvent:
    """An alarm raised at `step`: `name` is a stable identifier, `message` says what to check."""

    step: int
    name: str
    message: str
    level: str = "warning"

    def as_record(self) -> dict[str, object]:
        return {"step": self.step, "name": self.name, "level": self.level, "message": self.message}


def validation_collapse(
    record: Mapping[str, Any], collapse_std: float, warmup_steps: int
) -> MonitorEvent | None:
    """The collapse alarm of an epoch's validation, or None.

    `record` is the trainer's epoch record: `val_std_cx` / `val_std_cy` are the std over the
    validation images of the top box's normalized centre, `step` the epoch's last global step.
    It fires when the larger of the two is under `collapse_std` (as the step monitor's rule)
    once warmup is over (`step >= warmup_steps`, true of every run's last epoch) and at least
    two images were validated (one image has no spread to judge).
    """
    spread = max(record["val_std_cx"], record["val_std_cy"])
    if record["step"] < warmup_steps or record["val_n_images"] < 2 or not spread < collapse_std:
        return None
    return MonitorEvent(
        record["step"],
        "collapse",
        f"validation at epoch {record['epoch']}: the top boxes' centres spread "
        f"{spread:.4f} < {collapse_std} over {record['val_n_images']} images: the model "
        "predicts one box for every image",
        level="error",
    )


def prediction_stats(raw: Tensor, coding: GridCoding) -> dict[str, Tensor]:
    """Mean/std over the batch of the top-scoring box's normalized cx, cy, w, h (0-d tensors)."""
    boxes, scores = decode_grid(raw.detach().float(), coding)  # [B, N, 4], [B, N]
    top = scores.argmax(dim=1)  # [B]
    top_boxes = boxes[torch.arange(boxes.shape[0], device=boxes.device), top]  # [B, 4]
    cxcywh = xyxy_to_cxcywh(top_boxes)  # [B, 4]
    std = cxcywh.std(dim=0, unbiased=False) if cxcywh.shape[0] > 1 else torch.zeros(4)
    mean = cxcywh.mean(dim=0)
    out: dict[str, Tensor] = {}
    for i, name in enumerate(("cx", "cy", "w", "h")):
        out[f"pred_{name}_mean"] = mean[i]
        out[f"pred_{name}_std"] = std[i]
    return out


def feature_stats(features: Tensor) -> dict[str, Tensor]:
    """Backbone output [B, C, H, W]: overall mean/std and the mean per-map spatial std."""
    features = features.detach().float()
    spatial = (
        features.flatten(2).std(dim=2, unbiased=False).mean()
        if features[0, 0].numel() > 1
        else features.new_zeros(())
    )
    return {
        "feature_mean": features.mean(),
        "feature_std": features.std(unbiased=False),
        "feature_spatial_std": spatial,
    }


def gradient_norms(named_params: list[tuple[str, nn.Parameter]]) -> dict[str, Tensor]:
    """Per-parameter gradient L2 norms (missing gradients count as 0)."""
    norms: dict[str, Tensor] = {}
    for name, param in named_params:
        grad = param.grad
        norms[name] = grad.detach().float().norm() if grad is not None else torch.zeros(())
    return norms


class TrainingMonitor:
    """Collects the statistics above each monitored step and raises alarms.

    Use per step: `observe_forward(raw, features)` after the forward pass,
    `observe_gradients(grad_norm)` after clipping, `before_update()` before `opt.step()`,
    `after_update(step, optimizer)` after it; it returns the host-side record and the events.
    """

    def __init__(
        self,
        model: nn.Module,
        coding: GridCoding,
        grad_clip: float,
        warmup_steps: int,
        every: int = 1,
        collapse_std: float = 0.02,
        patience: int = 20,
    ) -> None:
        self.named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.coding = coding
        self.grad_clip = grad_clip
        self.warmup_steps = warmup_steps
        self.every = every
        self.collapse_std = collapse_std
        self.patience = patience
        self.low_spread_steps = 0
        self.clip_count = 0
        self.monitored_steps = 0
        self._pending: dict[str, Tensor] = {}
        self._before: list[Tensor] | None = None

    def active(self, step: int) -> bool:
        return step % self.every == 0

    def observe_forward(self, raw: Tensor, features: Tensor) -> None:
        self._pending.update(prediction_stats(raw, self.coding))
        self._pending.update(feature_stats(features))

    def observe_gradients(self, grad_norm: Tensor) -> None:
        self._pending["grad_norm"] = grad_norm.detach().float()
        self._layer_norms = gradient_norms(self.named_params)

    def before_update(self) -> None:
        self._before = [p.detach().clone() for _, p in self.named_params]

    def after_update(self, step: int, optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
        """Finish the step: one host sync; returns (record, events)."""
        params = [p.detach() for _, p in self.named_params]
        assert self._before is not None, "before_update() must run before after_update()"
        deltas = torch._foreach_sub(params, self._before)
        delta_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas)))
        weight_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._before)))
        self._pending["update_ratio"] = delta_norm / weight_norm.clamp(min=1e-12)
        self._before = None

        names = list(self._pending)
        values = torch.stack([self._pending[n].float().cpu() for n in names]).tolist()
        record: dict[str, Any] = dict(zip(names, values, strict=True))
        layer_names = list(self._layer_norms)
        layer_values = torch.stack([v.cpu() for v in self._layer_norms.values()]).tolist()
        record["grad_norm_layers"] = dict(zip(layer_names, layer_values, strict=True))
        for i, group in enumerate(optimizer.param_groups):
            record[f"lr_group{i}"] = float(group["lr"])
        clipped = bool(record["grad_norm"] > self.grad_clip)
        self.clip_count += clipped
        self.monitored_steps += 1
        record["grad_clipped"] = clipped
        record["clip_fraction"] = self.clip_count / self.monitored_steps
        self._pending = {}
        return record, self._alarms(step, record, layer_names, layer_values)

    def _alarms(self, step: int, record: dict, layer_names: list, layer_values: list) -> list:
        events: list[MonitorEvent] = []
        dead = [n for n, v in zip(layer_names, layer_values, strict=True) if v < DEAD_GRADIENT_NORM]
        if dead:
            shown = ", ".join(dead[:5]) + (" ..." if len(dead) > 5 else "")
            events.append(
                MonitorEvent(
                    step,
                    "dead_gradients",
                    f"{len(dead)} parameter(s) got a zero "
                    f"gradient: {shown}; check for no_grad, detach or frozen layers",
                )
            )
        if record["update_ratio"] < DEAD_UPDATE_RATIO:
            events.append(
                MonitorEvent(
                    step,
                    "no_update",
                    f"weights moved by {record['update_ratio']:.2e} "
                    "of their norm; check the LR, weight decay, clipping and opt.step()",
                )
            )
        if record["feature_spatial_std"] < FLAT_FEATURE_STD:
            events.append(
                MonitorEvent(
                    step,
                    "flat_features",
                    f"backbone output spatial std "
                    f"{record['feature_spatial_std']:.2e}: activations have flattened",
                )
            )
        spread = max(record["pred_cx_std"], record["pred_cy_std"])
        if step >= self.warmup_steps and spread < self.collapse_std:
            self.low_spread_steps += 1
        else:
            self.low_spread_steps = 0
        if self.low_spread_steps == self.patience:
            events.append(
                MonitorEvent(
                    step,
                    "collapse",
                    f"predicted box centres have spread {spread:.4f} "
                    f"< {self.collapse_std} for {self.patience} monitored steps: the model "
                    "predicts one box for every image",
                    level="error",
                )
            )
        return events

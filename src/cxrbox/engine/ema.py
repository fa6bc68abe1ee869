"""An exponential moving average (EMA) of a model's weights, for evaluation and export.

The usual detector recipe (YOLOv5's ModelEMA, timm's ModelEmaV2): after each optimizer step,

    d_n = decay * (1 - exp(-n / ramp_steps))         (n = updates so far, counting this one)
    ema <- d_n * ema + (1 - d_n) * live               for every floating-point tensor

so the average follows the weights closely in the first few hundred steps (d_n near 0) and then
settles to `decay`. BatchNorm running statistics are averaged the same way
as the weights, so they describe the averaged weights; integer buffers (BatchNorm's
`num_batches_tracked`) are copied. Copying the live statistics instead was measured worse: on
the learning set of docs/results.md the copied-statistics average fell 0.128 val mean IoU below
the raw weights at one epoch (docs/results.md, "Learning in a 15-minute budget").

Training never reads the average, so the training trajectory is the same with or without it;
validation, `best.pt`, `eval`, `predict` and `export` use it. The checkpoint keeps both.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from cxrbox.errors import CheckpointError, ConfigError

__all__ = ["ModelEMA", "ema_decay_at"]


def ema_decay_at(updates: int, decay: float, ramp_steps: float) -> float:
    """The decay used by update number `updates` (1 for the first): decay * (1 - e^(-n/ramp))."""
    if ramp_steps <= 0:
        return decay
    return decay * (1.0 - math.exp(-updates / ramp_steps))


class ModelEMA:
    """A frozen copy of `model` whose parameters are an EMA of `model`'s (see module docstring).

    `module` (eval mode, no gradients) is the averaged model; `updates` counts `update` calls.
    """

    def __init__(self, model: nn.Module, decay: float, ramp_steps: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {decay!r}")
        if ramp_steps < 0:
            raise ConfigError(f"ema_ramp_steps must be >= 0, got {ramp_steps!r}")
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.ramp_steps = ramp_steps
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold `model`'s current weights and BatchNorm statistics into the average."""
        self.updates += 1
        d = ema_decay_at(self.updates, self.decay, self.ramp_steps)
        live = model.state_dict()
        averaged, current = [], []
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                averaged.append(value)
                current.append(live[name].detach())
            else:
                value.copy_(live[name])
        if averaged:
            # ema + (1 - d) * (live - ema) == d * ema + (1 - d) * live, in one fused call
            torch._foreach_lerp_(averaged, current, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the update count, for a checkpoint."""
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        if not isinstance(state, dict) or {"weights", "updates"} - set(state):
            raise CheckpointError(f"{source}: its `ema` entry lacks 'weights' or 'updates'")
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])

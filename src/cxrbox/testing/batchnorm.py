"""BatchNorm in the kit's short runs: recompute the running statistics on the fitted batch
before scoring, and check that training moved them at all.

A model that trains for a few dozen steps with a slow BatchNorm momentum (Ultralytics: 0.03)
has running statistics that lag its weights: measured on YOLOv8n after 60 steps, the same
weights gave fitted IoU 0.995 with batch statistics and 0.044 in eval mode. The learning checks
therefore score with statistics recomputed on the fitted batch ("precise BN"), and
`check_batchnorm_statistics` says separately whether training updated the statistics at all:
layers kept in eval mode during training, or a momentum of 0, leave them at their initial
values, and a deployed model (which uses them) would not work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from cxrbox.testing.result import CheckResult

Statistics = dict[str, tuple[Tensor, Tensor]]
"""BatchNorm module name -> (running_mean, running_var) copies."""


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """(name, module) of every BatchNorm layer that keeps running statistics."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    ]


def running_statistics(model: nn.Module) -> Statistics:
    """A copy of every BatchNorm layer's (running_mean, running_var)."""
    out: Statistics = {}
    for name, bn in batchnorm_layers(model):
        assert bn.running_mean is not None and bn.running_var is not None
        out[name] = (bn.running_mean.detach().clone(), bn.running_var.detach().clone())
    return out


@contextmanager
def recomputed_statistics(model: nn.Module, forward: Callable[[], Any]) -> Iterator[bool]:
    """Inside the block, every BatchNorm layer of `model` holds the statistics of one `forward()`
    (run under no_grad with the model in train mode: the fitted batch through the training
    loss), and the model is in eval mode. On exit the layers get back their buffers and
    momentum, so training can go on as if nothing happened. Yields False (and changes nothing)
    when the model has no BatchNorm layer with running statistics."""
    layers = batchnorm_layers(model)
    if not layers:
        yield False
        return
    saved = [
        (bn, bn.momentum, {k: v.detach().clone() for k, v in bn.named_buffers(recurse=False)})
        for _, bn in layers
    ]
    was_training = model.training
    try:
        for bn, _, _ in saved:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: exactly the statistics of this forward
        model.train()
        with torch.no_grad():
            forward()
        model.eval()
        yield True
    finally:
        for bn, momentum, buffers in saved:
            bn.momentum = momentum
            for key, value in buffers.items():
                getattr(bn, key).copy_(value)
        model.train(was_training)


def statistics_moved(before: Statistics, after: Statistics) -> dict[str, float]:
    """Per layer, the largest |change| of its running mean and variance."""
    return {
        name: max(
            float((after[name][0] - mean).abs().amax()) if mean.numel() else 0.0,
            float((after[name][1] - var).abs().amax()) if var.numel() else 0.0,
        )
        for name, (mean, var) in before.items()
        if name in after
    }


def check_batchnorm_statistics(
    before: Statistics,
    after: Statistics,
    steps: int,
    idle: Mapping[str, str] | None = None,
    fitted_iou: float | None = None,
    fitted_iou_as_trained: float | None = None,
) -> CheckResult:
    """Training moved the running statistics of every BatchNorm layer (but those declared
    idle). `before` / `after`: `running_statistics` at build time and after `steps` training
    steps; the fitted IoU with recomputed statistics and as trained (eval mode) are reported."""
    idle = idle or {}
    moved = statistics_moved(before, after)
    frozen = [name for name, change in moved.items() if change == 0.0 and name not in idle]
    declared = [name for name in moved if name in idle]
    numbers: dict[str, Any] = {
        "n_layers": len(moved),
        "frozen": frozen,
        "idle_declared": declared,
        "steps": steps,
        "fitted_iou_recomputed": fitted_iou,
        "fitted_iou_as_trained": fitted_iou_as_trained,
    }
    gap = ""
    if fitted_iou is not None and fitted_iou_as_trained is not None:
        gap = (
            f"; fitted IoU {fitted_iou_as_trained:.3f} with the running statistics, "
            f"{fitted_iou:.3f} with statistics recomputed on the fitted batch"
        )
    if frozen:
        shown = ", ".join(frozen[:4]) + (" ..." if len(frozen) > 4 else "")
        return CheckResult(
            "batchnorm",
            "fail",
            f"{len(frozen)} of {len(moved)} BatchNorm layers kept their initial running "
            f"statistics over {steps} training steps ({shown}): BatchNorm statistics are frozen "
            "(layers in eval mode during training, or momentum 0), so the model in eval mode "
            f"normalises with statistics it never saw{gap}",
            numbers,
        )
    note = f" ({len(declared)} idle by declaration)" if declared else ""
    return CheckResult(
        "batchnorm",
        "pass",
        f"running statistics of all {len(moved) - len(declared)} BatchNorm layers moved over "
        f"{steps} training steps{note}{gap}",
        numbers,
    )

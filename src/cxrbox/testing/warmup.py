"""A warmup that hands over to its decay: any torch LR scheduler, stepped dry."""

from __future__ import annotations

import math
import warnings

import torch

from cxrbox.engine.schedule import audit_lr_curve
from cxrbox.testing.detector import SchedulerFactory
from cxrbox.testing.result import CheckResult, raise_if_failed


def lr_curves(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
) -> list[list[float]]:
    """LR per step of every param group over `steps` steps: the scheduler stepped without
    training (it is consumed)."""
    curves: list[list[float]] = [[] for _ in optimizer.param_groups]
    with warnings.catch_warnings():
        # A dry run steps the scheduler without optimizer steps on purpose.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        for _ in range(steps):
            for curve, group in zip(curves, optimizer.param_groups, strict=True):
                curve.append(float(group["lr"]))
            scheduler.step()
    return curves


def check_warmup_hands_over(
    scheduler_factory: SchedulerFactory,
    warmup_steps: int,
    total_steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    base_lrs: tuple[float, ...] = (1e-3,),
    min_lr_ratio: float | None = None,
) -> CheckResult:
    """Build the scheduler on `optimizer` (default: SGD, one group per `base_lrs`), step it
    `total_steps` times dry and audit every group's curve: monotonic warmup over
    `warmup_steps`, peak = the group's base LR, no jump at the hand-over, then non-increasing
    (`cxrbox.engine.schedule.audit_lr_curve`; with `min_lr_ratio`, also step by step against linear
    warmup + cosine to that floor)."""
    if optimizer is None:
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in base_lrs]
        optimizer = torch.optim.SGD(groups, lr=base_lrs[0])
    # A scheduler already built on `optimizer` left the base LR in "initial_lr".
    bases = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    scheduler = scheduler_factory(optimizer)
    curves = lr_curves(optimizer, scheduler, total_steps)
    problems = [
        f"group {i}: {p}"
        for i, (curve, base) in enumerate(zip(curves, bases, strict=True))
        for p in audit_lr_curve(curve, base, warmup_steps, min_lr_ratio=min_lr_ratio)
    ]
    numbers = {
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "base_lrs": bases,
        "peak_lr": max(curves[0], default=math.nan),
        "lr_at_warmup_end": curves[0][warmup_steps] if warmup_steps < len(curves[0]) else math.nan,
    }
    if problems:
        return CheckResult("lr_schedule", "fail", "; ".join(problems), numbers)
    return CheckResult(
        "lr_schedule",
        "pass",
        f"warmup {warmup_steps} steps to the base LR {', '.join(f'{b:g}' for b in bases)}, "
        f"then non-increasing over {total_steps} steps, no jump",
        numbers,
    )


def assert_warmup_hands_over(
    scheduler_factory: SchedulerFactory,
    warmup_steps: int,
    total_steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    base_lrs: tuple[float, ...] = (1e-3,),
) -> CheckResult:
    """Raise AssertionError unless the LR of every param group rises monotonically over
    `warmup_steps` to its base LR, hands over without a jump and never rises after (a warmup
    that fights its decay, a decay on a shifted clock, a peak above the base LR)."""
    return raise_if_failed(
        check_warmup_hands_over(scheduler_factory, warmup_steps, total_steps, optimizer, base_lrs)
    )

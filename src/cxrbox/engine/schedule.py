"""Per-step learning-rate schedule: linear warmup, then cosine decay to a floor.

The LR used for optimizer step t (0-based; `scheduler.step()` is called once after every
`optimizer.step()`) is, for a param group with base LR `b`, `w = warmup_steps`,
`T = total_steps`, `r = min_lr_ratio`:

    t < w:        b * (1/w + (1 - 1/w) * t / w)    rises from b/w (step 0 updates the weights)
    w <= t <= T:  b * (r + (1 - r) * (1 + cos(pi * (t - w) / (T - w))) / 2)
    t > T:        b * r                            (held at the floor, never rises again)

so the LR reaches exactly `b` at t = w, where the cosine starts: no jump at the boundary.
`lr_curve` is this formula as a pure function; `build_scheduler` realises it with torch's
`LinearLR` and a `CosineAnnealingLR` inside `SequentialLR`. The cosine is a subclass that
computes each group's LR in closed form with a per-group floor `r * b` (stock
`CosineAnnealingLR` has one absolute `eta_min` for every group and a recursive update), so the
curve is exact whichever way `SequentialLR` enters it at the milestone. `audit_lr_curve`
checks a recorded curve for the original bug: warmup set by hand while the cosine counted
from step 0, so the LR dropped at the end of warmup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from cxrbox.errors import ConfigError

__all__ = ["audit_lr_curve", "build_scheduler", "lr_at_step", "lr_curve"]


def _check_schedule_args(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
    for name, value in (("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an int, got {value!r}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= warmup_steps:
        raise ConfigError(
            f"total_steps must be > warmup_steps (the cosine needs at least one step), "
            f"got total_steps={total_steps}, warmup_steps={warmup_steps}"
        )
    if not (math.isfinite(min_lr_ratio) and 0.0 <= min_lr_ratio <= 1.0):
        raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def lr_at_step(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """The LR used for optimizer step `step` (0-based); see the module docstring."""
    _check_schedule_args(warmup_steps, total_steps, min_lr_ratio)
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        start = 1.0 / warmup_steps
        return base_lr * (start + (1.0 - start) * step / warmup_steps)
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return base_lr * (
        min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 + math.cos(math.pi * progress)) / 2.0
    )


def lr_curve(
    base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> list[float]:
    """The expected LR of each of the `total_steps` optimizer steps, as a list of floats."""
    _check_schedule_args(warmup_steps, total_steps, min_lr_ratio)
    return [
        lr_at_step(t, base_lr, warmup_steps, total_steps, min_lr_ratio) for t in range(total_steps)
    ]


class _CosineToFloorLR(CosineAnnealingLR):
    """`CosineAnnealingLR` in closed form, with a per-group floor `min_lr_ratio * base_lr`.

    Epochs past `T_max` stay at the floor instead of climbing the next cosine period.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, T_max: int, min_lr_ratio: float) -> None:
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, T_max=T_max, eta_min=0.0)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:  # type: ignore[override]
        epoch = min(max(self.last_epoch, 0), self.T_max)
        factor = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        ratio = self.min_lr_ratio
        return [float(base) * (ratio + (1.0 - ratio) * factor) for base in self.base_lrs]


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> SequentialLR:
    """Linear warmup then cosine to `min_lr_ratio * base`, stepped once per optimizer step.

    Each param group follows `lr_curve(group_base_lr, ...)`. `warmup_steps=0` is pure cosine.
    Resume by building a fresh optimizer and scheduler with the same arguments, then loading
    both state dicts. Raises ConfigError (naming the argument) for warmup_steps < 0,
    total_steps <= warmup_steps or min_lr_ratio outside [0, 1].
    """
    _check_schedule_args(warmup_steps, total_steps, min_lr_ratio)
    cosine = _CosineToFloorLR(
        optimizer, T_max=total_steps - warmup_steps, min_lr_ratio=min_lr_ratio
    )
    if warmup_steps == 0:
        return SequentialLR(optimizer, schedulers=[cosine], milestones=[])
    warmup = LinearLR(
        optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps
    )
    return SequentialLR(optimizer, schedulers=[warmup, cosine], milestones=[warmup_steps])


def audit_lr_curve(
    lrs: Sequence[float],
    base_lr: float,
    warmup_steps: int,
    rtol: float = 1e-3,
    min_lr_ratio: float | None = None,
) -> list[str]:
    """Problems in a recorded per-step LR curve (empty list: none found).

    Checks, with tolerance `rtol * base_lr`: every LR finite; warmup non-decreasing up to and
    including step `warmup_steps`; peak equals `base_lr`; LR at step `warmup_steps` equals
    `base_lr`; no jump at the warmup/cosine boundary larger than one warmup increment
    (`base_lr / warmup_steps`); cosine non-increasing after the boundary. With `min_lr_ratio`,
    and `lrs` covering the whole run (len(lrs) == total_steps), also every step against
    `lr_curve(base_lr, warmup_steps, len(lrs), min_lr_ratio)`: this catches a cosine that runs
    on a shifted clock, whose shape checks pass.
    """
    if base_lr <= 0 or not math.isfinite(base_lr):
        raise ConfigError(f"base_lr must be a positive finite number, got {base_lr}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if len(lrs) == 0:
        return ["LR curve is empty"]
    bad = [i for i, lr in enumerate(lrs) if not math.isfinite(lr)]
    if bad:
        return [f"LR is not finite at step {bad[0]} ({len(bad)} steps in all)"]
    tol = rtol * base_lr
    problems: list[str] = []
    boundary = min(warmup_steps, len(lrs) - 1)
    drops = [t for t in range(1, boundary + 1) if lrs[t] < lrs[t - 1] - tol]
    if drops:
        t = drops[0]
        problems.append(
            f"warmup is not non-decreasing: LR drops from {lrs[t - 1]:.6g} to {lrs[t]:.6g} "
            f"at step {t} (warmup_steps={warmup_steps}; {len(drops)} drops in all)"
        )
    peak = max(lrs)
    if abs(peak - base_lr) > tol:
        problems.append(f"peak LR {peak:.6g} != base LR {base_lr:.6g} (rtol {rtol:g})")
    if warmup_steps < len(lrs) and abs(lrs[warmup_steps] - base_lr) > tol:
        problems.append(
            f"LR at the end of warmup (step {warmup_steps}) is {lrs[warmup_steps]:.6g}, "
            f"expected the base LR {base_lr:.6g}"
        )
    if 0 < warmup_steps < len(lrs):
        jump = lrs[warmup_steps] - lrs[warmup_steps - 1]
        if abs(jump) > base_lr / warmup_steps + tol:
            problems.append(
                f"jump of {jump:+.6g} at the warmup/cosine boundary (step {warmup_steps}), "
                f"larger than one warmup increment {base_lr / warmup_steps:.6g}"
            )
    rises = [t for t in range(warmup_steps + 1, len(lrs)) if lrs[t] > lrs[t - 1] + tol]
    if rises:
        t = rises[0]
        problems.append(
            f"cosine is not non-increasing: LR rises from {lrs[t - 1]:.6g} to {lrs[t]:.6g} "
            f"at step {t} ({len(rises)} rises in all)"
        )
    if min_lr_ratio is not None:
        problems += _compare_with_curve(lrs, base_lr, warmup_steps, min_lr_ratio, tol)
    return problems


def _compare_with_curve(
    lrs: Sequence[float], base_lr: float, warmup_steps: int, min_lr_ratio: float, tol: float
) -> list[str]:
    if len(lrs) <= warmup_steps:
        return [f"LR curve has {len(lrs)} steps, not more than warmup_steps={warmup_steps}"]
    expected = lr_curve(base_lr, warmup_steps, len(lrs), min_lr_ratio)
    worst = max(range(len(lrs)), key=lambda t: abs(lrs[t] - expected[t]))
    if abs(lrs[worst] - expected[worst]) <= tol:
        return []
    return [
        f"LR departs from the warmup+cosine curve: {lrs[worst]:.6g} instead of "
        f"{expected[worst]:.6g} at step {worst} (the largest gap)"
    ]

"""A warmup that hands over to its decay: the LR the optimizer really used during the kit's
training run (`check_recorded_lr`, any warmup: a scheduler or code in the training loop), and
any torch LR scheduler stepped dry over the whole run (`check_warmup_hands_over`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

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


# A step-to-step change at the warmup hand-over up to this many times the largest change inside
# the warmup is continuous (an Ultralytics warmup interpolates toward a target that itself
# decays per epoch, so its increments differ by a few percent).
HANDOVER_SLACK = 1.5
# An LR at or below this fraction of the base LR counts as 0.
ZERO_LR_RATIO = 1e-6
DECAY_LOOKAHEAD = 5  # steps after the warmup whose decay rate bounds the decay during it


def audit_recorded_lr(
    curve: Sequence[float],
    base_lr: float,
    warmup_steps: int,
    start_lr: float | None = None,
    total_steps: int = 0,
    rtol: float = 1e-3,
    positions: Sequence[int] | None = None,
) -> list[str]:
    """Problems in one param group's recorded LR per optimizer step (empty: none found).

    Declared shape: over `warmup_steps` the LR moves monotonically from `start_lr` (None: at
    most the base LR, rising) to the base LR; it hands over without a jump (no step larger than
    `HANDOVER_SLACK` x the largest warmup increment at steps W and W + 1, both conventions of
    where a warmup ends); it ends below the base LR by no more than the decay after it accounts
    for (the decay may run during the warmup, as Ultralytics' does); after the warmup it never
    rises nor exceeds the base LR, and it is not 0 before 90 % of `total_steps` (0: the
    recorded run). `positions`: the train_step call of each step (default 0, 1, 2, ...): with
    gradient accumulation steps are unevenly spaced in calls, and a warmup written per call
    (Ultralytics') moves the LR in proportion to the calls between two steps, so changes are
    compared per call."""
    n = len(curve)
    at = list(positions) if positions is not None else list(range(n))

    def per_call(t: int) -> float:  # LR change from step t - 1 to t, per train_step call
        return (curve[t] - curve[t - 1]) / max(1, at[t] - at[t - 1])

    if n == 0:
        return ["no optimizer step was recorded"]
    bad = [t for t, lr in enumerate(curve) if not math.isfinite(lr)]
    if bad:
        return [f"LR is not finite at step {bad[0]} ({len(bad)} steps in all)"]
    tol = rtol * max(base_lr, abs(start_lr or 0.0))
    problems: list[str] = []
    w = warmup_steps
    horizon = 0.9 * total_steps if total_steps else n
    zeros = [t for t in range(w + 1, n) if curve[t] <= ZERO_LR_RATIO * base_lr and t < horizon]
    if zeros:
        problems.append(
            f"LR is 0 from step {zeros[0]} on ({len(zeros)} of the {n - w - 1} recorded steps "
            f"after the {w}-step warmup): training stops after the warmup"
        )
    if start_lr is not None and abs(curve[0] - start_lr) > tol:
        problems.append(
            f"LR at the first optimizer step is {curve[0]:.6g}, the declared warmup start is "
            f"{start_lr:.6g}: something else sets the LR during the warmup (a scheduler stepped "
            "after the warmup code fights it)"
        )
    first = start_lr if start_lr is not None else curve[0]
    falling = first > base_lr + tol
    end = min(w, n - 1)
    wrong = [
        t
        for t in range(1, end + 1)
        if (curve[t] > curve[t - 1] + tol if falling else curve[t] < curve[t - 1] - tol)
    ]
    if wrong:
        t = wrong[0]
        problems.append(
            f"warmup is not {'falling' if falling else 'rising'} to the base LR {base_lr:.6g}: "
            f"LR goes from {curve[t - 1]:.6g} to {curve[t]:.6g} at step {t} (warmup_steps={w}): "
            "the decay fights the warmup"
        )
    inside = [abs(per_call(t)) for t in range(1, min(w, n))]
    increment = max(inside) if inside else abs(base_lr - first)
    for t in (w, w + 1):
        if 1 <= t < n and w > 0:
            jump = curve[t] - curve[t - 1]
            if abs(per_call(t)) > HANDOVER_SLACK * increment + tol:
                problems.append(
                    f"jump of {jump:+.6g} at the warmup hand-over (step {t}), larger than the "
                    f"warmup's own steps ({increment:.6g} per train_step call)"
                )
                break
    if 0 < w < n:
        after = [-per_call(t) for t in range(w + 1, min(n, w + 1 + DECAY_LOOKAHEAD))]
        decay = max([0.0, *after])
        allowed = (at[w] - at[0]) * decay
        if base_lr - curve[w] > allowed + tol and not zeros:
            problems.append(
                f"warmup ends at {curve[w]:.6g} (step {w}), below the base LR {base_lr:.6g} by "
                f"more than the decay after it accounts for ({allowed:.3g})"
            )
    elif n <= w:
        problems.append(f"only {n} optimizer steps recorded: the {w}-step warmup never ended")
    rises = [t for t in range(w + 1, n) if curve[t] > curve[t - 1] + tol]
    if rises:
        t = rises[0]
        problems.append(
            f"LR rises after the warmup, from {curve[t - 1]:.6g} to {curve[t]:.6g} at step {t} "
            f"({len(rises)} rises in all)"
        )
    peak = max(curve[w:], default=0.0)
    if peak > base_lr + tol:
        problems.append(f"LR {peak:.6g} after the warmup is above the base LR {base_lr:.6g}")
    return problems


def check_recorded_lr(
    curves: Sequence[Sequence[float]],
    base_lrs: Sequence[float],
    warmup_steps: int,
    start_lrs: Sequence[float | None] = (),
    total_steps: int = 0,
    calls: int = 0,
    positions: Sequence[int] | None = None,
) -> CheckResult:
    """Audit every param group's LR recorded at each optimizer step of the kit's training run
    (`audit_recorded_lr`) against the declared warmup; `calls`: train_step calls of that run;
    `positions`: the call of each optimizer step."""
    n_steps = len(curves[0]) if curves else 0
    numbers = {
        "warmup_steps": warmup_steps,
        "recorded_steps": n_steps,
        "train_step_calls": calls,
        "base_lrs": list(base_lrs),
        "start_lrs": list(start_lrs),
        "first_lrs": [c[: warmup_steps + 3] for c in curves],
    }
    if n_steps == 0:
        return CheckResult(
            "lr_schedule",
            "warn",
            f"not judged: the optimizer never stepped in {calls} train_step calls (see "
            "optimizer_step)",
            numbers,
        )
    starts = list(start_lrs) + [None] * (len(curves) - len(start_lrs))
    problems = [
        f"group {i}: {p}"
        for i, (curve, base, start) in enumerate(zip(curves, base_lrs, starts, strict=True))
        for p in audit_recorded_lr(
            curve, base, warmup_steps, start, total_steps, positions=positions
        )
    ]
    if problems:
        return CheckResult("lr_schedule", "fail", "; ".join(problems), numbers)
    groups = ", ".join(f"{c[0]:.3g}->{base:g}" for c, base in zip(curves, base_lrs, strict=True))
    return CheckResult(
        "lr_schedule",
        "pass",
        f"LR the optimizer used over {n_steps} steps of the kit's run: warmup {warmup_steps} "
        f"steps ({groups} per group), no jump at the hand-over, then non-increasing",
        numbers,
    )

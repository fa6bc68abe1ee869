"""The first optimizer steps move every trainable weight; one backward reaches every trainable
weight; gradients are cleared between optimizer steps.

All three run the detector's own code on a fresh model: `step_probe` calls its train_step until
the optimizer has stepped twice (at most 2 x `accumulation` + 2 calls) with `OptimizerRecorder`
watching. Tensors matching `Detector.idle_parameters` are allowed to stay idle and are reported
as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cxrbox.testing.batchnorm import batchnorm_layers
from cxrbox.testing.detector import Detector
from cxrbox.testing.idle import check_patterns_match, describe_idle, resolve_idle
from cxrbox.testing.result import CheckResult, raise_if_failed
from cxrbox.testing.training import start_run


def declared_idle(detector: Detector, model: torch.nn.Module) -> dict[str, str]:
    """{parameter or BatchNorm layer name: reason} of everything `idle_parameters` declares;
    raises ConfigError for a pattern that matches nothing."""
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in batchnorm_layers(model)]
    check_patterns_match(names, detector.idle_parameters)
    return resolve_idle(names, detector.idle_parameters)


@dataclass(frozen=True)
class StepProbe:
    """The first train_step calls of a fresh model.

    calls: train_step calls; steps: optimizer steps they took; lrs: LR per group at each step;
    unchanged: trainable tensors that did not move (idle declarations excluded); idle: those
    declared idle that did not move, {name: reason}; frozen: tensors with requires_grad False;
    stale: (step, name, |stale grad|, |new grad|) of gradients not cleared after a step.
    """

    n_parameters: int
    calls: int
    steps: int
    lrs: list[list[float]]
    unchanged: list[str]
    idle: dict[str, str]
    frozen: list[str]
    stale: list[tuple[int, str, float, float]]


def step_probe(
    detector: Detector, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0, seed: int = 0
) -> StepProbe:
    """Call the detector's train_step on a fresh model until the optimizer has taken 2 steps,
    one of them with every group's LR above 0 (a warmup may start at LR 0), or until
    2 x accumulation + 2 calls; a tensor counts as moved when |delta| > tolerance somewhere."""
    run = start_run(detector, images, boxes, seed)
    model = run.model
    idle = declared_idle(detector, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    max_calls = 2 * max(1, detector.accumulation) + 2
    try:
        while run.calls < max_calls:
            run.advance(1)
            recorded = run.recorder.lrs
            if len(recorded) >= 2 and any(all(lr > 0 for lr in step) for step in recorded):
                break
    finally:
        run.close()
    not_moved = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not bool(((p.detach() - before[n]).abs() > tolerance).any())
    ]
    return StepProbe(
        n_parameters=len(before),
        calls=run.calls,
        steps=run.recorder.steps,
        lrs=run.recorder.lrs,
        unchanged=[n for n in not_moved if n not in idle],
        idle={n: idle[n] for n in not_moved if n in idle},
        frozen=frozen,
        stale=run.recorder.stale,
    )


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def optimizer_step_result(probe: StepProbe, detector: Detector) -> CheckResult:
    """The optimizer_step verdict on a `StepProbe`."""
    numbers = {
        "n_parameters": probe.n_parameters,
        "unchanged": probe.unchanged,
        "frozen": probe.frozen,
        "idle_declared": sorted(probe.idle),
        "train_step_calls": probe.calls,
        "optimizer_steps": probe.steps,
        "lrs": probe.lrs,
    }
    done = f"{probe.calls} train_step calls ({probe.steps} optimizer steps)"
    idle = describe_idle(probe.idle, detector.idle_parameters)
    if probe.unchanged:
        cause = ""
        if probe.steps == 0:
            cause = (
                f": optimizer.step() was never called (accumulation declared: "
                f"{detector.accumulation} calls per step)"
            )
        elif all(lr == 0 for step in probe.lrs for lr in step):
            cause = ": the LR was 0 at every optimizer step"
        return CheckResult(
            "optimizer_step",
            "fail",
            f"{len(probe.unchanged)} of {probe.n_parameters} trainable tensors did not change "
            f"after {done}: {_shown(probe.unchanged)}{cause}",
            numbers,
        )
    moved = probe.n_parameters - len(probe.frozen) - len(probe.idle)
    return CheckResult(
        "optimizer_step",
        "pass",
        f"all {moved} trainable tensors changed after {done}"
        + (f"; {idle}" if idle else "")
        + (f"; frozen: {_shown(probe.frozen)}" if probe.frozen else ""),
        numbers,
    )


def check_every_parameter_moves(
    detector: Detector, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0, seed: int = 0
) -> CheckResult:
    """The first optimizer steps of the detector's own `step` change every trainable parameter
    (|delta| > tolerance somewhere) but those declared idle. images [B, 1 or C, H, W] in [0, 1];
    boxes: B x [K, 4] normalized xyxy."""
    return optimizer_step_result(step_probe(detector, images, boxes, tolerance, seed), detector)


def assert_every_parameter_moves(
    detector: Detector, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0
) -> CheckResult:
    """Raise AssertionError naming the trainable tensors that the first optimizer steps left
    unchanged (a skipped `optimizer.step()`, a zero LR, a layer missing from the optimizer)."""
    return raise_if_failed(check_every_parameter_moves(detector, images, boxes, tolerance))


def zero_grad_result(probe: StepProbe) -> CheckResult:
    """The zero_grad verdict on a `StepProbe`: no parameter still holds a gradient from before
    the last optimizer step when the next backward adds to it."""
    numbers = {
        "optimizer_steps": probe.steps,
        "train_step_calls": probe.calls,
        "stale": [name for _, name, _, _ in probe.stale],
    }
    if probe.steps < 2:
        return CheckResult(
            "zero_grad",
            "warn",
            f"not judged: {probe.steps} optimizer steps in {probe.calls} train_step calls "
            "(2 needed; see optimizer_step)",
            numbers,
        )
    if probe.stale:
        step, _, stale, new = probe.stale[0]
        names = sorted({name for _, name, _, _ in probe.stale})
        numbers["stale_to_new_norm"] = stale / new if new > 0 else float("inf")
        return CheckResult(
            "zero_grad",
            "fail",
            f"after optimizer step {step}, the next backward added to gradients still held by "
            f"{len(names)} tensors ({_shown(names)}; |old| {stale:.3g} vs |new| {new:.3g}): "
            "zero_grad() is skipped, so every step applies the sum of all past gradients",
            numbers,
        )
    return CheckResult(
        "zero_grad",
        "pass",
        f"gradients were cleared after each of {probe.steps} optimizer steps "
        f"({probe.calls} train_step calls)",
        numbers,
    )


def check_gradients_are_cleared(
    detector: Detector, images: Tensor, boxes: list[Tensor], seed: int = 0
) -> CheckResult:
    """After every optimizer step of the detector's own `step`, the next backward starts from
    cleared gradients (None or zero), whatever the optimizer; backward passes between two steps
    (gradient accumulation) may add up."""
    return zero_grad_result(step_probe(detector, images, boxes, seed=seed))


def assert_gradients_are_cleared(
    detector: Detector, images: Tensor, boxes: list[Tensor]
) -> CheckResult:
    """Raise AssertionError when a backward after an optimizer step adds to gradients left from
    before it (a skipped or misplaced `zero_grad`)."""
    return raise_if_failed(check_gradients_are_cleared(detector, images, boxes))


def check_gradients_reach_every_parameter(
    detector: Detector, images: Tensor, boxes: list[Tensor], seed: int = 0
) -> CheckResult:
    """After one forward/backward through the detector's loss, no trainable tensor has a zero
    or missing gradient, but those declared idle."""
    torch.manual_seed(seed)
    model = detector.build().train()
    idle = declared_idle(detector, model)
    model.zero_grad(set_to_none=True)
    detector.loss(model, detector.images_for(images), boxes).backward()
    without = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    dead = [n for n in without if n not in idle]
    idle_found = {n: idle[n] for n in without if n in idle}
    norms = [
        float(p.grad.norm())
        for n, p in model.named_parameters()
        if p.grad is not None and n not in idle_found
    ]
    numbers = {
        "dead": dead,
        "idle_declared": sorted(idle_found),
        "min_grad_norm": min(norms, default=0.0),
    }
    note = describe_idle(idle_found, detector.idle_parameters)
    if dead:
        return CheckResult(
            "gradient_flow",
            "fail",
            f"{len(dead)} parameter tensors got no gradient: {', '.join(dead[:4])}",
            numbers,
        )
    return CheckResult(
        "gradient_flow",
        "pass",
        f"every parameter got a gradient (smallest norm {min(norms, default=0.0):.2e})"
        + (f" but {note}" if note else ""),
        numbers,
    )


def assert_gradients_reach_every_parameter(
    detector: Detector, images: Tensor, boxes: list[Tensor]
) -> CheckResult:
    """Raise AssertionError naming the trainable tensors with no gradient after one backward
    (a detached branch, a skipped backward, an unused layer)."""
    return raise_if_failed(check_gradients_reach_every_parameter(detector, images, boxes))

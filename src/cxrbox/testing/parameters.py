"""One step moves every trainable weight; one backward reaches every trainable weight."""

from __future__ import annotations

import torch
from torch import Tensor

from cxrbox.testing.detector import Detector
from cxrbox.testing.result import CheckResult, raise_if_failed


def check_every_parameter_moves(
    detector: Detector, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0, seed: int = 0
) -> CheckResult:
    """One step of the detector's own `step` changes every trainable parameter (|delta| >
    tolerance somewhere). images [B, 1, S, S] in [0, 1]; boxes: B x [K, 4] normalized xyxy."""
    torch.manual_seed(seed)
    model = detector.build()
    optimizer = detector.optimizer(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    detector.step(model, optimizer, detector.images_for(images), boxes)
    unchanged = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not bool(((p.detach() - before[n]).abs() > tolerance).any())
    ]
    numbers = {"n_parameters": len(before), "unchanged": unchanged, "frozen": frozen}
    if unchanged:
        shown = ", ".join(unchanged[:4]) + (" ..." if len(unchanged) > 4 else "")
        return CheckResult(
            "optimizer_step",
            "fail",
            f"{len(unchanged)} of {len(before)} trainable tensors did not change after one "
            f"step: {shown}",
            numbers,
        )
    return CheckResult(
        "optimizer_step",
        "pass",
        f"all {len(before) - len(frozen)} trainable tensors changed after one step"
        + (f"; frozen: {', '.join(frozen)}" if frozen else ""),
        numbers,
    )


def assert_every_parameter_moves(
    detector: Detector, images: Tensor, boxes: list[Tensor], tolerance: float = 0.0
) -> CheckResult:
    """Raise AssertionError naming the trainable tensors that one training step left unchanged
    (a skipped `optimizer.step()`, a zero LR, a layer missing from the optimizer)."""
    return raise_if_failed(check_every_parameter_moves(detector, images, boxes, tolerance))


def check_gradients_reach_every_parameter(
    detector: Detector, images: Tensor, boxes: list[Tensor], seed: int = 0
) -> CheckResult:
    """After one forward/backward through the detector's loss, no trainable tensor has a zero
    or missing gradient."""
    torch.manual_seed(seed)
    model = detector.build().train()
    model.zero_grad(set_to_none=True)
    detector.loss(model, detector.images_for(images), boxes).backward()
    dead = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    norms = [float(p.grad.norm()) for p in model.parameters() if p.grad is not None]
    numbers = {"dead": dead, "min_grad_norm": min(norms, default=0.0)}
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
        f"every parameter got a gradient (smallest norm {min(norms):.2e})",
        numbers,
    )


def assert_gradients_reach_every_parameter(
    detector: Detector, images: Tensor, boxes: list[Tensor]
) -> CheckResult:
    """Raise AssertionError naming the trainable tensors with no gradient after one backward
    (a detached branch, a skipped backward, an unused layer)."""
    return raise_if_failed(check_gradients_reach_every_parameter(detector, images, boxes))

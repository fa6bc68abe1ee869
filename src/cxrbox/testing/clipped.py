"""A box loss sees one coordinate system: a target partly outside the image scores as its
clipped version, in value and in gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from cxrbox.testing.detector import BoxLoss
from cxrbox.testing.result import CheckResult, raise_if_failed

# A box sticking out of the top-left corner of a normalized image, and a prediction near it.
OUTSIDE_TARGET = ((-0.20, -0.10, 0.40, 0.45),)
DEFAULT_PRED = ((0.05, 0.02, 0.45, 0.50),)


def check_loss_sees_clipped_boxes(
    loss_fn: BoxLoss,
    pred: Tensor | None = None,
    target: Tensor | None = None,
    extent: float = 1.0,
    tolerance: float = 1e-9,
) -> CheckResult:
    """loss_fn(pred, target) equals loss_fn(pred, target clipped to [0, extent]), and so does
    its gradient with respect to `pred` (float64; |difference| <= tolerance).

    pred: what `loss_fn` takes as prediction (default normalized xyxy [1, 4]); target: xyxy
    [N, 4] partly outside [0, extent] (default `OUTSIDE_TARGET`). Any real dtype is read as
    float64.
    """
    pred = torch.tensor(DEFAULT_PRED, dtype=torch.float64) if pred is None else pred
    pred = pred.detach().to(torch.float64).requires_grad_(True)
    if target is None:
        target = torch.tensor(OUTSIDE_TARGET, dtype=torch.float64)
    outside = target.to(torch.float64)
    clipped = outside.clamp(0, extent)
    loss_outside = loss_fn(pred, outside)
    loss_clipped = loss_fn(pred, clipped)
    (grad_outside,) = torch.autograd.grad(loss_outside, pred)
    (grad_clipped,) = torch.autograd.grad(loss_clipped, pred)
    gap = abs(float(loss_outside.detach()) - float(loss_clipped.detach()))
    grad_gap = float((grad_outside - grad_clipped).abs().max())
    finite = bool(torch.isfinite(grad_outside).all())
    numbers = {"loss_gap": gap, "grad_gap": grad_gap, "grad_finite": finite}
    if gap > tolerance or grad_gap > tolerance or not finite:
        return CheckResult(
            "loss_coordinates",
            "fail",
            f"loss of a box outside the image differs from its clipped version by {gap:.2e} "
            f"(gradient by {grad_gap:.2e}): the loss does not clip its targets",
            numbers,
        )
    return CheckResult(
        "loss_coordinates",
        "pass",
        "boxes outside the image score as their clipped version, in value and gradient",
        numbers,
    )


def assert_loss_sees_clipped_boxes(
    loss_fn: BoxLoss, pred: Tensor | None = None, target: Tensor | None = None
) -> CheckResult:
    """Raise AssertionError unless `loss_fn(pred, target)` gives the same value and gradient
    for a target partly outside the image and for its clipped version."""
    return raise_if_failed(check_loss_sees_clipped_boxes(loss_fn, pred, target))

"""A box loss sees one coordinate system: a target partly outside the image scores as its
clipped version, in value and in gradient.

Three probes, from the narrowest to the widest: `check_loss_sees_clipped_boxes` on a box loss
function; `transform_targets_outside` on the training transform (do boxes that stick out leave it
clipped, as Ultralytics' affine clips them?); `check_training_loss_sees_clipped_boxes` on the
whole training loss (model, images, boxes). The checklist's `loss_coordinates` uses the box loss
when the detector gives one, else the targets that reach the loss: the transform's output, and
the training loss itself when the transform lets a box outside the image through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cxrbox.testing.detector import BoxLoss
from cxrbox.testing.result import CheckResult, raise_if_failed
from cxrbox.testing.transforms import as_channels, run_transform

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


# A box sticking out of the top-left corner by 20 % / 10 % of the image; its visible part is
# painted, so a transform that follows it keeps a box there.
OUTSIDE_FRACTION = (-0.20, -0.10, 0.40, 0.45)
EDGE_TOLERANCE_PX = 0.5


def outside_case(image_size: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [S, S] or [S, S, C] with the visible part of the box painted 255, the box
    float32 [1, 4] pixel xyxy sticking out of the top-left corner)."""
    box = np.array([OUTSIDE_FRACTION], np.float32) * image_size
    image = np.zeros((image_size, image_size), np.uint8)
    image[: int(box[0, 3]), : int(box[0, 2])] = 255
    return as_channels(image, channels), box


def transform_targets_outside(
    transform: Any, image_size: int = 256, n_seeds: int = 20, channels: int = 1
) -> tuple[int, int, float, str]:
    """Run a box that sticks out of the image through `transform` with `n_seeds` seeds: (samples
    whose boxes reach past the output image, samples run, worst overshoot in px, the error the
    transform raised or ''). A transform that raises on such a box counts every sample as
    not clipped."""
    image, box = outside_case(image_size, channels)
    outside, worst = 0, 0.0
    for seed in range(n_seeds):
        try:
            out_image, out_boxes = run_transform(transform, image, box, seed)
        except Exception as exc:  # a transform may reject boxes outside the image
            return n_seeds, n_seeds, math.inf, f"{type(exc).__name__}: {exc}"[:200]
        height, width = out_image.shape[:2]
        over = np.concatenate(
            [
                -out_boxes[:, :2].ravel(),
                (out_boxes[:, 2] - width).ravel(),
                (out_boxes[:, 3] - height).ravel(),
                np.zeros(1),
            ]
        ).max()
        worst = max(worst, float(over))
        outside += bool(over > EDGE_TOLERANCE_PX)
    return outside, n_seeds, worst, ""


def check_training_loss_sees_clipped_boxes(
    loss: Callable[[nn.Module, Tensor, list[Tensor]], Tensor],
    model: nn.Module,
    images: Tensor,
    boxes: list[Tensor],
    seed: int = 0,
    rtol: float = 1e-6,
) -> CheckResult:
    """`loss(model, images, boxes)` with image 0's first box sticking out of the image equals the
    loss with that box clipped, in value and in the gradient of every parameter (torch seeded
    alike before both, for losses that sample)."""
    outside = [b.detach().double().clone() for b in boxes]
    outside[0][0] = torch.tensor(OUTSIDE_FRACTION, dtype=torch.float64)
    clipped = [b.clamp(0, 1) for b in outside]
    params = [p for p in model.parameters() if p.requires_grad]

    def value_and_grads(targets: list[Tensor]) -> tuple[float, list[Tensor]]:
        torch.manual_seed(seed)
        value = loss(model, images, [t.float() for t in targets])
        grads = torch.autograd.grad(value, params, allow_unused=True)
        flat = [
            g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
        ]
        return float(value.detach()), flat

    loss_out, grads_out = value_and_grads(outside)
    loss_in, grads_in = value_and_grads(clipped)
    gap = abs(loss_out - loss_in)
    grad_gap = max(float((a - b).abs().max()) for a, b in zip(grads_out, grads_in, strict=True))
    grad_scale = max(float(g.abs().max()) for g in grads_in)
    numbers = {"loss_gap": gap, "grad_gap": grad_gap, "loss": loss_in}
    if gap > rtol * max(abs(loss_in), 1.0) or grad_gap > rtol * max(grad_scale, 1e-12):
        return CheckResult(
            "loss_coordinates",
            "fail",
            f"the training loss of a box outside the image differs from its clipped version by "
            f"{gap:.2e} (gradient by {grad_gap:.2e}): the loss does not clip its targets",
            numbers,
        )
    return CheckResult(
        "loss_coordinates",
        "pass",
        "the training loss scores a box outside the image as its clipped version",
        numbers,
    )

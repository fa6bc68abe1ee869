"""MONAI's RetinaNet (`monai.apps.detection`) in 2-D as a `cxrbox.testing.Detector`, and the
faults of the diagnosis planted around it.

`pytest --cxrbox-detector tests.kit_examples.monai_retinanet:make_detector` runs the whole
checklist on it; each `with_*` function gives the same detector with one fault planted:
- `with_global_pooling`: the feature maps pooled to one vector before the heads;
- `with_skipped_step`: the training loop never calls `optimizer.step()`;
- `with_skipped_zero_grad`: the training loop never clears gradients (they accumulate);
- `with_fighting_warmup`: a hand-made warmup whose cosine counts from step 0;
- `with_image_only_flip`: a flip that moves the image but not the boxes.

Without torchvision: the feature extractor is a small CNN on MONAI's own
`FeaturePyramidNetwork`, the matcher is ATSS, the sampler the hard negative sampler, and the two
torchvision names `RetinaNetDetector` only uses in `isinstance` checks are placeholder classes.
MONAI's boxes put x along the FIRST spatial axis (rows), so the adapter swaps x and y.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import albumentations as A
import monai.apps.detection.networks.retinanet_detector as retinanet_detector
import numpy as np
import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.data.box_utils import box_giou
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import Tensor, nn

from cxrbox.testing import Detector, Prediction


class Matcher:  # torchvision's name, used by RetinaNetDetector only in isinstance checks
    pass


class BalancedPositiveNegativeSampler:  # likewise
    pass


retinanet_detector.Matcher = Matcher
retinanet_detector.BalancedPositiveNegativeSampler = BalancedPositiveNegativeSampler

IMAGE_SIZE = 128  # px of the kit's images
WARMUP_STEPS, TOTAL_STEPS = 10, 100
SWAP_XY = [1, 0, 3, 2]  # cxrbox xyxy (x = column) <-> MONAI xyxy (x = row)


class SmallFeatures(nn.Module):
    """Strides 8 and 16 through MONAI's FPN; `pooled` averages each map to one vector and
    broadcasts it back (the global pooling fault: the heads no longer see position)."""

    def __init__(self, channels: int = 16, pooled: bool = False) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU()
        )
        self.down8 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.ReLU())
        self.down16 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, 2, 1), nn.ReLU())
        self.fpn = FeaturePyramidNetwork(2, [2 * c, 2 * c], c)
        self.out_channels = c
        self.pooled = pooled

    def forward(self, images: Tensor) -> list[Tensor]:
        s8 = self.down8(self.stem(images))
        s16 = self.down16(s8)
        maps = list(self.fpn(OrderedDict([("0", s8), ("1", s16)])).values())
        if self.pooled:
            maps = [m.mean(dim=(2, 3), keepdim=True).expand_as(m) for m in maps]
        return maps


def build_retinanet(pooled: bool = False) -> retinanet_detector.RetinaNetDetector:
    network = RetinaNet(2, 1, 1, SmallFeatures(pooled=pooled), size_divisible=16)
    # 28 px anchors: with 32 px ones, the kit's 32 px square ties every ATSS candidate and
    # nothing is matched (measured: no positives, fitted IoU 0.03).
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=(1, 2), base_anchor_shapes=((28, 28),)
    )
    detector = retinanet_detector.RetinaNetDetector(network, anchors)
    detector.set_atss_matcher(num_candidates=7, center_in_gt=False)
    detector.set_hard_negative_sampler(64, positive_fraction=0.3, min_neg=16, pool_size=20)
    detector.set_box_selector_parameters(
        score_thresh=0.0, topk_candidates_per_level=100, nms_thresh=0.5, detections_per_img=10
    )
    return detector


def training_loss(model: nn.Module, images: Tensor, boxes: list[Tensor]) -> Tensor:
    size = images.shape[-1]
    targets = [
        {"boxes": (b.float() * size)[:, SWAP_XY], "labels": torch.zeros(len(b), dtype=torch.long)}
        for b in boxes
    ]
    losses = model(images, targets)
    return losses["classification"] + losses["box_regression"]


def predict(model: nn.Module, images: Tensor) -> list[Prediction]:
    size = images.shape[-1]
    return [(out["boxes"][:, SWAP_XY] / size, out["labels_scores"]) for out in model(images)]


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    boxes: list[Tensor],
    *,
    zero_grad: bool = True,
    step: bool = True,
) -> float:
    """The training loop's step, as a user writes it (the flags plant the two loop faults)."""
    model.train()
    if zero_grad:
        optimizer.zero_grad()
    loss = training_loss(model, images, boxes)
    loss.backward()
    if step:
        optimizer.step()
    return float(loss.detach())


def warmup_then_cosine(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=WARMUP_STEPS)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TOTAL_STEPS - WARMUP_STEPS)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], [WARMUP_STEPS])


def cosine_from_step_zero(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The original bug: warmup by hand while the cosine counts from step 0."""

    def factor(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        return 0.5 * (1 + math.cos(math.pi * step / TOTAL_STEPS))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def flip_transform() -> A.Compose:
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"])
    return A.Compose([A.HorizontalFlip(p=0.5)], bbox_params=bbox_params)


def image_only_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fault: the image is flipped, its boxes are not."""
    return (image[:, ::-1].copy() if np.random.rand() < 0.5 else image), boxes


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - GIoU of matched pairs [N, 4], targets clipped to the normalized image first."""
    return (1 - torch.diagonal(box_giou(pred, target.clamp(0, 1)))).mean()


def make_detector(pooled: bool = False, zero_grad: bool = True, step: bool = True) -> Detector:
    return Detector(
        build=lambda: build_retinanet(pooled),
        loss=training_loss,
        predict=predict,
        optimizer=adam,
        train_step=lambda m, o, i, b: train_step(m, o, i, b, zero_grad=zero_grad, step=step),
        scheduler=warmup_then_cosine,
        warmup_steps=WARMUP_STEPS,
        total_steps=TOTAL_STEPS,
        transform=flip_transform(),
        box_loss=giou_loss,
        stride=16,
        name="MONAI RetinaNet (2-D)",
    )


def with_global_pooling() -> Detector:
    return make_detector(pooled=True)


def with_skipped_step() -> Detector:
    return make_detector(step=False)


def with_skipped_zero_grad() -> Detector:
    return make_detector(zero_grad=False)


def with_fighting_warmup() -> Detector:
    from dataclasses import replace

    return replace(make_detector(), scheduler=cosine_from_step_zero)


def with_image_only_flip() -> Detector:
    from dataclasses import replace

    return replace(make_detector(), transform=image_only_flip)

"""A YOLO-Tiny-style backbone with three interchangeable heads.

Every head returns the same raw layout, `Tensor[B, 5, Hg, Wg]` (objectness logit, tx, ty, tw, th
per grid cell), so one decode (`cxrbox.modeling.decode.decode_grid`) serves all of them:

- `grid` (default): a conv head on the stride-32 map; each cell predicts objectness plus a box
  offset relative to itself and a log-scale size. Translation-equivariant: it keeps position.
- `coordconv`: the grid head with normalized x/y coordinate channels concatenated before its
  convs, so each cell also knows where it sits in the image.
- `pooled`: THE ORIGINAL FAILING DESIGN, kept only to reproduce and test the stall.
  `AdaptiveAvgPool2d(1)` + MLP regresses one box (a 1x1 grid): global pooling erases position,
  so the network can only learn an average box. Never use it to train a real model.

`stride` (16 or 32) is the grid's stride: the grid and coordconv heads read the stride-32 map
(8x8 cells at 256 px) or, at stride 16, a tiny-YOLOv3 top-down merge (`TopDownMerge`: the
stride-32 map reduced by a 1x1 conv to half its channels, upsampled 2x, concatenated with the
stride-16 map), a 16x16 grid at 256 px. The backbone is the same, so inputs stay divisible by
32, and so is the raw layout: the one decode serves both grids.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from cxrbox.config import check_head_stride
from cxrbox.errors import ConfigError
from cxrbox.options import BACKBONE_STRIDE, HEADS, NORMS

# The backbone's (coarsest) stride: input sides must be divisible by it, whatever the grid's.
STRIDE = BACKBONE_STRIDE
OUTPUT_CHANNELS = 5  # objectness, tx, ty, tw, th
# Objectness bias at init: sigmoid(-4.6) = 0.01, the usual detector prior, so the empty cells
# do not swamp the first steps with a large BCE.
OBJECTNESS_PRIOR = 0.01
# Channels per stage before the width multiplier: stem, then four downsampling stages.
STAGE_CHANNELS = (16, 32, 64, 128, 256)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics (running mean 0, var 1 unless loaded) and a learnable affine.

    Avoids the noisy statistics of tiny batches (the diagnosis's batch of 4) while keeping a
    per-channel scale and shift. Identical behaviour in train and eval mode.
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def make_norm(norm: str, channels: int) -> nn.Module:
    """One normalization layer of kind `norm` for `channels` feature maps."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(num_groups=math.gcd(8, channels), num_channels=channels)
    if norm == "frozen_batch":
        return FrozenBatchNorm2d(channels)
    raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvBlock(nn.Sequential):
    """conv(k, stride) -> norm -> LeakyReLU(0.1), the YOLO-Tiny building block."""

    def __init__(self, c_in: int, c_out: int, norm: str, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            make_norm(norm, c_out),
            nn.LeakyReLU(0.1, inplace=True),
        )


class Backbone(nn.Module):
    """Stride-32 feature extractor: [B, C_in, S, S] -> [B, C_out, S/32, S/32] (16x16 at 512 px).

    A stride-2 stem (cheaper than conv + maxpool at full resolution, where the step is
    memory-bound) followed by four stages of (stride-2 conv, 3x3 conv). `forward_levels` also
    returns the last stage's input, the stride-16 map [B, C_16, S/16, S/16].
    """

    def __init__(self, in_channels: int, norm: str, width: float) -> None:
        super().__init__()
        chans = [max(8, round(c * width)) for c in STAGE_CHANNELS]
        layers: list[nn.Module] = [ConvBlock(in_channels, chans[0], norm, stride=2)]
        for c_in, c_out in itertools.pairwise(chans):
            layers.append(ConvBlock(c_in, c_out, norm, stride=2))
            layers.append(ConvBlock(c_out, c_out, norm))
        self.layers = nn.Sequential(*layers)  # keys layers.<i>: checkpoints depend on them
        self.out_channels = chans[-1]
        self.stride16_channels = chans[-2]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def forward_levels(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(stride-16 map [B, C_16, S/16, S/16], stride-32 map [B, C_out, S/32, S/32])."""
        stride16 = self.layers[:-2](x)  # the last stage is (stride-2 conv, 3x3 conv)
        return stride16, self.layers[-2:](stride16)


class TopDownMerge(nn.Module):
    """Tiny YOLOv3's top-down path: (stride-16 [B, C_16, H, W], stride-32 [B, C_32, H/2, W/2])
    -> [B, C_32/2 + C_16, H, W]: 1x1 ConvBlock to C_32/2, nearest 2x upsample, concat."""

    def __init__(self, c16: int, c32: int, norm: str) -> None:
        super().__init__()
        self.reduce = ConvBlock(c32, c32 // 2, norm, kernel=1)
        self.out_channels = c32 // 2 + c16

    def forward(self, stride16: Tensor, stride32: Tensor) -> Tensor:
        up = nn.functional.interpolate(self.reduce(stride32), scale_factor=2, mode="nearest")
        return torch.cat((up, stride16), dim=1)


def coordinate_channels(features: Tensor) -> Tensor:
    """Normalized cell-centre coordinates [B, 2, H, W] (x then y, each in (0, 1))."""
    b, _, h, w = features.shape
    ys = (torch.arange(h, device=features.device, dtype=features.dtype) + 0.5) / h
    xs = (torch.arange(w, device=features.device, dtype=features.dtype) + 0.5) / w
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack((grid_x, grid_y)).unsqueeze(0).expand(b, 2, h, w)


class GridHead(nn.Module):
    """[B, C, H, W] -> raw [B, 5, H, W]; with `coordconv`, x/y channels are concatenated first."""

    def __init__(self, c_in: int, norm: str, coordconv: bool) -> None:
        super().__init__()
        self.coordconv = coordconv
        extra = 2 if coordconv else 0
        self.hidden = ConvBlock(c_in + extra, c_in, norm)
        self.predict = nn.Conv2d(c_in, OUTPUT_CHANNELS, kernel_size=1)
        init_prediction_layer(self.predict)

    def forward(self, features: Tensor) -> Tensor:
        if self.coordconv:
            features = torch.cat((features, coordinate_channels(features)), dim=1)
        return self.predict(self.hidden(features))


class PooledHead(nn.Module):
    """The original failing head: global average pool + MLP -> raw [B, 5, 1, 1] (one box)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in, c_in), nn.LeakyReLU(0.1, inplace=True)
        )
        self.predict = nn.Linear(c_in, OUTPUT_CHANNELS)
        init_prediction_layer(self.predict)

    def forward(self, features: Tensor) -> Tensor:
        return self.predict(self.mlp(self.pool(features)))[:, :, None, None]


def init_prediction_layer(layer: nn.Conv2d | nn.Linear) -> None:
    """Small box outputs (boxes start near the prior) and an objectness bias at the 1% prior."""
    nn.init.normal_(layer.weight, std=0.01)
    assert layer.bias is not None
    with torch.no_grad():
        layer.bias.zero_()
        layer.bias[0] = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)


class BoxRegressor(nn.Module):
    """Backbone (+ top-down merge at stride 16) + head. `forward(images[B, C, S, S]) ->
    raw[B, 5, Hg, Wg]`.

    S must be divisible by 32; Hg = Wg = S / stride for the grid heads, 1 for the pooled head.
    A stride-32 model has no `merge` module, so its state_dict keys are those of checkpoints
    written before `stride` existed.
    """

    def __init__(
        self, head: str, norm: str, width: float, in_channels: int, stride: int = STRIDE
    ) -> None:
        super().__init__()
        self.head_name = head
        self.stride = stride
        self.backbone = Backbone(in_channels, norm, width)
        c = self.backbone.out_channels
        self.merge: TopDownMerge | None = None
        if stride == 16:
            self.merge = TopDownMerge(self.backbone.stride16_channels, c, norm)
            c = self.merge.out_channels
        self.head: nn.Module = (
            PooledHead(c) if head == "pooled" else GridHead(c, norm, head == "coordconv")
        )

    def grid_size(self, image_size: int) -> int:
        """Side of the output grid for a square input of `image_size` px."""
        return 1 if self.head_name == "pooled" else image_size // self.stride

    def forward_with_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(raw [B, 5, Hg, Wg], the features the head reads [B, C, Hg', Wg']).

        The features (for the monitors' feature spread) are the backbone's stride-32 map
        [B, C_32, S/32, S/32], or at stride 16 the merged map [B, C_32/2 + C_16, S/16, S/16].
        """
        _check_input(images)
        if self.merge is None:
            features = self.backbone(images)
        else:
            features = self.merge(*self.backbone.forward_levels(images))
        return self.head(features), features

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_features(images)[0]


def _check_input(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] % STRIDE or images.shape[-2] % STRIDE:
        raise ConfigError(
            f"images must have shape [B, C, S, S] with S divisible by {STRIDE}, "
            f"got {tuple(images.shape)}"
        )


def build_model(
    head: str = "grid",
    norm: str = "batch",
    width: float = 1.0,
    in_channels: int = 1,
    stride: int = STRIDE,
) -> BoxRegressor:
    """Build the box regressor. See the module docstring for the heads and `stride`;
    `norm` in NORMS."""
    if head not in HEADS:
        raise ConfigError(f"head must be one of {HEADS}, got {head!r}")
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width!r}")
    check_head_stride(head, stride)
    return BoxRegressor(head, norm, width, in_channels, stride)

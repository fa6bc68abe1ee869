"""Model: shapes for every head and norm, gradients everywhere, and position (in)sensitivity."""

from __future__ import annotations

import pytest
import torch

from cxrbox.decode import decode_grid
from cxrbox.errors import ConfigError
from cxrbox.model import HEADS, NORMS, FrozenBatchNorm2d, build_model


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("size", [64, 96, 256])
def test_output_shape_for_every_head_norm_and_size(head, norm, size):
    model = build_model(head=head, norm=norm, width=0.25)
    raw = model(torch.randn(2, 1, size, size))
    grid = 1 if head == "pooled" else size // 32
    assert raw.shape == (2, 5, grid, grid)
    assert model.grid_size(size) == grid
    assert torch.isfinite(raw).all()


def test_stride_32_map_is_16x16_at_512():
    model = build_model(width=0.25)
    _, features = model.forward_with_features(torch.zeros(1, 1, 512, 512))
    assert features.shape[-2:] == (16, 16)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_trainable_parameter_receives_a_gradient(head, norm):
    model = build_model(head=head, norm=norm, width=0.25)
    raw = model(torch.randn(4, 1, 64, 64))
    boxes, scores = decode_grid(raw)
    (boxes.sum() + scores.sum() + raw.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_input_side_not_divisible_by_32_is_rejected():
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_model(width=0.25)(torch.zeros(1, 1, 100, 100))


@pytest.mark.parametrize(
    "kwargs", [{"head": "mlp"}, {"norm": "layer"}, {"width": 0.0}], ids=["head", "norm", "width"]
)
def test_unknown_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        build_model(**kwargs)


def test_frozen_batch_norm_keeps_statistics_in_train_mode():
    norm = FrozenBatchNorm2d(3)
    norm.train()
    x = torch.randn(8, 3, 4, 4) * 5 + 2
    assert torch.equal(norm(x), x * (1 / (1 + 1e-5) ** 0.5))
    assert torch.equal(norm.running_mean, torch.zeros(3))


def _blob_image(col_px: int, size: int = 256) -> torch.Tensor:
    """A bright square on a zero background (zero stays zero through conv-BN(eval)-LeakyReLU)."""
    image = torch.zeros(1, 1, size, size)
    image[..., 96:160, col_px : col_px + 64] = 1.0
    return image


def _eval_model(head: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(head=head, width=0.5)
    # Random head weights so the outputs are not all at their (constant) initial values.
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.2)
    return model.eval()


def test_grid_head_is_translation_equivariant_by_one_cell():
    model = _eval_model("grid")
    with torch.no_grad():
        raw = model(_blob_image(64))
        shifted = model(_blob_image(96))  # one cell (32 px) to the right
    # Column j of the original equals column j + 1 of the shifted output.
    torch.testing.assert_close(shifted[..., 1:], raw[..., :-1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(shifted, raw, atol=1e-3)


def test_pooled_head_prediction_ignores_position():
    model = _eval_model("pooled")
    with torch.no_grad():
        boxes, _ = decode_grid(model(_blob_image(32)))
        shifted_boxes, _ = decode_grid(model(_blob_image(160)))
    # The blob moved by half the image; the pooled head's box does not move at all.
    torch.testing.assert_close(shifted_boxes, boxes, atol=1e-5, rtol=1e-4)


def test_coordconv_head_sees_absolute_position():
    model = _eval_model("coordconv")
    with torch.no_grad():
        raw = model(torch.zeros(1, 1, 128, 128))
    # On a blank image every grid cell gets the same features but different coordinates.
    assert raw[0, :, 0, 0].sub(raw[0, :, 3, 3]).abs().max() > 1e-4

"""Model: shapes for every head, norm and stride, gradients everywhere, position (in)sensitivity,
and the stride-16 top-down merge."""

from __future__ import annotations

import pytest
import torch

from cxrbox.errors import ConfigError
from cxrbox.modeling.decode import decode_grid
from cxrbox.modeling.model import FrozenBatchNorm2d, TopDownMerge, build_model
from cxrbox.options import HEADS, NORMS, STRIDES

# Every (head, stride) a model can be built with: the pooled head has only its 1x1 grid.
HEAD_STRIDES = [(h, s) for h in HEADS for s in STRIDES if h != "pooled" or s == 32]


@pytest.mark.parametrize(("head", "stride"), HEAD_STRIDES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("size", [64, 96, 256])
def test_output_shape_for_every_head_norm_stride_and_size(head, stride, norm, size):
    model = build_model(head=head, norm=norm, width=0.25, stride=stride)
    raw = model(torch.randn(2, 1, size, size))
    grid = 1 if head == "pooled" else size // stride  # 256 px: 16x16 at stride 16, 8x8 at 32
    assert raw.shape == (2, 5, grid, grid)
    assert model.grid_size(size) == grid
    assert torch.isfinite(raw).all()


@pytest.mark.parametrize(("head", "stride"), HEAD_STRIDES)
def test_features_are_the_map_the_head_reads(head, stride):
    model = build_model(head=head, width=0.25, stride=stride).eval()
    with torch.no_grad():
        raw, features = model.forward_with_features(torch.randn(2, 1, 128, 128))
        assert torch.equal(model.head(features), raw)
    assert features.shape[-2:] == (128 // stride, 128 // stride)


def test_stride_32_map_is_16x16_at_512():
    model = build_model(width=0.25)
    _, features = model.forward_with_features(torch.zeros(1, 1, 512, 512))
    assert features.shape[-2:] == (16, 16)


@pytest.mark.parametrize(("head", "stride"), HEAD_STRIDES)
@pytest.mark.parametrize("norm", NORMS)
def test_every_trainable_parameter_receives_a_gradient(head, stride, norm):
    model = build_model(head=head, norm=norm, width=0.25, stride=stride)
    raw = model(torch.randn(4, 1, 64, 64))
    boxes, scores = decode_grid(raw)
    (boxes.sum() + scores.sum() + raw.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_input_side_not_divisible_by_32_is_rejected():
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_model(width=0.25)(torch.zeros(1, 1, 100, 100))


@pytest.mark.parametrize(
    "kwargs",
    [{"head": "mlp"}, {"norm": "layer"}, {"width": 0.0}, {"stride": 8}],
    ids=["head", "norm", "width", "stride"],
)
def test_unknown_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        build_model(**kwargs)


def test_pooled_head_with_stride_16_is_a_config_error_naming_the_grid():
    with pytest.raises(ConfigError, match="pooled head has a 1x1 grid"):
        build_model(head="pooled", stride=16)


_BLOCK = ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
_BLOCK += ["1.num_batches_tracked"]


@pytest.mark.parametrize("head", ["grid", "coordconv"])
def test_stride_32_state_dict_keys_are_those_of_earlier_checkpoints(head):
    # The keys every checkpoint written before `stride` existed has (stem + 8 backbone blocks,
    # the head's hidden block and its 1x1 prediction conv), in order.
    expected = [f"backbone.layers.{i}.{k}" for i in range(9) for k in _BLOCK]
    expected += [f"head.hidden.{k}" for k in _BLOCK] + ["head.predict.weight", "head.predict.bias"]
    assert list(build_model(head=head, stride=32).state_dict()) == expected


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


def _eval_model(head: str, stride: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(head=head, width=0.5, stride=stride)
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


@pytest.mark.parametrize("stride", STRIDES)
def test_coordconv_head_sees_absolute_position(stride):
    model = _eval_model("coordconv", stride)
    with torch.no_grad():
        raw = model(torch.zeros(1, 1, 128, 128))
    # On a blank image every grid cell gets the same features but different coordinates.
    last = 128 // stride - 1
    assert raw[0, :, 0, 0].sub(raw[0, :, last, last]).abs().max() > 1e-4


# --- stride 16: the top-down merge ---------------------------------------------------------


def test_backbone_levels_are_the_last_stride_16_block_and_the_stride_32_output():
    backbone = build_model(width=0.25).backbone.eval()
    images = torch.randn(1, 1, 128, 96)
    outputs: list[torch.Tensor] = []
    for layer in backbone.layers:
        layer.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        stride16, stride32 = backbone.forward_levels(images)
        assert torch.equal(stride32, backbone(images))
    assert stride16.shape[-2:] == (8, 6) and stride32.shape[-2:] == (4, 3)
    at_stride_16 = [out for out in outputs if out.shape[-2:] == (8, 6)]
    assert torch.equal(stride16, at_stride_16[-1])  # the stage's 3x3 block, not its first


def test_merge_cell_holds_its_stride_32_parent_and_its_own_stride_16_cell():
    # Non-square maps, so swapped axes cannot pass: cell (y, x) takes the reduced stride-32
    # cell (y // 2, x // 2) (nearest 2x upsample), then the stride-16 cell (y, x) itself.
    merge = TopDownMerge(c16=3, c32=8, norm="batch").eval()
    stride16, stride32 = torch.randn(2, 3, 6, 4), torch.randn(2, 8, 3, 2)
    with torch.no_grad():
        merged = merge(stride16, stride32)
        reduced = merge.reduce(stride32)  # [2, 4, 3, 2]
    assert merged.shape == (2, 4 + 3, 6, 4) == (2, merge.out_channels, 6, 4)
    for y in range(6):
        for x in range(4):
            assert torch.equal(merged[:, :4, y, x], reduced[:, :, y // 2, x // 2])
            assert torch.equal(merged[:, 4:, y, x], stride16[:, :, y, x])


def test_stride_16_output_changes_when_only_the_stride_32_branch_changes():
    model = _eval_model("grid", stride=16)
    images = torch.rand(1, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(images)
        for layer in (*model.backbone.layers[-2:], model.merge):  # the stride-32 branch only
            for param in layer.parameters():
                param.mul_(-1.5)
        after = model(images)
    assert (after - before).abs().max() > 1e-3


def test_stride_16_half_of_the_merge_follows_a_one_cell_shift():
    # A 16 px shift moves the stride-16 map by exactly one cell (zero background = zero
    # padding); the upsampled stride-32 half only follows 32 px shifts.
    model = _eval_model("grid", stride=16)
    c16 = model.backbone.stride16_channels
    with torch.no_grad():
        _, features = model.forward_with_features(_blob_image(64))
        _, shifted = model.forward_with_features(_blob_image(80))  # one stride-16 cell right
    torch.testing.assert_close(
        shifted[:, -c16:, :, 1:], features[:, -c16:, :, :-1], atol=1e-5, rtol=1e-4
    )
    assert not torch.allclose(shifted[:, -c16:], features[:, -c16:], atol=1e-3)


def test_stride_16_grid_head_is_translation_equivariant_by_two_cells():
    model = _eval_model("grid", stride=16)
    with torch.no_grad():
        raw = model(_blob_image(64))
        shifted = model(_blob_image(96))  # 32 px: two stride-16 cells to the right
    assert raw.shape[-2:] == (16, 16)
    torch.testing.assert_close(shifted[..., 2:], raw[..., :-2], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(shifted, raw, atol=1e-3)

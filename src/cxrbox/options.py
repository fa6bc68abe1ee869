"""Choice lists shared by the library and the CLI (torch-free, so `cxrbox --help` stays fast).

Each choice is stated once, as a Literal type; the tuple of its values is read off the type.
"""

from typing import Literal, get_args

HeadName = Literal["grid", "coordconv", "pooled"]
NormName = Literal["batch", "group", "frozen_batch"]
IouLossName = Literal["giou", "diou", "ciou"]
IntensityRule = Literal["auto", "percentile", "bit-range"]

HEADS: tuple[HeadName, ...] = get_args(HeadName)
NORMS: tuple[NormName, ...] = get_args(NormName)
IOU_LOSS_NAMES: tuple[IouLossName, ...] = get_args(IouLossName)
# The backbone's (coarsest) stride: input sides must be divisible by it, whatever the grid's.
BACKBONE_STRIDE = 32
# `stride`: the grid head's stride in px (see cxrbox.modeling.model): 32 reads the backbone's last
# map, 16 a top-down merge of it with the stride-16 map (a 4x finer grid).
STRIDES = (16, 32)
DEFAULT_STRIDE = 32
# `intensity`: the rule for DICOMs without a window (see cxrbox.data.dicom).
INTENSITY_RULES: tuple[IntensityRule, ...] = get_args(IntensityRule)
DEFAULT_INTENSITY: IntensityRule = "auto"

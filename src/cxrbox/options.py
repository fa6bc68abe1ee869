"""Choice lists shared by the library and the CLI (torch-free, so `cxrbox --help` stays fast)."""

HEADS = ("grid", "coordconv", "pooled")
NORMS = ("batch", "group", "frozen_batch")
# `stride`: the grid head's stride in px (see cxrbox.modeling.model): 32 reads the backbone's last
# map, 16 a top-down merge of it with the stride-16 map (a 4x finer grid).
STRIDES = (16, 32)
DEFAULT_STRIDE = 32
IOU_LOSS_NAMES = ("giou", "diou", "ciou")
# `intensity`: the rule for DICOMs without a window (see cxrbox.data.dicom).
INTENSITY_RULES = ("auto", "percentile", "bit-range")
DEFAULT_INTENSITY = "auto"

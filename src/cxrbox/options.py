"""Choice lists shared by the library and the CLI (torch-free, so `cxrbox --help` stays fast)."""

HEADS = ("grid", "coordconv", "pooled")
NORMS = ("batch", "group", "frozen_batch")
IOU_LOSS_NAMES = ("giou", "diou", "ciou")
# `intensity`: the rule for DICOMs without a window (see cxrbox.dicom).
INTENSITY_RULES = ("auto", "percentile", "bit-range")
DEFAULT_INTENSITY = "auto"

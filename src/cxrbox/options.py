"""Choice lists shared by the library and the CLI (torch-free, so `cxrbox --help` stays fast)."""

HEADS = ("grid", "coordconv", "pooled")
NORMS = ("batch", "group", "frozen_batch")
IOU_LOSS_NAMES = ("giou", "diou", "ciou")

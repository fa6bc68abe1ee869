"""The run log's TensorBoard sink (`cxrbox train --tensorboard`): live curves of a run.

`RunLog` hands every record to this sink after writing it to `metrics.jsonl`; the sink writes
TensorBoard events into the run directory itself, so `tensorboard --logdir runs/` shows every
run. What each record kind becomes:
- "step": every numeric field (bools as 0/1) a scalar `step/<field>`, x = the record's step;
- "epoch": every numeric field a scalar `epoch/<field>`, x = the record's "step", the global
  step of the epoch's last step, so step and epoch curves share one x axis (global steps);
- "event" (monitor alarms): text under `alarms`, at the alarm's step;
- "val_samples": one image per epoch, `val_predictions`: the saved validation images with truth
  and predicted boxes, drawn by `plots.val_epoch_figure` (the drawing of `val_predictions.png`),
  at the epoch's last step.
"run" records and non-numeric fields (per-layer gradient norms) are not shown. The writer
flushes at every epoch record, so curves appear while the run goes on.

The sink opens at the run's first step: a resumed run passes the step after its checkpoint, and
SummaryWriter's `purge_step` then hides every earlier event at that step or later (what the
crashed run wrote past its checkpoint, the records `runlog.truncate_after_step` drops), so no
step shows twice. A fresh run starts at 0, which hides a previous run's events in a reused
run directory, as its `metrics.jsonl` is rewritten.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from cxrbox.engine.plots import VAL_SAMPLES_NAME, val_epoch_figure
from cxrbox.errors import MissingExtraError

ALARMS_TAG = "alarms"
VAL_IMAGE_TAG = "val_predictions"
_AXIS_FIELDS = ("step", "epoch")  # the x axis and the epoch number: not curves of their own


def summary_writer_class() -> type:
    """torch's `SummaryWriter`; `MissingExtraError` when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingExtraError(
            "tensorboard=True (cxrbox train --tensorboard) needs the tensorboard package, which "
            f"is not installed ({exc}): pip install 'cxrbox[tensorboard]'"
        ) from exc
    return SummaryWriter


def open_tensorboard_sink(
    run_dir: str | Path, start_step: int, score_threshold: float
) -> TensorBoardSink:
    """A sink writing into `run_dir` whose events start at `start_step` (0, or the first step
    of a resumed run); events an earlier writer left at `start_step` or later are purged."""
    writer = summary_writer_class()(log_dir=str(run_dir), purge_step=start_step)
    return TensorBoardSink(writer, run_dir, score_threshold)


class TensorBoardSink:
    """Turns run-log records into TensorBoard summaries (see the module docstring).

    `writer` is a `SummaryWriter` (or anything with its `add_scalar`, `add_text`,
    `add_figure`, `flush` and `close`); `score_threshold` dots the low-scoring boxes.
    """

    def __init__(self, writer: Any, run_dir: str | Path, score_threshold: float) -> None:
        self.writer = writer
        self.run_dir = Path(run_dir)
        self.score_threshold = score_threshold
        self._images: np.ndarray | None = None  # [n, S, S] uint8, read at the first epoch

    def write(self, kind: str, record: dict[str, Any]) -> None:
        if kind in ("step", "epoch"):
            for name, value in record.items():
                if name not in _AXIS_FIELDS and isinstance(value, numbers.Real):
                    self.writer.add_scalar(f"{kind}/{name}", float(value), record["step"])
        elif kind == "event":
            text = f"**{record['name']}** ({record['level']}): {record['message']}"
            self.writer.add_text(ALARMS_TAG, text, record["step"])
        elif kind == "val_samples":
            if self._images is None:
                self._images = np.load(self.run_dir / VAL_SAMPLES_NAME)["images"]
            figure = val_epoch_figure(self._images, record, self.score_threshold)
            self.writer.add_figure(VAL_IMAGE_TAG, figure, record["step"])  # closes the figure
        if kind == "epoch":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()

"""Step records whose loss values stay on the device until they are read in one transfer.

A GPU step that calls `.item()` or `.tolist()` waits for the device to finish. The trainer reads
loss values on the host only on monitored steps (which sync anyway); on the others `train_step`
leaves them as a device tensor under `PENDING_KEY`, and `PendingSteps.drain()` reads every
waiting step with one `.tolist()` at the next monitored step, every `flush_every` steps and at
the end of an epoch. The non-finite check happens there: `NonFiniteLossError` names the first
bad step. Nothing is checkpointed between a step and its drain, so the last checkpoint stays good.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cxrbox.errors import NonFiniteLossError
from cxrbox.modeling.objective import loss_values_as_floats

PENDING_KEY = "_loss_values"  # record key of a [7] device tensor not yet read (LossParts.stacked)
FLUSH_EVERY = 50  # unmonitored steps between two reads


def check_finite(values: dict[str, float], step: int, epoch: int) -> None:
    """Raise NonFiniteLossError when the step's loss is NaN or infinite (epoch counted from 1)."""
    if not math.isfinite(values["loss"]):
        raise NonFiniteLossError(
            f"loss is {values['loss']} at step {step} (epoch {epoch}); "
            f"branches: { {k: v for k, v in values.items() if k.startswith('loss_')} }. "
            "Training stopped; the last good checkpoint is untouched."
        )


class PendingSteps:
    """Step records in step order; those with device values are resolved together on `drain`."""

    def __init__(self, flush_every: int = FLUSH_EVERY) -> None:
        self.flush_every = flush_every
        self._records: list[dict[str, Any]] = []

    def push(self, record: dict[str, Any]) -> bool:
        """Queue a record; True when it is time to `drain` (a host record or a full queue)."""
        self._records.append(record)
        return PENDING_KEY not in record or len(self._records) >= self.flush_every

    def drain(self, check: bool = True) -> list[dict[str, Any]]:
        """Every queued record with host floats (one device read); raises on a non-finite loss
        (`check=False`: the caller checks each record, after logging the ones before it)."""
        records, self._records = self._records, []
        waiting = [r for r in records if PENDING_KEY in r]
        if waiting:
            rows = torch.stack([r.pop(PENDING_KEY) for r in waiting]).tolist()
            for record, row in zip(waiting, rows, strict=True):
                record.update(loss_values_as_floats(row))
        for record in records if check else ():
            check_finite(record, record["step"], record.get("epoch", 0))
        return records

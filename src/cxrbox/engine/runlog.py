"""Run metrics written as they happen: `metrics.jsonl` (every record) and `metrics.csv`.

Each record has a `kind`: "run" (steps per epoch, warmup), "step", "epoch", "event" (alarms) or
"val_samples" (predictions on a few fixed validation images, for the plots). The CSV holds step
and epoch records with a fixed header (the union of known columns; cells a record lacks stay
empty), so it opens in a spreadsheet; the other kinds live in the JSONL only.

`RunLog.write` is the one call the trainer makes per record; it also hands the record to each
extra `Sink` it was opened with (`cxrbox.engine.tensorboard_sink` for `--tensorboard`), so every
destination sees the same records in the same order.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from cxrbox.atomic_write import atomic_path

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
CSV_KINDS = ("step", "epoch")


class Sink(Protocol):
    """A further destination of every record: `write` gets the record as the JSONL has it
    (without "kind"), after the JSONL line is written."""

    def write(self, kind: str, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class RunLog:
    """Append-only metrics writer for one run directory; `columns` fixes the CSV header.

    Each record goes to `metrics.jsonl` (and `metrics.csv`), then to every sink in `sinks`;
    `close` closes the sinks too.
    """

    def __init__(
        self,
        run_dir: str | Path,
        columns: Sequence[str],
        append: bool = False,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.run_dir = Path(run_dir)
        self.sinks = list(sinks)
        self.columns = ["kind", *[c for c in columns if c != "kind"]]
        mode = "a" if append else "w"
        csv_path = self.run_dir / CSV_NAME
        write_header = not (append and csv_path.exists())
        self._jsonl = open(self.run_dir / JSONL_NAME, mode)
        self._csv_file = open(csv_path, mode, newline="")
        self._csv = csv.DictWriter(self._csv_file, self.columns, extrasaction="ignore")
        if write_header:
            self._csv.writeheader()

    def write(self, kind: str, record: dict[str, Any]) -> None:
        row = {"kind": kind, **record}
        self._jsonl.write(json.dumps(row, default=_jsonable) + "\n")
        self._jsonl.flush()
        if kind in CSV_KINDS:
            self._csv.writerow({k: _csv_cell(v) for k, v in row.items()})
            self._csv_file.flush()
        for sink in self.sinks:
            sink.write(kind, record)

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiscardLog:
    """A RunLog that writes nothing: what data-parallel ranks other than 0 log into."""

    def write(self, kind: str, record: dict[str, Any]) -> None:
        pass

    def __enter__(self) -> DiscardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def read_records(run_dir: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of `metrics.jsonl`, optionally only one kind."""
    with open(Path(run_dir) / JSONL_NAME) as handle:
        for line in handle:
            record = json.loads(line)
            if kind is None or record.get("kind") == kind:
                yield record


def truncate_after_step(
    run_dir: str | Path, global_step: int, epochs_done: int | None = None
) -> None:
    """Drop records past `global_step`, and epoch records past `epochs_done` when given (used
    on resume, so steps and epochs after the checkpoint are not logged twice). Both files are
    rewritten atomically: an interrupted resume leaves them as they were."""
    path = Path(run_dir) / JSONL_NAME
    if not path.exists():
        return

    def kept_record(record: dict[str, Any]) -> bool:
        late_epoch = (
            epochs_done is not None
            and record.get("kind") in ("epoch", "val_samples")
            and float(record.get("epoch") or 0) > epochs_done
        )
        return float(record.get("step") or 0) <= global_step and not late_epoch

    kept = [
        line for line in path.read_text().splitlines(keepends=True) if kept_record(json.loads(line))
    ]
    with atomic_path(path, suffix=".jsonl") as tmp:
        tmp.write_text("".join(kept))
    csv_path = Path(run_dir) / CSV_NAME
    if csv_path.exists():
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else None
        if header is not None:
            with atomic_path(csv_path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, list(header))
                writer.writeheader()
                writer.writerows(r for r in rows if kept_record(r))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)

"""Every file cxrbox writes appears whole or not at all: a write stopped before its final rename
(Ctrl-C, a kill, a full disk) leaves the previous file exactly as it was.

Each writer runs with `cxrbox.atomic_write`'s rename failing (the last moment of an atomic
write); a writer that wrote in place would already have replaced the previous content.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cxrbox.atomic_write
from cxrbox.config import TrainConfig, save_config
from cxrbox.data.labels import write_rsna_labels
from cxrbox.data.unreadable import Skipped, write_skipped
from cxrbox.deploy.parity import write_report
from cxrbox.engine.runlog import CSV_NAME, JSONL_NAME, truncate_after_step
from cxrbox.engine.train import save_val_samples
from cxrbox.speed.gate import SpeedMeasurement


def _skipped(folder: Path) -> None:
    write_skipped(folder / "s.skipped.csv", [Skipped("p1", folder / "p1.dcm", "truncated")])


def _config(folder: Path) -> None:
    save_config(TrainConfig(), folder / "config.json")


def _labels(folder: Path) -> None:
    write_rsna_labels(folder / "labels.csv", {"p1": np.array([[1.0, 2.0, 30.0, 40.0]])})


def _run_log(folder: Path) -> None:
    """What a resume does: drop the records past its checkpoint (here: past step 1)."""
    truncate_after_step(folder, 1)


def _parity_report(folder: Path) -> None:
    report = {"models": {"fp32": {"mean_iou": 0.5, "rsna_map": 0.4, "precision": 1, "recall": 1}}}
    write_report(report, folder / "m.report.json", folder / "m.report.png")


def _speed_baseline(folder: Path) -> None:
    SpeedMeasurement("cpu", 64, 2, "grid", [0.1, 0.1], [0.2]).save(folder / "speed.json")


def _val_samples(folder: Path) -> None:
    dataset = [SimpleNamespace(image=torch.full((1, 8, 8), 0.5)) for _ in range(2)]
    save_val_samples(SimpleNamespace(val=SimpleNamespace(dataset=dataset)), folder / "v.npz")


# writer -> the files it (re)writes
WRITERS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "skipped-files CSV": (_skipped, ("s.skipped.csv",)),
    "config.json": (_config, ("config.json",)),
    "labels CSV": (_labels, ("labels.csv",)),
    "run log rewritten on resume": (_run_log, (JSONL_NAME, CSV_NAME)),
    "parity report JSON": (_parity_report, ("m.report.json",)),
    "speed baseline JSON": (_speed_baseline, ("speed.json",)),
    "validation samples": (_val_samples, ("v.npz",)),
}


def _previous_files(folder: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """Complete earlier versions of the files (a run log of four steps for the run log)."""
    for name in names:
        (folder / name).write_text(f"the previous complete {name}\n")
    if JSONL_NAME in names:
        records = [{"kind": "step", "step": s, "loss": 1.0} for s in range(4)]
        (folder / JSONL_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
        rows = "".join(f"step,{s},1\n" for s in range(4))
        (folder / CSV_NAME).write_text("kind,step,loss\n" + rows)
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_stopped_before_its_rename_leaves_the_previous_file(name, tmp_path, monkeypatch):
    write, names = WRITERS[name]
    before = _previous_files(tmp_path, names)

    def stopped(src: object, dst: object) -> None:
        raise KeyboardInterrupt("stopped before the rename")

    monkeypatch.setattr(cxrbox.atomic_write.os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in names} == before
    assert not list(tmp_path.glob(".*.tmp*")), "a temporary file was left behind"


@pytest.mark.parametrize("name", WRITERS)
def test_each_writer_replaces_its_previous_file_when_not_stopped(name, tmp_path):
    write, names = WRITERS[name]
    before = _previous_files(tmp_path, names)
    write(tmp_path)
    for name_ in names:
        assert (tmp_path / name_).read_bytes() != before[name_]
    assert not list(tmp_path.glob(".*.tmp*"))

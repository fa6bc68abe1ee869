"""Run directories: a new run never writes over another one.

A folder holds a run when it has any of `RUN_MARKERS` (a run writes `config.json` once its
start-up succeeded, then `metrics.jsonl`, then checkpoints). A new run refuses such a folder
(`check_new_run_dir`) unless told to replace it; it is then emptied of the old run's files
(`clear_run`) only once the new run has started, so a start-up that fails (a bad CSV, a
missing folder) leaves the old run as it was. The CLI's default folder is numbered instead
(`next_free_run_dir`: runs/latest, runs/latest-2, ...), as experiment tools number theirs.
`resume_hint` is the command that continues (or restarts) a run that was stopped.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from cxrbox.config import TrainConfig, save_config
from cxrbox.engine.plots import PLOTS_DIR, VAL_SAMPLES_NAME
from cxrbox.engine.runlog import CSV_NAME, JSONL_NAME
from cxrbox.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
RUN_MARKERS = (CONFIG_NAME, JSONL_NAME, "last.pt", "best.pt")
# What a run writes into its folder besides plots/ and TensorBoard files: what `clear_run` removes.
RUN_OUTPUTS = (*RUN_MARKERS, CSV_NAME, VAL_SAMPLES_NAME)
TENSORBOARD_GLOB = "events.out.tfevents.*"
TEMPORARY_GLOB = ".*.tmp*"  # what `cxrbox.atomic_write` leaves only when killed mid-write


def run_files(run_dir: str | Path) -> list[str]:
    """The run markers present in `run_dir` (empty: no run there)."""
    return [name for name in RUN_MARKERS if (Path(run_dir) / name).exists()]


def holds_run(run_dir: str | Path) -> bool:
    return bool(run_files(run_dir))


def check_new_run_dir(run_dir: str | Path, overwrite: bool) -> None:
    """ConfigError when `run_dir` holds a run and `overwrite` is off; names the ways on."""
    found = run_files(run_dir)
    if found and not overwrite:
        quoted = shlex.quote(str(run_dir))
        raise ConfigError(
            f"--out {run_dir} already holds a run ({', '.join(found)}); nothing was written. "
            f"Continue it with `cxrbox train --resume {quoted}`, replace it with --overwrite "
            "(overwrite=True in Python), or choose another --out"
        )


def next_free_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` when it holds no run, else the first of `run_dir`-2, -3, ... that holds none."""
    run_dir = Path(run_dir)
    candidate, number = run_dir, 1
    while holds_run(candidate):
        number += 1
        candidate = run_dir.with_name(f"{run_dir.name}-{number}")
    return candidate


def clear_run(run_dir: str | Path) -> None:
    """Remove what a run wrote into `run_dir` (`RUN_OUTPUTS`, the PNGs of `plots/`, TensorBoard
    event files, stale temporaries); any other file of the folder stays."""
    run_dir = Path(run_dir)
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    for path in [*run_dir.glob(TENSORBOARD_GLOB), *run_dir.glob(TEMPORARY_GLOB)]:
        path.unlink(missing_ok=True)
    plots = run_dir / PLOTS_DIR
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()
        if not any(plots.iterdir()):
            shutil.rmtree(plots)


def start_run_dir(run_dir: Path, config: TrainConfig, replace: bool) -> None:
    """Called once a run's start-up succeeded: remove the old run (when `replace`), create the
    folder and write `config.json` (atomically)."""
    if replace:
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_NAME)


def restart_command(run_dir: str | Path) -> str:
    """The command that starts the run of `run_dir` again from its saved config."""
    return f"cxrbox train --config {shlex.quote(str(Path(run_dir) / CONFIG_NAME))} --overwrite"


def check_resumable(run_dir: str | Path) -> None:
    """CheckpointError, saying what to do, when `run_dir` has no `last.pt` to continue from."""
    run_dir = Path(run_dir)
    if (run_dir / "last.pt").is_file():
        return
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir}: the folder does not exist")
    if (run_dir / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"--resume {run_dir}: the run stopped before its first checkpoint (last.pt is "
            "written at each epoch end and every checkpoint_every_steps steps), so there is "
            f"nothing to continue; start it again with `{restart_command(run_dir)}`"
        )
    raise CheckpointError(
        f"--resume {run_dir}: holds no run (no last.pt, no config.json); give the --out "
        "folder of a `cxrbox train` run"
    )


def config_stamp(run_dir: str | Path) -> tuple[int, int] | None:
    """Identity of `run_dir`'s config.json (inode, mtime), None without one: a run that started
    wrote it anew (`start_run_dir`), so a stamp that did not change means it never started."""
    try:
        stat = (Path(run_dir) / CONFIG_NAME).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def resume_hint(run_dir: str | Path, started: bool = True) -> str:
    """What to run after `run_dir`'s run was stopped (Ctrl-C, a kill): the exact command.
    `started`: whether the run got past its start-up (see `config_stamp`)."""
    run_dir = Path(run_dir)
    if not started:
        kept = f"; the run already in {run_dir} is as it was" if holds_run(run_dir) else ""
        return f"stopped before the run started, nothing was written{kept}; run the command again"
    if (run_dir / "last.pt").is_file():
        return (
            "continue exactly where it stopped with: "
            f"cxrbox train --resume {shlex.quote(str(run_dir))}"
        )
    if (run_dir / CONFIG_NAME).is_file():
        return f"stopped before its first checkpoint; start it again: {restart_command(run_dir)}"
    return resume_hint(run_dir, started=False)  # started, but stopped before writing anything

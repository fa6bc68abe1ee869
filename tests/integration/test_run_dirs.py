"""`cxrbox train` never writes over another run: a named --out that holds one is refused
(unless --resume or --overwrite), the default runs/latest is numbered, a failed start-up
leaves the folder as it was, and a stopped run names the exact command that goes on."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.integration.conftest import crash_in_evaluation

from cxrbox.cli import main
from cxrbox.config import save_config
from cxrbox.engine.runlog import read_records

OLD_RUN = {
    "config.json": b'{"epochs": 99}\n',
    "metrics.jsonl": b'{"kind": "run", "step": -1}\n',
    "best.pt": b"old weights",
    "plots/lr.png": b"old plot",
}


def _write_old_run(folder: Path) -> None:
    (folder / "plots").mkdir(parents=True)
    for name, content in OLD_RUN.items():
        (folder / name).write_bytes(content)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _train(config, tmp_path, *args: str) -> int:
    """`cxrbox train --config` with `config` (saved to tmp_path/c.json) and `args`."""
    save_config(config, tmp_path / "c.json")
    return main(["train", "--config", str(tmp_path / "c.json"), "--quiet", *args])


def _command_in(text: str) -> list[str]:
    """The arguments of the `cxrbox train ...` command printed at the end of `text`."""
    found = re.search(r"cxrbox (train [^`\n]*)`?\s*$", text)
    assert found, text
    return shlex.split(found.group(1))


def test_a_named_out_holding_a_run_is_refused_and_the_run_kept(tiny_config, tmp_path, capsys):
    run_dir = Path(tiny_config.out)
    _write_old_run(run_dir)
    assert _train(tiny_config.replace(epochs=1), tmp_path, "--out", str(run_dir)) == 2
    err = capsys.readouterr().err
    assert f"--out {run_dir} already holds a run" in err
    assert f"cxrbox train --resume {run_dir}" in err and "--overwrite" in err
    assert _files(run_dir) == OLD_RUN


def test_overwrite_replaces_the_old_run_whole(tiny_config, tmp_path):
    run_dir = Path(tiny_config.out)
    _write_old_run(run_dir)
    (run_dir / "notes.txt").write_text("the user's own file")
    assert _train(tiny_config.replace(epochs=1), tmp_path, "--overwrite") == 0
    files = _files(run_dir)
    assert b'"epochs": 1,' in files["config.json"]
    assert "steps_per_epoch" in next(read_records(run_dir, "run"))  # the new run's log
    assert [r["epoch"] for r in read_records(run_dir, "epoch")] == [1]
    assert files["best.pt"] != OLD_RUN["best.pt"]
    assert not (run_dir / "plots").exists()  # the old run's plots went; this run draws none
    assert files["notes.txt"] == b"the user's own file"


def test_the_default_out_is_numbered_when_it_holds_a_run(
    tiny_config, tmp_path, monkeypatch, capsys
):
    """What the README's first command, `cxrbox train`, does the second time it runs."""
    monkeypatch.chdir(tmp_path)
    _write_old_run(tmp_path / "runs" / "latest")
    assert _train(tiny_config.replace(epochs=1, out="runs/latest"), tmp_path) == 0
    out = capsys.readouterr().out
    assert "runs/latest holds a run; this run goes to runs/latest-2" in out
    assert "cxrbox train: 1 epoch(s) -> runs/latest-2" in out
    assert _files(tmp_path / "runs" / "latest") == OLD_RUN
    assert [r["epoch"] for r in read_records(tmp_path / "runs" / "latest-2", "epoch")] == [1]


def test_a_failed_start_up_leaves_the_old_run_untouched(tiny_config, tmp_path):
    run_dir = Path(tiny_config.out)
    _write_old_run(run_dir)
    bad = tmp_path / "bad.csv"
    bad.write_text("patientId,x\nabc\n")
    assert _train(tiny_config, tmp_path, "--overwrite", "--labels", str(bad)) == 2
    assert _files(run_dir) == OLD_RUN


def test_a_failed_start_up_leaves_no_folder(tiny_config, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("patientId,x\nabc\n")
    assert _train(tiny_config, tmp_path, "--labels", str(bad)) == 2
    assert not Path(tiny_config.out).exists()


def test_resume_before_the_first_checkpoint_says_how_to_start_again(
    tiny_config, tmp_path, monkeypatch, capsys
):
    """Stopped in epoch 1's evaluation without mid-epoch checkpoints: no last.pt. Both the
    Ctrl-C and `--resume` name the command that starts the run again, and it does."""
    config = tiny_config.replace(epochs=1, checkpoint_every_steps=0)
    crash_in_evaluation(monkeypatch, 1)
    assert _train(config, tmp_path) == 130
    stopped = capsys.readouterr().err
    assert "stopped before its first checkpoint" in stopped
    monkeypatch.undo()
    assert main(["train", "--resume", config.out]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run stopped before its first checkpoint" in err
    assert "last.pt does not exist" not in err
    command = _command_in(err)
    assert command == _command_in(stopped.strip().splitlines()[0])
    assert command == ["train", "--config", f"{config.out}/config.json", "--overwrite"]
    assert main([*command, "--quiet"]) == 0
    assert [r["epoch"] for r in read_records(config.out, "epoch")] == [1]


def test_ctrl_c_prints_the_exact_command_that_continues_the_run(
    tiny_config, tmp_path, monkeypatch, capsys
):
    crash_in_evaluation(monkeypatch, 2)  # epoch 1's last.pt exists
    assert _train(tiny_config, tmp_path) == 130
    err = capsys.readouterr().err
    assert "cxrbox train: interrupted" in err
    command = _command_in(err.strip().splitlines()[0])
    assert command == ["train", "--resume", tiny_config.out]
    monkeypatch.undo()
    assert main([*command, "--quiet"]) == 0
    assert [r["epoch"] for r in read_records(tiny_config.out, "epoch")] == [1, 2]


def test_ctrl_c_in_the_start_up_of_an_overwrite_says_nothing_was_written(
    tiny_config, tmp_path, monkeypatch, capsys
):
    """Not 'start it again from DIR/config.json': that config is the old run's."""
    from cxrbox.engine import train as train_module

    run_dir = Path(tiny_config.out)
    _write_old_run(run_dir)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "build_loaders", interrupted)
    assert _train(tiny_config, tmp_path, "--overwrite") == 130
    err = capsys.readouterr().err
    assert "stopped before the run started, nothing was written" in err
    assert f"the run already in {run_dir} is as it was" in err
    assert "--config" not in err and "--resume" not in err
    assert _files(run_dir) == OLD_RUN

"""What a user reads when an input is wrong: the file or option, what was found, what was
expected; never an internal function's name, a parser's byte or a traceback."""

from __future__ import annotations

import errno
import os

import pytest

from cxrbox import cli
from cxrbox.commands import arguments
from cxrbox.commands import plot as plot_command
from cxrbox.errors import ConfigError

HEADER = "patientId,x,y,width,height,Target\n"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of `cxrbox ARGV` run in this process."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_a_text_file_as_checkpoint_names_the_file_and_what_was_expected(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("epochs = 3\n")  # 'e' is byte 101: torch said "101"
    code, err = run_cli(["export", "--checkpoint", str(tmp_path / "notes.pt"),
                         "--out", str(tmp_path / "m.onnx")], capsys)  # fmt: skip
    assert code == 2
    assert "notes.pt is not a PyTorch checkpoint: it holds text" in err
    assert "expected a best.pt or last.pt written by `cxrbox train`" in err
    assert ": 101" not in err


def test_bench_inference_with_an_onnx_model_asks_for_the_checkpoint(tmp_path, capsys):
    code, err = run_cli(["bench-inference", "--model", str(tmp_path / "m.onnx")], capsys)
    assert code == 2
    assert "--model" in err and "m.onnx" in err
    assert "needs a .pt checkpoint" in err and "exported ONNX model" in err
    assert "weights_only" not in err


def test_cache_of_an_empty_folder_names_the_option_and_the_files_expected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(["cache", "--images", str(tmp_path / "empty"), "--size", "64",
                         "--out", str(tmp_path / "c.npy")], capsys)  # fmt: skip
    assert code == 2
    assert f"--images {tmp_path / 'empty'}: no *.dcm files" in err
    assert "build_cache" not in err


def test_train_on_a_header_only_csv_names_the_csv(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text(HEADER)
    code, err = run_cli(["train", "--images", "images", "--labels", "labels.csv",
                         "--out", "run", "--quiet"], capsys)  # fmt: skip
    assert code == 2
    assert "labels.csv: a header and no label rows" in err
    assert "split_by_patient" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cache", "--images", "d", "--size", "-5", "--out", "c.npy"],
         "argument --size: expected an integer >= 8, got -5"),
        (["cache", "--images", "d", "--size", "64", "--workers", "0", "--out", "c.npy"],
         "argument --workers: expected an integer >= 1, got 0"),
        (["viz-data", "--images", "d", "--labels", "l.csv", "--out", "v.png", "--size", "-3"],
         "argument --size: expected an integer >= 8, got -3"),
        (["synth", "--out", "s", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
        (["synth", "--out", "s", "--n", "2", "--jpeg-quality", "500"],
         "argument --jpeg-quality: expected an integer in [1, 100], got 500"),
        (["synth", "--out", "s", "--n", "2", "--positive-fraction", "nan"],
         "argument --positive-fraction: expected a number in [0, 1], got nan"),
        (["bench", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (["bench", "--head", "mlp"], "argument --head: invalid choice: 'mlp'"),
        (["bench-inference", "--model", "m.pt", "--sizes", "100"],
         "argument --sizes: expected an integer >= 32 and a multiple of 32, got 100"),
        (["bench-inference", "--model", "m.pt", "--repeats", "0"],
         "argument --repeats: expected an integer >= 1, got 0"),
        (["export", "--checkpoint", "m.pt", "--out", "m.onnx", "--calibration-n", "x"],
         "argument --calibration-n: expected an integer >= 1, got 'x'"),
        (["train", "--nproc", "0"], "argument --nproc: expected an integer >= 1, got 0"),
        (["eval", "--model", "m.pt", "--images", "d", "--labels", "l.csv", "--device", "tpu"],
         "argument --device: expected cpu, cuda or cuda:N, got 'tpu'"),
    ],
)  # fmt: skip
def test_an_out_of_range_option_is_refused_naming_it_before_the_command_runs(
    argv, expected, capsys
):
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert expected in err


def test_a_cuda_device_on_a_machine_without_one_is_a_config_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device cuda:1: PyTorch sees no CUDA device here"):
        arguments.require_device("cuda:1")
    arguments.require_device("cpu")  # nothing to check


def test_an_os_error_on_a_file_is_one_line_naming_the_file(monkeypatch, capsys):
    def unwritable(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/ro/plots/lr.png")

    monkeypatch.setattr(plot_command, "run", unwritable)
    code, err = run_cli(["plot", "somewhere"], capsys)
    assert code == 2
    assert err == "cxrbox plot: error: /ro/plots/lr.png: Permission denied\n"

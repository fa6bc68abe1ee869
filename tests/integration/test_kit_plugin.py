"""`pytest --cxrbox-detector` and `cxrbox diagnose --detector` on an adapter in a user's own
project folder: the `pytest` console script imports it from the current directory, the plugin
fails the item of the check a fault breaks, and `--json-out` writes the checks to a file.

The adapter wraps cxrbox's own detector (MONAI and Ultralytics adapters run in the kit-examples
environment, tests/kit_examples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cxrbox

ADAPTER = """
from dataclasses import replace

from cxrbox.diagnostics.own_detector import make_detector


def image_only_flip(image, boxes):
    return image[:, ::-1].copy(), boxes


def with_image_only_flip():
    return replace(make_detector(), transform=image_only_flip)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder holding the adapter module `my_adapter`."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_adapter.py").write_text(ADAPTER)
    return folder


def _env(home: Path) -> dict[str, str]:
    # cxrbox's own source folder only (a source checkout), never the project folder.
    source = str(Path(cxrbox.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1", "HOME": str(home)}


def run_console_script(
    project: Path, plugin_args: list[str], factory: str, selection: str
) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "pytest"
    command = [
        str(script), "-p", "no:cacheprovider", *plugin_args, "-rA", "--rootdir", str(project),
        f"--cxrbox-detector=my_adapter:{factory}", "-k", selection, str(project),
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=project, env=_env(project), capture_output=True, text=True, timeout=600
    )


def test_console_script_runs_checks_of_an_adapter_in_the_current_directory(
    project, cxrbox_plugin_args
):
    result = run_console_script(
        project, cxrbox_plugin_args, "make_detector", "box_sync or loss_coordinates"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
    assert "PASSED" in result.stdout and "cxrbox[box_sync]" in result.stdout


def test_plugin_fails_the_item_of_the_check_that_a_fault_breaks(project, cxrbox_plugin_args):
    result = run_console_script(
        project, cxrbox_plugin_args, "with_image_only_flip", "box_sync or gradient_flow"
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 failed, 1 passed" in result.stdout
    assert "augmented samples have a box that does not match" in result.stdout


def test_diagnose_detector_writes_the_checks_to_json_out(project):
    out = project / "reports" / "kit.json"
    # The `cxrbox` console script: unlike `python -m cxrbox`, nothing puts the current
    # directory on sys.path for it.
    command = [
        str(Path(sys.executable).parent / "cxrbox"), "diagnose", "--quick", "--json-out",
        str(out), "--detector", "my_adapter:with_image_only_flip",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=project, env=_env(project), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 1, result.stderr[-3000:]
    checks = {c["name"]: c["status"] for c in json.loads(out.read_text())}
    assert checks["box_sync"] == "fail"
    assert checks["optimizer_step"] == "pass"
    assert "FAIL  box_sync" in result.stdout
    assert [p.name for p in out.parent.iterdir()] == ["kit.json"]  # no temporary left

"""The kit's proof on a model no one here wrote: `pytest --cxrbox-detector` on MONAI's RetinaNet
(tests/kit_examples/monai_retinanet.py) passes as written, and each planted fault turns the
check that catches it red. `cxrbox diagnose --detector` prints the same checklist.

Runs in the kit-examples environment (tox -e kit-examples), which installs MONAI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cxrbox

pytest.importorskip("monai")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "tests.kit_examples.monai_retinanet"


def _env() -> dict[str, str]:
    # The cxrbox under test first (a source checkout's src/, or site-packages), then the root.
    source = str(Path(cxrbox.__file__).parents[1])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source, str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }


def run_plugin(
    tmp_path: Path, plugin_args: list[str], factory: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """pytest in an empty folder: only the plugin's items run."""
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin_args, "-rA",
        "--rootdir", str(tmp_path), f"--cxrbox-detector={EXAMPLE}:{factory}", *args,
        str(tmp_path),
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )


def test_checklist_passes_on_monai_retinanet(tmp_path, cxrbox_plugin_args):
    result = run_plugin(tmp_path, cxrbox_plugin_args, "make_detector")
    assert result.returncode == 0, result.stdout[-3000:]
    # batchnorm is skipped: the example has no BatchNorm layer.
    assert "8 passed, 1 skipped" in result.stdout
    assert re.search(r"PASSED \S*cxrbox\[position_sensitivity\]", result.stdout)
    assert re.search(
        r"SKIPPED .*no BatchNorm|SKIPPED .*BatchNorm running statistics", result.stdout
    )


def test_plugin_fails_the_item_of_the_check_that_a_fault_breaks(tmp_path, cxrbox_plugin_args):
    result = run_plugin(
        tmp_path, cxrbox_plugin_args, "with_fighting_warmup", "-k", "lr_schedule or optimizer_step"
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert re.search(r"FAILED \S*cxrbox\[lr_schedule\]", result.stdout)
    assert "1 failed, 1 passed" in result.stdout


# Each planted fault and the check that catches it, with the words of its message that name the
# cause. Measured with the whole checklist: these checks went red, plus overfit for the pooling
# and the skipped step. In-process (one check each) to keep the tier lean; the plugin path is the
# two tests above.
FAULTS = [
    ("with_global_pooling", "position_sensitivity", "does not place boxes where the content is"),
    ("with_skipped_step", "optimizer_step", "optimizer.step() was never called"),
    ("with_skipped_zero_grad", "zero_grad", "zero_grad() is skipped"),
    ("with_fighting_warmup", "lr_schedule", "warmup"),
    ("with_image_only_flip", "box_sync", "does not match the transformed image"),
]


@pytest.mark.parametrize(("factory", "check", "cause"), FAULTS)
def test_planted_fault_turns_its_check_red(factory, check, cause):
    from tests.kit_examples import monai_retinanet

    from cxrbox.testing.checklist import detector_checks

    result = detector_checks(getattr(monai_retinanet, factory)())[check]()
    assert result.status == "fail", result.message
    assert cause in result.message


def test_diagnose_detector_prints_the_report_and_fails(tmp_path):
    command = [
        sys.executable, "-m", "cxrbox", "diagnose", "--quick",
        "--detector", f"{EXAMPLE}:with_fighting_warmup",
    ]  # fmt: skip
    env = {**_env(), "HOME": str(tmp_path)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "FAIL  lr_schedule" in result.stdout
    assert "PASS  optimizer_step" in result.stdout
    assert "7 checks: 5 pass, 1 warn, 1 fail" in result.stdout

"""The kit holds for Ultralytics YOLOv8n (tests/kit_examples/ultralytics_yolov8n.py): the whole
checklist is green on the healthy model for 5 seeds, and each classic training bug planted in
Ultralytics' own training step turns red the check that names it.

Runs in the kit-examples environment (tox -e kit-examples: ultralytics with a torch +
torchvision pair that loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")

from tests.kit_examples import ultralytics_yolov8n as yolo

import cxrbox
from cxrbox.testing import CHECKLIST, run_detector_checklist
from cxrbox.testing.checklist import detector_checks
from cxrbox.testing.parameters import declared_idle

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE = "tests.kit_examples.ultralytics_yolov8n"


@pytest.mark.parametrize("seed", range(5))
def test_healthy_yolov8n_passes_the_whole_checklist(seed):
    results = run_detector_checklist(yolo.make_detector(), seed=seed)
    assert [r.name for r in results] == list(CHECKLIST)
    assert {r.name: r.status for r in results} == dict.fromkeys(CHECKLIST, "pass"), [
        f"{r.name}: {r.message}" for r in results if r.status != "pass"
    ]


# Each fault planted in the adapter, the check that must catch it, and the words of its message
# that name the cause.
FAULTS = [
    ("position_erased", "position_sensitivity", "does not place boxes where the content is"),
    ("step_skipped", "optimizer_step", "optimizer.step() was never called"),
    ("zero_grad_skipped", "zero_grad", "zero_grad() is skipped"),
    ("warmup_fights_decay", "lr_schedule", "fights"),
    ("warmup_jump", "lr_schedule", "jump of"),
    ("lr_zero_after_warmup", "lr_schedule", "training stops after the warmup"),
    ("image_only_flip", "box_sync", "does not match the transformed image"),
    ("xyxy_as_xywh", "overfit", "another box format"),
    ("batchnorm_frozen", "batchnorm", "BatchNorm statistics are frozen"),
]


def test_every_planted_fault_has_a_test():
    assert sorted(fault for fault, _, _ in FAULTS) == sorted(yolo.FAULTS)


@pytest.mark.parametrize(("fault", "check", "cause"), FAULTS)
def test_planted_fault_turns_its_check_red(fault, check, cause):
    result = detector_checks(yolo.make_detector(fault))[check]()
    assert result.status == "fail", result.message
    assert cause in result.message, result.message


def test_idle_declaration_is_exactly_the_tensors_without_gradient():
    """The P4 / P5 box branches are declared idle because they get no gradient at 128 px:
    measured here, so the declaration cannot hide a tensor that should learn."""
    detector = yolo.make_detector()
    result = detector_checks(detector)["gradient_flow"]()
    model = detector.build()
    parameters = {name for name, _ in model.named_parameters()}
    declared = {name for name in declared_idle(detector, model) if name in parameters}
    assert result.status == "pass", result.message
    assert result.numbers["dead"] == []
    assert set(result.numbers["idle_declared"]) == declared


def test_console_script_imports_the_adapter_from_the_current_directory(
    tmp_path, cxrbox_plugin_args
):
    """`pytest --cxrbox-detector` as the `pytest` console script (which, unlike `python -m
    pytest`, does not put the current directory on sys.path) run from the project root."""
    script = Path(sys.executable).parent / "pytest"
    command = [
        str(script), "-p", "no:cacheprovider", *cxrbox_plugin_args, "-rA", "--rootdir",
        str(tmp_path), f"--cxrbox-detector={EXAMPLE}:with_image_only_flip", "-k",
        "box_sync or zero_grad", str(tmp_path),
    ]  # fmt: skip
    # Only cxrbox's own folder on PYTHONPATH (a source checkout), never the project root.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(cxrbox.__file__).parents[1]),
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "FAILED" in result.stdout and "cxrbox[box_sync]" in result.stdout
    assert "1 failed, 1 passed" in result.stdout


def test_diagnose_json_out_holds_the_checks_whatever_the_model_prints(tmp_path):
    out = tmp_path / "report" / "checks.json"
    command = [
        sys.executable, "-m", "cxrbox", "diagnose", "--quick", "--json-out", str(out),
        "--detector", f"{EXAMPLE}:with_step_skipped",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(out.read_text())}
    assert checks["optimizer_step"]["status"] == "fail"
    assert "FAIL  optimizer_step" in result.stdout
    assert [p.name for p in out.parent.iterdir()] == ["checks.json"]  # no temporary left


def test_with_gradient_accumulation_healthy_passes_and_a_skipped_zero_grad_fails():
    """nbs 16: two batches per optimizer step, accumulation ramping up during the warmup."""
    results = run_detector_checklist(yolo.make_detector(nbs=16))
    assert {r.name: r.status for r in results} == dict.fromkeys(CHECKLIST, "pass"), [
        f"{r.name}: {r.message}" for r in results if r.status != "pass"
    ]
    result = detector_checks(yolo.make_detector("zero_grad_skipped", nbs=16))["zero_grad"]()
    assert result.status == "fail" and "zero_grad() is skipped" in result.message

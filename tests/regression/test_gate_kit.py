"""cxrbox's own heads through the kit's public face: the `Detector` that
`pytest --cxrbox-detector cxrbox.diagnostics.own_detector:make_detector` gates, checked here without
the two training checks (test_gate.py runs those through the same kit functions)."""

from __future__ import annotations

import pytest
import torch

from cxrbox.diagnostics.own_detector import make_detector
from cxrbox.testing import run_detector_checklist

pytestmark = pytest.mark.gate

TRAINING_CHECKS = ("position_sensitivity", "overfit")


def test_own_heads_pass_the_kit_checklist():
    results = run_detector_checklist(make_detector(), skip=TRAINING_CHECKS)
    assert {r.name: r.status for r in results} == {
        "optimizer_step": "pass",
        "gradient_flow": "pass",
        "zero_grad": "pass",
        "box_sync": "pass",
        "loss_coordinates": "pass",
        "lr_schedule": "pass",
        "batchnorm": "pass",
    }, [r.message for r in results]


def test_own_heads_with_a_skipped_step_fail_the_kit_checklist(monkeypatch):
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    results = run_detector_checklist(make_detector(), skip=TRAINING_CHECKS)
    assert [r.name for r in results if r.status == "fail"] == ["optimizer_step"]

"""Gate: the int8 ONNX model of a tiny trained model keeps its accuracy and its position sense.

One training (the position probe's, `check_position_sensitivity`, with the trainer's own
`train_step`): the probe scores its int8 export (`cxrbox.deploy.parity.Int8Deployer`); the FP32
model it was made from is kept and scored on the same held-out positions. A planted broken
quantization (calibration on blank images: every activation range collapses) must turn the
same budget red, so the gate can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrbox.deploy.parity import Int8Deployer
from cxrbox.diagnostics.probes import check_position_sensitivity
from cxrbox.evaluation.metrics import mean_iou
from cxrbox.modeling.decode import decode_detections
from cxrbox.modeling.model import STRIDE
from cxrbox.testing import shifted_copies

pytestmark = pytest.mark.gate

MAX_MEAN_IOU_DROP = 0.03  # int8 vs FP32 mean IoU on held-out positions (issue 10)
IMAGE_SIZE = 128


class CapturingDeployer(Int8Deployer):
    """Int8Deployer that keeps what it was given (the trained FP32 model, calibration)."""

    def __call__(self, model, config, coding, calibration):
        self.captured = (model, config, coding, calibration)
        return super().__call__(model, config, coding, calibration)


class BlankCalibration(Int8Deployer):
    """Planted fault: calibrate on blank images, so activation ranges are those of nothing."""

    def __call__(self, model, config, coding, calibration):
        return super().__call__(model, config, coding, torch.zeros_like(calibration))


@pytest.fixture(scope="module")
def probe(default_config):
    config = default_config.replace(width=0.25)
    deployer = CapturingDeployer()
    check = check_position_sensitivity(config, image_size=IMAGE_SIZE, deploy=deployer)
    return check, deployer.captured


def heldout_mean_iou(model, coding, config) -> float:
    """Mean IoU of `model` on the probe's held-out positions (same square, same seed)."""
    side = IMAGE_SIZE // 4
    blob = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    blob[:side, :side] = 255
    copies = shifted_copies(
        8, 8, IMAGE_SIZE, 0, step=STRIDE, source=blob, source_box=np.array([0, 0, side, side])
    )
    with torch.no_grad():
        raw = model(copies.heldout_images).float()
    dets = decode_detections(raw, coding, 0.0, config.nms_iou, config.top_k)
    return mean_iou([d.boxes for d in dets], [d.scores for d in dets], copies.heldout_boxes)


def test_int8_model_passes_the_position_probe(probe):
    check, _ = probe
    assert check.status == "pass", check.message


def test_int8_mean_iou_stays_within_budget_of_fp32(probe):
    check, (model, config, coding, _) = probe
    fp32 = heldout_mean_iou(model.eval(), coding, config)
    assert check.numbers["heldout_mean_iou"] >= fp32 - MAX_MEAN_IOU_DROP, (fp32, check.numbers)


def test_a_broken_quantization_turns_the_budget_red(probe):
    """Self-check of the gate: blank-image calibration must fail the same budget."""
    _, (model, config, coding, calibration) = probe
    fp32 = heldout_mean_iou(model.eval(), coding, config)
    broken = BlankCalibration()(model, config, coding, calibration)
    assert heldout_mean_iou(broken, coding, config) < fp32 - MAX_MEAN_IOU_DROP

"""cxrbox.testing: the pull-request gate as a kit for any box regressor.

Write a `Detector` once for your model, then assert on it in your own tests, or run the whole
checklist with `pytest --cxrbox-detector package.module:make_detector` (no test file) or
`cxrbox diagnose --detector package.module:make_detector`. Every `assert_*` raises
AssertionError with the measured numbers and the reason; the `check_*` functions behind them
return a `CheckResult` instead. docs/testing-kit.md states the adapter contract and what each
check proves.
"""

from cxrbox.testing.batchnorm import check_batchnorm_statistics, recomputed_statistics
from cxrbox.testing.checklist import CHECKLIST, load_detector, run_detector_checklist
from cxrbox.testing.clipped import (
    assert_loss_sees_clipped_boxes,
    check_loss_sees_clipped_boxes,
    check_training_loss_sees_clipped_boxes,
)
from cxrbox.testing.detector import Detector, Prediction, default_train_step
from cxrbox.testing.learning import (
    DEFAULT_OVERFIT_THRESHOLDS,
    OverfitThresholds,
    assert_overfits_and_follows,
    assert_position_sensitive,
    check_overfit,
    check_position_sensitivity,
)
from cxrbox.testing.parameters import (
    assert_every_parameter_moves,
    assert_gradients_are_cleared,
    assert_gradients_reach_every_parameter,
    check_every_parameter_moves,
    check_gradients_are_cleared,
    check_gradients_reach_every_parameter,
)
from cxrbox.testing.recorder import OptimizerRecorder
from cxrbox.testing.result import CheckResult, Status
from cxrbox.testing.shifted import ShiftedCopies, multi_scale_batch, shifted_copies
from cxrbox.testing.transforms import assert_boxes_follow_transforms, check_boxes_follow_transforms
from cxrbox.testing.warmup import (
    assert_warmup_hands_over,
    check_recorded_lr,
    check_warmup_hands_over,
)

__all__ = [
    "CHECKLIST",
    "DEFAULT_OVERFIT_THRESHOLDS",
    "CheckResult",
    "Detector",
    "OptimizerRecorder",
    "OverfitThresholds",
    "Prediction",
    "ShiftedCopies",
    "Status",
    "assert_boxes_follow_transforms",
    "assert_every_parameter_moves",
    "assert_gradients_are_cleared",
    "assert_gradients_reach_every_parameter",
    "assert_loss_sees_clipped_boxes",
    "assert_overfits_and_follows",
    "assert_position_sensitive",
    "assert_warmup_hands_over",
    "check_batchnorm_statistics",
    "check_boxes_follow_transforms",
    "check_every_parameter_moves",
    "check_gradients_are_cleared",
    "check_gradients_reach_every_parameter",
    "check_loss_sees_clipped_boxes",
    "check_overfit",
    "check_position_sensitivity",
    "check_recorded_lr",
    "check_training_loss_sees_clipped_boxes",
    "check_warmup_hands_over",
    "default_train_step",
    "load_detector",
    "multi_scale_batch",
    "recomputed_statistics",
    "run_detector_checklist",
    "shifted_copies",
]

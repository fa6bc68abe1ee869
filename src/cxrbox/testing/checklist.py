"""The whole checklist on one `Detector`: what the pytest plugin and `cxrbox diagnose
--detector` run. Checks the detector does not supply inputs for (no scheduler, no transform,
no box loss) are reported as "warn" with `numbers["skipped"] = True`."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from cxrbox.errors import ConfigError
from cxrbox.testing.clipped import check_loss_sees_clipped_boxes
from cxrbox.testing.detector import Detector
from cxrbox.testing.learning import check_overfit, check_position_sensitivity
from cxrbox.testing.parameters import (
    check_every_parameter_moves,
    check_gradients_reach_every_parameter,
)
from cxrbox.testing.result import CheckResult
from cxrbox.testing.shifted import shifted_copies
from cxrbox.testing.transforms import check_boxes_follow_transforms
from cxrbox.testing.warmup import check_warmup_hands_over

CHECKLIST = (
    "position_sensitivity", "optimizer_step", "gradient_flow", "lr_schedule", "box_sync",
    "loss_coordinates", "overfit",
)  # fmt: skip


def load_detector(spec: str) -> Detector:
    """`package.module:name` -> the Detector it names (a Detector, or a function of no
    arguments returning one). Raises ConfigError saying what was expected."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"detector spec must be 'package.module:name', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"detector spec {spec!r}: cannot import {module_name}: {exc}") from exc
    target = getattr(module, attribute, None)
    if target is None:
        raise ConfigError(f"detector spec {spec!r}: {module_name} has no {attribute!r}")
    try:
        detector = target if isinstance(target, Detector) else target()
    except TypeError as exc:
        raise ConfigError(
            f"detector spec {spec!r}: expected a Detector or a function of no arguments "
            f"returning one: {exc}"
        ) from exc
    if not isinstance(detector, Detector):
        raise ConfigError(
            f"detector spec {spec!r} gave {type(detector).__name__}, expected a "
            "cxrbox.testing.Detector"
        )
    return detector


def _skipped(name: str, what: str) -> CheckResult:
    return CheckResult(
        name, "warn", f"not checked: the detector gives no {what}", {"skipped": True}
    )


def detector_checks(detector: Detector) -> dict[str, Callable[[], CheckResult]]:
    """Each check of `CHECKLIST` as a function of no arguments, in that order."""
    copies = shifted_copies()
    steps = detector.overfit_steps

    def lr_schedule() -> CheckResult:
        if detector.scheduler is None:
            return _skipped("lr_schedule", "scheduler")
        model = detector.build()
        return check_warmup_hands_over(
            detector.scheduler,
            detector.warmup_steps,
            detector.total_steps,
            optimizer=detector.optimizer(model),
        )

    def box_sync() -> CheckResult:
        if detector.transform is None:
            return _skipped("box_sync", "transform")
        return check_boxes_follow_transforms(detector.transform, n_seeds=40)

    def loss_coordinates() -> CheckResult:
        if detector.box_loss is None:
            return _skipped("loss_coordinates", "box loss")
        return check_loss_sees_clipped_boxes(detector.box_loss, pred=detector.box_loss_pred)

    return {
        "position_sensitivity": lambda: check_position_sensitivity(
            detector, steps=steps, stride=detector.stride
        ),
        "optimizer_step": lambda: check_every_parameter_moves(
            detector, copies.images, copies.boxes
        ),
        "gradient_flow": lambda: check_gradients_reach_every_parameter(
            detector, copies.images, copies.boxes
        ),
        "lr_schedule": lr_schedule,
        "box_sync": box_sync,
        "loss_coordinates": loss_coordinates,
        "overfit": lambda: check_overfit(detector, copies, steps),
    }


def run_detector_checklist(
    detector: Detector,
    progress: Callable[[str], None] | None = None,
    skip: tuple[str, ...] = (),
) -> list[CheckResult]:
    """Every check in `CHECKLIST` order but those in `skip`; each result's numbers gain
    `seconds`. `progress(name)` is called before each check."""
    results = []
    for name, check in detector_checks(detector).items():
        if name in skip:
            continue
        if progress is not None:
            progress(name)
        started = time.perf_counter()
        result = check()
        seconds = round(time.perf_counter() - started, 2)
        results.append(
            CheckResult(
                result.name, result.status, result.message, {**result.numbers, "seconds": seconds}
            )
        )
    return results

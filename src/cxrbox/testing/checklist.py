"""The whole checklist on one `Detector`: what the pytest plugin and `cxrbox diagnose
--detector` run. Checks the detector does not supply inputs for (no transform, no model with
BatchNorm) are reported as "warn" with `numbers["skipped"] = True`.

Training runs are shared: `step_probe` (the first two optimizer steps) serves optimizer_step and
zero_grad; the overfit run serves overfit, lr_schedule and batchnorm (run after it); the
position check has its own. lr_schedule and batchnorm run without the overfit run (selected
alone) record a run of warmup + `AFTER_WARMUP_STEPS` optimizer steps instead. Each run is made
once per `detector_checks` call.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from cxrbox.errors import ConfigError
from cxrbox.testing.batchnorm import Statistics, check_batchnorm_statistics, running_statistics
from cxrbox.testing.clipped import (
    check_loss_sees_clipped_boxes,
    check_training_loss_sees_clipped_boxes,
    transform_targets_outside,
)
from cxrbox.testing.detector import Detector
from cxrbox.testing.learning import (
    DEFAULT_OVERFIT_THRESHOLDS,
    Fit,
    check_position_sensitivity,
    fit,
    overfit_problems,
    overfit_result,
)
from cxrbox.testing.parameters import (
    StepProbe,
    check_gradients_reach_every_parameter,
    declared_idle,
    optimizer_step_result,
    step_probe,
    zero_grad_result,
)
from cxrbox.testing.result import CheckResult
from cxrbox.testing.shifted import shifted_copies
from cxrbox.testing.training import TrainingRun, start_run
from cxrbox.testing.transforms import check_boxes_follow_transforms
from cxrbox.testing.warmup import check_recorded_lr, check_warmup_hands_over

CHECKLIST = (
    "position_sensitivity", "optimizer_step", "gradient_flow", "zero_grad", "box_sync",
    "loss_coordinates", "overfit", "lr_schedule", "batchnorm",
)  # fmt: skip
# Optimizer steps past the declared warmup that lr_schedule and batchnorm record when they run
# without the overfit run (e.g. `-k lr_schedule`): enough to see the hand-over and the decay.
AFTER_WARMUP_STEPS = 10


def load_detector(spec: str, search_path: str | None = None) -> Detector:
    """`package.module:name` -> the Detector it names (a Detector, or a function of no
    arguments returning one). `search_path` (e.g. the current directory or pytest's rootdir) is
    put first on sys.path, as `python -m` does, so a project's own modules import. Raises
    ConfigError saying what was expected."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"detector spec must be 'package.module:name', got {spec!r}")
    if search_path is not None:
        path = os.path.abspath(search_path)
        if path not in sys.path:
            sys.path.insert(0, path)
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


def detector_checks(detector: Detector, seed: int = 0) -> dict[str, Callable[[], CheckResult]]:
    """Each check of `CHECKLIST` as a function of no arguments, in that order. `seed` seeds the
    probe data and every model the checks build."""
    if detector.overfit_data is not None:
        copies = detector.overfit_data(seed)
    else:
        copies = shifted_copies(image_size=detector.image_size, seed=seed)
    budget = detector.overfit_steps
    thresholds = DEFAULT_OVERFIT_THRESHOLDS

    @cache
    def probe_batch() -> tuple[Tensor, list[Tensor]]:
        if detector.probe_batch is not None:
            return detector.probe_batch()
        return copies.images, copies.boxes

    @cache
    def steps() -> StepProbe:
        images, boxes = probe_batch()
        return step_probe(detector, images, boxes, seed=seed)

    fitted: list[Fit] = []

    @cache
    def shared_fit() -> Fit:
        fitted.append(
            fit(
                detector,
                copies,
                budget,
                seed,
                adaptive=True,
                passes=lambda r: not overfit_problems(r, thresholds),
            )
        )
        return fitted[0]

    @cache
    def short_run() -> tuple[TrainingRun, Statistics]:
        run = start_run(detector, copies.images, copies.boxes, seed)
        try:
            limit = (detector.warmup_steps + AFTER_WARMUP_STEPS) * max(1, detector.accumulation)
            while run.recorder.steps < detector.warmup_steps + AFTER_WARMUP_STEPS:
                if run.calls >= limit:
                    break
                run.advance(1)
        finally:
            run.close()
        return run, running_statistics(run.model)

    def recorded() -> tuple[TrainingRun, Statistics, Fit | None]:
        if fitted:
            return fitted[0].run, fitted[0].statistics_at_end, fitted[0]
        run, statistics = short_run()
        return run, statistics, None

    def lr_schedule() -> CheckResult:
        run, _, _ = recorded()
        result = check_recorded_lr(
            run.recorder.lr_curves(),
            run.base_lrs,
            detector.warmup_steps,
            detector.warmup_start_lrs,
            detector.total_steps,
            run.calls,
            run.recorder.step_calls,
        )
        if detector.scheduler is None or detector.total_steps <= 0:
            return result
        model = detector.build()
        dry = check_warmup_hands_over(
            detector.scheduler,
            detector.warmup_steps,
            detector.total_steps,
            optimizer=detector.optimizer(model),
        )
        numbers = {**result.numbers, "dry_run": dry.numbers}
        if dry.status == "fail":
            return CheckResult(
                "lr_schedule",
                "fail",
                f"the scheduler stepped dry over {detector.total_steps} steps: {dry.message}"
                + (f"; recorded: {result.message}" if result.status == "fail" else ""),
                numbers,
            )
        return CheckResult(
            "lr_schedule",
            result.status,
            f"{result.message}; stepped dry over {detector.total_steps} steps: {dry.message}",
            numbers,
        )

    def box_sync() -> CheckResult:
        if detector.transform is None:
            return _skipped("box_sync", "transform")
        return check_boxes_follow_transforms(
            detector.transform, n_seeds=40, channels=detector.in_channels
        )

    def loss_coordinates() -> CheckResult:
        if detector.box_loss is not None:
            return check_loss_sees_clipped_boxes(detector.box_loss, pred=detector.box_loss_pred)
        note = "no transform given"
        if detector.transform is not None:
            outside, n, worst, error = transform_targets_outside(
                detector.transform, channels=detector.in_channels
            )
            numbers = {"transform_outside": outside, "transform_samples": n, "worst_px": worst}
            if outside == 0:
                return CheckResult(
                    "loss_coordinates",
                    "pass",
                    f"a box sticking out of the image leaves your transform clipped in all {n} "
                    "samples: the loss sees one coordinate system",
                    numbers,
                )
            note = (
                f"your transform raised on a box outside the image ({error})"
                if error
                else f"{outside} of {n} samples leave your transform with a box up to "
                f"{worst:.1f} px outside the image"
            )
        images, boxes = probe_batch()
        torch.manual_seed(seed)
        model = detector.build().train()
        result = check_training_loss_sees_clipped_boxes(
            detector.loss, model, detector.images_for(images), list(boxes), seed
        )
        return CheckResult(
            "loss_coordinates", result.status, f"{note}; {result.message}", result.numbers
        )

    def batchnorm() -> CheckResult:
        run, statistics, done = recorded()
        if not run.statistics_at_build:
            return _skipped("batchnorm", "model with BatchNorm running statistics")
        return check_batchnorm_statistics(
            run.statistics_at_build,
            statistics,
            run.calls,
            declared_idle(detector, run.model),
            fitted_iou=done.result.mean_iou if done else None,
            fitted_iou_as_trained=done.result.mean_iou_as_trained if done else None,
        )

    return {
        "position_sensitivity": lambda: check_position_sensitivity(
            detector,
            detector.image_size,
            budget,
            seed,
            stride=detector.stride,
            adaptive=True,
        ),
        "optimizer_step": lambda: optimizer_step_result(steps(), detector),
        "gradient_flow": lambda: check_gradients_reach_every_parameter(
            detector, probe_batch()[0], probe_batch()[1], seed=seed
        ),
        "zero_grad": lambda: zero_grad_result(steps()),
        "box_sync": box_sync,
        "loss_coordinates": loss_coordinates,
        "overfit": lambda: overfit_result(shared_fit().result, copies, thresholds, budget),
        "lr_schedule": lr_schedule,
        "batchnorm": batchnorm,
    }


def run_detector_checklist(
    detector: Detector,
    progress: Callable[[str], None] | None = None,
    skip: tuple[str, ...] = (),
    seed: int = 0,
) -> list[CheckResult]:
    """Every check in `CHECKLIST` order but those in `skip`; each result's numbers gain
    `seconds` (a check that reuses a run another check made costs only its own part).
    `progress(name)` is called before each check."""
    results = []
    for name, check in detector_checks(detector, seed).items():
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

"""A speed gate for pull requests: fail when the training step got slower than a baseline.

On a shared machine a step's wall time swings with the load (the step's share of the matmul
rate ranged 44-69 % over repeated runs of unchanged code). So the gate never compares seconds.
Each measurement is `rounds` rounds of [fp32 matmul, `steps` training steps, fp32 matmul] in
one process; a round's score is (mean matmul seconds) / (mean step seconds) of that round, so
the step is measured in units of the machine's speed at that moment, and a measurement's score
is the median over its rounds (measured under load, this beat the ratio of the fastest matmul
to the fastest step: see docs/results.md). On CPU the gate runs one thread and reads the
process's CPU time, which other processes do not inflate (they only delay it); on CUDA it reads
wall time after a synchronize. `cxrbox bench --save-json` writes one;
`cxrbox bench --compare BASELINE.json --max-slowdown 0.15` measures the code it runs with and
fails when score(candidate) < (1 - max_slowdown) x score(baseline). In CI the baseline is the
pull request's base commit measured on the same runner just before (`.ci/bench-gate`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from cxrbox.atomic_write import atomic_path
from cxrbox.config import TrainConfig
from cxrbox.engine.train import build_state, train_step
from cxrbox.errors import ConfigError
from cxrbox.speed.bench_train import random_batch
from cxrbox.speed.timing import no_tf32, synchronize

GATE_VERSION = 1


@dataclass(frozen=True)
class SpeedMeasurement:
    """Per-round seconds of the matmul block and of one step, and the setup measured."""

    device: str
    image_size: int
    batch_size: int
    head: str
    matmul_seconds: list[float]
    step_seconds: list[float]
    version: int = GATE_VERSION

    @property
    def round_scores(self) -> list[float]:
        """Per round: mean of its two matmul blocks / mean of its steps."""
        steps = len(self.step_seconds) // (len(self.matmul_seconds) // 2)
        return [
            statistics.mean(self.matmul_seconds[2 * r : 2 * r + 2])
            / statistics.mean(self.step_seconds[steps * r : steps * r + steps])
            for r in range(len(self.matmul_seconds) // 2)
        ]

    @property
    def score(self) -> float:
        """Step speed in matmul units: the median round score."""
        return statistics.median(self.round_scores)

    @property
    def spread(self) -> float:
        """(Highest - lowest round score) / score: how much the rounds were disturbed."""
        scores = self.round_scores
        return (max(scores) - min(scores)) / self.score

    def save(self, path: str | Path) -> None:
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SpeedMeasurement:
        try:
            values = json.loads(Path(path).read_text())
            measurement = cls(**values)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}: not a cxrbox speed baseline: {exc}") from exc
        if measurement.version != GATE_VERSION or not measurement.step_seconds:
            raise ConfigError(f"{path}: speed baseline version {measurement.version}, no rounds")
        return measurement


def measure_speed(config: TrainConfig, rounds: int = 7, steps: int = 3) -> SpeedMeasurement:
    """`rounds` x (matmul, `steps` timed training steps, matmul) after two warmup rounds."""
    device = torch.device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    try:
        state = build_state(config.replace(epochs=1), steps_per_epoch=rounds * steps + 3)
        images, boxes = random_batch(config.batch_size, config.image_size)
        a, b = torch.randn(512, 512, device=device), torch.randn(512, 512, device=device)
        for _ in range(2):
            train_step(state, images, boxes, defer=True)
            matmul_seconds(a, b, clock)
        matmul, step = [], []
        for _ in range(rounds):
            matmul.append(matmul_seconds(a, b, clock))
            for _ in range(steps):
                started = clock()
                train_step(state, images, boxes, defer=True)
                synchronize(device)
                step.append(clock() - started)
            matmul.append(matmul_seconds(a, b, clock))
    finally:
        torch.set_num_threads(threads)
    return SpeedMeasurement(
        str(device), config.image_size, config.batch_size, config.head, matmul, step
    )


def matmul_seconds(a: Tensor, b: Tensor, clock: Callable[[], float], repeats: int = 8) -> float:
    """Seconds (by `clock`) of `repeats` fp32 a @ b: the unit a step's time is measured in."""
    with no_tf32():
        started = clock()
        for _ in range(repeats):
            a @ b
        synchronize(a.device)
    return clock() - started


@dataclass(frozen=True)
class GateVerdict:
    baseline: float
    candidate: float
    max_slowdown: float

    @property
    def slowdown(self) -> float:
        """Fraction of the baseline's speed lost (negative: faster)."""
        return 1.0 - self.candidate / self.baseline

    @property
    def passed(self) -> bool:
        return self.slowdown <= self.max_slowdown

    def line(self) -> str:
        return (
            f"speed gate {'passed' if self.passed else 'FAILED'}: step speed "
            f"{-self.slowdown:+.1%} vs baseline (score {self.candidate:.4f} vs "
            f"{self.baseline:.4f} matmul blocks per step; allowed slowdown "
            f"{self.max_slowdown:.0%})"
        )


def compare(
    baseline: SpeedMeasurement, candidate: SpeedMeasurement, max_slowdown: float
) -> GateVerdict:
    """The verdict on `candidate`; both must measure the same step (device, size, batch, head)."""
    setup = ("device", "image_size", "batch_size", "head")
    if any(getattr(baseline, k) != getattr(candidate, k) for k in setup):
        raise ConfigError(
            f"baseline measured {[getattr(baseline, k) for k in setup]}, "
            f"candidate {[getattr(candidate, k) for k in setup]} ({', '.join(setup)})"
        )
    if not 0.0 <= max_slowdown < 1.0:
        raise ConfigError(f"max_slowdown must be in [0, 1), got {max_slowdown}")
    return GateVerdict(baseline.score, candidate.score, max_slowdown)

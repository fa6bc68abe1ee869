"""The speed gate's verdict: median rounds compared, same setup required, baselines round-trip."""

from __future__ import annotations

import pytest

from cxrbox.errors import ConfigError
from cxrbox.speed.gate import SpeedMeasurement, compare


def _measured(*step_seconds: float, image_size: int = 128) -> SpeedMeasurement:
    """One step per round, matmul blocks of 1 s: round scores are 1 / step seconds."""
    matmul = [1.0] * (2 * len(step_seconds))
    return SpeedMeasurement("cpu", image_size, 16, "grid", matmul, list(step_seconds))


def test_slower_by_more_than_the_bound_fails():
    verdict = compare(_measured(1.0, 1.0, 1.0), _measured(1.25, 1.25, 1.25), max_slowdown=0.15)
    assert verdict.slowdown == pytest.approx(0.2)
    assert not verdict.passed
    assert "FAILED" in verdict.line()


def test_slower_within_the_bound_and_faster_pass():
    assert compare(_measured(1.0), _measured(1.1), max_slowdown=0.15).passed
    assert compare(_measured(1.0), _measured(0.7), max_slowdown=0.15).passed


def test_one_disturbed_round_does_not_count():
    baseline = _measured(1.0, 1.0, 1.0)
    assert compare(baseline, _measured(3.0, 1.0, 1.0), max_slowdown=0.15).passed


def test_the_matmul_rate_of_the_moment_normalises_the_step():
    """A machine twice as slow during the candidate run: matmul and step both take 2x."""
    baseline = _measured(1.0)
    slow_machine = SpeedMeasurement("cpu", 128, 16, "grid", [2.0, 2.0], [2.0])
    assert compare(baseline, slow_machine, max_slowdown=0.15).slowdown == pytest.approx(0.0)


def test_different_setups_are_not_compared():
    with pytest.raises(ConfigError, match="image_size"):
        compare(_measured(1.0), _measured(1.0, image_size=256), max_slowdown=0.15)


def test_baseline_round_trips_through_json(tmp_path):
    path = tmp_path / "base.json"
    _measured(0.5, 0.7).save(path)
    assert SpeedMeasurement.load(path) == _measured(0.5, 0.7)


def test_a_file_that_is_no_baseline_is_a_config_error(tmp_path):
    path = tmp_path / "base.json"
    path.write_text('{"kind": "something else"}')
    with pytest.raises(ConfigError, match="speed baseline"):
        SpeedMeasurement.load(path)

"""The speed gate's verdict: medians compared, same setup required, baselines round-trip."""

from __future__ import annotations

import pytest

from cxrbox.errors import ConfigError
from cxrbox.speedgate import SpeedMeasurement, compare


def _measured(*scores: float, image_size: int = 128) -> SpeedMeasurement:
    return SpeedMeasurement("cpu", image_size, 16, "grid", list(scores))


def test_slower_by_more_than_the_bound_fails():
    verdict = compare(_measured(1.0, 1.0, 1.0), _measured(0.8, 0.8, 0.8), max_slowdown=0.15)
    assert verdict.slowdown == pytest.approx(0.2)
    assert not verdict.passed
    assert "FAILED" in verdict.line()


def test_slower_within_the_bound_and_faster_pass():
    assert compare(_measured(1.0), _measured(0.9), max_slowdown=0.15).passed
    assert compare(_measured(1.0), _measured(1.3), max_slowdown=0.15).passed


def test_the_median_ignores_one_outlier_round():
    baseline = _measured(1.0, 1.0, 1.0, 1.0, 1.0)
    assert compare(baseline, _measured(1.0, 0.2, 1.0, 1.0, 1.0), max_slowdown=0.15).passed


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

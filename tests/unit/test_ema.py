"""cxrbox.engine.ema: the update rule against its formula, the ramp, buffers, and the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxrbox.engine.ema import ModelEMA, ema_decay_at
from cxrbox.errors import CheckpointError, ConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def _perturb(model: nn.Module, seed: int) -> None:
    """New weights and new BatchNorm statistics, as a training step would leave."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    model.train()(torch.randn(8, 1, 3, 3, generator=generator))  # updates running stats


def test_decay_ramps_from_zero_towards_the_configured_decay():
    assert ema_decay_at(1, 0.998, 200) == pytest.approx(0.998 * (1 - math.exp(-1 / 200)))
    assert ema_decay_at(2000, 0.998, 200) == pytest.approx(0.998, rel=1e-4)
    values = [ema_decay_at(n, 0.998, 200) for n in range(1, 500)]
    assert values == sorted(values)
    assert ema_decay_at(5, 0.9, 0) == 0.9  # no ramp


def test_update_follows_the_reference_formula_parameter_by_parameter():
    model = _model()
    ema = ModelEMA(model, decay=0.9, ramp_steps=3.0)
    expected = {k: v.clone() for k, v in model.named_parameters()}
    for n in range(1, 6):
        _perturb(model, seed=n)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-n / 3.0))
        for name, live in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * live.detach()
    averaged = dict(ema.module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-6, atol=1e-7)
        assert not torch.equal(averaged[name], dict(model.named_parameters())[name])
    assert ema.updates == 5


def test_batchnorm_statistics_are_averaged_like_weights_and_counters_copied():
    model = _model()
    ema = ModelEMA(model, decay=0.9, ramp_steps=0.0)
    expected = {k: v.clone() for k, v in model.named_buffers()}
    for n in range(1, 4):
        _perturb(model, seed=n)
        ema.update(model)
        for name, live in model.named_buffers():
            if live.is_floating_point():
                expected[name] = 0.9 * expected[name] + 0.1 * live
            else:
                expected[name] = live.clone()
    averaged = dict(ema.module.named_buffers())
    live_buffers = dict(model.named_buffers())
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-6, atol=1e-7)
    assert not torch.equal(averaged["1.running_mean"], live_buffers["1.running_mean"])
    assert int(averaged["1.num_batches_tracked"]) == int(live_buffers["1.num_batches_tracked"]) == 3


def test_the_average_is_a_frozen_copy_in_eval_mode():
    model = _model()
    ema = ModelEMA(model, decay=0.5, ramp_steps=0.0)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    _perturb(model, seed=1)
    before = [p.clone() for p in ema.module.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, ema.module.parameters(), strict=True))


def test_state_dict_round_trip_continues_identically():
    model = _model()
    first = ModelEMA(model, decay=0.9, ramp_steps=2.0)
    _perturb(model, seed=1)
    first.update(model)
    second = ModelEMA(_model(), decay=0.9, ramp_steps=2.0)
    second.load_state_dict(first.state_dict())
    _perturb(model, seed=2)
    first.update(model)
    second.update(model)
    assert second.updates == first.updates == 2
    for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)


def test_bad_settings_and_entries_raise_typed_errors():
    with pytest.raises(ConfigError, match="ema_decay"):
        ModelEMA(_model(), decay=1.0, ramp_steps=0.0)
    with pytest.raises(ConfigError, match="ema_ramp_steps"):
        ModelEMA(_model(), decay=0.9, ramp_steps=-1.0)
    with pytest.raises(CheckpointError, match="ema"):
        ModelEMA(_model(), decay=0.9, ramp_steps=0.0).load_state_dict({"weights": {}}, "x.pt")

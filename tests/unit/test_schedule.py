"""cxrbox.engine.schedule: warmup + cosine per optimizer step, exact against `lr_curve`."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cxrbox.engine.schedule import audit_lr_curve, build_scheduler, lr_at_step, lr_curve
from cxrbox.errors import ConfigError

BASE_LRS = (1e-3, 0.1)  # two param groups with different base LRs


def _make(base_lrs=BASE_LRS, weight_decay: float = 0.0):
    params = [torch.nn.Parameter(torch.ones(3)) for _ in base_lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs, strict=True)]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    return params, opt


def _run(opt, sched, params, n_steps: int) -> list[list[float]]:
    """LR of each group used for each of `n_steps` optimizer steps: [steps][groups]."""
    used = []
    for _ in range(n_steps):
        used.append([g["lr"] for g in opt.param_groups])
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    return used


def _group_curves(warmup: int, total: int, ratio: float = 0.0) -> list[list[float]]:
    params, opt = _make()
    sched = build_scheduler(opt, warmup, total, ratio)
    used = _run(opt, sched, params, total)
    return [[step[g] for step in used] for g in range(len(BASE_LRS))]


def test_lr_curve_matches_hand_computed_values():
    # w=4, T=10, base 1: warmup 1/4 + (3/4)*t/4 -> .25, .4375, .625, .8125; then at t=4..9
    # (1 + cos(pi*(t-4)/6))/2 -> 1, (1+sqrt(3)/2)/2=.9330127, .75, .5, .25, (1-sqrt(3)/2)/2
    expected = [0.25, 0.4375, 0.625, 0.8125, 1.0, 0.9330127019, 0.75, 0.5, 0.25, 0.0669872981]
    assert lr_curve(1.0, 4, 10) == pytest.approx(expected, rel=1e-9)


def test_lr_curve_with_floor_matches_hand_computed_values():
    # w=0, T=4, base 2, floor 0.5*2=1: 2*(0.5 + 0.5*(1+cos(pi*t/4))/2)
    #   -> 2, 1.8535534, 1.5, 1.1464466
    assert lr_curve(2.0, 0, 4, 0.5) == pytest.approx(
        [2.0, 1.8535533906, 1.5, 1.1464466094], rel=1e-9
    )


def test_lr_is_held_at_floor_after_total_steps():
    assert lr_at_step(10, 2.0, 4, 10, 0.25) == pytest.approx(0.5)
    assert lr_at_step(17, 2.0, 4, 10, 0.25) == pytest.approx(0.5)


def test_scheduler_holds_floor_after_total_steps():
    params, opt = _make()
    sched = build_scheduler(opt, 2, 6, 0.1)
    used = _run(opt, sched, params, 12)
    for step in used[6:]:
        assert step == pytest.approx([0.1 * b for b in BASE_LRS], rel=1e-9)


def test_first_step_lr_is_positive_and_updates_weights():
    params, opt = _make()
    build_scheduler(opt, 5, 50)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([b / 5 for b in BASE_LRS])
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for p, b in zip(params, before, strict=True):
        assert not torch.equal(p.detach(), b)


def test_warmup_is_non_decreasing_for_every_param_group():
    for curve in _group_curves(7, 30):
        assert all(curve[t] >= curve[t - 1] for t in range(1, 8))


def test_peak_lr_equals_base_lr_for_every_param_group():
    for curve, base in zip(_group_curves(7, 30), BASE_LRS, strict=True):
        assert max(curve) == pytest.approx(base, rel=1e-9)
        assert curve[7] == pytest.approx(base, rel=1e-9)


def test_cosine_is_non_increasing_after_warmup_for_every_param_group():
    for curve in _group_curves(7, 30, 0.1):
        assert all(curve[t] <= curve[t - 1] for t in range(8, 30))


def test_no_jump_at_warmup_boundary_for_every_param_group():
    warmup, total = 7, 30
    for curve, base in zip(_group_curves(warmup, total), BASE_LRS, strict=True):
        # the step into the boundary is one more warmup increment, base * (1 - 1/w) / w
        ramp = base * (1 - 1 / warmup) / warmup
        assert curve[warmup] - curve[warmup - 1] == pytest.approx(ramp, rel=1e-6)
        # the step out of it is the cosine's first: base * (1 - cos(pi / (T - w))) / 2
        first = base * (1 - math.cos(math.pi / (total - warmup))) / 2
        assert curve[warmup] - curve[warmup + 1] == pytest.approx(first, rel=1e-6)


def test_each_param_group_reaches_its_own_floor():
    params, opt = _make()
    sched = build_scheduler(opt, 3, 10, 0.2)
    _run(opt, sched, params, 10)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 * b for b in BASE_LRS])


@given(
    warmup=st.integers(0, 20),
    extra=st.integers(1, 60),
    ratio=st.floats(0.0, 1.0),
)
def test_scheduler_equals_lr_curve_for_every_param_group(warmup, extra, ratio):
    total = warmup + extra
    curves = _group_curves(warmup, total, ratio)
    for curve, base in zip(curves, BASE_LRS, strict=True):
        assert curve == pytest.approx(lr_curve(base, warmup, total, ratio), rel=1e-6)


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("stop_at", [1, 4, 5, 6, 13])
def test_resume_from_state_dicts_matches_uninterrupted_run(stop_at):
    warmup, total, ratio = 5, 20, 0.05
    params, opt = _make(weight_decay=0.01)
    sched = build_scheduler(opt, warmup, total, ratio)
    uninterrupted = _run(opt, sched, params, total)

    params, opt = _make(weight_decay=0.01)
    sched = build_scheduler(opt, warmup, total, ratio)
    first = _run(opt, sched, params, stop_at)
    saved = _roundtrip(
        {
            "params": [p.detach() for p in params],
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
        }
    )

    params = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    fresh_opt = torch.optim.AdamW(
        [{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS, strict=True)],
        weight_decay=0.01,
    )
    fresh_sched = build_scheduler(fresh_opt, warmup, total, ratio)
    fresh_opt.load_state_dict(saved["opt"])
    fresh_sched.load_state_dict(saved["sched"])
    rest = _run(fresh_opt, fresh_sched, params, total - stop_at)

    assert first + rest == [pytest.approx(step, rel=1e-12) for step in uninterrupted]


def test_warmup_zero_is_pure_cosine_from_base():
    curves = _group_curves(0, 8)
    for curve, base in zip(curves, BASE_LRS, strict=True):
        assert curve[0] == pytest.approx(base)
        assert curve[4] == pytest.approx(base / 2)  # cos(pi * 4/8) = 0 -> half way


@pytest.mark.parametrize(
    ("warmup", "total", "ratio", "argument"),
    [
        (-1, 10, 0.0, "warmup_steps"),
        (10, 10, 0.0, "total_steps"),
        (10, 5, 0.0, "total_steps"),
        (0, 0, 0.0, "total_steps"),
        (2, 10, -0.1, "min_lr_ratio"),
        (2, 10, 1.5, "min_lr_ratio"),
        (2, 10, math.nan, "min_lr_ratio"),
        (2.5, 10, 0.0, "warmup_steps"),
    ],
)
def test_invalid_schedule_arguments_raise_config_error_naming_them(warmup, total, ratio, argument):
    _, opt = _make()
    with pytest.raises(ConfigError, match=argument):
        build_scheduler(opt, warmup, total, ratio)
    with pytest.raises(ConfigError, match=argument):
        lr_curve(0.1, warmup, total, ratio)


# --- audit_lr_curve ------------------------------------------------------------------------


def test_audit_passes_the_real_scheduler_curve():
    for curve, base in zip(_group_curves(50, 500, 0.01), BASE_LRS, strict=True):
        assert audit_lr_curve(curve, base, 50, rtol=1e-6) == []


def test_audit_flags_cosine_that_counted_from_step_zero():
    # The original bug: warmup set by hand, cosine over all steps counted from step 0.
    base, warmup, total = 0.1, 10, 100
    planted = [
        base * (t + 1) / warmup if t < warmup else base * (1 + math.cos(math.pi * t / total)) / 2
        for t in range(total)
    ]
    problems = audit_lr_curve(planted, base, warmup, rtol=1e-6)
    assert any("warmup is not non-decreasing" in p for p in problems)
    assert any("end of warmup" in p for p in problems)


def _hand_warmup_over_stock_cosine(base: float, warmup: int, total: int) -> list[float]:
    """The LRs the original loop used: warmup written into group["lr"] by hand while a stock
    CosineAnnealingLR stepped from step 0."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    used = []
    for t in range(total):
        if t < warmup:
            opt.param_groups[0]["lr"] = base * (t + 1) / warmup
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    return used


def test_audit_flags_hand_set_warmup_over_a_torch_cosine():
    # The same bug as the original loop wrote it: a stock CosineAnnealingLR stepped from step 0
    # while the warmup overwrote group["lr"] by hand.
    base, warmup, total = 0.1, 10, 100
    used = _hand_warmup_over_stock_cosine(base, warmup, total)
    assert any("end of warmup" in p for p in audit_lr_curve(used, base, warmup, rtol=1e-6))


def test_audit_passes_the_real_curve_compared_step_by_step():
    for curve, base in zip(_group_curves(5, 40, 0.1), BASE_LRS, strict=True):
        assert audit_lr_curve(curve, base, 5, rtol=1e-6, min_lr_ratio=0.1) == []


def test_audit_compared_with_curve_flags_a_cosine_on_a_shifted_clock():
    # The original loop with a long run: the stock cosine's recursive update makes the drop at
    # the end of warmup tiny (6e-5 relative), so only the step-by-step comparison sees that the
    # whole cosine runs low (about 4% at mid-run).
    base, warmup, total = 0.1, 50, 2000
    used = _hand_warmup_over_stock_cosine(base, warmup, total)
    assert audit_lr_curve(used, base, warmup, rtol=1e-3) == []
    problems = audit_lr_curve(used, base, warmup, rtol=1e-3, min_lr_ratio=0.0)
    assert any("departs from the warmup+cosine curve" in p for p in problems)


def test_audit_flags_jump_at_boundary():
    # warmup that only reaches half the base LR, then cosine from the full base LR
    base, warmup, total = 1.0, 10, 40
    curve = [0.5 * x for x in lr_curve(base, warmup, total)[:warmup]]
    curve += lr_curve(base, warmup, total)[warmup:]
    assert any("jump" in p for p in audit_lr_curve(curve, base, warmup, rtol=1e-6))


def test_audit_flags_peak_below_base():
    curve = [0.8 * x for x in lr_curve(1.0, 5, 30)]
    assert any("peak LR" in p for p in audit_lr_curve(curve, 1.0, 5, rtol=1e-6))


def test_audit_flags_cosine_that_rises_again():
    # T_max too short: the cosine passes its minimum and climbs the next period
    base, warmup, total = 1.0, 5, 30
    curve = lr_curve(base, warmup, total)[:warmup] + [
        base * (1 + math.cos(math.pi * (t - warmup) / 10)) / 2 for t in range(warmup, total)
    ]
    assert any("cosine is not non-increasing" in p for p in audit_lr_curve(curve, base, warmup))


def test_audit_flags_non_finite_lr():
    curve = lr_curve(1.0, 2, 10)
    curve[6] = math.nan
    assert any("not finite" in p for p in audit_lr_curve(curve, 1.0, 2))

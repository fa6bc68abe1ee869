"""TrainingMonitor: each alarm catches its planted fault, and a healthy step raises none.

The monitor is driven as `cxrbox.engine.train.train_step` drives it: observe_forward after the
forward pass, observe_gradients after clipping, before_update / after_update around `opt.step()`.
"""

from __future__ import annotations

import pytest
import torch

from cxrbox.engine.monitor import TrainingMonitor
from cxrbox.engine.train import param_groups
from cxrbox.modeling.decode import GridCoding
from cxrbox.modeling.model import build_model
from cxrbox.modeling.objective import assign_targets, compute_loss

IMAGE_SIZE = 64  # a 2 x 2 grid
GRID = IMAGE_SIZE // 32
BATCH = 4  # one image per grid cell
GRAD_CLIP = 10.0


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(width=0.25).train()


@pytest.fixture
def optimizer(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3)


def make_monitor(model, warmup_steps: int = 0, patience: int = 20) -> TrainingMonitor:
    return TrainingMonitor(
        model, GridCoding(), GRAD_CLIP, warmup_steps, collapse_std=0.02, patience=patience
    )


def random_batch(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random images [B, 1, S, S] and one random box each (normalized xyxy)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    corner = torch.rand(BATCH, 2, generator=generator) * 0.6
    size = 0.1 + torch.rand(BATCH, 2, generator=generator) * 0.3
    boxes = [torch.cat([c, c + s])[None] for c, s in zip(corner, size, strict=True)]
    return images, boxes


def monitored_step(
    monitor: TrainingMonitor,
    model,
    optimizer,
    step: int,
    *,
    raw: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    no_grad: bool = False,
    skip_optimizer: bool = False,
) -> tuple[dict, list]:
    """One step in train_step's order; `raw` / `features` replace what the monitor observes."""
    images, boxes = random_batch(step)
    optimizer.zero_grad(set_to_none=True)
    if no_grad:
        with torch.no_grad():
            out, feats = model.forward_with_features(images)
    else:
        out, feats = model.forward_with_features(images)
        grid = model.grid_size(IMAGE_SIZE)
        compute_loss(out, assign_targets(boxes, grid, grid)).total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    monitor.observe_forward(out if raw is None else raw, feats if features is None else features)
    monitor.observe_gradients(grad_norm)
    monitor.before_update()
    if not skip_optimizer:
        optimizer.step()
    return monitor.after_update(step, optimizer)


def names(events: list) -> list[str]:
    return [e.name for e in events]


def test_healthy_step_raises_no_event(model, optimizer):
    monitor = make_monitor(model)
    _, events = monitored_step(monitor, model, optimizer, 0)
    assert events == [], [e.message for e in events]


def test_optimizer_that_never_steps_raises_no_update(model, optimizer):
    monitor = make_monitor(model)
    record, events = monitored_step(monitor, model, optimizer, 0, skip_optimizer=True)
    assert record["update_ratio"] == 0.0
    assert "no_update" in names(events)


def test_loss_under_no_grad_raises_dead_gradients_for_every_layer(model, optimizer):
    monitor = make_monitor(model)
    record, events = monitored_step(monitor, model, optimizer, 0, no_grad=True)
    dead = [e for e in events if e.name == "dead_gradients"]
    assert len(dead) == 1
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert dead[0].message.startswith(f"{n_params} parameter(s)")
    assert all(v == 0.0 for v in record["grad_norm_layers"].values())


def test_zero_features_raise_flat_features(model, optimizer):
    monitor = make_monitor(model)
    images, _ = random_batch(0)
    _, feats = model.forward_with_features(images)
    _, events = monitored_step(monitor, model, optimizer, 0, features=torch.zeros_like(feats))
    assert "flat_features" in names(events)


def constant_raw() -> torch.Tensor:
    """The same raw head output [B, 5, G, G] for every image: one box for the whole batch."""
    one_output = torch.randn(1, 5, GRID, GRID, generator=torch.Generator().manual_seed(1))
    return one_output.expand(BATCH, -1, -1, -1)


def varied_raw() -> torch.Tensor:
    """Image i's top-scoring cell is cell i (row-major): top-box centres spread 0.25."""
    raw = torch.zeros(BATCH, 5, GRID, GRID)
    raw[:, 0] = -5.0
    for i in range(BATCH):
        raw[i, 0, i // GRID, i % GRID] = 5.0
    return raw


def test_constant_predictions_after_warmup_raise_collapse_exactly_once(model, optimizer):
    warmup, patience = 2, 3
    monitor = make_monitor(model, warmup_steps=warmup, patience=patience)
    fired = []
    for step in range(warmup + patience + 3):
        _, events = monitored_step(monitor, model, optimizer, step, raw=constant_raw())
        fired += [step for e in events if e.name == "collapse"]
    # Steps warmup .. warmup + patience - 1 are the first `patience` steps after warmup.
    assert fired == [warmup + patience - 1]


def test_constant_predictions_during_warmup_raise_no_collapse(model, optimizer):
    warmup, patience = 4, 2
    monitor = make_monitor(model, warmup_steps=warmup, patience=patience)
    for step in range(warmup):
        _, events = monitored_step(monitor, model, optimizer, step, raw=constant_raw())
        assert "collapse" not in names(events)


def test_varied_predictions_after_warmup_raise_no_collapse(model, optimizer):
    patience = 2
    monitor = make_monitor(model, warmup_steps=0, patience=patience)
    for step in range(patience + 2):
        record, events = monitored_step(monitor, model, optimizer, step, raw=varied_raw())
        assert record["pred_cx_std"] == pytest.approx(0.25)
        assert "collapse" not in names(events)


def test_record_has_per_layer_grad_norms_and_lr_per_group(model, optimizer):
    monitor = make_monitor(model)
    record, _ = monitored_step(monitor, model, optimizer, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(record["grad_norm_layers"]) == trainable
    assert all(v > 0 for v in record["grad_norm_layers"].values())
    for i, group in enumerate(optimizer.param_groups):
        assert record[f"lr_group{i}"] == group["lr"]
    assert f"lr_group{len(optimizer.param_groups)}" not in record


def test_clip_fraction_counts_steps_over_the_clip_level(model):
    monitor = make_monitor(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    norms = [GRAD_CLIP * 3, GRAD_CLIP / 2, GRAD_CLIP * 1.5, GRAD_CLIP / 10]
    clipped, fractions = [], []
    for step, norm in enumerate(norms):
        images, _ = random_batch(step)
        monitor.observe_forward(*model.forward_with_features(images))
        monitor.observe_gradients(torch.tensor(norm))
        monitor.before_update()
        record, _ = monitor.after_update(step, optimizer)
        clipped.append(record["grad_clipped"])
        fractions.append(record["clip_fraction"])
    assert clipped == [True, False, True, False]
    assert fractions == pytest.approx([1 / 1, 1 / 2, 2 / 3, 2 / 4])

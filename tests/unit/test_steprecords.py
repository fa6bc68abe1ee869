"""Deferred step records: no host read on unmonitored steps, one read per drain, NaN still stops."""

from __future__ import annotations

import math
import os
import traceback

import pytest
import torch

from cxrbox.config import TrainConfig
from cxrbox.engine.steprecords import PENDING_KEY, PendingSteps
from cxrbox.engine.train import build_state, train_step
from cxrbox.errors import NonFiniteLossError
from cxrbox.speed.bench_train import random_batch


def _record(step: int, loss: float) -> dict:
    return {"step": step, PENDING_KEY: torch.tensor([loss, 1, 2, 3, 4, 5.0, 0.0])}


def test_drain_reads_every_waiting_record_in_step_order():
    pending = PendingSteps(flush_every=10)
    assert not pending.push(_record(0, 1.5))
    assert pending.push({"step": 1, "loss": 2.5})  # a host record: time to drain
    done = pending.drain()
    assert [r["step"] for r in done] == [0, 1]
    assert [r["loss"] for r in done] == [1.5, 2.5]
    assert done[0]["n_positive"] == 5.0 and PENDING_KEY not in done[0]
    assert pending.drain() == []


def test_a_full_queue_asks_for_a_drain():
    pending = PendingSteps(flush_every=3)
    assert [pending.push(_record(i, 1.0)) for i in range(3)] == [False, False, True]


def test_drain_names_the_first_non_finite_step():
    pending = PendingSteps()
    for step, loss in enumerate([1.0, math.nan, math.inf]):
        pending.push(_record(step, loss))
    with pytest.raises(NonFiniteLossError, match="at step 1 "):
        pending.drain()


@pytest.fixture
def unmonitored_state():
    config = TrainConfig(image_size=64, batch_size=4, width=0.25, monitor_every=1000)
    state = build_state(config, steps_per_epoch=10)
    state.global_step = 1  # step 0 is monitored whatever the period
    return state


def test_unmonitored_deferred_step_never_reads_the_device(unmonitored_state, monkeypatch):
    """No `.item()` / `.tolist()` but AdamW's step counters (host tensors; fused AdamW on CUDA
    keeps them on the device)."""
    images, boxes = random_batch(4, 64)
    reads = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _real=real, _name=name):
            caller = traceback.extract_stack(limit=2)[0]
            if f"torch{os.sep}optim{os.sep}" not in caller.filename:
                reads.append(f"{_name} in {caller.filename}:{caller.lineno}")
            return _real(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    record = train_step(unmonitored_state, images, boxes, defer=True)
    monkeypatch.undo()
    assert reads == []
    assert PENDING_KEY in record


def test_deferred_and_immediate_steps_log_the_same_values(unmonitored_state):
    images, boxes = random_batch(4, 64)
    config = unmonitored_state.config
    torch.manual_seed(0)
    deferred = build_state(config, steps_per_epoch=10)
    torch.manual_seed(0)
    immediate = build_state(config, steps_per_epoch=10)
    pending = PendingSteps()
    for _ in range(3):
        pending.push(train_step(deferred, images, boxes, defer=True))
    expected = [train_step(immediate, images, boxes) for _ in range(3)]
    assert pending.drain() == expected


@pytest.mark.gpu
def test_unmonitored_cuda_step_does_not_synchronise(monkeypatch):
    config = TrainConfig(
        image_size=64, batch_size=4, width=0.25, monitor_every=1000, device="cuda", bf16=True
    )
    state = build_state(config, steps_per_epoch=10)
    images, boxes = random_batch(4, 64)
    train_step(state, images.pin_memory(), boxes, defer=True)  # step 0: monitored, warms up
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(state, images.pin_memory(), boxes, defer=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")

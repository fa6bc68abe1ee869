"""Training-step speed: images/s of the full step and the fraction of the machine's matmul rate.

The timed step is the trainer's own `train_step` (target assignment, forward, loss, backward,
clipping, monitors, optimizer, scheduler) on a fixed random batch, so data loading is excluded
(the data path has its own benchmarks). Model FLOPs come from `torch.utils.flop_counter`; the
achieved GFLOP/s is compared with an fp32 matmul measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from cxrbox.config import TrainConfig
from cxrbox.engine.train import build_state, train_step
from cxrbox.speed.timing import no_tf32, synchronize


@dataclass(frozen=True)
class BenchResult:
    device: str
    image_size: int
    batch_size: int
    compiled: bool
    images_per_s: float
    step_ms: float
    gflop_per_image: float
    achieved_gflops: float
    matmul_gflops: float

    @property
    def fraction_of_matmul(self) -> float:
        return self.achieved_gflops / self.matmul_gflops

    def lines(self) -> list[str]:
        return [
            f"device {self.device}, {self.image_size} px, batch {self.batch_size}"
            + (", torch.compile" if self.compiled else ""),
            f"training step: {self.step_ms:.1f} ms = {self.images_per_s:.1f} images/s",
            f"model: {self.gflop_per_image:.2f} GFLOP per training image (forward + backward)",
            f"achieved {self.achieved_gflops:.1f} GFLOP/s = {self.fraction_of_matmul:.0%} of "
            f"fp32 matmul ({self.matmul_gflops:.1f} GFLOP/s, same run)",
        ]


def random_batch(batch_size: int, image_size: int, seed: int = 0) -> tuple[Tensor, list[Tensor]]:
    """Images [B, 1, S, S] in [0, 1] and one or two random normalized boxes per image."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 1, image_size, image_size, generator=generator)
    boxes = []
    for i in range(batch_size):
        centre = torch.rand(1 + i % 2, 2, generator=generator) * 0.6 + 0.2
        size = torch.rand(1 + i % 2, 2, generator=generator) * 0.3 + 0.1
        boxes.append(torch.cat([centre - size / 2, centre + size / 2], dim=1))
    return images, boxes


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """fp32 (TF32 off) n x n matmul rate on `device`: the machine's practical compute ceiling."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with no_tf32():
        for _ in range(2):
            a @ b
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def training_flops_per_image(config: TrainConfig) -> float:
    """FLOPs of one forward + backward pass per image at config.image_size."""
    from torch.utils.flop_counter import FlopCounterMode

    from cxrbox.modeling.model import build_model

    model = build_model(config.head, config.norm, config.width, stride=config.stride)
    images = torch.zeros(2, 1, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter:
        model(images).float().square().mean().backward()
    return counter.get_total_flops() / 2


def benchmark_train_step(
    config: TrainConfig, steps: int = 10, warmup: int = 3, compile_model: bool = False
) -> BenchResult:
    """Time `steps` training steps after `warmup` untimed ones."""
    device = torch.device(config.device)
    config = config.replace(epochs=1, compile=compile_model)  # the trainer's own --compile path
    state = build_state(config, steps_per_epoch=steps + warmup + 1)
    images, boxes = random_batch(config.batch_size, config.image_size)
    if device.type == "cuda":
        images = images.pin_memory()
    for _ in range(warmup):
        train_step(state, images, boxes)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(state, images, boxes)
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    flops = training_flops_per_image(config)
    images_per_s = config.batch_size / seconds
    return BenchResult(
        device=str(device),
        image_size=config.image_size,
        batch_size=config.batch_size,
        compiled=compile_model,
        images_per_s=images_per_s,
        step_ms=seconds * 1e3,
        gflop_per_image=flops / 1e9,
        achieved_gflops=images_per_s * flops / 1e9,
        matmul_gflops=matmul_gflops(device),
    )


def monitor_overhead(config: TrainConfig, pairs: int = 12) -> float:
    """Relative cost of the monitors: median monitored step / median unmonitored step - 1.

    Monitored and unmonitored steps alternate on one model, so machine drift affects both alike.
    """
    state = build_state(config.replace(epochs=1), steps_per_epoch=2 * pairs + 4)
    images, boxes = random_batch(config.batch_size, config.image_size)
    for _ in range(2):
        train_step(state, images, boxes)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(pairs):
        for monitored in (True, False):
            state.monitor.every = 1 if monitored else 10**9
            if not monitored and state.global_step % state.monitor.every == 0:
                state.global_step += 1  # step 0 of a huge period would still be monitored
            started = time.perf_counter()
            train_step(state, images, boxes)
            synchronize(torch.device(config.device))
            times[monitored].append(time.perf_counter() - started)
    on, off = (sorted(times[m])[pairs // 2] for m in (True, False))
    return on / off - 1.0

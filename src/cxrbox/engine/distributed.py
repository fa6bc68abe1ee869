"""Data-parallel training on `torch.distributed`: join the job, wrap the model, reduce and gather.

`torchrun` (or `cxrbox train --nproc N`, which starts torchrun's elastic agent) sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env` joins that process group
(`nccl` on CUDA, `gloo` on CPU) with a timeout on every collective, so a rank whose peer died
raises instead of waiting forever. Without those variables the world is one process and every
helper here is the identity: the single-process trainer runs the same code.

Rules the trainer follows (see docs/distributed.md):
- global batch = per-rank batch x world size; the LR is NOT scaled (the loss is normalised over
  the global batch, so N ranks x B equals one process with N*B at the same LR);
- gradients are averaged by DDP; the box branches' normaliser (positive cells) is all-reduced
  first (`global_box_normaliser`) so that average equals the single-process loss;
- only rank 0 writes files and logs; every rank reads `last.pt` on resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cxrbox.errors import ConfigError
from cxrbox.modeling.model import BoxRegressor
from cxrbox.modeling.objective import N_MEAN_VALUES

log = logging.getLogger("cxrbox.engine.distributed")

DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "CXRBOX_COLLECTIVE_TIMEOUT_S"  # seconds; overrides DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank in [0, world_size), GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = World()


def world_from_env() -> World:
    """The World torchrun describes in the environment (one process when it says nothing)."""
    try:
        return World(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from exc


def configure_rank_logging() -> None:
    """INFO on rank 0 (or alone), warnings only on the other ranks: one process tells the story."""
    level = logging.INFO if world_from_env().is_main else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")


def init_from_env(device: str) -> tuple[World, torch.device]:
    """Join the job torchrun started (if any); returns the World and this rank's device.

    CUDA ranks use `cuda:LOCAL_RANK` and nccl; CPU ranks use gloo. Collectives time out after
    $CXRBOX_COLLECTIVE_TIMEOUT_S seconds (default 600).
    """
    world = world_from_env()
    target = torch.device(device)
    if not world.distributed:
        return world, target
    if target.type == "cuda":
        target = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend, timeout=timeout)
        log.debug("rank %d/%d joined (%s)", world.rank, world.world_size, backend)
    return world, target


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (generating data, building image caches), then the others."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


class WithFeatures(nn.Module):
    """`forward` = `model.forward_with_features`, so DDP's hooks see the call the trainer makes."""

    def __init__(self, model: BoxRegressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.forward_with_features(images)


def wrap_for_training(
    model: BoxRegressor, world: World, device: torch.device, norm: str
) -> Callable[[Tensor], tuple[Tensor, Tensor]] | None:
    """The callable a step uses for (raw, features): DDP over all ranks; None alone (the step
    then calls `model.forward_with_features` itself).

    `norm="batch"` becomes SyncBatchNorm on CUDA (statistics over the global batch). On CPU,
    PyTorch's SyncBatchNorm has no kernel, so each rank normalises with its own batch
    statistics (logged); `group` and `frozen_batch` hold no batch statistics and need nothing.
    """
    if not world.distributed:
        return None
    if norm == "batch":
        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: the root is no norm layer
        elif world.is_main:
            log.warning(
                "norm=batch on CPU ranks: SyncBatchNorm needs CUDA, so each rank uses its own "
                "batch statistics (use norm=group for results equal to one process)"
            )
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(WithFeatures(model), device_ids=device_ids)
    return cast(Callable[[Tensor], tuple[Tensor, Tensor]], ddp)


def global_box_normaliser(n_positive: Tensor, world: World) -> Tensor:
    """Denominator of the box branches so DDP's gradient average equals one process's loss.

    One process divides the masked box losses by max(P, 1), P = positive cells in its batch.
    With N ranks DDP averages the ranks' gradients (1/N), so each rank divides by
    max(P_global, 1) / N instead; one rank gets back max(P, 1).
    """
    total = n_positive.detach().float().clamp(min=0)
    if world.distributed:
        total = total.clone()
        dist.all_reduce(total)
    return total.clamp(min=1.0) / world.world_size


def global_loss_values(values: Tensor, world: World) -> Tensor:
    """`LossParts.stacked()` of the global batch: losses averaged over ranks, counts summed.

    With `global_box_normaliser`, the mean over ranks of each rank's loss is the loss one
    process computes on the global batch.
    """
    if not world.distributed:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    values[:N_MEAN_VALUES] /= world.world_size
    return values


def gather_batches(tensor: Tensor, world: World) -> Tensor:
    """Concatenate every rank's [B_r, ...] tensor along dim 0 in rank order (B_r may differ)."""
    if not world.distributed:
        return tensor
    tensor = tensor.detach().contiguous()
    sizes = [tensor.new_zeros(1, dtype=torch.long) for _ in range(world.world_size)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def gather_shards(items: list[Any], indices: list[int], n_total: int, world: World) -> list[Any]:
    """Every rank's share back in input order: `items[k]` belongs to input `indices[k]` (the
    rank's `ShardSampler` order). Picklable items (e.g. per-image predictions); the result has
    exactly `n_total` items, each input once, on every rank (ConfigError otherwise).
    """
    if not world.distributed:
        return items
    shards: list[Any] = [None] * world.world_size
    dist.all_gather_object(shards, list(zip(indices, items, strict=True)))
    by_index = dict(pair for shard in shards for pair in shard)
    n_gathered = sum(len(shard) for shard in shards)
    if n_gathered != n_total or sorted(by_index) != list(range(n_total)):
        raise ConfigError(f"gathered {n_gathered} items for {n_total} inputs")
    return [by_index[i] for i in range(n_total)]

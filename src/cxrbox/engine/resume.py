"""Crash safety for the training loop: when to write a mid-epoch checkpoint, and how to re-enter
an epoch from one.

A run can die at any moment (SIGKILL, power loss). `last.pt` is rewritten every
`checkpoint_every_steps` steps and at each epoch end (atomically, see `cxrbox.engine.checkpoint`),
so a crash loses at most that many steps. Resuming from a mid-epoch checkpoint replays nothing and
skips nothing: the sampler's permutation depends only on (seed, epoch), its `start` skips the
batches already trained, augmentation is seeded per (seed, epoch, index), and the global RNGs
are restored at the point where they were captured (after the epoch's DataLoader iterator drew
its base seed, for a mid-epoch checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from cxrbox.engine.checkpoint import restore_rng_state


def step_checkpoint_due(global_step: int, every: int) -> bool:
    """True after the step that brought the count to `global_step` (1-based) when a
    mid-epoch checkpoint is due; `every` = 0 disables them (epoch ends only)."""
    return every > 0 and global_step % every == 0


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written `.<name>.pt.*.tmp` files a crash during a save left behind."""
    stale = sorted(Path(run_dir).glob(".*.pt.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def epoch_batches(
    loader: DataLoader, batches_done: int, batch_size: int, rng: dict[str, Any] | None
) -> Iterator:
    """The batches of the epoch still to train, the global RNGs as the interrupted run had them.

    `loader.sampler` must have a `start` attribute (samples of this rank to skip, see
    `cxrbox.data.loaders.EpochShuffleSampler`); `batches_done` full batches are skipped. `rng` is
    the checkpoint's RNG state when resuming, else None. Creating the iterator draws the
    loader's base seed from the global torch RNG: a checkpoint taken at an epoch end was
    captured before that draw, a mid-epoch one after it, so the state is restored on that side.
    """
    loader.sampler.start = batches_done * batch_size  # type: ignore[attr-defined]
    if rng is not None and batches_done == 0:
        restore_rng_state(rng)
    batches = iter(loader)
    if rng is not None and batches_done > 0:
        restore_rng_state(rng)
    return batches

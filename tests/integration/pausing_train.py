"""Run `cxrbox` (a real process) that freezes at a chosen moment, for the kill -9 tests.

    python tests/integration/pausing_train.py WHERE N READY_FILE -- CXRBOX_ARGS...

(what `tests/integration/test_kill_resume.py` starts, one real process per run).

WHERE is `step` (inside the N-th training step, after the forward pass), `save` (halfway
through writing the N-th last.pt: half the bytes written and flushed) or `eval` (inside the
N-th evaluation). At that moment READY_FILE is created and the process sleeps until killed.
WHERE `none` runs cxrbox unchanged. With `--rng-draws` before WHERE, each step also draws
from the global torch, numpy and python RNGs and scales its loss by them (as dropout or a
random augmentation would), so a resume that fails to restore the RNGs shows.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrbox import cli
from cxrbox.engine import checkpoint
from cxrbox.engine import train as train_module


def freeze(ready: Path) -> None:
    ready.write_text("ready\n")
    time.sleep(3600)


def pause_on_call(owner: object, name: str, nth: int, ready: Path) -> None:
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            freeze(ready)
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


def pause_in_save(nth: int, ready: Path) -> None:
    real_save = checkpoint.torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        if (
            not Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
            .name.lstrip(".")
            .startswith("last.pt")
        ):
            return real_save(obj, handle, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] != nth:
            return real_save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        freeze(ready)

    checkpoint.torch.save = save


def draw_from_global_rngs(owner: object = train_module) -> None:
    """Make every step's loss depend on one draw from each global RNG."""
    real = owner.compute_loss  # type: ignore[attr-defined]

    def compute_loss(*args, **kwargs):
        parts = real(*args, **kwargs)
        factor = 1.0 + 0.1 * (torch.rand(()).item() + np.random.rand() + random.random())
        return dataclasses.replace(parts, total=parts.total * factor)

    owner.compute_loss = compute_loss  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    if argv[0] == "--rng-draws":
        draw_from_global_rngs()
        argv = argv[1:]
    where, nth, ready, separator, *cxrbox_args = argv
    assert separator == "--", argv
    return pause_and_run(where, int(nth), Path(ready), cxrbox_args)


def pause_and_run(where: str, nth: int, ready: Path, cxrbox_args: list[str]) -> int:
    if where == "step":
        pause_on_call(train_module, "compute_loss", nth, ready)
    elif where == "eval":
        pause_on_call(train_module, "evaluate_image_predictions", nth, ready)
    elif where == "save":
        pause_in_save(nth, ready)
    elif where != "none":
        raise SystemExit(f"unknown WHERE {where!r}")
    return cli.main(cxrbox_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

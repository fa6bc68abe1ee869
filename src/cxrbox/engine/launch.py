"""`cxrbox train --nproc N`: torchrun's elastic agent on this machine, started from Python.

The agent (`torch.distributed.launcher.elastic_launch`, what `torchrun --standalone` runs)
spawns N workers, each running `cxrbox.engine.train.train` as one rank. When a worker fails, the
agent stops the others and this raises `TrainingError` with the failing rank's error; no restarts.
For several machines use `torchrun` itself (docs/distributed.md).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from cxrbox.config import TrainConfig, config_from_dict
from cxrbox.errors import TrainingError


def launch_local(
    nproc: int,
    config: TrainConfig,
    resume: str | Path | None,
    progress: bool = True,
    overwrite: bool = False,
) -> Any:
    """Train on `nproc` local ranks; returns rank 0's `TrainResult`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"cxrbox-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
    )
    worker_args = (config.to_dict(), None if resume is None else str(resume), progress, overwrite)
    # torchrun gives each rank one thread unless OMP_NUM_THREADS says otherwise; its Python API
    # does not, so N ranks of all-core thread pools would oversubscribe the machine. Share it.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        results = elastic_launch(launch, train_worker)(*worker_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise TrainingError(
            f"rank {rank} of {nproc} failed (exit code {failure.exitcode}): "
            f"{_failure_message(failure)}; the other ranks were stopped"
        ) from None
    return results[0]


def _failure_message(failure: Any) -> str:
    message = getattr(failure, "message", "") or ""
    if isinstance(message, dict):  # the error file's JSON: {"message": ..., "extraInfo": ...}
        message = message.get("message", message)
    return str(message).strip().splitlines()[-1] if str(message).strip() else "see its log"


def train_worker(
    config_values: dict[str, Any], resume: str | None, progress: bool, overwrite: bool = False
) -> Any:
    """One rank (a spawned process): logging as the CLI sets it, then `train`."""
    from cxrbox.engine import distributed
    from cxrbox.engine.train import train

    distributed.configure_rank_logging()
    try:
        config = config_from_dict(config_values)
        return train(config, resume=resume, progress=progress, overwrite=overwrite)
    finally:
        distributed.shutdown()

"""What every speed measurement needs: a device barrier and full-precision matmuls.

Shared by the training-step benchmark (`cxrbox.speed.bench_train`) and the speed gate
(`cxrbox.speed.gate`), which times a matmul as its yardstick.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """CUDA matmuls in full FP32 inside the block (TF32 would inflate a matmul yardstick)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU, which runs synchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

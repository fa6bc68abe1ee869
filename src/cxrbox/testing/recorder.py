"""What the optimizer really did during the kit's training: `OptimizerRecorder`.

Hooks on the optimizer (`register_step_pre_hook` / `register_step_post_hook`) and on every
trainable parameter (`register_hook`, which runs before autograd adds the new gradient to
`.grad`) record, whatever the optimizer and however your loop is written:
- the LR of every param group at each optimizer step (the LR actually used, whether a scheduler
  or an in-loop warmup set it);
- the number of optimizer steps;
- stale gradients: at the first backward into a parameter after an optimizer step, the
  gradient it already holds. A loop that clears gradients (before the backward, or after the
  step as Ultralytics does) leaves None or zeros there; a loop that skips `zero_grad` adds every
  new gradient to the old ones. Backward passes between two optimizer steps (gradient
  accumulation) are allowed to add up.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class OptimizerRecorder:
    """Context manager recording one optimizer (and the model's parameters) while active.

    lrs: per optimizer step, the LR of every param group (`[step][group]`).
    step_calls: per optimizer step, the index of the train_step call that took it (set
        `call` before each call; with gradient accumulation steps are not one call apart).
    steps: optimizer steps taken.
    stale: (optimizer step after which it happened, parameter name, |stale grad|, |new grad|)
        for each parameter whose gradient was not cleared after an optimizer step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.lrs: list[list[float]] = []
        self.step_calls: list[int] = []
        self.call = 0  # the train_step call under way, set by the caller
        self.steps = 0
        self.stale: list[tuple[int, str, float, float]] = []
        self._seen: set[str] = set()  # parameters that got a gradient since the last step
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> OptimizerRecorder:
        self._handles.append(self.optimizer.register_step_pre_hook(self._before_step))
        self._handles.append(self.optimizer.register_step_post_hook(self._after_step))
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self._handles.append(param.register_hook(self._grad_hook(name, param)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.lrs.append([float(group["lr"]) for group in self.optimizer.param_groups])
        self.step_calls.append(self.call)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        self._seen.clear()

    def _grad_hook(self, name: str, param: Tensor) -> Any:
        def hook(grad: Tensor) -> None:
            if name in self._seen:
                return
            self._seen.add(name)
            old = param.grad
            if self.steps > 0 and old is not None:
                stale = float(old.detach().norm())
                if stale > 0:
                    self.stale.append((self.steps, name, stale, float(grad.detach().norm())))

        return hook

    def lr_curves(self) -> list[list[float]]:
        """The recorded LRs per param group: `[group][step]`."""
        n_groups = len(self.optimizer.param_groups)
        return [[step[g] for step in self.lrs] for g in range(n_groups)]

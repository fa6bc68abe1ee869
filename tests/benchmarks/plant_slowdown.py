"""`cxrbox ...` with a planted slowdown, to check that the speed gate catches one.

An extra full-resolution conv before the backbone (3x3, 1 -> C channels, then 1x1 back; C from
$PLANT_CHANNELS, default 32). Usage:
    PLANT_CHANNELS=32 python tests/benchmarks/plant_slowdown.py bench --compare base.json
"""

from __future__ import annotations

import os
import sys

from torch import Tensor, nn

from cxrbox.cli import main
from cxrbox.modeling import model as model_module

CHANNELS = int(os.environ.get("PLANT_CHANNELS", "32"))
original_init = model_module.Backbone.__init__
original_forward = model_module.Backbone.forward


def planted_init(self: nn.Module, in_channels: int, norm: str, width: float) -> None:
    original_init(self, in_channels, norm, width)
    self.planted = nn.Sequential(
        nn.Conv2d(in_channels, CHANNELS, 3, padding=1), nn.Conv2d(CHANNELS, in_channels, 1)
    )


def planted_forward(self: nn.Module, x: Tensor) -> Tensor:
    return original_forward(self, x + self.planted(x))


if __name__ == "__main__":
    model_module.Backbone.__init__ = planted_init  # type: ignore[method-assign]
    model_module.Backbone.forward = planted_forward  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))

"""cxrbox: a box-regression trainer for chest X-rays that cannot stall silently.

The Python API (`cxrbox.api`): `train`, `evaluate`, `predict`, `export`, `load_model`, `synth`
and their types, e.g.

    import cxrbox
    result = cxrbox.train(cxrbox.TrainConfig(images=..., labels=..., epochs=12))
    model = cxrbox.load_model(result.run_dir / "best.pt")
    predictions = model.predict("stage_2_test_images")

They are imported on first use (PEP 562), so `import cxrbox` and `cxrbox --help` do not load
torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# albumentations checks PyPI for updates at import time unless told not to; cxrbox must never
# wait on the network, so this is set before any submodule can import albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# The names `import cxrbox` offers: all but __version__ from cxrbox.api, loaded on first use.
__all__ = [
    "EvalResult", "ExportResult", "Model", "Prediction", "TrainConfig", "TrainResult",
    "__version__", "evaluate", "export", "load_model", "predict", "synth", "train",
]  # fmt: skip
_API_NAMES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # type checkers and editors see the names; the interpreter loads them lazily
    from cxrbox.api import (
        EvalResult,
        ExportResult,
        Model,
        Prediction,
        TrainConfig,
        TrainResult,
        evaluate,
        export,
        load_model,
        predict,
        synth,
        train,
    )


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        value = getattr(importlib.import_module("cxrbox.api"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cxrbox' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})

"""Root test configuration: hypothesis profiles, GPU auto-skip, RNG isolation.

Profiles (pick with HYPOTHESIS_PROFILE): `dev` (default, quick), `ci` (derandomized, no
deadline, so a failure reproduces), `nightly` (many examples).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("nightly", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; no GPU visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    """Give every test the RNG state it found, so tests cannot leak randomness into each other."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.random.set_rng_state(torch_state)


@pytest.fixture
def cxrbox_plugin_args() -> list[str]:
    """pytest options that load the cxrbox plugin in a subprocess: none when cxrbox is installed
    (its `pytest11` entry point loads it), `-p cxrbox.testing.plugin` from a source checkout."""
    from importlib.metadata import entry_points

    installed = any(e.name == "cxrbox" for e in entry_points(group="pytest11"))
    return [] if installed else ["-p", "cxrbox.testing.plugin"]

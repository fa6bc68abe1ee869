"""Gate fixtures: the shifted-copies batch and the default config, shared by the gate modules."""

from __future__ import annotations

import pytest

from cxrbox.config import TrainConfig
from cxrbox.testing import ShiftedCopies, shifted_copies


@pytest.fixture(scope="session")
def copies() -> ShiftedCopies:
    return shifted_copies(n_fit=8, n_heldout=8, image_size=128, seed=0)


@pytest.fixture(scope="session")
def default_config() -> TrainConfig:
    return TrainConfig()

"""Integration fixtures: one tiny synthetic RSNA-format set per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrbox.config import TrainConfig
from cxrbox.data.synthetic.rsna_like import write_rsna_like
from cxrbox.engine import train as train_module


@pytest.fixture(scope="session")
def tiny_rsna(tmp_path_factory) -> Path:
    """32 synthetic 256 px DICOMs + CSV in the RSNA layout (half positive, for a quick signal)."""
    root = tmp_path_factory.mktemp("tiny_rsna")
    write_rsna_like(root, 32, seed=7, image_size=256, positive_fraction=0.5)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_rsna, tmp_path_factory) -> Path:
    """`last.pt` of a 1-epoch run on `tiny_rsna` (64 px, width 0.25): a model to predict with."""
    config = tiny_config_for(tiny_rsna, tmp_path_factory.mktemp("tiny_checkpoint") / "run")
    result = train_module.train(config.replace(epochs=1, width=0.25), progress=False)
    return result.run_dir / "last.pt"


@pytest.fixture
def tiny_config(tiny_rsna, tmp_path) -> TrainConfig:
    """A fast training config on `tiny_rsna`: 64 px, narrow model, 2 epochs."""
    return tiny_config_for(tiny_rsna, tmp_path / "run")


def tiny_config_for(tiny_rsna: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        images=str(tiny_rsna / "stage_2_train_images"),
        labels=str(tiny_rsna / "stage_2_train_labels.csv"),
        out=str(out),
        image_size=64,
        batch_size=8,
        width=0.5,
        epochs=2,
        val_fraction=0.25,
        plots=False,
    )


def crash_in_evaluation(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """Make the `nth` evaluation of training raise KeyboardInterrupt: epoch `nth`'s steps are
    logged, its checkpoint is not written (`monkeypatch.undo()` ends it)."""
    real_sweep = train_module.score_threshold_sweep  # called once per validation
    calls = {"n": 0}

    def crash_on_nth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            raise KeyboardInterrupt
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(train_module, "score_threshold_sweep", crash_on_nth)

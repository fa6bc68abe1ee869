"""TrainConfig: file loading, overrides, validation, and the saved resolved config."""

from __future__ import annotations

import json

import pytest

from cxrbox.config import TrainConfig, load_config, save_config
from cxrbox.errors import ConfigError


def test_toml_file_then_overrides_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 7\nhead = "coordconv"\nlr = 0.01\n')
    config = load_config(path, {"epochs": 3, "lr": None})
    assert (config.epochs, config.head, config.lr) == (3, "coordconv", 0.01)


def test_json_file_round_trips_through_save(tmp_path):
    original = TrainConfig(epochs=5, image_size=128, norm="group")
    save_config(original, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == original


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ConfigError, match=r"bad\.json.*epochz"):
        load_config(path)


def test_malformed_file_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 100),
        ("head", "mlp"),
        ("norm", "layer"),
        ("iou_loss", "iou"),
        ("epochs", 0),
        ("val_fraction", 1.0),
        ("min_lr_ratio", 2.0),
        ("device", "tpu"),
    ],
)
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_images_without_labels_is_rejected():
    with pytest.raises(ConfigError, match="images and labels"):
        TrainConfig(images="x")

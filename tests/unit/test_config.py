"""TrainConfig: file loading, overrides, validation, and the saved resolved config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxrbox.config import TrainConfig, config_from_saved, load_config, save_config
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
    with pytest.raises(ConfigError, match="not valid TOML"):
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
        ("stride", 8),
    ],
)
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_images_without_labels_is_rejected():
    with pytest.raises(ConfigError, match="images and labels"):
        TrainConfig(images="x")


def test_pooled_head_with_stride_16_is_a_config_error():
    with pytest.raises(ConfigError, match=r"stride 16 .*pooled head has a 1x1 grid"):
        TrainConfig(head="pooled", stride=16)


def test_cli_stride_reaches_the_config():
    from cxrbox.cli import build_parser
    from cxrbox.commands.train import OVERRIDES

    args = build_parser().parse_args(["train", "--stride", "16", "--head", "coordconv"])
    config = load_config(None, {name: getattr(args, name) for name in OVERRIDES})
    assert (config.stride, config.head) == (16, "coordconv")


def test_a_saved_config_without_stride_is_stride_32_whatever_the_default():
    saved = TrainConfig(stride=16).to_dict()
    del saved["stride"]  # as written before the field existed
    assert config_from_saved(saved, "old.pt").stride == 32
    assert config_from_saved({**saved, "stride": 16}, "new.pt").stride == 16


def test_a_saved_config_from_before_ema_and_tuning_keeps_raw_weights_and_its_fixed_threshold():
    saved = TrainConfig().to_dict()
    for key in ("ema", "tune_score_threshold"):
        del saved[key]  # as written before the fields existed
    old = config_from_saved(saved, "old.pt")
    assert (old.ema, old.tune_score_threshold) == (False, False)
    assert TrainConfig().ema and TrainConfig().tune_score_threshold  # today's defaults
    assert config_from_saved({**saved, "ema": True}, "new.pt").ema


IMPORT_CONFIG_AND_LIST_MODULES = (
    "import json, sys, cxrbox.config; print(json.dumps(list(sys.modules)))"
)


def test_importing_the_config_loads_no_torch():
    """`cxrbox.config` is the ground floor: a fresh interpreter that imports it has no torch."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, cxrbox.config; print(json.dumps(list(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modules = set(json.loads(loaded))
    assert "cxrbox.config" in modules
    assert not {"torch", "numpy"} & modules, sorted({"torch", "numpy"} & modules)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "c.toml",
            'epochs = "ten"\n',
            r"c\.toml: epochs = 'ten' \(a string\): expected an integer",
        ),
        ("c.json", "[1, 2]", r"c\.json: expected a table/mapping.*\[1, 2\] \(a list\)"),
        ("run.cfg", "{}", r"run\.cfg.*'\.cfg'.*\.toml, \.json, \.yaml, \.yml"),
    ],
    ids=["string_for_an_integer", "not_a_mapping", "unknown_suffix"],
)
def test_a_refused_config_file_names_itself_and_what_was_wrong(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("bf16", "true", r"bf16 = 'true' \(a string\): expected true or false"),
        ("augment", 1, r"augment = 1 \(an integer\): expected true or false"),
        ("epochs", 3.0, r"epochs = 3\.0 \(a float\): expected an integer"),
        ("seed", True, r"seed = True \(true or false\): expected an integer"),
        ("lr", "0.01", r"lr = '0\.01' \(a string\): expected a number"),
        ("head", 3, r"head = 3 \(an integer\): expected a string"),
        ("images", 3, r"images = 3 \(an integer\): expected a string or null"),
        ("out", None, r"out = None \(null\): expected a string"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_coerced(field, value, expected):
    with pytest.raises(ConfigError, match=expected):
        TrainConfig(**{field: value})


def test_an_integer_for_a_float_field_becomes_that_float(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 1, "images": None, "labels": None}))
    config = load_config(path)
    assert type(config.lr) is float and config.lr == 1.0
    assert type(TrainConfig(grad_clip=5).grad_clip) is float


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochz = 3\nbatchsize = 4\nfrobnicate = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "'batchsize' (did you mean 'batch_size'?)" in message
    assert "'epochz' (did you mean 'epochs'?)" in message
    assert "'frobnicate';" in message  # nothing close: no suggestion


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_yaml_config_is_read_as_yaml_with_yaml_1_2_floats(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    path.write_text("epochs: 7\nhead: coordconv\nlr: 1e-3\nweight_decay: 5.0e-4\nbf16: true\n")
    config = load_config(path)
    assert (config.epochs, config.head, config.lr, config.weight_decay, config.bf16) == (
        7, "coordconv", 1e-3, 5e-4, True,
    )  # fmt: skip


def test_malformed_yaml_is_a_one_line_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML: [^\n]*line 2") as info:
        load_config(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"), [("lr", -1.0), ("grad_clip", 0.0), ("width", 0.0), ("num_workers", -1)]
)
def test_an_out_of_range_number_names_its_own_field_and_value(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be >.*got {value:g}"):
        TrainConfig(**{field: value})

"""`cxrbox COMMAND --help`: every option says what it does and what it is when not given."""

from __future__ import annotations

import argparse

import pytest

from cxrbox.cli import build_parser
from cxrbox.config import TrainConfig


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(command: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in command._actions if not isinstance(a, argparse._HelpAction)]


def help_text(command: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help as `--help` prints it, defaults filled in, on one line."""
    return " ".join(command._get_formatter()._expand_help(action).split())


COMMANDS = subcommands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name):
    command = COMMANDS[name]
    missing = [a.option_strings or a.dest for a in options(command) if not (a.help or "").strip()]
    assert missing == [], f"cxrbox {name}: options without help text: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_with_a_default_value_shows_it(name):
    command = COMMANDS[name]
    for action in options(command):
        default = action.default
        if action.nargs == 0 or default is None or default is argparse.SUPPRESS:
            continue  # a flag, or an option whose absence its help explains
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        if (name, action.dest) == ("synth", "positive_fraction"):
            shown = "1/3"  # 0.333...: its help writes it as a fraction (checked below)
        text = help_text(command, action)
        assert f"default: {shown}" in text or f"default {shown}" in text, (
            f"cxrbox {name} {action.option_strings}: help {text!r} does not show {shown!r}"
        )


def test_synth_positive_fraction_shows_its_default_as_a_fraction():
    action = next(a for a in options(COMMANDS["synth"]) if a.dest == "positive_fraction")
    assert action.default == 1 / 3 and "(default 1/3)" in help_text(COMMANDS["synth"], action)


@pytest.mark.parametrize("name", ["train", "diagnose"])
def test_options_that_fall_back_to_the_config_show_trainconfig_s_value(name):
    """They default to None (so a --config file is not overridden): the help shows the value
    a run gets from TrainConfig when neither sets it."""
    command, config = COMMANDS[name], TrainConfig()
    checked = 0
    for action in options(command):
        value = getattr(config, action.dest, None)
        if action.default is not None or value is None:
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        expected = f"(default: TrainConfig's {action.dest} = {shown})"
        assert expected in help_text(command, action), action.option_strings
        checked += 1
    assert checked >= (20 if name == "train" else 2)


def test_a_changed_trainconfig_default_changes_the_help(monkeypatch):
    import cxrbox.config

    class Shifted(TrainConfig):
        def __init__(self) -> None:
            super().__init__(epochs=99)

    monkeypatch.setattr(cxrbox.config, "TrainConfig", Shifted)
    train = subcommands()["train"]
    epochs = next(a for a in options(train) if a.dest == "epochs")
    assert "(default: TrainConfig's epochs = 99)" in help_text(train, epochs)


@pytest.mark.parametrize(
    ("name", "dest"),
    [("train", "head"), ("train", "norm"), ("train", "iou_loss"), ("train", "stride"),
     ("bench", "head"), ("diagnose", "head"), ("cache", "intensity")],
)  # fmt: skip
def test_options_with_a_fixed_set_of_values_list_them(name, dest):
    action = next(a for a in options(COMMANDS[name]) if a.dest == dest)
    assert action.choices
    assert "{" + ",".join(map(str, action.choices)) + "}" in COMMANDS[name].format_help()


def test_synth_minimum_size_is_the_generator_s():
    from cxrbox.commands.synth import MIN_SYNTH_SIZE
    from cxrbox.data.synthetic.anatomy import MIN_IMAGE_SIZE

    assert MIN_SYNTH_SIZE == MIN_IMAGE_SIZE

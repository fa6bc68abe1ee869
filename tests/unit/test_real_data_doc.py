"""docs/real-data.md says what the code does: its commands parse with cxrbox's own parser, in
the order the end-to-end test (tests/integration/test_real_data_recipe.py) runs them, and its
Python example uses names `import cxrbox` has."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

import cxrbox
from cxrbox.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "real-data.md"
VARIABLES = {"$DATA": "/data/rsna", "$CACHE": "/cache"}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def recipe_commands() -> list[list[str]]:
    """Each `cxrbox ...` line of the bash blocks (continuations joined, variables filled)."""
    lines = re.sub(r"\\\n\s*", " ", "".join(_blocks("bash"))).splitlines()
    commands = []
    for line in lines:
        if line.startswith("cxrbox "):
            for name, value in VARIABLES.items():
                line = line.replace(name, value)
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


@pytest.mark.parametrize("argv", recipe_commands(), ids=lambda argv: argv[0])
def test_each_recipe_command_parses(argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"cxrbox {shlex.join(argv)}: rejected by the parser (exit {exc.code})")
    assert args.func is not None


def test_the_recipe_has_the_steps_the_end_to_end_test_runs():
    commands = recipe_commands()
    assert [argv[0] for argv in commands] == ["synth", "cache", "train", "eval", "predict"]
    flat = {arg for argv in commands for arg in argv}
    assert {"--layout", "--cache-dir", "--sample-submission"} <= flat


def test_the_python_example_uses_names_import_cxrbox_has():
    (example,) = _blocks("python")
    used = {
        node.attr
        for node in ast.walk(ast.parse(example))
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "cxrbox"
    }
    assert used == {"TrainConfig", "train", "load_model"}
    assert used <= set(cxrbox.__all__)
    fields = {
        kw.arg
        for node in ast.walk(ast.parse(example))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "TrainConfig"
        for kw in node.keywords
    }
    assert fields <= set(cxrbox.TrainConfig.__dataclass_fields__)

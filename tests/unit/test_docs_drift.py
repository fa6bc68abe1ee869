"""The docs say what the code does: commands, flags, module paths and files in README.md and docs/.

Only code is read (fenced blocks and inline spans): prose may name anything. Cheap on purpose:
the parsers come from `cxrbox.cli.build_parser()` (command modules import nothing heavy), and
module paths are found with importlib's path finder in `src/`, never imported.

- every `cxrbox SUBCOMMAND --flag` names a subcommand and one of that subcommand's flags; a
  span that is a flag alone (`--no-ema`) names a flag of some subcommand or of the pytest plugin;
- every dotted `cxrbox.X.Y` (or `cxrbox.X:Y`) names a module, and what follows the module a
  name defined at its top level;
- every `python -m cxrbox.X` names a module that runs as a script;
- every repository file named (`tests/...`, `src/...`, `.ci/...`, `cxrbox/...py`) exists.

A Markdown table whose first header cell is "old path" lists what no longer exists (the moved
import paths): its first column is not checked.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Callable
from functools import cache
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

import pytest

from cxrbox.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

COMMAND = re.compile(r"(?<![\w.\-/\[])cxrbox\s+([a-z][a-z0-9-]*)\b([^#;&|]*)")
FLAG = re.compile(r"(?<!\S)(--[a-z][a-z0-9-]*)")
DOTTED = re.compile(r"(?<![\w.\-/])cxrbox(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")
RUN_MODULE = re.compile(r"(?<!\S)-m\s+(cxrbox(?:\.\w+)*)")
REPO_FILE = re.compile(r"(?<![\w./~-])((?:tests|src|\.ci|\.github)/[\w./-]*\w|cxrbox/[\w/]+\.py)")
FENCE = re.compile(r"^\s*```")
INLINE = re.compile(r"`([^`]+)`")


def _drop_old_path_columns(lines: list[str]) -> list[str]:
    """Blank the first cell of each row of a table headed `| old path | ...`."""
    out, in_old_table = [], False
    for line in lines:
        is_row = line.lstrip().startswith("|")
        if not is_row:
            in_old_table = False
        elif not in_old_table and line.split("|")[1].strip().lower() == "old path":
            in_old_table = True
        elif in_old_table:
            cells = line.split("|")
            cells[1] = " "
            line = "|".join(cells)
        out.append(line)
    return out


def code_snippets(text: str) -> list[str]:
    """Each command line of the fenced blocks (continuations joined) and each inline span."""
    snippets: list[str] = []
    prose: list[str] = []
    block: list[str] | None = None
    for line in _drop_old_path_columns(text.splitlines()):
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                snippets.extend(re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines())
                block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    snippets.extend(" ".join(span.split()) for span in INLINE.findall("\n".join(prose)))
    return snippets


def commands_in(snippet: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of each `cxrbox SUBCOMMAND ...` in a snippet, comments cut off."""
    return [(name, FLAG.findall(rest)) for name, rest in COMMAND.findall(snippet)]


@cache
def _doc_snippets() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(ROOT)), snippet)
        for path in DOC_FILES
        for snippet in code_snippets(path.read_text())
    ]


@cache
def _subcommand_flags() -> dict[str, set[str]]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: {flag for action in sub._actions for flag in action.option_strings}
        for name, sub in subparsers.choices.items()
    }


def _plugin_options() -> set[str]:
    """The pytest plugin's options: its module-level `--...` string constants, read from its
    source (importing the kit imports torch)."""
    tree = ast.parse((SRC / "cxrbox" / "testing" / "plugin.py").read_text())
    return {
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and node.value.value.startswith("--")
    }


@cache
def _top_level_names(path: str) -> frozenset[str]:
    """Names a module defines at its top level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    body = list(ast.parse(Path(path).read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            body.extend([*node.body, *node.orelse])
    return frozenset(names)


def _find_module(dotted: str) -> tuple[ModuleSpec, list[str]]:
    """The deepest module `dotted` names under src/, and the parts after it."""
    parts = dotted.replace(":", ".").split(".")
    spec = PathFinder.find_spec(parts[0], [str(SRC)])
    assert spec is not None, f"no package {parts[0]!r} in {SRC}"
    depth = 1
    while depth < len(parts) and spec.submodule_search_locations is not None:
        child = PathFinder.find_spec(
            ".".join(parts[: depth + 1]), list(spec.submodule_search_locations)
        )
        if child is None:
            break
        spec, depth = child, depth + 1
    return spec, parts[depth:]


def dotted_path_problem(dotted: str) -> str | None:
    """Why `dotted` names nothing in src/, or None when its module and first name exist."""
    spec, rest = _find_module(dotted)
    if not rest:
        return None
    if spec.origin is None or rest[0] not in _top_level_names(spec.origin):
        return f"module {spec.name} has no submodule or top-level name {rest[0]!r}"
    return None


def run_module_problem(dotted: str) -> str | None:
    """Why `python -m dotted` cannot run, or None."""
    spec, rest = _find_module(dotted)
    if rest:
        return f"python -m: no module {dotted} (deepest found: {spec.name})"
    if spec.submodule_search_locations is not None:
        main = Path(spec.submodule_search_locations[0]) / "__main__.py"
        return None if main.exists() else f"python -m: package {dotted} has no __main__.py"
    assert spec.origin is not None
    source = Path(spec.origin).read_text()
    guarded = '__name__ == "__main__"' in source
    return None if guarded else f"python -m: {dotted} has no __main__ guard"


def repository_file_problem(name: str) -> str | None:
    """Why a file named in the docs is not in the repository (`cxrbox/...` is under src/)."""
    path = ROOT / "src" / name if name.startswith("cxrbox/") else ROOT / name
    return None if path.exists() else f"{name} does not exist"


# The extraction itself: if it found nothing, the drift tests below would pass on any docs.


def test_fenced_commands_join_continuations_and_drop_comments():
    text = "```bash\ncxrbox train --resume r \\\n    --epochs 2  # then --no-ema\n```\n"
    snippets = code_snippets(text)
    assert [commands_in(s) for s in snippets] == [[("train", ["--resume", "--epochs"])]]


def test_inline_spans_across_a_line_break_are_one_command():
    text = "Run `cxrbox bench --compare BASE.json\n--max-slowdown 0.15` on it; `cxrbox[deploy]`.\n"
    found = [c for s in code_snippets(text) for c in commands_in(s)]
    assert found == [("bench", ["--compare", "--max-slowdown"])]


def test_first_column_of_an_old_path_table_is_not_read():
    text = "| old path | new path |\n|---|---|\n| `cxrbox.gone` | `cxrbox.config` |\n\n`cxrbox.b`\n"
    assert code_snippets(text) == ["cxrbox.config", "cxrbox.b"]


def test_a_stale_module_path_or_name_is_reported():
    assert dotted_path_problem("cxrbox.engine.train.train") is None
    assert dotted_path_problem("cxrbox.diagnostics.own_detector:make_detector") is None
    assert dotted_path_problem("cxrbox.cache") is not None  # moved to cxrbox.data.cache
    assert dotted_path_problem("cxrbox.engine.train.no_such_function") is not None
    assert run_module_problem("cxrbox.engine.checkpoint") is None
    assert run_module_problem("cxrbox.config") is not None  # no __main__ guard


def test_the_docs_are_read():
    commands = {c for _, s in _doc_snippets() for c, _ in commands_in(s)}
    assert set(_subcommand_flags()) <= commands, "a subcommand the docs never show"


# The drift tests.


@pytest.mark.parametrize("doc", [str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_every_cxrbox_command_and_flag_in_the_docs_exists(doc):
    flags_of = _subcommand_flags()
    stale = []
    for where, snippet in _doc_snippets():
        for name, flags in commands_in(snippet) if where == doc else []:
            if name not in flags_of:
                stale.append(f"`{snippet}`: no subcommand {name!r}")
                continue
            stale.extend(
                f"`{snippet}`: `cxrbox {name}` has no {flag}"
                for flag in flags
                if flag not in flags_of[name]
            )
    assert not stale, f"{doc}:\n" + "\n".join(stale)


@pytest.mark.parametrize("doc", [str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_every_flag_written_alone_in_the_docs_exists(doc):
    known = set().union(*_subcommand_flags().values()) | _plugin_options()
    stale = [
        f"`{snippet}`: no subcommand or the pytest plugin has {flag}"
        for where, snippet in _doc_snippets()
        if where == doc and snippet.startswith("--")
        for flag in FLAG.findall(snippet)
        if flag not in known
    ]
    assert not stale, f"{doc}:\n" + "\n".join(stale)


def _stale(doc: str, pattern: re.Pattern[str], problem: Callable[[str], str | None]) -> list[str]:
    """`snippet`: why, for each match of `pattern` in the code of `doc` that has a problem."""
    return [
        f"`{snippet}`: {why}"
        for where, snippet in _doc_snippets()
        if where == doc
        for found in pattern.findall(snippet)
        if (why := problem(found))
    ]


@pytest.mark.parametrize("doc", [str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_every_cxrbox_module_path_in_the_docs_exists(doc):
    stale = _stale(doc, DOTTED, dotted_path_problem) + _stale(doc, RUN_MODULE, run_module_problem)
    assert not stale, f"{doc}:\n" + "\n".join(stale)


@pytest.mark.parametrize("doc", [str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_every_repository_file_in_the_docs_exists(doc):
    missing = _stale(doc, REPO_FILE, repository_file_problem)
    assert not missing, f"{doc}:\n" + "\n".join(missing)

"""The Python API (`cxrbox.api`, re-exported by `import cxrbox`): its docstring examples run as
doctests, in source order with shared names (the module's example trains the model the others
use: 24 synthetic images of 128 px, one epoch at 64 px), and `import cxrbox` stays light."""

from __future__ import annotations

import doctest
import inspect
import io
import subprocess
import sys
import tempfile

import pytest

import cxrbox
from cxrbox import api

# What the API offers as calls (the rest of cxrbox.__all__ are its result and config types).
CALLS = ("synth", "train", "load_model", "Model", "evaluate", "predict", "export")


def test_docstring_examples_of_the_api_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' mkdtemp()
    tests = doctest.DocTestFinder().find(api, "cxrbox.api")
    tests = sorted((t for t in tests if t.examples), key=lambda t: t.lineno or 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    shared: dict = {}  # each example continues the ones above it in the file
    report = io.StringIO()
    for test in tests:
        test.globs = shared
        runner.run(test, out=report.write, clear_globs=False)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
    assert result.attempted >= 20  # a check that the examples were found at all
    with_examples = {t.name.removeprefix("cxrbox.api.") for t in tests}
    assert set(CALLS) <= with_examples, f"no example: {set(CALLS) - with_examples}"


def test_cxrbox_offers_the_api_names_lazily():
    for name in cxrbox.__all__:
        assert getattr(cxrbox, name) is getattr(api, name, cxrbox.__version__)
        assert name in dir(cxrbox)
    assert {"train", "evaluate", "predict", "export", "load_model", "TrainConfig"} <= set(
        cxrbox.__all__
    )
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        cxrbox.trian  # noqa: B018


def test_every_api_call_documents_itself():
    for name in CALLS:
        doc = inspect.getdoc(getattr(cxrbox, name))
        assert doc and ">>>" in doc, name


@pytest.mark.parametrize(
    "code",
    [
        "import cxrbox",
        "from cxrbox.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["import cxrbox", "cxrbox --help"],
)
def test_import_and_help_do_not_load_torch(code):
    check = f"{code}\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr

"""pytest plugin (entry point `pytest11`): `pytest --cxrbox-detector package.module:name` adds
the whole `cxrbox.testing` checklist on that detector as ordinary test items, one per check
(`cxrbox[position_sensitivity]`, ...), with no test file to write. Select with `-k` as usual.
A check the detector gives no input for (no transform, no BatchNorm layer) is skipped.
The module is imported with the invocation directory and pytest's rootdir first on sys.path
(the `pytest` console script, unlike `python -m pytest`, does not put the current directory
there); `--cxrbox-seed N` seeds the probe data and the models.

This module is imported by every pytest run where cxrbox is installed, so it imports torch and
the kit only when the option is given.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

OPTION = "--cxrbox-detector"
SEED_OPTION = "--cxrbox-seed"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cxrbox", "cxrbox.testing: gate a box regressor")
    group.addoption(
        OPTION,
        metavar="MODULE:NAME",
        default=None,
        help="run the cxrbox.testing checklist on this Detector (or a function of no "
        "arguments returning one), one test item per check",
    )
    group.addoption(
        SEED_OPTION,
        metavar="N",
        type=int,
        default=0,
        help="seed of the checklist's probe data and models (default 0)",
    )


class DetectorCheck(pytest.Item):
    """One check of the checklist on the detector named by `--cxrbox-detector`."""

    def __init__(self, *, spec: str, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.check = check

    def runtest(self) -> None:
        from cxrbox.testing.checklist import detector_checks, load_detector
        from cxrbox.testing.result import raise_if_failed

        cache: dict[str, Any] = self.config.stash.setdefault(_CHECKS, {})
        if self.spec not in cache:
            for path in (self.config.rootpath, self.config.invocation_params.dir):
                if str(path) not in sys.path:
                    sys.path.insert(0, str(path))
            seed = self.config.getoption("cxrbox_seed")
            cache[self.spec] = detector_checks(load_detector(self.spec), seed)
        result = cache[self.spec][self.check]()
        if result.numbers.get("skipped"):
            pytest.skip(result.message)
        raise_if_failed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self.spec, None, f"cxrbox[{self.check}] on {self.spec}"


_CHECKS = pytest.StashKey[dict[str, Any]]()


@pytest.hookimpl(tryfirst=True)  # before pytest's own -k / -m deselection sees the items
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    spec = config.getoption("cxrbox_detector")
    if not spec:
        return
    from cxrbox.testing.checklist import CHECKLIST

    items.extend(
        DetectorCheck.from_parent(session, name=f"cxrbox[{name}]", spec=spec, check=name)
        for name in CHECKLIST
    )

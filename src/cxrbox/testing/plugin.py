"""pytest plugin (entry point `pytest11`): `pytest --cxrbox-detector package.module:name` adds
the whole `cxrbox.testing` checklist on that detector as ordinary test items, one per check
(`cxrbox[position_sensitivity]`, ...), with no test file to write. Select with `-k` as usual.
A check the detector gives no input for (no scheduler, transform or box loss) is skipped.

This module is imported by every pytest run where cxrbox is installed, so it imports torch and
the kit only when the option is given.
"""

from __future__ import annotations

from typing import Any

import pytest

OPTION = "--cxrbox-detector"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cxrbox", "cxrbox.testing: gate a box regressor")
    group.addoption(
        OPTION,
        metavar="MODULE:NAME",
        default=None,
        help="run the cxrbox.testing checklist on this Detector (or a function of no "
        "arguments returning one), one test item per check",
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
            cache[self.spec] = detector_checks(load_detector(self.spec))
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

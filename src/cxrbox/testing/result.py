"""One check's outcome: `CheckResult` (pass / warn / fail, message, measured numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class CheckResult:
    """One check: a stable `name`, its `status`, a one-line `message` and the measured numbers."""

    name: str
    status: Status
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, **self.numbers}


def raise_if_failed(result: CheckResult) -> CheckResult:
    """The `assert_*` face of a check: AssertionError with the message and the numbers."""
    if result.status == "fail":
        raise AssertionError(f"{result.name}: {result.message}\nmeasured: {result.numbers}")
    return result

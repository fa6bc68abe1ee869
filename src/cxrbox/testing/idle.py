"""Parameters (and BatchNorm layers) a detector declares may stay idle on the probe data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from cxrbox.errors import ConfigError


def resolve_idle(
    names: Iterable[str], patterns: Mapping[str, str], *, what: str = "parameter"
) -> dict[str, str]:
    """{name: reason} of every name matching one of `patterns` (fnmatch, case-sensitive)."""
    out: dict[str, str] = {}
    for name in names:
        for pattern, reason in patterns.items():
            if fnmatchcase(name, pattern):
                out[name] = reason
                break
    return out


def check_patterns_match(names: Iterable[str], patterns: Mapping[str, str]) -> None:
    """Raise ConfigError naming every pattern of `idle_parameters` that matches no name: a stale
    declaration would otherwise silently excuse nothing, or the wrong thing later."""
    names = list(names)
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ConfigError(
            f"Detector.idle_parameters: pattern(s) {unmatched} match no parameter or BatchNorm "
            f"layer of the model (e.g. {names[:3]})"
        )


def describe_idle(idle: Mapping[str, str], patterns: Mapping[str, str]) -> str:
    """'N idle by declaration (pattern: reason; ...)' or ''."""
    if not idle:
        return ""
    reasons = "; ".join(
        f"{pattern}: {reason}" for pattern, reason in patterns.items() if reason in idle.values()
    )
    return f"{len(idle)} idle by declaration ({reasons})"

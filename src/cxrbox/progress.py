"""Progress of long work, on stderr: a tqdm bar on a terminal, a plain line every `every_s`
seconds otherwise (a log file, CI, a pipe), so nothing runs silent for minutes either way.

`Progress(total, desc, unit)` is counted by hand (`update(n)`, `close()`; a context manager);
`track(iterable, ...)` counts the items of an iterable as they are consumed (`size(item)` of
them per item: images per batch). Off a terminal the lines read
`eval: 320/1000 img (32%) after 41 s`, and, when at least one such line was printed, a last
`eval: 1000/1000 img done in 128 s`; work shorter than `every_s` prints nothing. Torch-free.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

EVERY_S = 10.0  # seconds between two lines off a terminal (read when a Progress starts)


class Progress:
    """A count of `total` units of work (None: unknown) shown on `stream` (default stderr)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        *,
        stream: TextIO | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = EVERY_S if every_s is None else every_s
        self.clock = clock
        self.n = 0
        self.started = self.last_line = clock()
        self.lines = 0  # periodic lines printed
        self._bar: Any = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.lines += 1
            self._print(f"after {now - self.started:.0f} s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.lines:  # a long job's log ends with its count
            self._print(f"done in {self.clock() - self.started:.0f} s")
            self.lines = 0

    def _print(self, when: str) -> None:
        if self.total:
            count = f"{self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%)"
        else:
            count = f"{self.n} {self.unit}"
        print(f"{self.desc}: {count} {when}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    iterable: Iterable[T],
    total: int | None,
    desc: str,
    unit: str = "it",
    *,
    size: Callable[[T], int] | None = None,
    stream: TextIO | None = None,
    every_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of `iterable`, counting `size(item)` (default 1) units after each."""
    with Progress(total, desc, unit, stream=stream, every_s=every_s, clock=clock) as progress:
        for item in iterable:
            yield item
            progress.update(size(item) if size is not None else 1)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False

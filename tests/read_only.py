"""Run commands with a folder read-only, as a mounted archive is (tests only).

Root writes through permission bits, so as root the command runs in a new user and mount
namespace where the folder is a read-only bind mount (writes fail with EROFS, as on a read-only
mount); other users get the write bits removed for the duration.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[list[str]]:
    """A command prefix under which `folder` (and all below it) cannot be written."""
    if os.geteuid() == 0:
        remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        yield ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", remount, str(folder)]
        return
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222)
    try:
        yield []
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])

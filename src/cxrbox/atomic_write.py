"""Files that appear whole or not at all: write beside the target, fsync, rename over it.

A crash (kill -9, power loss, a full disk) at any moment leaves either the previous file or the
new one, never a mix; a failure removes the temporary file. The temporary name is
`.<name>.<random>.tmp<suffix>` in the target's folder (a rename is atomic only within one file
system). The file gets the mode `open()` would give it (0o666 less the umask), not mkstemp's
0o600, so a checkpoint or an exported model can be read by the people it is written for.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a new, empty temporary path beside `path`; when the block succeeds, the file is
    fsynced and renamed onto `path`; on any failure it is removed and `path` is untouched.

    Raises OSError when the folder cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Checkpoints: safe to open, written atomically, resumable at any step.

A checkpoint is a dict of tensors and plain Python types only (str, int, float, bool, None,
lists, tuples and dicts of them), so it is read with `torch.load(weights_only=True)`: opening
a checkpoint someone sent you never runs code pickled into it. Keys: `model`, `optimizer`,
`scheduler` state dicts, `epoch` (epochs completed), `epoch_step` (batches of the next epoch
already trained: > 0 for a mid-epoch checkpoint), `epoch_loss_sum`, `global_step`,
`best_metric`, `config` (TrainConfig as a dict), `monitor` (counters), `rng` (torch, numpy and
python states as tensors, see `capture_rng_state`) and `version` (CHECKPOINT_VERSION).

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target:
a crash (even SIGKILL) in the middle of a save leaves the previous file intact; a failed write
(disk full) raises CheckpointWriteError naming the path.

Format 1 (cxrbox before format versions were checked for safety) pickled numpy/python RNG state
as objects; convert a file you trust with `python -m cxrbox.engine.checkpoint upgrade OLD.pt
NEW.pt`.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrbox.atomic_write import atomic_path
from cxrbox.errors import CheckpointError, CheckpointVersionError, CheckpointWriteError

CHECKPOINT_VERSION = 2
EXPECTED = "best.pt or last.pt written by `cxrbox train`"  # what a checkpoint argument names
UPGRADE_HINT = (
    "If it is an older cxrbox checkpoint from a source you trust, convert it with "
    "`python -m cxrbox.engine.checkpoint upgrade {path} NEW.pt`."
)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` through a temporary file in the same folder and an atomic rename.

    Raises CheckpointWriteError (naming `path`) when the write fails; `path` is then untouched.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save({**state, "version": CHECKPOINT_VERSION}, handle)
    except OSError as exc:
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; "
            "the previous checkpoint there (if any) is intact"
        ) from exc


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with `weights_only=True`.

    Raises CheckpointError when the file is missing, damaged, holds anything but tensors and
    plain types (it is refused unread: unpickling it could run code), or is not a cxrbox
    checkpoint; CheckpointVersionError when its format version is not CHECKPOINT_VERSION.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what} (expected a {EXPECTED})")
    # torch.save writes a zip archive; what torch.load says of anything else is its parser's
    # ("cannot be read: 101"), not the user's terms.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint: {_describe(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # a damaged file, not a refused object
            raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
        raise CheckpointError(
            f"checkpoint {path} refused: it holds objects other than tensors and plain types, "
            "and loading those could run code. " + UPGRADE_HINT.format(path=path)
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read by PyTorch (damaged, or a zip archive torch.save "
            f"did not write: {reason}); expected a {EXPECTED}"
        ) from exc
    if not isinstance(state, dict) or not isinstance(state.get("version"), int):
        raise CheckpointError(
            f"checkpoint {path} is a PyTorch file but not a cxrbox checkpoint (no format "
            f"version; a bare state_dict?); expected a {EXPECTED}"
        )
    version = state["version"]
    if version > CHECKPOINT_VERSION:
        raise CheckpointVersionError(
            str(path), version, CHECKPOINT_VERSION, "It was written by a newer cxrbox: upgrade."
        )
    if version < CHECKPOINT_VERSION:
        raise CheckpointVersionError(
            str(path), version, CHECKPOINT_VERSION, UPGRADE_HINT.format(path=path)
        )
    return state


def _describe(path: Path) -> str:
    """What a file that is not a zip archive holds, in words, and what was expected."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        found = "the file is empty"
    elif path.suffix.lower() == ".onnx" or b"onnx" in head[:64].lower():
        found = (
            "it is an exported ONNX model (eval and predict take one; export, bench-inference "
            "and --resume need the .pt it was exported from)"
        )
    elif b"\0" not in head and _is_text(head):
        first = head.decode("utf-8", "replace").splitlines()[0][:40]
        found = f"it holds text (starting {first!r})"
    else:
        found = "it is not the zip archive torch.save writes (damaged, or another format)"
    return f"{found}; expected a {EXPECTED}"


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(data) - 4  # a character cut at the end of the sample
    return True


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states a resumed run must restore to continue exactly, as tensors.

    torch: its ByteTensor; numpy (MT19937): `keys` int64 [624] and plain pos/gauss fields;
    python: `state` int64 [625] and `gauss_next` (float or None); cuda: list of ByteTensors.
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    py_version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs from `capture_rng_state`'s dict."""
    torch.random.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (
            python_state["version"],
            tuple(int(v) for v in python_state["state"].tolist()),
            python_state["gauss_next"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def upgrade_checkpoint(source: str | Path, target: str | Path) -> None:
    """Rewrite a format-1 checkpoint as format 2. Unpickles `source` fully: trusted files only."""
    source = Path(source)
    try:
        state = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {source} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != 1:
        raise CheckpointError(f"checkpoint {source} is not a format-1 cxrbox checkpoint")
    current = capture_rng_state()
    try:  # convert through the global RNGs, then put them back as they were
        rng = state["rng"]
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        torch.random.set_rng_state(rng["torch"])
        state["rng"] = capture_rng_state()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {source}: unreadable RNG state ({exc})") from exc
    finally:
        restore_rng_state(current)
    state.setdefault("epoch_step", 0)
    state.setdefault("epoch_loss_sum", 0.0)
    save_checkpoint(state, target)


def main(argv: list[str] | None = None) -> int:
    """`python -m cxrbox.engine.checkpoint upgrade OLD.pt NEW.pt`."""
    parser = argparse.ArgumentParser(prog="python -m cxrbox.engine.checkpoint")
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="convert a trusted format-1 checkpoint")
    upgrade.add_argument("source")
    upgrade.add_argument("target")
    args = parser.parse_args(argv)
    try:
        upgrade_checkpoint(args.source, args.target)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.source} -> {args.target} (format {CHECKPOINT_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

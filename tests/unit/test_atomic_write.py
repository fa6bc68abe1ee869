"""`atomic_path`: the target appears whole with open()'s permissions, or is left untouched."""

from __future__ import annotations

import os
import stat

import pytest

from cxrbox.atomic_write import atomic_path


def test_the_file_gets_the_mode_open_would_give_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.onnx", suffix=".onnx") as tmp:
            tmp.write_bytes(b"new")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.onnx").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o644


def test_a_failure_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_the_temporary_sits_beside_the_target_under_a_hidden_name(tmp_path):
    with atomic_path(tmp_path / "sub" / "best.pt") as tmp:
        assert tmp.parent == tmp_path / "sub"
        assert tmp.name.startswith(".best.pt.") and tmp.name.endswith(".tmp")
        assert not (tmp_path / "sub" / "best.pt").exists()

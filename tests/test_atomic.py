"""``pareco.atomic``: the old file or the new one, never a torn one; normal permissions."""

import os
import stat
from pathlib import Path

import pytest

from pareco.atomic import atomic_write, atomic_write_bytes


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_writes_with_the_permissions_of_a_plain_open(tmp_path, umask_022):
    path = tmp_path / "front.json"
    atomic_write_bytes(path, b"{}\n")
    assert path.read_bytes() == b"{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0o600
    assert os.listdir(tmp_path) == ["front.json"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"new but torn")
        raise KeyboardInterrupt  # BaseException too: Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_replaces_an_existing_file(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_bytes(path, b"1")
    atomic_write(path, lambda tmp: Path(tmp).write_text("2"))
    assert path.read_text() == "2"

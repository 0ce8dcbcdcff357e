"""biomodal._atomic: the one atomic-write helper (old file or complete new file, never half)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from biomodal._atomic import atomic_path, atomic_write_bytes, atomic_write_text, temp_path_for


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_write_text_and_bytes_create_and_replace(tmp_path):
    dest = tmp_path / "sub" / "metrics.json"
    assert atomic_write_text(dest, '{"a": 1}') == dest  # folder is created
    assert dest.read_text() == '{"a": 1}'
    atomic_write_text(dest, "new")
    assert dest.read_text() == "new"
    atomic_write_bytes(dest, b"\x00\x01")
    assert dest.read_bytes() == b"\x00\x01"
    assert _leftovers(dest.parent) == []


def test_newline_is_passed_through(tmp_path):
    dest = tmp_path / "m.csv"
    atomic_write_text(dest, "a,b\r\n1,2\r\n", newline="")
    assert dest.read_bytes() == b"a,b\r\n1,2\r\n"


def test_atomic_path_covers_writers_that_take_a_path(tmp_path):
    dest = tmp_path / "arr.npy"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".arr.npy.") and tmp.suffix == ".npy"
        np.save(tmp, np.arange(3))  # np.save would append ".npy" to a name without it
    np.testing.assert_array_equal(np.load(dest), np.arange(3))
    mm_dest = tmp_path / "cache.u8"
    with atomic_path(mm_dest) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(4,))
        mm[:] = 7
        mm.flush()
        del mm
    assert np.load(mm_dest).tolist() == [7, 7, 7, 7]
    assert _leftovers(tmp_path) == []


def test_explicit_suffix(tmp_path):
    assert temp_path_for(tmp_path / "out.h5ad", ".h5ad").name.endswith(".tmp.h5ad")
    assert temp_path_for(tmp_path / "out.h5ad", "").name.endswith(".tmp")
    assert temp_path_for(tmp_path / "x") != temp_path_for(tmp_path / "x")


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        tmp.write_text("half of the new conte")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_block_that_writes_nothing_is_an_error(tmp_path):
    dest = tmp_path / "x.txt"
    dest.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(dest):
        pass
    assert dest.read_text() == "old"


def test_overwrite_false_keeps_the_first_writer(tmp_path):
    dest = tmp_path / "meta.json"
    atomic_write_text(dest, "first", overwrite=False)
    atomic_write_text(dest, "second", overwrite=False)
    assert dest.read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_concurrent_writers_never_expose_a_partial_file(tmp_path):
    dest = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(6)]
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if dest.exists():
                seen.append(dest.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            for p in payloads:
                atomic_write_bytes(dest, p, fsync=False)
    finally:
        stop.set()
        reader.join()
    assert all(s in payloads for s in seen)
    assert dest.read_bytes() == payloads[-1]


def test_killed_writer_leaves_the_old_file_intact(tmp_path):
    """Crash simulation: the process dies (no cleanup, no finally) in the middle of the write."""
    dest = tmp_path / "step_00000010.pt"
    dest.write_bytes(b"complete old checkpoint")
    script = textwrap.dedent(
        f"""
        import os
        from biomodal._atomic import atomic_path
        with atomic_path({str(dest)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial new")
                fh.flush()
                os._exit(3)  # killed: neither the rename nor the cleanup runs
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], timeout=60)
    assert proc.returncode == 3
    assert dest.read_bytes() == b"complete old checkpoint"
    left = _leftovers(tmp_path)
    # What a crash may leave is a hidden temporary file that no glob for the real name matches.
    assert all(name.startswith(f".{dest.name}.") for name in left)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == [dest.name]


# Modules that still publish files by hand, to be switched to biomodal._atomic by their owner
# (reported to the lead; the test fails when an entry is no longer needed).
_HAND_WRITTEN: dict[str, str] = {}


def test_one_atomic_write_helper():
    """Only biomodal/_atomic.py renames temporary files into place (os.replace / os.rename / os.link)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = set()
    for path in sorted((root / "biomodal").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "biomodal/_atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            f = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(f, ast.Attribute)
                and f.attr in ("replace", "rename", "link")
                and isinstance(f.value, ast.Name)
                and f.value.id == "os"
            ):
                found.add(rel)
    assert not found - set(_HAND_WRITTEN), (
        f"use biomodal._atomic instead of os.replace in {found - set(_HAND_WRITTEN)}"
    )
    assert not set(_HAND_WRITTEN) - found, f"stale allow-list entries: {set(_HAND_WRITTEN) - found}"

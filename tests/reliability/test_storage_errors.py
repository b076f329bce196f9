"""Writes the storage refuses (disk full, quota, read-only, no permission) are one sentence naming the
path (issue 14, item 4), and a write cut short by a filling disk never leaves a half-written row or a
torn journal line in the middle of a store.

The unit cases simulate the system calls (``os.write`` that writes a few bytes, then ``ENOSPC``); the
cases marked ``smallfs`` fill a real tmpfs (root only; skipped, saying so, elsewhere)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import disk_full
from geoscope import atomic
from geoscope.errors import GeoscopeError, StorageError, storage_error
from geoscope.store import shard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the shared fixtures

SMALLFS = disk_full.available()
smallfs = pytest.mark.skipif(SMALLFS is not None, reason=f"no small filesystem: {SMALLFS}")


@pytest.mark.parametrize("number, words", [
    (errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota is exceeded"), (errno.EROFS, "read-only"),
    (errno.EACCES, "permission denied"), (errno.EPERM, "permission denied"),
])
def test_each_storage_errno_is_one_sentence_naming_the_path(number, words):
    err = storage_error(OSError(number, os.strerror(number)), "/data/out/x.npy")
    assert isinstance(err, StorageError) and isinstance(err, GeoscopeError) and isinstance(err, OSError)
    msg = str(err)
    assert words in msg and "/data/out/x.npy" in msg and "\n" not in msg
    assert err.errno == number and err.filename == "/data/out/x.npy"


def test_errno_only_in_the_message_counts_and_other_errors_do_not():
    # safetensors and Arrow say it in words only
    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    arrow = OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")
    for exc in (rust, arrow):
        assert "disk is full" in str(storage_error(exc, "/m/model.safetensors"))
    assert storage_error(OSError(errno.EIO, "I/O error"), "/m") is None
    assert storage_error(ValueError("bad value"), "/m") is None
    assert "the system did not say which" in str(storage_error(OSError(errno.ENOSPC, "No space left on device")))


def _stingy_write(monkeypatch, budget: int):
    """``os.write`` / ``os.pwrite`` that write at most 5 bytes per call and ``budget`` bytes in all, then ENOSPC."""
    left = [budget]
    real_write, real_pwrite = os.write, os.pwrite

    def take(data) -> bytes:
        n = min(5, len(data), left[0])
        if n == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        left[0] -= n
        return bytes(data[:n])

    monkeypatch.setattr(atomic.os, "write", lambda fd, data: real_write(fd, take(data)))
    monkeypatch.setattr(atomic.os, "pwrite", lambda fd, data, off: real_pwrite(fd, take(data), off))
    return left


def test_short_writes_are_continued(tmp_path, monkeypatch):
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    _stingy_write(monkeypatch, 10_000)
    atomic.write_all(fd, b"0123456789" * 7)
    atomic.write_all(fd, b"ABCDEFGHIJKL", 3)
    os.close(fd)
    assert path.read_bytes() == b"012" + b"ABCDEFGHIJKL" + (b"0123456789" * 7)[15:]


def test_a_journal_append_cut_short_by_a_full_disk_is_undone(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    journal = shard.Journal(path)
    rec = {"pos": 0, "id": "a", "lat": 1.0, "lon": 2.0, "source": "a.jpg", "status": "ok", "row": 0}
    journal.append([rec])
    size = path.stat().st_size
    with monkeypatch.context() as m:
        _stingy_write(m, 20)  # part of the next line fits, then the disk is full
        with pytest.raises(StorageError, match="disk is full") as info:
            journal.append([{**rec, "pos": 1, "id": "b", "row": 1}])
    assert str(path) in str(info.value)
    assert path.stat().st_size == size  # no torn line left behind the good ones
    journal.append([{**rec, "pos": 2, "id": "c", "row": 1}])  # the journal takes more once there is room
    journal.close()
    assert [r["id"] for r in shard.read_journal(path)] == ["a", "c"]


def test_embedding_rows_cut_short_raise_instead_of_counting(tmp_path, monkeypatch):
    f = shard.EmbeddingFile(tmp_path / "embeddings.npy", 4, 8)
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    with monkeypatch.context() as m:
        _stingy_write(m, 10)  # 10 of the 24 bytes
        with pytest.raises(StorageError, match="embeddings.npy"):
            f.write(0, rows)
    f.write(0, rows)
    f.finish(3)
    assert np.array_equal(np.load(tmp_path / "embeddings.npy"), rows)


def test_a_new_embeddings_file_the_disk_refuses_leaves_nothing_half_made(tmp_path, monkeypatch):
    # bench_disk_full found it: with 12 KB free, embed's new embeddings.npy got its size (a sparse
    # ftruncate needs no space) but not its header, and the re-run stopped on "the magic string is
    # not correct"; a SIGKILL between the two left the same file. It is now made whole, then renamed.
    path = tmp_path / "embeddings.npy"
    with monkeypatch.context() as m:
        _stingy_write(m, 60)  # part of the 128-byte header fits
        with pytest.raises(StorageError, match="disk is full") as info:
            shard.EmbeddingFile(path, 4, 8)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no half-made file, no temporary
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    f = shard.EmbeddingFile(path, 4, 8)  # once there is room, the same job goes on
    f.write(0, rows)
    f.finish(3)
    assert np.array_equal(np.load(path), rows)


def test_cli_turns_an_os_error_into_one_sentence(monkeypatch, capsys):
    from geoscope.cli import cells, main

    def refuse(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/locked/cells.json")

    monkeypatch.setattr(cells, "_grid", refuse)
    monkeypatch.delenv("GEOSCOPE_DEBUG", raising=False)
    rc = main(["cells", "grid", "--bbox", "0,0,10,10", "--rows", "2", "--cols", "2", "-o", "/srv/locked/cells.json"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0, err
    assert err.startswith("geoscope: error: permission denied") and "/srv/locked/cells.json" in err, err
    assert "PermissionError" not in err and "Traceback" not in err


@smallfs
def test_checkpoint_and_model_writes_on_a_full_disk_name_their_file(tmp_path):
    import torch

    from geoscope.geo.cells import CellHierarchy
    from geoscope.geolocator import Geolocator
    from geoscope.heads import create_head

    cells = CellHierarchy.grid((-60, -180, 75, 180), 4, 8)
    geo = Geolocator("efficientnet-lite0", create_head("classifier", 64, cells, hidden=512), cells)
    with disk_full.small_filesystem(2048) as (point, _):
        disk_full.fill(point, 64)
        with pytest.raises(StorageError, match="disk is full") as info:
            atomic.write_torch(point / "run.train" / "checkpoint.pt", {"w": torch.zeros(256, 1024)})
        assert str(point / "run.train" / "checkpoint.pt") in str(info.value)
        with pytest.raises(StorageError, match="disk is full") as info:
            geo.save_pretrained(point / "model")  # safetensors says it only in words
        assert str(point / "model" / "model.safetensors") in str(info.value)
        left = [p.name for p in point.rglob("*") if p.is_file() and p.name != disk_full.FILLER]
        assert left == [], left  # no temporary file stays behind
        disk_full.free_space(point)
        atomic.write_torch(point / "run.train" / "checkpoint.pt", {"w": torch.ones(3)})
        assert torch.load(point / "run.train" / "checkpoint.pt", weights_only=True)["w"].tolist() == [1, 1, 1]


@smallfs
def test_read_only_output_is_one_sentence(tmp_path, capsys):
    import subprocess

    from geoscope.cli import main

    with disk_full.small_filesystem(1024) as (point, _):
        (point / "store").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        try:
            rc = main(["cells", "grid", "--bbox", "0,0,10,10", "--rows", "2", "--cols", "2", "-o",
                       str(point / "store" / "cells.json")])
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(point)], check=True)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0, err
    assert "read-only" in err and str(point / "store" / "cells.json") in err, err
    assert json.dumps(err)  # printable

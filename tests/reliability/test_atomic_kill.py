"""An atomic write killed in the middle (issue 14, item 3): the target keeps its old content, and the
half-written temporary the killed process left is removed by the next write of the same file, so
repeated kills of a long job do not pile up copies of its checkpoint.

The defect (seen while writing the kill harness, ``tests/reliability/kill.py``, which checks for such
leftovers; reproduced deterministically here): a process killed inside ``atomic_path`` -- a train
writing ``MODEL.train/checkpoint.pt`` every epoch -- left ``.checkpoint.pt.XXXXXXXX.tmp.pt``, as large
as the checkpoint, and no later run removed it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from geoscope import atomic

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from geoscope import atomic
    with atomic.atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half of a new vers")
        os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename
""")


def _killed_write(target):
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_atomic_write_leaves_the_old_file_and_its_temporary_is_cleared_next_time(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old complete version")
    _killed_write(target)
    _killed_write(target)
    assert target.read_bytes() == b"old complete version"
    left = _temporaries(tmp_path)  # the second writer cleared the first one's
    assert len(left) == 1 and left[0].startswith(".checkpoint.pt.") and ".tmp" in left[0], left

    atomic.write_bytes(target, b"new complete version")
    assert target.read_bytes() == b"new complete version"
    assert _temporaries(tmp_path) == []


def test_temporaries_of_live_writers_and_other_files_are_left_alone(tmp_path):
    target = tmp_path / "model.safetensors"
    live = tmp_path / f".model.safetensors.{atomic._HOST}-{os.getppid()}.abcd1234.tmp.safetensors"
    other_host = tmp_path / ".model.safetensors.some-other-host-1.abcd1234.tmp.safetensors"
    other_file = tmp_path / f".config.json.{atomic._HOST}-1.abcd1234.tmp.json"
    for p in (live, other_host, other_file):
        p.write_bytes(b"x")
    assert atomic.remove_stale_temporaries(target) == []
    atomic.write_bytes(target, b"weights")
    assert _temporaries(tmp_path) == sorted(p.name for p in (live, other_host, other_file))


def test_the_store_lock_clears_the_temporary_of_a_writer_killed_while_taking_it(tmp_path):
    from geoscope.store.lock import StoreLock

    _killed_write_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                       text=True).stdout.strip()  # a pid that is gone now
    stale = tmp_path / f".store.lock.{atomic._HOST}-{_killed_write_pid}.k1ll3d00.tmp"
    stale.write_text("{}")
    with StoreLock(tmp_path):
        assert (tmp_path / "store.lock").exists()
    assert _temporaries(tmp_path) == []

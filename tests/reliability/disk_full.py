"""Disk-full runs of ``geoscope embed`` and ``geoscope train`` (issue 14, item 4).

``small_filesystem(size_kb)`` mounts a small filesystem in a temporary folder: a tmpfs
(``mount -t tmpfs -o size=...``), or, where that is refused, an ext4 image on a loop device; both
need root (CAP_SYS_ADMIN). ``SmallFsUnavailable`` says why when neither works. ``fill(path, free_kb)``
leaves only ``free_kb`` free with a filler file, so one small filesystem runs a job out of space at
any point: before its first byte, in its journal, in its arrays, in its final files.

``disk_full_run`` runs one command against it: out of space, the command must stop with one clear
error (exit 1, one line, no traceback) that says the disk is full and names the path it could not
write, and leave nothing that opens wrong (an unfinished store is refused as unfinished; a model folder either refuses to
load or loads); after the filler is removed, the same command must finish and give what a run with
room to spare gives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterator


class SmallFsUnavailable(RuntimeError):
    """No small filesystem can be mounted here (not root, no tmpfs or loop devices)."""


def _mount(args: list[str]) -> str | None:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if p.returncode == 0 else (p.stderr.strip() or f"exit {p.returncode}")


@contextlib.contextmanager
def small_filesystem(size_kb: int = 8192) -> Iterator[tuple[Path, str]]:
    """(mount point, "tmpfs" or "ext4 loop") of a filesystem of ``size_kb``, unmounted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="geoscope-smallfs-"))
    point = root / "mnt"
    point.mkdir()
    how = None
    why = _mount(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)])
    if why is None:
        how = "tmpfs"
    else:
        image = root / "disk.img"
        with open(image, "wb") as f:
            f.truncate(max(size_kb, 1024) * 1024)
        why2 = _mount(["mkfs.ext4", "-q", "-F", str(image)]) or _mount(["mount", "-o", "loop", str(image), str(point)])
        if why2 is None:
            how = "ext4 loop"
        else:
            shutil.rmtree(root, ignore_errors=True)
            raise SmallFsUnavailable(f"cannot mount a small filesystem: tmpfs: {why}; loop-mounted ext4: {why2}")
    try:
        yield point, how
    finally:
        _mount(["umount", "-l", str(point)])
        shutil.rmtree(root, ignore_errors=True)


def available() -> str | None:
    """None when a small filesystem can be mounted here, else the reason it cannot."""
    try:
        with small_filesystem(1024):
            return None
    except SmallFsUnavailable as exc:
        return str(exc)


FILLER = ".filler"
#: what a message must say for a reader to know the disk is full
DISK_FULL_WORDS = ("no space left", "disk is full", "disk full", "not enough space", "errno 28")


def fill(point: Path, free_kb: int) -> int:
    """Leave about ``free_kb`` free on the filesystem at ``point``; returns the free KB measured."""
    filler = point / FILLER
    filler.unlink(missing_ok=True)
    st = os.statvfs(point)
    free = st.f_bavail * st.f_frsize
    want = max(0, free - free_kb * 1024)
    if want:
        with open(filler, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, want)
            except OSError:  # not supported: write zeros until full enough
                block = b"\0" * (1 << 16)
                left = want
                while left > 0:
                    left -= f.write(block[: min(len(block), left)])
    st = os.statvfs(point)
    return st.f_bavail * st.f_frsize // 1024


def free_space(point: Path) -> None:
    (point / FILLER).unlink(missing_ok=True)


def run_geoscope(args: list[str], timeout: float = 600, in_process: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``geoscope ARGS``: a subprocess, or ``geoscope.cli.main`` in
    this process (the same code path without the start-up cost, for tests)."""
    if in_process:
        import io

        from geoscope.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as exc:  # argparse
                rc = int(exc.code or 0)
        return rc, out.getvalue(), err.getvalue()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("GEOSCOPE_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "geoscope", *args], capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("geoscope: error")]
    return lines[-1] if lines else ""


def disk_full_run(point: Path, free_kb: int, command: Callable[[Path], list[str]], inspect: Callable[[Path], str],
                  compare: Callable[[Path], bool], timeout: float = 600, in_process: bool = False) -> dict:
    """One run out of space and its resumption. ``command(out)`` gives the geoscope arguments writing
    to ``out``; ``inspect(out)`` says what the half-written output is ("absent", "unfinished ...",
    "complete", or "CORRUPT: ..."); ``compare(out)`` whether the finished output equals the reference."""
    out = point / "out"
    shutil.rmtree(out, ignore_errors=True)
    measured = fill(point, free_kb)
    rc, _, stderr = run_geoscope(command(out), timeout, in_process)
    err = error_line(stderr)
    rec = {
        "free_kb": measured, "exit": rc, "error": err[:300],
        "traceback": "Traceback" in stderr,
        "one_line_error": rc == 0 or (rc == 1 and bool(err) and "Traceback" not in stderr),
        "says_disk_full": rc == 0 or any(s in err.lower() for s in DISK_FULL_WORDS),
        "names_path": rc == 0 or str(point) in err,
        "state_after_failure": inspect(out),
    }
    free_space(point)
    rc2, _, stderr2 = run_geoscope(command(out), timeout, in_process)
    rec["resumed"] = rc2 == 0
    rec["resume_error"] = error_line(stderr2)[:300] if rc2 else ""
    rec["equal_to_reference"] = bool(rc2 == 0 and compare(out))
    rec["ok"] = (rec["one_line_error"] and rec["says_disk_full"] and rec["names_path"]
                 and not rec["state_after_failure"].startswith("CORRUPT") and rec["resumed"] and rec["equal_to_reference"])
    return rec


# --------------------------------------------------------------------------------------- the two jobs
def inspect_store(out: Path) -> str:
    from geoscope.errors import InputError
    from geoscope.store import EmbeddingStore

    if not out.exists():
        return "absent"
    try:
        s = EmbeddingStore.open(out)
    except InputError as exc:
        return f"refused: {str(exc)[:160]}"
    except Exception as exc:  # noqa: BLE001 - anything else is what we look for
        return f"CORRUPT: {type(exc).__name__}: {exc}"[:300]
    return f"complete ({len(s)} rows)"


def same_store(a: Path, b: Path) -> bool:
    import numpy as np

    from geoscope.store import EmbeddingStore

    x, y = EmbeddingStore.open(a), EmbeddingStore.open(b)
    return (list(map(str, x.ids)) == list(map(str, y.ids))
            and np.array_equal(np.asarray(x.embeddings), np.asarray(y.embeddings))
            and np.allclose(x.coords, y.coords, equal_nan=True) and len(x.errors) == len(y.errors))


def inspect_model(out: Path) -> str:
    from geoscope.errors import GeoscopeError
    from geoscope.geolocator import Geolocator

    if not (out / "config.json").exists():
        return "absent" if not out.exists() else "no model yet (no config.json)"
    try:
        Geolocator.from_pretrained(out)
    except GeoscopeError as exc:
        return f"refused: {str(exc)[:160]}"
    except Exception as exc:  # noqa: BLE001
        return f"CORRUPT: {type(exc).__name__}: {exc}"[:300]
    return "loads"


def same_model(a: Path, b: Path, store: Path) -> bool:
    import numpy as np

    from geoscope.geolocator import Geolocator
    from geoscope.store import EmbeddingStore

    emb = np.asarray(EmbeddingStore.open(store).embeddings[:32], dtype=np.float32)
    pa = Geolocator.from_pretrained(a, places=False).locate_embeddings(emb, top_k=1)
    pb = Geolocator.from_pretrained(b, places=False).locate_embeddings(emb, top_k=1)
    return all(abs(p.best.lat - q.best.lat) < 1e-4 and abs(p.best.lon - q.best.lon) < 1e-4 for p, q in zip(pa, pb))

"""Atomic file output: a file is either fully written or not there at all.

The temporary file beside the target is named ``.NAME.HOST-PID.XXXXXXXX.tmp...``: a writer killed
mid-write (SIGKILL, power loss) leaves it behind, and the next atomic write of the same file on the
same host removes it once that process is gone, so kills do not pile up half-written copies (a
checkpoint can be gigabytes).

A write the storage refuses (disk full, quota, read-only filesystem, no permission) raises
``geoscope.errors.StorageError``: one sentence naming the file and what to do, whichever library was
writing (numpy, pandas / Arrow, safetensors, torch). ``writing(path)`` does the same for code that
writes a file in place.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from geoscope.errors import storage_error


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once at import, before any threads write files
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process (or no such pid number): leave it
        return True
    return True


def temporary_prefix(path: str | os.PathLike) -> str:
    """The name a temporary file for ``path`` starts with (``mkstemp``'s prefix; add ``.tmp`` to its suffix)."""
    return f".{Path(path).name}.{_HOST}-{os.getpid()}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` that writers on this host left when they were killed
    (their process is gone); returns them. Temporaries of live writers, of this process and of
    other hosts (a shared filesystem) are left alone."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?P<host>.+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")
    removed: list[Path] = []
    try:
        names = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        return removed
    for p in names:
        m = pattern.match(p.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, an error that means the storage refused a write (``ENOSPC``, ``EDQUOT``,
    ``EROFS``, ``EACCES``, ``EPERM``, also when a library only says so in its message) becomes a
    ``StorageError`` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        err = storage_error(exc, path)
        if err is None or err is exc:
            raise
        raise err from exc


def write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write all of ``data`` to ``fd`` (at ``offset`` with ``pwrite``): a short write, which is how a
    filling disk first shows, is continued until the rest fails with its ``OSError``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(28, "No space left on device")
        view = view[n:]
        if offset is not None:
            offset += n


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The writer writes to the yielded path by any means (numpy, pandas, PIL, ...). If the block
    raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    mode = 0o666 & ~_UMASK  # what any new file gets; mkstemp makes 0600
    try:
        with writing(path):
            os.chmod(tmp_path, mode)
            yield tmp_path
            # again after writing: some writers replace the file (safetensors' save_file writes 0600)
            os.chmod(tmp_path, mode)
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_figure(path, fig, **savefig) -> Any:
    """Save a matplotlib figure as PNG: to a binary file object as it is (nothing touches the disk), or
    atomically to a path. Returns what it was given (a path as a ``Path``)."""
    if hasattr(path, "write"):
        fig.savefig(path, format="png", **savefig)
        return path
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig)
    return path


class _Sink:
    """A file object that remembers the first ``OSError`` of its writes (torch.save reports a failed
    write as "[enforce fail at inline_container.cc] unexpected pos", without the reason)."""

    def __init__(self, f) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a write the disk refuses is a ``StorageError``."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            # torch.save documents "a file-like object (has to implement write and flush)"; its annotation
            # says IO[bytes], which a minimal writer like _Sink is not
            torch.save(obj, sink)  # type: ignore[arg-type]
        except Exception:
            if sink.error is not None:
                raise sink.error from None
            raise

"""``store.lock``: one job writes a store at a time.

The lock file holds the owner's host, pid and start time. It is created atomically (written to a
temporary file, then hard-linked to its name, which fails if the name exists), so a reader never sees
half a lock. A lock whose owner is a process on this host that no longer runs is stale (the job was
killed) and is taken over; a live owner, or one on another host, refuses the second job with one
sentence naming it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from geoscope.atomic import remove_stale_temporaries, temporary_prefix, writing
from geoscope.errors import InputError
from geoscope.store.layout import LOCK, host, writer_info

logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class StoreLock:
    """``with StoreLock(out):`` holds ``out/store.lock`` for the block; a second holder, even in this process, is refused."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / LOCK
        self.held = False

    def _create(self, info: dict) -> bool:
        with writing(self.path):
            remove_stale_temporaries(self.path)  # a writer killed between these two lines left its own
            fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(self.path), suffix=".tmp", dir=self.path.parent)
        try:
            with writing(self.path), os.fdopen(fd, "w") as f:
                json.dump(info, f)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links: exclusive create instead
                try:
                    with writing(self.path):
                        lfd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                try:
                    with writing(self.path), os.fdopen(lfd, "w") as f:
                        json.dump(info, f)
                except BaseException:  # an empty lock would refuse every later job
                    self.path.unlink(missing_ok=True)
                    raise
            return True
        finally:
            os.unlink(tmp)

    def owner(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> "StoreLock":
        with writing(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        info = writer_info()
        for _ in range(3):
            if self._create(info):
                self.held = True
                return self
            owner = self.owner()
            if owner is None:  # released in between: try again
                continue
            pid, where = owner.get("pid"), owner.get("host")
            if pid == os.getpid() and where == host():
                raise InputError(f"{self.path.parent} is already being written by this process")
            if isinstance(pid, int) and where == host() and not _alive(pid):
                logger.warning("%s: taking over the lock of job %s on %s, which is no longer running", self.path, pid, where)
                self.path.unlink(missing_ok=True)
                continue
            since = f" since {owner['started']}" if owner.get("started") else ""
            who = f"pid {pid} on host {where}{since}" if pid else "a job whose lock file is unreadable"
            raise InputError(
                f"{self.path.parent} is being written by another job ({who}): wait for it to finish, "
                f"or delete {self.path} if that job is gone"
            )
        raise InputError(f"could not take the lock {self.path}: other jobs keep taking it; try again")

    def release(self) -> None:
        if self.held:
            owner = self.owner()
            if owner and owner.get("pid") == os.getpid() and owner.get("host") == host():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

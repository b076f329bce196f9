"""Errors meant for people: the CLI prints them as one line, with no traceback."""

import errno as _errno
import re as _re


class GeoscopeError(Exception):
    """A problem the user can fix (bad input, missing weights, ...). The message is one sentence."""


class InputError(GeoscopeError, ValueError):
    """Bad input data: names the file, row or argument that is wrong."""


class WeightsUnavailableError(GeoscopeError, RuntimeError):
    """Model weights are not on this machine and cannot be fetched; says how to provide them."""


class StorageError(GeoscopeError, OSError):
    """A file could not be written: the disk is full, a quota is exceeded, the filesystem is read-only
    or access is denied. The message names the path and what to do; ``errno`` and ``filename`` are set
    like an ``OSError``'s (it is one, so code that handles ``OSError`` still does)."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return str(self.args[0])


#: errno values that mean "this storage cannot take the write", whatever the file
STORAGE_ERRNOS = (_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EACCES, _errno.EPERM)
_ERRNO_IN_TEXT = _re.compile(r"(?:os error|errno)\s*(\d+)", _re.IGNORECASE)


def error_number(exc: BaseException) -> int | None:
    """The errno of ``exc``: an ``OSError``'s, or one a library wrote into its message (safetensors says
    "(os error 28)", Arrow "[errno 28]"); None when there is none."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    m = _ERRNO_IN_TEXT.search(str(exc))
    return int(m.group(1)) if m else None


def storage_error(exc: BaseException, path=None, *, writing: bool = True) -> StorageError | None:
    """The one-sentence ``StorageError`` for ``exc`` when it means the storage refused the write (disk
    full, quota, read-only, no permission), naming ``path`` (else the exception's own file name);
    None for any other error. ``writing=False`` words a permission error for any access."""
    if isinstance(exc, StorageError):
        return exc
    number = error_number(exc)
    if number not in STORAGE_ERRNOS:
        return None
    where = path if path is not None else getattr(exc, "filename", None)
    target = f"write {where}" if where is not None else "write a file (the system did not say which)"
    if number == _errno.ENOSPC:
        msg = (f"the disk is full: no space left on the device to {target}; free some space there (or write "
               "to another disk) and run the same command again (a long job resumes where it stopped)")
    elif number == _errno.EDQUOT:
        msg = (f"the disk quota is exceeded: no space left within your quota to {target}; free some space "
               "(or write to another disk) and run the same command again (a long job resumes where it stopped)")
    elif number == _errno.EROFS:
        msg = f"cannot {target}: its filesystem is read-only; write to a folder on a writable disk"
    else:
        if writing:
            msg = f"permission denied: cannot {target}; choose a path you may write to, or change its permissions"
        else:
            what = where if where is not None else "a file (the system did not say which)"
            msg = f"permission denied: cannot use {what}; choose a path you may use, or change its permissions"
    return StorageError(msg, number, None if where is None else str(where))

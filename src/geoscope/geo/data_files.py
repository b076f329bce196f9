"""Where the derived geographic data lives and how it is read.

``geo.borders`` and ``geo.places`` read the files through :func:`data_file` and :func:`read_table`;
``python -m geoscope.geo.data_setup`` derives them (see there). Keeping the lookup here lets both
sides import it without importing each other.

Where the data is looked for, first match wins (:func:`data_dir`):

1. ``$GEOSCOPE_DATA``, when set: a deliberate choice (a newer derivation, a shared copy, a test's own
   folder) that nothing else overrides; a missing file there is an error, never a silent fallback;
2. the data packaged inside the installed ``geoscope`` (``geoscope/geo/data/``), which every wheel
   carries, so ``pip install geoscope`` needs no npm and no network;
3. ``~/.cache/geoscope/data``, where ``python -m geoscope.geo.data_setup`` derives it in a source
   checkout (``scripts/setup.sh``).

:func:`read_table` keeps a copy of each table it has read as plain arrays in the cache
(``$GEOSCOPE_CACHE/tables``, keyed by the file's path, size and modification time), so a new process
answers its first place name without importing pyarrow or decompressing Parquet: about a tenth of the
time, which a cold ``geoscope locate`` feels. Text columns come back from the copy as a
:class:`TextColumn` (one UTF-8 buffer with offsets) whose entries are decoded when read: a cold
``locate`` names its five candidates' towns without decoding 170,000 names (0.09 s of CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from geoscope import settings
from geoscope.atomic import write_bytes
from geoscope.errors import GeoscopeError

#: Bumped whenever the derived files change shape or content.
DATA_VERSION = 2
FILES = ("countries.parquet", "admin1.parquet", "towns.parquet")
#: The columns geoscope reads from each file (all that the packaged copy keeps).
COLUMNS: dict[str, tuple[str, ...]] = {
    "countries.parquet": ("code", "name", "wkb"),
    "admin1.parquet": ("code", "name", "parent", "wkb"),
    "towns.parquet": ("name", "lat", "lon", "population", "country_code", "region_code"),
}
SETUP_HINT = "run `bash scripts/setup.sh` (or `python -m geoscope.geo.data_setup`)"


#: The data inside the installed package (a wheel carries it; a source checkout has it only after
#: ``python -m geoscope.geo.data_setup --package src/geoscope/geo/data``).
PACKAGED_DIR = Path(__file__).resolve().parent / "data"


def derived_dir() -> Path:
    """Where ``data_setup`` derives the data: ``$GEOSCOPE_DATA`` or ``~/.cache/geoscope/data`` (never
    the package folder, which belongs to the installer)."""
    return settings.path("GEOSCOPE_DATA") or Path.home() / ".cache" / "geoscope" / "data"


def data_dir() -> Path:
    """Where the geographic data is read from: ``$GEOSCOPE_DATA`` when set, else the packaged data
    when complete, else ``~/.cache/geoscope/data`` (the order and its reasons: the module docstring)."""
    env = settings.path("GEOSCOPE_DATA")
    if env is not None:
        return env
    if is_ready(PACKAGED_DIR):
        return PACKAGED_DIR
    return derived_dir()


def data_file(name: str) -> Path:
    """The path of one derived file; a GeoscopeError saying how to make it when it is missing."""
    path = data_dir() / name
    if not path.is_file():
        packaged = settings.get("GEOSCOPE_DATA") is not None and is_ready(PACKAGED_DIR)
        hint = "unset GEOSCOPE_DATA to use the data packaged with geoscope, or " + SETUP_HINT if packaged else SETUP_HINT
        raise GeoscopeError(f"geographic data file {path} is missing: {hint}")
    return path


def is_ready(directory: Path | None = None) -> bool:
    """Whether ``directory`` (default :func:`data_dir`) holds every derived file of this version."""
    d = data_dir() if directory is None else Path(directory)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == DATA_VERSION and all((d / f).is_file() for f in FILES)


log = logging.getLogger(__name__)
#: Bumped when the layout of the cached copies (:func:`read_table`) changes (2: text as UTF-8 + offsets).
_COPY_VERSION = 2


class TextColumn(Sequence):
    """A column of text (entries may be None) held as one UTF-8 buffer with offsets; an entry is decoded
    when it is read. ``column[i]`` is a str (or None); ``column[indices]`` (an integer array or a
    slice) a numpy object array, like indexing the object array it stands for."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, valid: np.ndarray):
        if len(offsets) != len(valid) + 1 or offsets[-1] != len(blob):
            raise ValueError("a text column needs one more offset than entries, the last at the buffer's end")
        self._blob, self._offsets, self._valid = blob, offsets, valid

    @classmethod
    def from_values(cls, values: Sequence[str | None]) -> "TextColumn":
        encoded = [b"" if v is None else v.encode() for v in values]
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8),
                   np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64),
                   np.array([v is not None for v in values], dtype=bool))

    def __len__(self) -> int:
        return len(self._valid)

    def _one(self, i: int) -> str | None:
        if not self._valid[i]:
            return None
        return bytes(self._blob[self._offsets[i]:self._offsets[i + 1]]).decode()

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"index {key} is out of range for a column of {n}")
            return self._one(int(key) % n)
        idx = np.arange(len(self))[key]
        out = np.empty(len(idx), dtype=object)
        out[:] = [self._one(int(i)) for i in idx]
        return out

    def __iter__(self) -> Iterator[str | None]:
        """Every entry in order (the buffer copied out once, not sliced per entry)."""
        blob, off = self._blob.tobytes(), self._offsets.tolist()
        return (blob[a:b].decode() if ok else None for a, b, ok in zip(off[:-1], off[1:], self._valid.tolist()))

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffers, by the suffix each is saved under."""
        return {"text": self._blob, "offsets": self._offsets, "valid": self._valid}


def _copy_path(path: Path) -> Path | None:
    """The folder of the plain-array copy of ``path``, or None when the file cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = hashlib.sha1(f"{_COPY_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return settings.cache_dir() / "tables" / f"{path.stem}-{key}"


def _to_arrays(t: dict) -> dict[str, np.ndarray] | None:
    """Columns as ``.npy`` files (no pickles): numbers as arrays, text and bytes as one buffer with
    offsets (text also with which entries are None); None where a column holds something else."""
    out: dict[str, np.ndarray] = {}
    for name, values in t.items():
        kinds = {type(v) for v in values}
        if kinds <= {str, type(None)}:
            out.update({f"{name}.{k}": v for k, v in TextColumn.from_values(values).arrays().items()})
        elif kinds == {bytes}:
            out[f"{name}.bytes"] = np.frombuffer(b"".join(values), dtype=np.uint8)
            out[f"{name}.offsets"] = np.cumsum([0] + [len(v) for v in values], dtype=np.int64)
        elif kinds <= {int} or kinds <= {int, float}:
            out[f"{name}.array"] = np.asarray(values)
        else:
            return None
    return out


def _read_copy(path: Path) -> dict | None:
    copy = _copy_path(path)
    if copy is None:
        return None
    try:
        names = json.loads((copy / "columns.json").read_text())
        t: dict = {}
        for name, kind in names.items():
            if kind == "text":
                t[name] = TextColumn(np.load(copy / f"{name}.text.npy", mmap_mode="r"),
                                     np.load(copy / f"{name}.offsets.npy"), np.load(copy / f"{name}.valid.npy"))
            elif kind == "bytes":
                blob = memoryview(np.load(copy / f"{name}.bytes.npy", mmap_mode="r"))
                off = np.load(copy / f"{name}.offsets.npy").tolist()
                t[name] = [bytes(blob[a:b]) for a, b in zip(off[:-1], off[1:])]
            else:
                t[name] = np.load(copy / f"{name}.array.npy")
        return t
    except (OSError, ValueError, KeyError, AttributeError):
        return None  # no copy yet, or a damaged one: read the Parquet file again


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """``arr`` as a ``.npy`` file (no pickles), written whole or not at all."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes(path, buf.getvalue())


def _write_copy(path: Path, t: dict) -> None:
    copy, arrays = _copy_path(path), _to_arrays(t)
    if copy is None or arrays is None:
        return
    try:
        copy.mkdir(parents=True, exist_ok=True)
        for key, arr in arrays.items():
            _save_npy(copy / f"{key}.npy", arr)
        kinds = {k.rsplit(".", 1)[0]: k.rsplit(".", 1)[1] for k in arrays if not k.endswith((".offsets", ".valid"))}
        write_bytes(copy / "columns.json", json.dumps(kinds).encode())  # last: the copy is whole once it exists
    except OSError as exc:  # a read-only or full cache: Parquet each time, as before
        log.debug("cannot keep a copy of %s in %s: %s", path, copy, exc)


def read_table(path: str | os.PathLike, columns: list[str]) -> dict:
    """Read a derived Parquet file as a dict of columns (lists; numbers may come as numpy arrays); a
    damaged or outdated file is a GeoscopeError that says how to derive it again."""
    path = Path(path)
    t = _read_copy(path)
    if t is None:
        import pyarrow.parquet as pq

        try:
            t = pq.ParquetFile(path).read().to_pydict()
        except Exception as exc:  # noqa: BLE001 - any reader failure means the same fix
            raise GeoscopeError(f"geographic data file {path} cannot be read ({type(exc).__name__}): "
                                "run `python -m geoscope.geo.data_setup --force`") from None
        if all(c in t for c in columns):
            _write_copy(path, t)
    missing = [c for c in columns if c not in t]
    if missing:
        raise GeoscopeError(f"geographic data file {path} has no column {missing[0]!r}: "
                            "run `python -m geoscope.geo.data_setup --force`")
    return t


def npz_member(path: Path, member: str, key: np.ndarray) -> np.ndarray | None:
    """``path``'s array ``member`` when the file's ``key`` array equals ``key`` (else None: stale), read
    memory-mapped from a plain ``.npy`` copy in the tables cache after the first time (a compressed
    0.1-degree lookup grid takes 0.03-0.06 s of CPU to inflate; its copy maps in microseconds and a lookup
    touches only the rows it reads). Errors reading ``path`` propagate; a copy that cannot be kept costs
    time only."""
    folder = _copy_path(path)
    copy = None if folder is None else folder / f"{member}-{hashlib.sha1(np.asarray(key).tobytes()).hexdigest()[:16]}.npy"
    if copy is not None and copy.is_file():
        try:
            return np.load(copy, mmap_mode="r")
        except (OSError, ValueError):
            pass  # damaged: read the file again
    with np.load(path) as z:
        if not np.array_equal(z["key"], key):
            return None
        arr = z[member]
    if copy is not None:
        try:
            copy.parent.mkdir(parents=True, exist_ok=True)
            _save_npy(copy, arr)
        except OSError as exc:
            log.debug("cannot keep a copy of %s in %s: %s", path, copy, exc)
    return arr

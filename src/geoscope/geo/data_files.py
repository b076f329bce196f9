"""Where the derived geographic data lives and how it is read.

``python -m geoscope.geo.data_setup`` derives the files once (see there); ``geo.borders`` and
``geo.places`` read them through :func:`data_file` and :func:`read_table`. Keeping the lookup here
lets both sides import it without importing each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from geoscope import settings
from geoscope.errors import GeoscopeError

#: Bumped whenever the derived files change shape or content.
DATA_VERSION = 2
FILES = ("countries.parquet", "admin1.parquet", "towns.parquet")
SETUP_HINT = "run `bash scripts/setup.sh` (or `python -m geoscope.geo.data_setup`)"


def data_dir() -> Path:
    """Where derived geographic data lives: ``$GEOSCOPE_DATA`` or ``~/.cache/geoscope/data``."""
    return settings.path("GEOSCOPE_DATA") or Path.home() / ".cache" / "geoscope" / "data"


def data_file(name: str) -> Path:
    """The path of one derived file; a GeoscopeError saying how to make it when it is missing."""
    path = data_dir() / name
    if not path.is_file():
        raise GeoscopeError(f"geographic data file {path} is missing: {SETUP_HINT}")
    return path


def is_ready(directory: Path | None = None) -> bool:
    """Whether ``directory`` (default :func:`data_dir`) holds every derived file of this version."""
    d = directory or data_dir()
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == DATA_VERSION and all((d / f).is_file() for f in FILES)


def read_table(path: str | os.PathLike, columns: list[str]) -> dict:
    """Read a derived Parquet file as a dict of column lists; a damaged or outdated file is a
    GeoscopeError that says how to derive it again."""
    try:
        t = pq.read_table(path).to_pydict()
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same fix
        raise GeoscopeError(f"geographic data file {path} cannot be read ({type(exc).__name__}): "
                            "run `python -m geoscope.geo.data_setup --force`") from None
    missing = [c for c in columns if c not in t]
    if missing:
        raise GeoscopeError(f"geographic data file {path} has no column {missing[0]!r}: "
                            "run `python -m geoscope.geo.data_setup --force`")
    return t

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

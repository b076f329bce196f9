"""A folder of images: coordinates from each file's EXIF GPS, or from a sidecar CSV beside them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from geoscope.data.exif import read_exif
from geoscope.data.images import ImageError, is_image_path
from geoscope.data.issues import Issue
from geoscope.data.sources.columns import (
    ID_COLUMNS,
    LAT_COLUMNS,
    LON_COLUMNS,
    PATH_COLUMNS,
    parse_coords,
    pick_column,
    show_value,
)
from geoscope.errors import InputError
from geoscope.geo.table import read_table, row_label

COORDS = ("auto", "exif", "sidecar", "none")


def _read_sidecar(path: Path, id_col: str | None, lat_col: str | None, lon_col: str | None
                  ) -> tuple[dict[str, tuple[float, float]], list[Issue]]:
    """name (relative path, file name or stem) -> (lat, lon) from a sidecar CSV / Parquet; bad rows as issues."""
    df = read_table(path)
    df.columns = [str(c).strip() for c in df.columns]
    key_col = pick_column(df.columns, id_col, PATH_COLUMNS + ID_COLUMNS, "id column", str(path))
    lat_c = pick_column(df.columns, lat_col, LAT_COLUMNS, "lat column", str(path))
    lon_c = pick_column(df.columns, lon_col, LON_COLUMNS, "lon column", str(path))
    lat, lon, ok = parse_coords(df[lat_c], df[lon_c])
    out, issues = {}, []
    for i, key in enumerate(df[key_col].astype(str).str.strip()):
        if ok[i]:
            out[key] = (float(lat[i]), float(lon[i]))
        else:
            issues.append(Issue("bad_coordinates", f"{path} {row_label(path, i)}",
                                f"{path}: {row_label(path, i)}: lat={show_value(df[lat_c].iloc[i])}, "
                                f"lon={show_value(df[lon_c].iloc[i])} are not valid coordinates", key))
    return out, issues


def read_folder(root: Path, coords: str, sidecar, id_col: str | None, lat_col: str | None, lon_col: str | None,
                recursive: bool, progress: bool) -> tuple[pd.DataFrame, list[Issue]]:
    """The sample table of the images under ``root`` (id = path relative to ``root``) and the files skipped.

    ``coords``: auto (sidecar if given, else EXIF) | exif | sidecar | none. ``sidecar``: a CSV /
    Parquet of name, lat, lon (relative to ``root`` if not found as given).
    """
    if coords not in COORDS:
        raise InputError(f"coords must be 'auto', 'exif', 'sidecar' or 'none', got {coords!r}")
    issues: list[Issue] = []
    sidecar_path = Path(sidecar) if sidecar else None
    if sidecar_path is not None and not sidecar_path.is_absolute() and not sidecar_path.exists():
        sidecar_path = root / sidecar_path
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for n in sorted(names):
            if n.startswith("."):
                continue
            full = Path(dirpath) / n
            if sidecar_path is not None and full.resolve() == sidecar_path.resolve():
                continue
            if is_image_path(n):
                files.append(full)
            else:
                issues.append(Issue("not_image", str(full), f"{full}: not an image file name "
                                    f"(suffix {full.suffix or 'none'!r}), skipped"))
    if coords == "auto":
        coords = "sidecar" if sidecar_path is not None else "exif"
    table_coords: dict[str, tuple[float, float]] = {}
    if coords == "sidecar":
        if sidecar_path is None:
            raise InputError(f"{root}: coords='sidecar' needs a sidecar CSV (the sidecar option)")
        table_coords, more = _read_sidecar(sidecar_path, id_col, lat_col, lon_col)
        issues += more
    rows = []
    used: set[str] = set()
    for full in tqdm(files, desc=f"reading {root.name or root}", unit="img", disable=not progress or len(files) < 200,
                     leave=False):
        rel = full.relative_to(root).as_posix()
        lat = lon = None
        if coords == "sidecar":
            key = next((k for k in (rel, full.name, full.stem) if k in table_coords), None)
            if key is not None:
                lat, lon = table_coords[key]
                used.add(key)
        elif coords == "exif":
            try:
                found = read_exif(full)
            except ImageError:
                found = None
            if found is not None and found.has_gps:
                lat, lon = found.lat, found.lon
        rows.append({"id": rel, "source": str(full), "lat": lat, "lon": lon})
    for key in table_coords:
        if key not in used:
            issues.append(Issue("missing", f"{sidecar_path}", f"{sidecar_path}: names {key!r}, which is not an "
                                f"image in {root}", key))
    table = pd.DataFrame(rows, columns=["id", "source", "lat", "lon"])
    table["lat"] = pd.to_numeric(table["lat"], errors="coerce")
    table["lon"] = pd.to_numeric(table["lon"], errors="coerce")
    return table, issues

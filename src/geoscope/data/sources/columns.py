"""What every source does with a table of samples: find the id / lat / lon / path columns, parse coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from geoscope.errors import InputError

ID_COLUMNS = ("id", "img_id", "image_id", "key", "filename", "file_name", "file", "image", "path", "name")
LAT_COLUMNS = ("lat", "latitude", "gps_lat", "gps_latitude")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "gps_lon", "gps_lng", "gps_longitude")
PATH_COLUMNS = ("path", "source", "filepath", "file_path", "image_path", "filename", "file_name", "file", "image")


def pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str,
                required: bool = True) -> str | None:
    """The column named ``wanted`` (any case), else the first of ``candidates`` present (any case).

    Raises ``InputError`` naming ``where`` when ``wanted`` is absent, or when nothing matches and
    ``required``; returns None when nothing matches and not ``required``.
    """
    lower = {str(c).lower(): str(c) for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise InputError(f"{where}: no {what} {wanted!r} (columns found: {', '.join(map(str, columns[:15]))})")
    for c in candidates:
        if c in lower:
            return lower[c]
    if required:
        raise InputError(
            f"{where}: cannot tell which column holds the {what} (tried {', '.join(candidates)}; "
            f"columns found: {', '.join(map(str, columns[:15]))}); name it with the {what.split()[0]}_col option"
        )
    return None


def parse_floats(values) -> np.ndarray:
    """Exact float parsing (Python's, not pandas' fast parser); NaN where a value is not a number."""
    series = pd.Series(values)
    if series.dtype.kind in "fiu":
        return series.to_numpy(np.float64)
    text = series.astype(str).str.strip()
    try:
        return text.to_numpy(dtype=str).astype(np.float64)
    except ValueError:
        out = np.full(len(text), np.nan)
        for i, t in enumerate(text):
            try:
                out[i] = float(t)
            except ValueError:
                pass
        return out


def is_blank(col: pd.Series) -> pd.Series:
    """True where a cell is empty (NaN, None, "", "nan")."""
    return col.isna() | col.astype(str).str.strip().isin(["", "nan", "NaN", "None"])


def show_value(value) -> str:
    """A cell value as a person wrote it (no numpy reprs)."""
    return repr(value.item() if hasattr(value, "item") else value)


def parse_coords(raw_lat, raw_lon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floats (NaN where unparseable) and a mask of valid rows (lat in [-90, 90], lon in [-180, 360])."""
    lat, lon = parse_floats(raw_lat), parse_floats(raw_lon)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360)
    lon = np.where(ok & (lon >= 180.0), lon - 360.0, lon)  # 0..360 longitudes to [-180, 180)
    return lat, lon, ok

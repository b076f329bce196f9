"""Reading tables of points (id, lat, lon) from CSV or Parquet, with errors that name the problem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from geoscope.errors import InputError
from geoscope.geo.sphere import validate_latlon

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (all columns as text) or Parquet table; InputError naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a CSV or Parquet file")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise InputError(f"{path}: not a well-formed CSV file (a row has more fields than the header)") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: the file is empty (expected a header line and rows)") from exc
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: not a well-formed CSV file ({str(exc).strip().splitlines()[-1]})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the table ({type(exc).__name__}: {exc})") from exc


def row_label(path: str | os.PathLike, frame_row: int) -> str:
    """How a person finds a row: the line number for a CSV (header is line 1), else the row index."""
    if Path(path).suffix.lower() in PARQUET_SUFFIXES:
        return f"row {frame_row}"
    return f"line {frame_row + 2}"


def read_points(path: str | os.PathLike, id_col: str | None = "id", lat_col: str = "lat",
                lon_col: str = "lon", allow_empty: bool = False) -> pd.DataFrame:
    """Read a table of points and check it.

    Returns a DataFrame with columns ``id`` (str; the row number when ``id_col`` is None),
    ``lat``, ``lon`` (float64, longitude wrapped to [-180, 180)) followed by the table's other
    columns. Missing columns, unparseable or out-of-range coordinates, empty or repeated ids, and an
    empty table (unless ``allow_empty``) are errors naming the file, the line and the column.
    """
    path = Path(path)
    df = read_table(path)
    df.columns = [str(c).strip() for c in df.columns]
    wanted = [c for c in (id_col, lat_col, lon_col) if c is not None]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        have = ", ".join(df.columns[:12]) or "none"
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (columns found: {have})")
    if len(df) == 0 and not allow_empty:
        raise InputError(f"{path}: the table has no rows")

    coords = {}
    for col in (lat_col, lon_col):
        raw = df[col]
        values = pd.to_numeric(raw.astype(str).str.strip() if raw.dtype == object else raw, errors="coerce")
        values = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            more = f" ({int(bad.sum())} bad rows in all)" if bad.sum() > 1 else ""
            raise InputError(f"{path}: {row_label(path, i)}, column {col}: {raw.iloc[i]!r} is not a number{more}")
        coords[col] = values
    lat = coords[lat_col]
    bad = (lat < -90) | (lat > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        more = f" ({int(bad.sum())} bad rows in all)" if bad.sum() > 1 else ""
        raise InputError(f"{path}: {row_label(path, i)}, column {lat_col}: latitude {lat[i]} is outside [-90, 90]{more}")
    lat, lon = validate_latlon(lat, coords[lon_col], str(path))

    if id_col is None:
        ids = pd.Series(np.arange(len(df)).astype(str))
    else:
        ids = df[id_col].astype(str).str.strip().reset_index(drop=True)
        empty = (ids == "") | df[id_col].isna().to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise InputError(f"{path}: {row_label(path, i)}, column {id_col}: the id is empty")
        dup = ids.duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise InputError(f"{path}: {row_label(path, i)}, column {id_col}: id {ids[i]!r} appears more than once")
    rest = df.drop(columns=wanted).reset_index(drop=True)
    out = pd.DataFrame({"id": ids, "lat": lat, "lon": lon})
    rest = rest.drop(columns=[c for c in ("id", "lat", "lon") if c in rest.columns])
    return pd.concat([out, rest], axis=1)


# older private names, still used by data/datasets.py
_read_frame = read_table
_row_label = row_label

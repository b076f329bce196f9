"""A collection of geotagged images, and ``open_dataset``, the one way to open one.

``open_dataset(spec)`` picks the source (``data/sources/``: a folder, a CSV / Parquet manifest with
optional benchmark preset, WebDataset shards) and returns a ``Dataset``: a sized iterable of
``GeoSample`` backed by a table. Problems met while opening (a non-image file in a folder, a
manifest row with bad coordinates, a broken JSON in a shard) do not stop it: they are kept in
``dataset.issues`` and the rest of the collection opens. ``data/validate.py`` then reads every
image; ``data/splits.py`` makes train / val / test splits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from geoscope.atomic import atomic_path
from geoscope.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, is_image_path
from geoscope.data.issues import Issue
from geoscope.data.samples import (
    SAMPLE_COLUMNS,
    TAR_SUFFIXES,
    GeoSample,
    load_sample_image,
    read_sample_bytes,
)
from geoscope.data.sources.folder import read_folder
from geoscope.data.sources.manifest import MANIFEST_SUFFIXES, PRESETS, ManifestLayout, read_manifest
from geoscope.data.sources.webdataset import is_pattern, read_shards, shard_paths
from geoscope.errors import InputError


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class Dataset:
    """A sized iterable of ``GeoSample`` backed by a table (one row per sample).

    ``kind``: folder / manifest / webdataset / samples. ``issues``: problems found while opening.
    """

    def __init__(self, table: pd.DataFrame, kind: str = "samples", name: str = "",
                 issues: list[Issue] | None = None):
        for col in SAMPLE_COLUMNS:
            if col not in table.columns:
                table[col] = None
        self.table = table.reset_index(drop=True)
        self.kind = kind
        self.name = name
        self.issues = list(issues or [])
        self.extra_columns = [c for c in self.table.columns if c not in SAMPLE_COLUMNS]

    @classmethod
    def from_samples(cls, samples: Iterable[GeoSample], kind: str = "samples", name: str = "",
                     issues: list[Issue] | None = None) -> "Dataset":
        rows = []
        for s in samples:
            row = {"id": s.id, "source": s.source, "lat": s.lat, "lon": s.lon, "offset": s.offset, "size": s.size}
            row.update({k: v for k, v in s.extra.items() if k not in row})
            rows.append(row)
        table = pd.DataFrame(rows, columns=None if rows else SAMPLE_COLUMNS)
        return cls(table, kind, name, issues)

    def __len__(self) -> int:
        return len(self.table)

    def _sample(self, row: dict) -> GeoSample:
        def num(v, cast):
            return None if _missing(v) else cast(v)

        extra = {c: row[c] for c in self.extra_columns if not _missing(row[c])}
        return GeoSample(str(row["id"]), str(row["source"]), num(row["lat"], float), num(row["lon"], float),
                         extra, num(row["offset"], int), num(row["size"], int))

    def __getitem__(self, i: int) -> GeoSample:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._sample(self.table.iloc[int(i)].to_dict())

    def __iter__(self) -> Iterator[GeoSample]:
        cols = list(self.table.columns)
        for values in self.table.itertuples(index=False, name=None):
            yield self._sample(dict(zip(cols, values)))

    def __repr__(self) -> str:
        return f"Dataset({self.kind} {self.name!r}, {len(self)} samples, {len(self.issues)} issues)"

    @property
    def ids(self) -> list[str]:
        return self.table["id"].astype(str).tolist()

    @property
    def lat(self) -> np.ndarray:
        return pd.to_numeric(self.table["lat"], errors="coerce").to_numpy(np.float64)

    @property
    def lon(self) -> np.ndarray:
        return pd.to_numeric(self.table["lon"], errors="coerce").to_numpy(np.float64)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "Dataset":
        return Dataset(self.table.iloc[np.asarray(indices, dtype=np.int64)].copy(), self.kind,
                       self.name if name is None else name)

    def load_image(self, sample: GeoSample, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   max_bytes: int | None = DEFAULT_MAX_BYTES, draft_size: int | None = None) -> Image.Image:
        return load_sample_image(sample, max_pixels, max_bytes, draft_size=draft_size)

    def read_bytes(self, sample: GeoSample, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
        return read_sample_bytes(sample, max_bytes)

    def to_manifest(self, path: str | os.PathLike) -> Path:
        """Write the samples as a CSV / Parquet manifest (atomically) that ``open_dataset`` reads back."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() in (".parquet", ".pq"):
                self.table.to_parquet(tmp, index=False)
            else:
                self.table.to_csv(tmp, index=False)
        return path


def _shards(shards: list[str], lat_key: str | None, lon_key: str | None, progress: bool) -> Dataset:
    table, issues = read_shards(shards, lat_key, lon_key, progress)
    return Dataset(table, "webdataset", shards[0] if len(shards) == 1 else f"{len(shards)} shards", issues)


def open_dataset(
    spec,
    *,
    preset: str | None = None,
    images: str | os.PathLike | None = None,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    path_col: str | None = None,
    path_template: str | None = None,
    split: str | None = None,
    coords: str = "auto",
    sidecar: str | os.PathLike | None = None,
    recursive: bool = True,
    progress: bool = True,
) -> Dataset:
    """Open a collection of geotagged images.

    ``spec`` is one of:
    - a folder of images (coordinates from EXIF GPS, or a ``sidecar`` CSV of path/name, lat, lon;
      ``coords`` = auto | exif | sidecar | none);
    - a CSV / Parquet manifest: column names guessed (id / lat / latitude / lon / longitude / path ...)
      or given (``id_col``, ``lat_col``, ``lon_col``, ``path_col``, ``path_template`` with ``{id}``
      and ``{split}``), images under ``images`` (default: the manifest's folder); or a ``preset``:
      im2gps3k, yfcc4k, mp16, osv5m (``split`` defaults to the manifest's name, e.g. "test");
    - WebDataset tar shards: a ``.tar`` path, a glob or brace pattern (``shard-{000..009}.tar``),
      a list of paths, or a folder holding only ``.tar`` files (image member + ``.json`` with lat/lon;
      ``lat_col`` / ``lon_col`` name the JSON keys).
    A ``Dataset`` passes through unchanged.
    """
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, (list, tuple)):
        shards = [str(s) for s in spec]
        if not shards:
            raise InputError("open_dataset: the list of shards is empty")
        return _shards(shards, lat_col, lon_col, progress)
    text = str(spec)
    if preset is not None:
        key = preset.lower().replace("-", "").replace("_", "")
        if key not in PRESETS:
            raise InputError(f"unknown dataset preset {preset!r} (known: {', '.join(PRESETS)})")
        layout = PRESETS[key]
    else:
        layout = ManifestLayout()
    layout = ManifestLayout(
        id_col or layout.id_col, lat_col or layout.lat_col, lon_col or layout.lon_col,
        path_col or layout.path_col, path_template or layout.path_template, layout.image_dir,
    )
    if is_pattern(text):
        return _shards(shard_paths(text), lat_col, lon_col, progress)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        tars = sorted(str(p) for p in entries if p.name.lower().endswith(TAR_SUFFIXES))
        if tars and not any(is_image_path(p) for p in entries):
            return _shards(tars, lat_col, lon_col, progress)
        table, issues = read_folder(path, coords, sidecar, id_col, lat_col, lon_col, recursive, progress)
        return Dataset(table, "folder", str(path), issues)
    if path.name.lower().endswith(TAR_SUFFIXES):
        return _shards([str(path)], lat_col, lon_col, progress)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        table, issues = read_manifest(path, layout, None if images is None else str(images), split)
        return Dataset(table, "manifest", str(path), issues)
    raise InputError(f"{path}: not a folder, a CSV / Parquet manifest or a .tar shard")

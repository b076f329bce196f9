"""Geotagged image collections: folders, manifests (CSV / Parquet, benchmark presets), WebDataset shards.

``open_dataset(spec)`` returns a ``Dataset``: a sized iterable of ``GeoSample`` (id, source, lat,
lon, extra). Problems met while opening (a non-image file in a folder, a manifest row with bad
coordinates, a broken JSON in a shard) do not stop it: they are kept in ``dataset.issues`` and the
rest of the collection opens. ``validate_dataset`` then reads every image and reports missing,
unreadable and duplicate files; ``split_dataset`` makes deterministic random or spatially separated
splits.

A ``GeoSample`` is small and picklable and carries everything needed to read its bytes
(``read_sample_bytes``, ``load_sample_image``): a file path, or a tar shard path plus the member's
byte offset and size. Worker processes need only the sample, never the ``Dataset``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import re
import tarfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from geoscope.data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageError,
    is_image_path,
    load_image,
    read_limited,
)
from geoscope.errors import InputError

TAR_SEP = "::"  # source of a shard member: "<shard.tar>::<member name>"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")

ID_COLUMNS = ("id", "img_id", "image_id", "key", "filename", "file_name", "file", "image", "path", "name")
LAT_COLUMNS = ("lat", "latitude", "gps_lat", "gps_latitude")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "gps_lon", "gps_lng", "gps_longitude")
PATH_COLUMNS = ("path", "source", "filepath", "file_path", "image_path", "filename", "file_name", "file", "image")


# --- samples ------------------------------------------------------------------------------------

@dataclass
class GeoSample:
    """One geotagged (or not yet geotagged) image.

    ``source`` is a file path, or ``"<shard.tar>::<member>"`` for a WebDataset member, in which case
    ``offset`` / ``size`` give the member's bytes inside the (uncompressed) shard.
    ``lat`` / ``lon`` are None when unknown. ``extra`` holds the other manifest / metadata fields.
    """

    id: str
    source: str
    lat: float | None = None
    lon: float | None = None
    extra: dict = field(default_factory=dict)
    offset: int | None = None
    size: int | None = None

    @property
    def has_coords(self) -> bool:
        return self.lat is not None and self.lon is not None

    def to_dict(self) -> dict:
        return asdict(self)


def split_source(source: str) -> tuple[str, str | None]:
    """(container, member) for ``"shard.tar::member"``; (path, None) for a plain file."""
    if TAR_SEP in source:
        container, member = source.split(TAR_SEP, 1)
        if container.lower().endswith(TAR_SUFFIXES):
            return container, member
    return source, None


def read_sample_bytes(sample: GeoSample, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The encoded image bytes of ``sample``; raises ``ImageError`` naming the source."""
    container, member = split_source(sample.source)
    if member is None:
        return read_limited(container, max_bytes, sample.source)
    if max_bytes is not None and sample.size is not None and sample.size > max_bytes:
        raise ImageError(f"{sample.source}: member is {sample.size:,} bytes, more than the limit of {max_bytes:,} bytes")
    try:
        if sample.offset is not None and sample.size is not None:
            with open(container, "rb") as f:
                f.seek(sample.offset)
                data = f.read(sample.size)
            if len(data) != sample.size:
                raise ImageError(f"{sample.source}: shard is shorter than its index says (truncated shard?)")
            return read_limited(data, max_bytes, sample.source)
        with tarfile.open(container, "r:*") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise ImageError(f"{sample.source}: not a regular file inside the shard")
            return read_limited(handle, max_bytes, sample.source)
    except FileNotFoundError:
        raise ImageError(f"{sample.source}: shard {container} not found")
    except KeyError:
        raise ImageError(f"{sample.source}: no member {member!r} in the shard")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"{sample.source}: cannot read the shard ({exc})")


def load_sample_image(sample: GeoSample, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      max_bytes: int | None = DEFAULT_MAX_BYTES):
    """The decoded RGB image of ``sample`` (``data.images.load_image`` rules); picklable, worker-safe."""
    container, member = split_source(sample.source)
    if member is None:
        return load_image(container, max_pixels=max_pixels, max_bytes=max_bytes, name=sample.source)
    return load_image(read_sample_bytes(sample, max_bytes), max_pixels=max_pixels, max_bytes=max_bytes,
                      name=sample.source)


@dataclass
class Issue:
    """A problem with one item: ``kind`` (not_image, missing, unreadable, bad_coordinates,
    no_coordinates, duplicate_id, duplicate_image, bad_metadata), where, and why (one sentence)."""

    kind: str
    source: str
    reason: str
    id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --- the dataset --------------------------------------------------------------------------------

_CORE = ["id", "source", "lat", "lon", "offset", "size"]


class Dataset:
    """A sized iterable of ``GeoSample`` backed by a table (one row per sample).

    ``kind``: folder / manifest / webdataset / samples. ``issues``: problems found while opening.
    """

    def __init__(self, table: pd.DataFrame, kind: str = "samples", name: str = "",
                 issues: list[Issue] | None = None):
        for col in _CORE:
            if col not in table.columns:
                table[col] = None
        self.table = table.reset_index(drop=True)
        self.kind = kind
        self.name = name
        self.issues = list(issues or [])
        self.extra_columns = [c for c in self.table.columns if c not in _CORE]

    @classmethod
    def from_samples(cls, samples: Iterable[GeoSample], kind: str = "samples", name: str = "",
                     issues: list[Issue] | None = None) -> "Dataset":
        rows = []
        for s in samples:
            row = {"id": s.id, "source": s.source, "lat": s.lat, "lon": s.lon, "offset": s.offset, "size": s.size}
            row.update({k: v for k, v in s.extra.items() if k not in row})
            rows.append(row)
        table = pd.DataFrame(rows, columns=None if rows else _CORE)
        return cls(table, kind, name, issues)

    def __len__(self) -> int:
        return len(self.table)

    def _sample(self, row: dict) -> GeoSample:
        def num(v, cast):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else cast(v)

        extra = {c: row[c] for c in self.extra_columns
                 if not (row[c] is None or (isinstance(row[c], float) and math.isnan(row[c])))}
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
                   max_bytes: int | None = DEFAULT_MAX_BYTES):
        return load_sample_image(sample, max_pixels, max_bytes)

    def read_bytes(self, sample: GeoSample, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
        return read_sample_bytes(sample, max_bytes)

    def to_manifest(self, path: str | os.PathLike) -> Path:
        """Write the samples as a CSV / Parquet manifest (atomically) that ``open_dataset`` reads back."""
        from geoscope.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() in (".parquet", ".pq"):
                self.table.to_parquet(tmp, index=False)
            else:
                self.table.to_csv(tmp, index=False)
        return path


# --- opening ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestLayout:
    """Where a manifest keeps ids, coordinates and image paths.

    ``path_template`` builds an image path (relative to the image root) from ``{id}`` and
    ``{split}``; ``path_col`` names a column holding the path instead.
    """

    id_col: str | None = None
    lat_col: str | None = None
    lon_col: str | None = None
    path_col: str | None = None
    path_template: str = "{id}"
    image_dir: str = ""  # image root relative to the manifest's folder (may use {split})


# Public benchmark layouts. Confirmed from public code that reads these files:
# - Im2GPS3k (im2gps3k_places365.csv, TIBHannover/GeoEstimation meta): IMG_ID,LAT,LON,... where
#   IMG_ID is the image file name (with ".jpg") inside the image folder.
# - OSV-5M (train.csv / test.csv on the hub): id,latitude,longitude,thumb_original_url,country,...;
#   images unpack from images/<split>/NN.zip to images/<split>/ as <id>.jpg. Where the zips unpack
#   into sub-folders instead, the loader falls back to finding files by name under the image root.
# Not confirmed here (no copy of the file found): YFCC4k (yfcc4k_places365.csv) and MP-16
# (mp16_places365.csv) are taken to use the same IMG_ID,LAT,LON columns as Im2GPS3k, with IMG_ID a
# path relative to the image folder (MP-16 uses "ab/cd/<photo>.jpg"); pass id_col / lat_col /
# lon_col / path_template to override.
PRESETS: dict[str, ManifestLayout] = {
    "im2gps3k": ManifestLayout("IMG_ID", "LAT", "LON"),
    "yfcc4k": ManifestLayout("IMG_ID", "LAT", "LON"),
    "mp16": ManifestLayout("IMG_ID", "LAT", "LON"),
    "osv5m": ManifestLayout("id", "latitude", "longitude", path_template="{id}.jpg", image_dir="images/{split}"),
}


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str,
          required: bool = True) -> str | None:
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


def _floats(values) -> np.ndarray:
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


def _is_blank(col: pd.Series) -> pd.Series:
    return col.isna() | col.astype(str).str.strip().isin(["", "nan", "NaN", "None"])


def _show(value) -> str:
    """A cell value as a person wrote it (no numpy reprs)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _coords(raw_lat, raw_lon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floats (NaN where unparseable) and a mask of valid rows (lat in [-90, 90], lon in [-180, 360])."""
    lat, lon = _floats(raw_lat), _floats(raw_lon)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360)
    lon = np.where(ok & (lon >= 180.0), lon - 360.0, lon)  # 0..360 longitudes to [-180, 180)
    return lat, lon, ok


def _table_readers():
    """geo.table's CSV/Parquet reader and row labeller (public names, or the older private ones)."""
    from geoscope.geo import table

    read = getattr(table, "read_table", None) or getattr(table, "_read_frame")
    label = getattr(table, "row_label", None) or getattr(table, "_row_label")
    return (lambda path: read(Path(path))), (lambda path, i: label(Path(path), i))


def _index_by_name(root: Path) -> dict[str, str]:
    """File name and stem -> path for every image under ``root`` (for layouts with sub-folders)."""
    index: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if is_image_path(f):
                full = os.path.join(dirpath, f)
                index.setdefault(f, full)
                index.setdefault(os.path.splitext(f)[0], full)
    return index


def _open_manifest(path: Path, layout: ManifestLayout, images: str | None, split: str | None,
                   progress: bool) -> Dataset:
    _read_frame, _row_label = _table_readers()

    df = _read_frame(path)
    df.columns = [str(c).strip() for c in df.columns]
    where = str(path)
    id_col = _pick(df.columns, layout.id_col, ID_COLUMNS, "id column", where)
    lat_col = _pick(df.columns, layout.lat_col, LAT_COLUMNS, "lat column", where)
    lon_col = _pick(df.columns, layout.lon_col, LON_COLUMNS, "lon column", where)
    path_col = layout.path_col
    if path_col is None and layout.path_template == "{id}":
        path_col = _pick([c for c in df.columns if c != id_col], None, PATH_COLUMNS, "path column", where, False)
    elif path_col is not None:
        path_col = _pick(df.columns, path_col, PATH_COLUMNS, "path column", where)

    split_name = split or path.stem
    if images is not None:
        root = Path(images)
    else:
        root = path.parent / layout.image_dir.format(split=split_name)
    ids = df[id_col].astype(str).str.strip()
    lat, lon, ok = _coords(df[lat_col], df[lon_col])
    if path_col is not None:
        rel = df[path_col].astype(str).str.strip()
    else:
        rel = pd.Series([layout.path_template.format(id=i, split=split_name) for i in ids])

    def resolve(r: str) -> str:
        if TAR_SEP in r and split_source(r)[1] is not None:
            c, m = split_source(r)
            return (c if os.path.isabs(c) else str(root / c)) + TAR_SEP + m
        return r if os.path.isabs(r) else str(root / r)

    sources = [resolve(r) for r in rel]
    # The layout's paths may not match how the images were unpacked: if none of the first rows
    # exists, look the files up by name under the image root.
    probe = [s for s in sources[:20] if split_source(s)[1] is None]
    if probe and not any(os.path.exists(s) for s in probe) and root.is_dir():
        index = _index_by_name(root)
        if index:
            sources = [index.get(Path(s).name, index.get(i, s)) for s, i in zip(sources, ids)]

    issues: list[Issue] = []
    keep = np.ones(len(df), dtype=bool)
    blank = (_is_blank(df[lat_col]) & _is_blank(df[lon_col])).to_numpy()
    for i in np.flatnonzero(~ok & ~blank):
        issues.append(Issue("bad_coordinates", f"{path} {_row_label(path, int(i))}",
                            f"{path}: {_row_label(path, int(i))}: lat={_show(df[lat_col].iloc[i])}, "
                            f"lon={_show(df[lon_col].iloc[i])} are not valid coordinates", ids.iloc[i]))
        keep[i] = False
    empty = (ids == "") | (ids.str.lower() == "nan")
    dup = ids.duplicated() & ~empty
    for i in np.flatnonzero((empty | dup).to_numpy() & keep):
        what = "has an empty id" if empty.iloc[i] else f"repeats id {ids.iloc[i]!r}"
        issues.append(Issue("duplicate_id" if dup.iloc[i] else "bad_metadata", f"{path} {_row_label(path, int(i))}",
                            f"{path}: {_row_label(path, int(i))} {what}", ids.iloc[i]))
        keep[i] = False

    offset = df["offset"] if "offset" in df.columns else None
    size = df["size"] if "size" in df.columns else None
    table = pd.DataFrame({
        "id": ids, "source": sources, "lat": lat, "lon": lon,
        "offset": pd.to_numeric(offset, errors="coerce") if offset is not None else None,
        "size": pd.to_numeric(size, errors="coerce") if size is not None else None,
    })
    used = {id_col, lat_col, lon_col, path_col, "offset", "size", "id", "source", "lat", "lon"}
    for c in df.columns:
        if c not in used:
            table[c] = df[c].to_numpy()
    return Dataset(table[keep], "manifest", str(path), issues)


def _read_sidecar(path: Path, id_col, lat_col, lon_col) -> tuple[dict[str, tuple[float, float]], list[Issue]]:
    layout = ManifestLayout(id_col, lat_col, lon_col)
    _read_frame, _row_label = _table_readers()

    df = _read_frame(path)
    df.columns = [str(c).strip() for c in df.columns]
    key_col = _pick(df.columns, layout.id_col, PATH_COLUMNS + ID_COLUMNS, "id column", str(path))
    lat_c = _pick(df.columns, layout.lat_col, LAT_COLUMNS, "lat column", str(path))
    lon_c = _pick(df.columns, layout.lon_col, LON_COLUMNS, "lon column", str(path))
    lat, lon, ok = _coords(df[lat_c], df[lon_c])
    out, issues = {}, []
    for i, key in enumerate(df[key_col].astype(str).str.strip()):
        if ok[i]:
            out[key] = (float(lat[i]), float(lon[i]))
        else:
            issues.append(Issue("bad_coordinates", f"{path} {_row_label(path, i)}",
                                f"{path}: {_row_label(path, i)}: lat={_show(df[lat_c].iloc[i])}, lon={_show(df[lon_c].iloc[i])} "
                                "are not valid coordinates", key))
    return out, issues


def _open_folder(root: Path, coords: str, sidecar, id_col, lat_col, lon_col, recursive: bool,
                 progress: bool) -> Dataset:
    from tqdm import tqdm

    from geoscope.data.exif import read_exif

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
        elif coords != "none":
            raise InputError(f"coords must be 'auto', 'exif', 'sidecar' or 'none', got {coords!r}")
        rows.append({"id": rel, "source": str(full), "lat": lat, "lon": lon})
    for key in table_coords:
        if key not in used:
            issues.append(Issue("missing", f"{sidecar_path}", f"{sidecar_path}: names {key!r}, which is not an "
                                f"image in {root}", key))
    table = pd.DataFrame(rows, columns=["id", "source", "lat", "lon"])
    table["lat"] = pd.to_numeric(table["lat"], errors="coerce")
    table["lon"] = pd.to_numeric(table["lon"], errors="coerce")
    return Dataset(table, "folder", str(root), issues)


def _expand_braces(pattern: str) -> list[str]:
    """'shard-{000..003}.tar' -> 4 names (WebDataset's brace notation); also {a,b}."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        width = len(a)
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    out = []
    for it in items:
        out += _expand_braces(pattern[: m.start()] + it + pattern[m.end():])
    return out


def _wds_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the base name; the rest is the extension."""
    d, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _ends_cleanly(shard: str, offset: int) -> bool:
    """True when a zero block (the tar end-of-archive marker) follows the last member."""
    with open(shard, "rb") as f:
        f.seek(offset)
        block = f.read(512)
    return len(block) == 512 and not block.strip(b"\0")


def _open_shards(shards: list[str], lat_key, lon_key, progress: bool) -> Dataset:
    from tqdm import tqdm

    rows, issues = [], []
    seen: dict[str, str] = {}
    for shard in tqdm(shards, desc="indexing shards", unit="shard", disable=not progress or len(shards) < 4,
                      leave=False):
        if not os.path.exists(shard):
            issues.append(Issue("missing", shard, f"{shard}: shard not found"))
            continue
        groups: dict[str, dict[str, tarfile.TarInfo]] = defaultdict(dict)
        order: list[str] = []
        compressed = not shard.lower().endswith(".tar")
        try:
            with tarfile.open(shard, "r:*") as tar:
                try:
                    for m in tar:
                        if not m.isfile():
                            continue
                        key, ext = _wds_key(m.name)
                        if key not in groups:
                            order.append(key)
                        groups[key][ext] = m
                except (tarfile.TarError, EOFError, OSError) as exc:
                    issues.append(Issue("unreadable", shard, f"{shard}: shard is damaged after "
                                        f"{sum(len(g) for g in groups.values())} members ({exc}); kept what came before"))
                else:
                    if not compressed and not _ends_cleanly(shard, tar.offset):
                        issues.append(Issue("unreadable", shard, f"{shard}: shard ends without the tar end-of-archive "
                                            f"marker after {len(order)} sample(s) (truncated?); later samples are lost"))
                if not compressed:
                    end = os.path.getsize(shard)
                    cut = [k for k in order if any(m.offset_data + m.size > end for m in groups[k].values())]
                    if cut:
                        issues.append(Issue("unreadable", shard, f"{shard}: shard is truncated; {len(cut)} "
                                            f"sample(s) from {cut[0]!r} on are incomplete and were left out"))
                        order = [k for k in order if k not in set(cut)]
                for key in order:
                    members = groups[key]
                    img_ext = next((e for e in members if is_image_path("x." + e.rsplit(".", 1)[-1])), None)
                    src_key = f"{shard}{TAR_SEP}{key}"
                    if img_ext is None:
                        issues.append(Issue("missing", src_key, f"{src_key}: sample has no image member "
                                            f"(found: {', '.join(sorted(members)) or 'nothing'})", key))
                        continue
                    img = members[img_ext]
                    meta: dict[str, Any] = {}
                    lat = lon = None
                    js = members.get("json")
                    if js is not None:
                        try:
                            handle = tar.extractfile(js)
                            meta = json.loads(handle.read().decode("utf-8")) if handle else {}
                            if not isinstance(meta, dict):
                                raise ValueError("not a JSON object")
                        except (ValueError, UnicodeDecodeError, tarfile.TarError, OSError) as exc:
                            issues.append(Issue("bad_metadata", f"{shard}{TAR_SEP}{js.name}",
                                                f"{shard}{TAR_SEP}{js.name}: unreadable JSON ({exc})", key))
                            meta = {}
                    if meta:
                        names = list(meta)
                        la = _pick(names, lat_key, LAT_COLUMNS, "lat key", src_key, required=False)
                        lo = _pick(names, lon_key, LON_COLUMNS, "lon key", src_key, required=False)
                        if la and lo:
                            la_v, lo_v, ok = _coords([meta[la]], [meta[lo]])
                            if ok[0]:
                                lat, lon = float(la_v[0]), float(lo_v[0])
                            else:
                                issues.append(Issue("bad_coordinates", src_key, f"{src_key}: lat={meta[la]!r}, "
                                                    f"lon={meta[lo]!r} are not valid coordinates", key))
                                continue
                        meta = {k: v for k, v in meta.items() if k not in (la, lo)
                                and isinstance(v, (str, int, float, bool))}
                    if key in seen:
                        issues.append(Issue("duplicate_id", src_key, f"{src_key}: key {key!r} already used in {seen[key]}", key))
                        continue
                    seen[key] = shard
                    row = {"id": key, "source": f"{shard}{TAR_SEP}{img.name}", "lat": lat, "lon": lon,
                           "offset": None if compressed else img.offset_data, "size": img.size}
                    row.update({k: v for k, v in meta.items() if k not in row})
                    rows.append(row)
        except (tarfile.TarError, OSError, EOFError) as exc:
            issues.append(Issue("unreadable", shard, f"{shard}: not a readable tar shard ({exc})"))
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=_CORE)
    for c in ("lat", "lon"):
        table[c] = pd.to_numeric(table[c], errors="coerce")
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
        return _open_shards(shards, lat_col, lon_col, progress)
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
    if any(ch in text for ch in "*?[{") and not os.path.exists(text):
        shards = sorted(p for pat in _expand_braces(text) for p in (glob.glob(pat) if any(c in pat for c in "*?[") else [pat]))
        if not shards:
            raise InputError(f"{text}: no files match this pattern")
        if not all(s.lower().endswith(TAR_SUFFIXES) for s in shards):
            raise InputError(f"{text}: a pattern must name WebDataset .tar shards")
        return _open_shards(shards, lat_col, lon_col, progress)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        tars = sorted(str(p) for p in entries if p.name.lower().endswith(TAR_SUFFIXES))
        if tars and not any(is_image_path(p) for p in entries):
            return _open_shards(tars, lat_col, lon_col, progress)
        return _open_folder(path, coords, sidecar, id_col, lat_col, lon_col, recursive, progress)
    if path.name.lower().endswith(TAR_SUFFIXES):
        return _open_shards([str(path)], lat_col, lon_col, progress)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _open_manifest(path, layout, None if images is None else str(images), split, progress)
    raise InputError(f"{path}: not a folder, a CSV / Parquet manifest or a .tar shard")


# --- validation ---------------------------------------------------------------------------------

def _check_sample(args) -> tuple[str, str, str | None, int, int]:
    """(status, reason, sha256, width, height) for one sample: status ok / missing / unreadable."""
    sample, decode, max_pixels, max_bytes = args
    try:
        data = read_sample_bytes(sample, max_bytes)
    except ImageError as exc:
        msg = str(exc)
        status = "missing" if msg.endswith("not found") or "no member" in msg else "unreadable"
        return status, msg, None, 0, 0
    digest = hashlib.sha256(data).hexdigest()
    try:
        if decode:
            im = load_image(data, max_pixels=max_pixels, max_bytes=max_bytes, name=sample.source)
        else:
            from geoscope.data.images import open_header

            im = open_header(data, sample.source, max_pixels)
        return "ok", "", digest, im.size[0], im.size[1]
    except ImageError as exc:
        return "unreadable", str(exc), digest, 0, 0


@dataclass
class ValidationReport:
    """What ``validate_dataset`` found. ``problems`` lists every issue; ``duplicates`` groups of ids
    whose image bytes are identical; ``ok_ids`` the samples that are readable, located and unique."""

    dataset: str
    n_samples: int
    problems: list[Issue]
    duplicates: list[list[str]]
    ok_ids: list[str]

    #: kinds that make a sample unusable (no_coordinates is only a warning: fine for inference).
    ERRORS = ("missing", "unreadable", "bad_coordinates", "duplicate_id", "duplicate_image", "bad_metadata", "not_image")

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.problems:
            out[p.kind] += 1
        return dict(sorted(out.items()))

    @property
    def ok(self) -> bool:
        return not any(p.kind in self.ERRORS for p in self.problems)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_samples": self.n_samples, "n_ok": len(self.ok_ids), "ok": self.ok,
                "counts": self.counts, "duplicates": self.duplicates, "problems": [p.to_dict() for p in self.problems]}

    def format(self, limit: int = 20) -> str:
        lines = [f"{self.dataset}: {self.n_samples} samples, {len(self.ok_ids)} usable"]
        for kind, n in self.counts.items():
            lines.append(f"  {kind}: {n}")
        for p in self.problems[:limit]:
            lines.append(f"  - {p.reason}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (use --json for all)")
        if self.n_samples and self.counts.get("missing", 0) >= self.n_samples:
            lines.append("  hint: no image was found; check the image folder (the images option, --images)")
        return "\n".join(lines)


def validate_dataset(ds, decode: bool = True, workers: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     max_bytes: int | None = DEFAULT_MAX_BYTES, progress: bool = True) -> ValidationReport:
    """Read every image of ``ds`` and report problems, each with its reason; never stops early.

    Reports the issues met while opening, missing files, unreadable / truncated / over-large images
    (``decode=False`` checks headers only: faster, misses truncation), samples without or with bad
    coordinates, and images whose bytes are identical (sha256). ``workers`` > 0 uses processes.
    """
    from tqdm import tqdm

    ds = open_dataset(ds, progress=progress)
    samples = list(ds)
    jobs = [(s, decode, max_pixels, max_bytes) for s in samples]
    bar = dict(total=len(jobs), desc="validating", unit="img", disable=not progress, leave=False)
    if workers and workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_check_sample, jobs, chunksize=16), **bar))
    else:
        results = [_check_sample(j) for j in tqdm(jobs, **bar)]

    problems = list(ds.issues)
    usable: list[tuple[GeoSample, str]] = []
    for s, (status, reason, digest, _w, _h) in zip(samples, results):
        if status != "ok":
            problems.append(Issue(status, s.source, reason, s.id))
            continue
        if not s.has_coords:
            problems.append(Issue("no_coordinates", s.source, f"{s.source}: no coordinates (no GPS in EXIF, "
                                  "no manifest or sidecar entry)", s.id))
        elif not (-90 <= s.lat <= 90 and -180 <= s.lon <= 360 and math.isfinite(s.lat) and math.isfinite(s.lon)):
            problems.append(Issue("bad_coordinates", s.source, f"{s.source}: lat={s.lat}, lon={s.lon} are not "
                                  "valid coordinates", s.id))
            continue
        usable.append((s, digest))
    by_hash: dict[str, list[GeoSample]] = defaultdict(list)
    for s, digest in usable:
        by_hash[digest].append(s)
    duplicates = [[s.id for s in group] for group in by_hash.values() if len(group) > 1]
    later = set()
    for group in by_hash.values():
        for s in group[1:]:
            later.add(s.id)
            problems.append(Issue("duplicate_image", s.source, f"{s.source}: same image bytes as {group[0].source}", s.id))
    ok_ids = [s.id for s, _ in usable if s.id not in later and s.has_coords]
    return ValidationReport(ds.name, len(samples), problems, duplicates, ok_ids)


# --- splits -------------------------------------------------------------------------------------

def _unit_hash(seed: int, keys: Iterable[str]) -> np.ndarray:
    """A reproducible number in [0, 1) per key (independent of order, platform and PYTHONHASHSEED)."""
    out = [int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big") / 2**64 for k in keys]
    return np.asarray(out, dtype=np.float64)


def spatial_groups(lat, lon, cell_km: float) -> np.ndarray:
    """A cell key per point on a near-equal-area grid of about ``cell_km`` x ``cell_km``.

    Rows are latitude bands ``cell_km`` tall; each band is cut into as many columns as fit
    ``cell_km`` wide at the band's middle latitude.
    """
    from geoscope.geo.sphere import EARTH_RADIUS_KM

    if not cell_km > 0:
        raise InputError(f"cell_km must be positive, got {cell_km}")
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    km_per_deg = math.pi * EARTH_RADIUS_KM / 180.0
    dlat = cell_km / km_per_deg
    n_rows = max(1, int(math.ceil(180.0 / dlat)))
    row = np.clip(np.floor((lat + 90.0) / dlat).astype(np.int64), 0, n_rows - 1)
    mid = np.clip(-90.0 + (row + 0.5) * dlat, -90.0, 90.0)
    n_cols = np.maximum(1, np.floor(360.0 * km_per_deg * np.cos(np.radians(mid)) / cell_km)).astype(np.int64)
    col = np.floor(((lon + 180.0) % 360.0) / 360.0 * n_cols).astype(np.int64) % n_cols
    return row * 10_000_000 + col


def _normalise_fractions(fractions) -> dict[str, float]:
    if isinstance(fractions, dict):
        names, values = list(fractions), list(fractions.values())
    else:
        values = list(fractions)
        names = {1: ["train"], 2: ["train", "test"], 3: ["train", "val", "test"]}.get(len(values))
        if names is None:
            raise InputError(f"give 1 to 3 split fractions or a dict of them, got {len(values)}")
    values = [float(v) for v in values]
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise InputError(f"split fractions must be non-negative and not all zero, got {values}")
    total = sum(values)
    return {n: v / total for n, v in zip(names, values)}


def _assign_by_weight(order: np.ndarray, weights: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """Walk items in ``order`` and give each the split whose share of the total weight it falls in."""
    bounds = np.cumsum(list(fractions.values()))
    w = weights[order].astype(np.float64)
    mid = (np.cumsum(w) - w / 2) / w.sum()
    which = np.minimum(np.searchsorted(bounds, mid, side="right"), len(bounds) - 1)
    out = np.empty(len(order), dtype=np.int64)
    out[order] = which
    return out


class DatasetSplits(dict):
    """name -> Dataset. ``dropped``: training samples removed by the buffer; ``unlocated``: samples
    without coordinates, left out of a spatial split; ``min_distance_km``: the smallest distance
    between a kept training sample and a held-out one (NaN if not computed)."""

    dropped: Dataset
    unlocated: Dataset
    min_distance_km: float

    def summary(self) -> dict:
        return {"splits": {k: len(v) for k, v in self.items()}, "dropped_by_buffer": len(self.dropped),
                "unlocated": len(self.unlocated),
                "min_train_heldout_km": None if math.isnan(self.min_distance_km) else round(self.min_distance_km, 3)}


def split_dataset(ds, fractions=(0.8, 0.1, 0.1), method: str = "random", seed: int = 0, cell_km: float = 25.0,
                  buffer_km: float = 0.0, train: str = "train") -> DatasetSplits:
    """Deterministic splits of ``ds`` (same input and seed -> same splits, whatever the row order).

    ``method="random"``: samples ordered by a seeded hash of their id and cut by ``fractions``.
    ``method="spatial"``: samples grouped into cells of about ``cell_km`` (``spatial_groups``),
    whole cells go to one split (sized by samples), then training samples closer than ``buffer_km``
    to any held-out sample are dropped, so no test photo shares a spot with a training photo.
    ``fractions``: (train, val, test), (train, test) or a dict name -> fraction.
    """
    from scipy.spatial import cKDTree

    from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit

    ds = open_dataset(ds, progress=False)
    fr = _normalise_fractions(fractions)
    n = len(ds)
    if method not in ("random", "spatial"):
        raise InputError(f"split method must be 'random' or 'spatial', got {method!r}")
    if not buffer_km >= 0:
        raise InputError(f"buffer_km must be zero or positive, got {buffer_km}")
    lat, lon = ds.lat, ds.lon
    located = np.isfinite(lat) & np.isfinite(lon)
    spatial = method == "spatial" or buffer_km > 0
    if spatial and not located.all():  # unlocated samples cannot be placed: set them aside
        unlocated = np.flatnonzero(~located)
        base = ds
        ds = ds.subset(np.flatnonzero(located), name=ds.name)
        n, lat, lon = len(ds), lat[located], lon[located]
    else:
        unlocated, base = np.zeros(0, dtype=np.int64), ds
    if method == "random":
        u = _unit_hash(seed, ds.ids)
        which = _assign_by_weight(np.argsort(u, kind="stable"), np.ones(n), fr)
    else:
        groups = spatial_groups(lat, lon, cell_km)
        keys, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        u = _unit_hash(seed, (str(k) for k in keys))
        group_split = _assign_by_weight(np.argsort(u, kind="stable"), counts, fr)
        which = group_split[inverse]
    names = list(fr)
    train_i = names.index(train) if train in names else 0
    dropped = np.zeros(n, dtype=bool)
    min_km = float("nan")
    held = which != train_i
    if held.any() and (~held).any() and (buffer_km > 0 or method == "spatial"):
        xyz = to_unit(lat, lon)
        tree = cKDTree(xyz[held])
        train_idx = np.flatnonzero(~held)
        chord, _ = tree.query(xyz[train_idx], k=1)
        dist_km = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
        too_close = dist_km < buffer_km
        dropped[train_idx[too_close]] = True
        if (~too_close).any():
            min_km = float(dist_km[~too_close].min())
    out = DatasetSplits()
    for i, name in enumerate(names):
        out[name] = ds.subset(np.flatnonzero((which == i) & ~dropped), name=name)
    out.dropped = ds.subset(np.flatnonzero(dropped), name="dropped")
    out.unlocated = base.subset(unlocated, name="unlocated")
    out.min_distance_km = min_km
    return out

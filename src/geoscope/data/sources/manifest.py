"""CSV / Parquet manifests: one row per image with its id, coordinates and path; benchmark presets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geoscope.data.images import is_image_path
from geoscope.data.issues import Issue
from geoscope.data.samples import TAR_SEP, split_source
from geoscope.data.sources.columns import (
    ID_COLUMNS,
    LAT_COLUMNS,
    LON_COLUMNS,
    PATH_COLUMNS,
    is_blank,
    parse_coords,
    pick_column,
    show_value,
)
from geoscope.geo.table import read_table, row_label

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


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


def read_manifest(path: Path, layout: ManifestLayout, images: str | None, split: str | None
                  ) -> tuple[pd.DataFrame, list[Issue]]:
    """The sample table of the manifest ``path`` and the rows it could not use.

    Images are under ``images`` (default: the manifest's folder plus ``layout.image_dir``);
    ``split`` fills ``{split}`` in the layout (default: the manifest's file name, e.g. "test").
    """
    df = read_table(path)
    df.columns = [str(c).strip() for c in df.columns]
    where = str(path)
    id_col = pick_column(df.columns, layout.id_col, ID_COLUMNS, "id column", where)
    lat_col = pick_column(df.columns, layout.lat_col, LAT_COLUMNS, "lat column", where)
    lon_col = pick_column(df.columns, layout.lon_col, LON_COLUMNS, "lon column", where)
    path_col = layout.path_col
    if path_col is None and layout.path_template == "{id}":
        path_col = pick_column([c for c in df.columns if c != id_col], None, PATH_COLUMNS, "path column", where, False)
    elif path_col is not None:
        path_col = pick_column(df.columns, path_col, PATH_COLUMNS, "path column", where)

    split_name = split or path.stem
    if images is not None:
        root = Path(images)
    else:
        root = path.parent / layout.image_dir.format(split=split_name)
    ids = df[id_col].astype(str).str.strip()
    lat, lon, ok = parse_coords(df[lat_col], df[lon_col])
    if path_col is not None:
        rel = df[path_col].astype(str).str.strip()
    else:
        rel = pd.Series([layout.path_template.format(id=i, split=split_name) for i in ids])

    def resolve(r: str) -> str:
        container, member = split_source(r)
        if member is not None:  # a shard member: only the shard's path is relative to the root
            return (container if os.path.isabs(container) else str(root / container)) + TAR_SEP + member
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
    blank = (is_blank(df[lat_col]) & is_blank(df[lon_col])).to_numpy()
    for i in np.flatnonzero(~ok & ~blank):
        issues.append(Issue("bad_coordinates", f"{path} {row_label(path, int(i))}",
                            f"{path}: {row_label(path, int(i))}: lat={show_value(df[lat_col].iloc[i])}, "
                            f"lon={show_value(df[lon_col].iloc[i])} are not valid coordinates", ids.iloc[i]))
        keep[i] = False
    empty = (ids == "") | (ids.str.lower() == "nan")
    dup = ids.duplicated() & ~empty
    for i in np.flatnonzero((empty | dup).to_numpy() & keep):
        what = "has an empty id" if empty.iloc[i] else f"repeats id {ids.iloc[i]!r}"
        issues.append(Issue("duplicate_id" if dup.iloc[i] else "bad_metadata", f"{path} {row_label(path, int(i))}",
                            f"{path}: {row_label(path, int(i))} {what}", ids.iloc[i]))
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
    return table[keep], issues

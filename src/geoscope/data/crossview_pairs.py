"""Cross-view training pairs: every geotagged photo with an overhead tile centred on its coordinates.

The default is the Where-in-the-World recipe from the source documents: a square of 225 m on the
ground, 750 pixels wide (0.3 m per pixel), north up, in the photo's local UTM zone. The overhead
side is a georeferenced raster (``data/overhead``: any GeoTIFF, any size) and / or an OpenStreetMap
extract drawn as a map (``data/osm_render``); with both, every photo gives two pairs, one per
modality. Tiles can be turned to the photo's heading (the Mosaic recipe) when the manifest has one.

Output folder::

    pairs.csv       one row per pair: id, photo, tile, modality, lat, lon, epsg, size_m, px,
                    heading_deg, valid_fraction (paths relative to the folder for tiles, as given
                    for photos) -- what cross-view training reads
    skipped.csv     id, photo, modality, lat, lon, reason: photos without coordinates, outside the
                    raster / extract, over nodata, or with too little data in the tile
    raster/, osm/   the tiles (JPEG for imagery, PNG for maps)
    crossview.json  the settings and counts
    progress.csv    the log that makes a build resumable (kept; an interrupted build goes on from it)

Nothing is fatal for one photo: problems are reported in ``skipped.csv``. Every file is written
atomically.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscope.atomic import write_json
from geoscope.data.overhead import safe_name, save_image, write_csv
from geoscope.data.tile_grid import tile_grid
from geoscope.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_SIZE_M = 225.0
DEFAULT_PX = 750
HEADING_COLUMNS = ("heading_deg", "heading", "yaw", "bearing", "compass", "azimuth", "direction")
PAIRS_COLUMNS = ["id", "photo", "tile", "modality", "lat", "lon", "epsg", "size_m", "px", "heading_deg",
                 "valid_fraction"]
SKIPPED_COLUMNS = ["id", "photo", "modality", "lat", "lon", "reason"]
_PROGRESS_COLUMNS = ["status"] + PAIRS_COLUMNS + ["reason"]
TILE_FORMATS = {"raster": "jpg", "osm": "png"}


@dataclass
class PairsSettings:
    """How the tiles of a pairs folder are made; a resumed build must use the same."""

    size_m: float = DEFAULT_SIZE_M
    px: int = DEFAULT_PX
    projection: str = "utm"
    min_valid: float = 0.5
    rotate_to_heading: bool = False
    resampling: str = "auto"
    raster: str | None = None
    osm: str | None = None

    def check(self) -> None:
        if not self.size_m > 0:
            raise InputError(f"the tile size must be a positive number of metres, got {self.size_m}")
        if int(self.px) < 8:
            raise InputError(f"a tile needs at least 8 pixels a side, got {self.px}")
        if self.projection not in ("utm", "aeqd", "auto"):
            raise InputError(f"projection must be utm, aeqd or auto, got {self.projection!r}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise InputError(f"the least valid fraction must be between 0 and 1, got {self.min_valid}")
        if self.raster is None and self.osm is None:
            raise InputError("cross-view pairs need an overhead source: a raster (--raster) and / or an "
                             "OpenStreetMap extract (--osm)")


@dataclass
class PairsResult:
    out_dir: Path
    manifest: Path
    pairs: int
    photos: int
    skipped: int
    by_modality: dict[str, int] = field(default_factory=dict)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"], d["manifest"] = str(self.out_dir), str(self.manifest)
        return d


def tile_file_name(pid: str) -> str:
    """A file name for a photo id: the id itself when it is safe, else a safe form plus a short hash
    (so "a/b" and "a_b" do not collide)."""
    safe = safe_name(pid)
    if safe == pid and len(safe) <= 120:
        return safe
    return f"{safe[:100]}-{hashlib.sha1(pid.encode('utf-8')).hexdigest()[:10]}"


def photo_heading(extra: dict) -> float | None:
    """The heading (degrees clockwise from north) recorded for a photo in its manifest, if any."""
    lower = {str(k).lower(): v for k, v in extra.items()}
    for key in HEADING_COLUMNS:
        if key in lower:
            try:
                value = float(lower[key])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                return value % 360.0
    return None


def _read_progress(path: Path) -> dict[tuple[str, str], dict]:
    """Rows of an earlier (possibly interrupted) build: (id, modality) -> row. A torn last line is ignored."""
    done: dict[tuple[str, str], dict] = {}
    if not path.exists():
        return done
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != _PROGRESS_COLUMNS:
            raise InputError(f"{path}: not a progress log of `geoscope crossview build` (unexpected columns)")
        for row in reader:
            if None in row.values() or row.get("status") not in ("pair", "skip"):
                continue  # torn line from an interruption
            done[(row["id"], row["modality"])] = row
    return done


class _ProgressLog:
    """Append-only CSV log, flushed after every row (an interruption loses at most the row being written)."""

    def __init__(self, path: Path):
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with open(path, "rb") as fh:  # finish a torn last line so the next row starts cleanly
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        self.fh = open(path, "a", newline="", encoding="utf-8")
        if not new and torn:
            self.fh.write("\n")
        self.writer = csv.writer(self.fh)
        if new:
            self.writer.writerow(_PROGRESS_COLUMNS)
            self.fh.flush()

    def write(self, status: str, row: dict, reason: str = "") -> dict:
        values = [status] + [row.get(c, "") for c in PAIRS_COLUMNS] + [reason]
        self.writer.writerow(values)
        self.fh.flush()
        return dict(zip(_PROGRESS_COLUMNS, [str(v) for v in values]))

    def close(self) -> None:
        self.fh.close()


def _open_sources(settings: PairsSettings, raster, osm, lat: np.ndarray, lon: np.ndarray) -> dict[str, Any]:
    sources: dict[str, Any] = {}
    if raster is not None:
        if isinstance(raster, (str, os.PathLike)):
            from geoscope.data.overhead import open_raster

            raster = open_raster(raster)
        sources["raster"] = raster
    if osm is not None:
        if isinstance(osm, (str, os.PathLike)):
            from geoscope.data.osm_render import OsmMap

            ok = np.isfinite(lat) & np.isfinite(lon)
            bbox = None
            if ok.any():
                pad = settings.size_m / 1000.0 / 111.0 * 1.5
                coslat = max(math.cos(math.radians(float(np.abs(lat[ok]).max()))), 0.05)
                bbox = (max(float(lat[ok].min()) - pad, -90.0), max(float(lon[ok].min()) - pad / coslat, -180.0),
                        min(float(lat[ok].max()) + pad, 90.0), min(float(lon[ok].max()) + pad / coslat, 180.0))
            osm = OsmMap.load(osm, bbox=bbox)
        sources["osm"] = osm
    return sources


def _source_id(source) -> str | None:
    """How a source is recorded in the settings: a file's absolute path, else its name."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return str(path.resolve()) if path.exists() else str(source)
    src = getattr(source, "source", None)
    if src is not None and getattr(src, "path", None) is not None:
        return str(Path(src.path).resolve())
    return str(getattr(source, "name", source))


def _where(source) -> str:
    w, s, e, n = source.bounds_latlon
    return f"{source.name} (covers lat {s:.5f}..{n:.5f}, lon {w:.5f}..{e:.5f})"


def _is_inside_bounds(source, lat: float, lon: float) -> bool:
    w, s, e, n = source.bounds_latlon
    if getattr(source, "wraps", False):
        return s <= lat <= n
    return s <= lat <= n and w <= lon <= e


def build_pairs(
    photos,
    out_dir: str | os.PathLike,
    raster=None,
    osm=None,
    size_m: float = DEFAULT_SIZE_M,
    px: int = DEFAULT_PX,
    projection: str = "utm",
    min_valid: float = 0.5,
    rotate_to_heading: bool = False,
    resampling: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    dataset_options: dict | None = None,
) -> PairsResult:
    """Pair every photo of ``photos`` (a manifest, a folder, or a ``Dataset``) with overhead tiles.

    ``raster``: a path / basemap name or an open :class:`~geoscope.data.overhead.Raster`; ``osm``: an
    ``.osm.pbf`` path or an :class:`~geoscope.data.osm_render.OsmMap`; at least one of them.
    Resumable: a second run with the same settings keeps every tile already made and only adds what
    is missing; other settings in the same folder are an InputError unless ``overwrite``.
    """
    from tqdm import tqdm

    from geoscope.data.datasets import Dataset, open_dataset

    settings = PairsSettings(float(size_m), int(px), projection, float(min_valid), bool(rotate_to_heading), resampling,
                             _source_id(raster), _source_id(osm))
    settings.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path, progress_path = out / "crossview.json", out / "progress.csv"
    if meta_path.exists() and not overwrite:
        import json

        try:
            before = json.loads(meta_path.read_text()).get("settings", {})
        except ValueError:
            before = {}
        if before and before != asdict(settings):
            changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in asdict(settings).items()
                                if before.get(k) != v)
            raise InputError(f"{out} holds pairs built with other settings ({changed}); use another output "
                             "folder, or overwrite to rebuild")
    if overwrite and progress_path.exists():
        progress_path.unlink()

    ds = photos if isinstance(photos, Dataset) else open_dataset(photos, progress=progress, **(dataset_options or {}))
    samples = list(ds)
    if not samples and not ds.issues:
        raise InputError(f"{photos}: no photos found")
    lat = np.array([np.nan if s.lat is None else s.lat for s in samples], dtype=np.float64)
    lon = np.array([np.nan if s.lon is None else s.lon for s in samples], dtype=np.float64)
    sources = _open_sources(settings, raster, osm, lat, lon)
    write_json(meta_path, {"settings": asdict(settings), "status": "running", "photos": ds.name})

    done = _read_progress(progress_path)
    logbook = _ProgressLog(progress_path)
    rows: dict[tuple[str, str], dict] = {}
    pre_skips = [{"status": "skip", "id": i.id or "", "photo": i.source, "modality": "", "lat": "", "lon": "",
                  "reason": i.reason} for i in ds.issues]
    try:
        for s in tqdm(samples, desc="cross-view pairs", unit="photo", disable=not progress):
            heading = photo_heading(s.extra)
            for modality, source in sources.items():
                key = (s.id, modality)
                prev = done.get(key)
                if prev is not None and (prev["status"] == "skip" or (out / prev["tile"]).is_file()):
                    rows[key] = prev
                    continue
                rows[key] = _make_pair(s, heading, modality, source, settings, out, logbook)
    finally:
        logbook.close()

    pairs = [r for r in rows.values() if r["status"] == "pair"]
    skips = pre_skips + [r for r in rows.values() if r["status"] == "skip"]
    manifest = out / "pairs.csv"
    write_csv(manifest, PAIRS_COLUMNS, [[r[c] for c in PAIRS_COLUMNS] for r in pairs])
    write_csv(out / "skipped.csv", SKIPPED_COLUMNS, [[r.get(c, "") for c in SKIPPED_COLUMNS] for r in skips])
    by_modality = dict(Counter(r["modality"] for r in pairs))
    reasons = dict(Counter(_reason_kind(r["reason"]) for r in skips))
    result = PairsResult(out, manifest, len(pairs), len(samples), len(skips), by_modality, reasons)
    write_json(meta_path, {"settings": asdict(settings), "status": "complete", "photos": ds.name,
                           "pairs": len(pairs), "skipped": len(skips), "by_modality": by_modality,
                           "skip_reasons": reasons})
    return result


def _reason_kind(reason: str) -> str:
    for kind in ("no coordinates", "outside", "nodata", "has data", "not an image", "not valid coordinates"):
        if kind in reason:
            return kind
    return "other"


def _make_pair(s, heading: float | None, modality: str, source, settings: PairsSettings, out: Path,
               logbook: _ProgressLog) -> dict:
    row: dict[str, Any] = {"id": s.id, "photo": s.source, "modality": modality,
                           "lat": "" if s.lat is None else f"{s.lat:.7f}", "lon": "" if s.lon is None else f"{s.lon:.7f}",
                           "size_m": f"{settings.size_m:g}", "px": settings.px,
                           "heading_deg": "" if heading is None else f"{heading:.2f}"}
    if not s.has_coords:
        return logbook.write("skip", row, "no coordinates (no GPS position in its metadata or manifest)")
    lat, lon = float(s.lat), float(s.lon)
    if not bool(np.asarray(source.contains(lat, lon))):
        if _is_inside_bounds(source, lat, lon):
            return logbook.write("skip", row, f"nodata: {source.name} has no data under the photo's position")
        return logbook.write("skip", row, f"outside {_where(source)}")
    rotation = heading if (settings.rotate_to_heading and heading is not None) else 0.0
    grid = tile_grid(lat, lon, settings.size_m / 1000.0, settings.px, settings.projection, rotation)
    tile = source.read_tile(grid) if modality == "osm" else source.read_tile(grid, settings.resampling)
    if tile.valid_fraction < settings.min_valid:
        return logbook.write("skip", row, f"only {tile.valid_fraction:.0%} of the tile has data "
                                          f"(need {settings.min_valid:.0%})")
    fmt = TILE_FORMATS[modality]
    rel = Path(modality) / f"{tile_file_name(s.id)}.{fmt}"
    save_image(tile.array, out / rel, fmt)
    row.update(tile=rel.as_posix(), epsg="" if grid.epsg is None else grid.epsg,
               valid_fraction=f"{tile.valid_fraction:.4f}")
    return logbook.write("pair", row)


def read_pairs(path: str | os.PathLike):
    """The pairs manifest as a DataFrame, with tile paths made absolute (what training reads)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "pairs.csv"
    if not path.is_file():
        raise InputError(f"{path}: no pairs manifest here (run `geoscope crossview build` first)")
    df = pd.read_csv(path, dtype={"id": str, "photo": str, "tile": str, "modality": str})
    missing = [c for c in PAIRS_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a pairs manifest (missing columns {', '.join(missing)})")
    df["tile"] = [str(path.parent / t) for t in df["tile"]]
    return df

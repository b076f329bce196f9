"""The geometry of a square ground tile: where each of its pixels lies on the Earth.

A tile is ``size_km`` on a side and ``pixels`` wide, centred on a point, in a local projection where it
is square on the ground: the point's UTM zone (small tiles away from the poles) or an azimuthal
equidistant projection on the sphere centred on the point (every pixel is the point reached from the
centre along its bearing and distance). ``rotation_deg`` turns the tile clockwise on the ground about
its centre, so that row 0 faces that bearing instead of north (how an overhead view looks to a camera
facing that way), with no empty corners.

The same :class:`TileGrid` places raster tiles (``data/overhead``), OpenStreetMap renderings
(``data/osm_render``) and heatmaps over an area, so that they line up pixel for pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from affine import Affine

from geoscope.errors import InputError
from geoscope.geo.sphere import (
    EARTH_RADIUS_KM,
    destination,
    haversine_km,
    initial_bearing,
    wrap_lon,
)

PROJECTIONS = ("auto", "aeqd", "utm")
#: Above this tile size "auto" uses azimuthal equidistant rather than UTM.
UTM_MAX_KM = 500.0


def auto_projection(size_km: float, lat: float) -> str:
    """UTM for small tiles away from the poles, azimuthal equidistant otherwise."""
    return "utm" if size_km <= UTM_MAX_KM and abs(lat) < 80.0 else "aeqd"


def utm_zone(lat: float, lon: float) -> tuple[int, bool]:
    """UTM zone number (1..60) and hemisphere (True = north) of a point."""
    zone = int((float(wrap_lon(lon)) + 180.0) // 6.0) % 60 + 1
    return zone, lat >= 0


def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the WGS 84 UTM zone of a point (326zz north, 327zz south)."""
    zone, north = utm_zone(lat, lon)
    return (32600 if north else 32700) + zone


@functools.lru_cache(maxsize=128)
def _utm_transformer(zone: int, north: bool):
    """UTM (x, y) metres -> (lon, lat); ``direction="INVERSE"`` goes the other way."""
    from pyproj import Transformer

    epsg = (32600 if north else 32700) + zone
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def _check(projection: str, size_km: float, pixels: int) -> None:
    if projection not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if not size_km > 0 or int(pixels) < 1:
        raise InputError(f"a tile needs a positive size in km and at least one pixel, got {size_km} km, {pixels} px")


@dataclass(frozen=True)
class TileGrid:
    """A tile's georeference: ``transform`` maps (col, row) pixel corners to metres in ``crs``.

    ``crs`` is a PROJ / EPSG string GDAL understands; ``epsg`` is set for UTM tiles. Metres are
    measured from the tile's projection origin: the centre for azimuthal tiles, the zone's origin for
    UTM tiles (``centre_xy`` is the centre there).
    """

    lat: float
    lon: float
    size_km: float
    pixels: int
    projection: str  # "utm" or "aeqd" (never "auto")
    rotation_deg: float
    crs: str
    transform: Affine
    centre_xy: tuple[float, float]
    epsg: int | None = None

    @property
    def pixel_m(self) -> float:
        """Ground size of one pixel in metres."""
        return self.size_km * 1000.0 / self.pixels

    def offsets_km(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """East / north ground offsets (km) from the centre of fractional pixel positions (corners at integers)."""
        col = np.asarray(col, dtype=np.float64)
        row = np.asarray(row, dtype=np.float64)
        a = self.transform
        x = a.a * col + a.b * row + a.c - self.centre_xy[0]
        y = a.d * col + a.e * row + a.f - self.centre_xy[1]
        return x / 1000.0, y / 1000.0

    def latlon(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude of fractional pixel positions (pixel corners at integers)."""
        x, y = self.offsets_km(col, row)
        return _offsets_to_latlon(self, x, y)

    def pixel_latlon(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude (pixels, pixels) of every pixel centre; row 0 first."""
        c = np.arange(self.pixels) + 0.5
        cols, rows = np.meshgrid(c, c)
        return self.latlon(cols, rows)

    def to_pixel(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) of points in the tile (pixel corners at integers, so centres at k + 0.5)."""
        x, y = self.project(lat, lon)
        inv = ~self.transform
        return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f

    def project(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) metres of points in the tile's CRS."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if self.projection == "aeqd":
            d = haversine_km(self.lat, self.lon, lat, lon) * 1000.0
            b = np.radians(initial_bearing(self.lat, self.lon, lat, lon))
            return d * np.sin(b), d * np.cos(b)
        zone, north = utm_zone(self.lat, self.lon)
        x, y = _utm_transformer(zone, north).transform(lon, lat, direction="INVERSE")
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def to_dict(self) -> dict:
        return {"lat": self.lat, "lon": self.lon, "size_km": self.size_km, "pixels": self.pixels,
                "projection": self.projection, "rotation_deg": self.rotation_deg, "crs": self.crs,
                "transform": list(self.transform)[:6], "epsg": self.epsg}


def _offsets_to_latlon(grid: TileGrid, x_km, y_km) -> tuple[np.ndarray, np.ndarray]:
    if grid.projection == "aeqd":
        return destination(grid.lat, grid.lon, np.degrees(np.arctan2(x_km, y_km)), np.hypot(x_km, y_km))
    zone, north = utm_zone(grid.lat, grid.lon)
    cx, cy = grid.centre_xy
    lo, la = _utm_transformer(zone, north).transform(cx + np.asarray(x_km) * 1000.0, cy + np.asarray(y_km) * 1000.0)
    return np.asarray(la), np.asarray(lo)


def tile_grid(lat: float, lon: float, size_km: float, pixels: int, projection: str = "auto",
              rotation_deg: float = 0.0) -> TileGrid:
    """The :class:`TileGrid` of a square tile of ``size_km`` and ``pixels`` centred on (lat, lon)."""
    _check(projection, size_km, pixels)
    lat, lon = float(lat), float(wrap_lon(lon))
    if projection == "auto":
        projection = auto_projection(size_km, lat)
    size_m = float(size_km) * 1000.0
    step = size_m / int(pixels)
    t = np.radians(float(rotation_deg))
    rot = Affine(np.cos(t), np.sin(t), 0.0, -np.sin(t), np.cos(t), 0.0)
    local = rot @ Affine(step, 0.0, -size_m / 2.0, 0.0, -step, size_m / 2.0)
    if projection == "aeqd":
        crs = (f"+proj=aeqd +lat_0={lat!r} +lon_0={lon!r} +x_0=0 +y_0=0 +R={EARTH_RADIUS_KM * 1000.0!r} "
               "+units=m +no_defs")
        return TileGrid(lat, lon, float(size_km), int(pixels), "aeqd", float(rotation_deg), crs, local, (0.0, 0.0))
    zone, north = utm_zone(lat, lon)
    cx, cy = _utm_transformer(zone, north).transform(lon, lat, direction="INVERSE")
    epsg = (32600 if north else 32700) + zone
    return TileGrid(lat, lon, float(size_km), int(pixels), "utm", float(rotation_deg), f"EPSG:{epsg}",
                    Affine.translation(float(cx), float(cy)) @ local, (float(cx), float(cy)), epsg)


def tile_latlon(lat: float, lon: float, size_km: float, pixels: int, projection: str = "auto",
                rotation_deg: float = 0.0):
    """Latitude and longitude (pixels, pixels) of each pixel centre of a tile; row 0 is north.

    ``rotation_deg`` turns the tile clockwise on the ground about its centre (row 0 then faces that
    bearing instead of north), with no empty corners: how a rotated overhead view looks.
    """
    _check(projection, size_km, pixels)
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


def max_reach_km(size_km: float) -> float:
    """Distance from a tile's centre to its corners."""
    return float(size_km) * np.sqrt(0.5)


__all__ = ["PROJECTIONS", "UTM_MAX_KM", "TileGrid", "auto_projection", "max_reach_km", "tile_grid", "tile_latlon",
           "utm_epsg", "utm_zone"]

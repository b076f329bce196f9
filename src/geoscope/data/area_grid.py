"""Reference tiles over an area: tile centres on a regular ground grid inside a bounding box.

Area search scores a photo against overhead tiles centred on every node of a grid over the area. The
grid is regular in metres in the area's UTM zone (an azimuthal equidistant projection centred on the
area when it is too wide for one zone), so its cells are squares on the ground and its ``transform``
georeferences a heatmap over the area directly (one heatmap pixel per tile centre).

:func:`area_grid` refuses a stride that would make an unreasonable number of tiles (saying how many);
:func:`iter_reference_tiles` yields the tiles from any *tile source*: an object with
``read_tile(grid: TileGrid) -> Tile`` such as a :class:`~geoscope.data.overhead.Raster` or an
:class:`~geoscope.data.osm_render.OsmMap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol
from collections.abc import Iterator, Sequence

import numpy as np
from affine import Affine

from geoscope.data.tile_grid import TileGrid, tile_grid, utm_epsg
from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM

#: The most tiles an area grid may hold unless the caller allows more.
MAX_TILES = 1_000_000
#: Areas wider than this (km) use an azimuthal projection centred on the area rather than UTM.
UTM_MAX_AREA_KM = 800.0


class TileSource(Protocol):
    """Anything that renders a tile for a :class:`TileGrid` (a raster, an OpenStreetMap extract)."""

    name: str

    def read_tile(self, grid: TileGrid):  # -> a Tile with .array, .valid, .valid_fraction
        ...


def parse_bbox(value: str | Sequence[float], what: str = "--bbox") -> tuple[float, float, float, float]:
    """``SOUTH,WEST,NORTH,EAST`` in degrees (lat first, like every coordinate in geoscope), checked."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p != ""]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"{what} must be SOUTH,WEST,NORTH,EAST in degrees, got {value!r}") from None
    else:
        nums = [float(v) for v in value]
    if len(nums) != 4:
        raise InputError(f"{what} must be four numbers SOUTH,WEST,NORTH,EAST, got {len(nums)}")
    south, west, north, east = nums
    if not (-90.0 <= south < north <= 90.0):
        raise InputError(f"{what}: south {south:g} must be below north {north:g}, both within -90..90 "
                         "(the order is SOUTH,WEST,NORTH,EAST)")
    if not (-180.0 <= west < east <= 180.0):
        raise InputError(f"{what}: west {west:g} must be left of east {east:g}, both within -180..180 "
                         "(the order is SOUTH,WEST,NORTH,EAST; split an area across the antimeridian in two)")
    return south, west, north, east


def clip_bbox(bbox: Sequence[float], bounds_latlon: Sequence[float], what: str) -> tuple[float, float, float, float]:
    """The part of ``bbox`` (south, west, north, east) inside ``bounds_latlon`` (west, south, east, north)
    of ``what``; an InputError when they do not overlap."""
    south, west, north, east = (float(v) for v in bbox)
    bw, bs, be, bn = (float(v) for v in bounds_latlon)
    s, w, n, e = max(south, bs), max(west, bw), min(north, bn), min(east, be)
    if not (s < n and w < e):
        raise InputError(
            f"the bounding box lat {south:g}..{north:g}, lon {west:g}..{east:g} lies outside {what} "
            f"(which covers lat {bs:.4f}..{bn:.4f}, lon {bw:.4f}..{be:.4f})"
        )
    return s, w, n, e


@dataclass(frozen=True)
class AreaGrid:
    """Tile centres over an area: ``rows`` x ``cols`` nodes ``stride_km`` apart.

    ``transform`` maps (col, row) cell corners to metres in ``crs``; node (r, c) is the centre of
    cell (r, c), so an array of one score per node, north row first, is a georeferenced raster.
    """

    bbox: tuple[float, float, float, float]  # south, west, north, east
    stride_km: float
    crs: str
    transform: Affine
    rows: int
    cols: int
    epsg: int | None = None

    def __len__(self) -> int:
        return self.rows * self.cols

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude (rows, cols) of every node."""
        c, r = np.meshgrid(np.arange(self.cols) + 0.5, np.arange(self.rows) + 0.5)
        a = self.transform
        x = a.a * c + a.b * r + a.c
        y = a.d * c + a.e * r + a.f
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True).transform(x, y)
        return np.asarray(lat), np.asarray(lon)

    def to_dict(self) -> dict:
        return {"bbox": list(self.bbox), "stride_km": self.stride_km, "crs": self.crs, "epsg": self.epsg,
                "transform": list(self.transform)[:6], "rows": self.rows, "cols": self.cols}


def area_grid(bbox: Sequence[float], stride_km: float, max_tiles: int = MAX_TILES) -> AreaGrid:
    """A grid of tile centres ``stride_km`` apart covering ``bbox`` (south, west, north, east).

    Too many tiles (more than ``max_tiles``) is an InputError that says how many the stride would
    make and what stride would fit.
    """
    south, west, north, east = parse_bbox(bbox, "bounding box")
    if not stride_km > 0:
        raise InputError(f"the stride must be a positive distance, got {stride_km} km")
    lat0, lon0 = (south + north) / 2.0, (west + east) / 2.0
    width_km = math.radians(east - west) * EARTH_RADIUS_KM * max(math.cos(math.radians(lat0)), 0.0)
    height_km = math.radians(north - south) * EARTH_RADIUS_KM
    if max(width_km, height_km) <= UTM_MAX_AREA_KM and abs(lat0) < 80.0:
        epsg = utm_epsg(lat0, lon0)
        crs = f"EPSG:{epsg}"
    else:
        epsg = None
        crs = f"+proj=aeqd +lat_0={lat0!r} +lon_0={lon0!r} +R={EARTH_RADIUS_KM * 1000.0!r} +units=m +no_defs"
    from pyproj import Transformer

    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x0, y0, x1, y1 = fwd.transform_bounds(west, south, east, north, densify_pts=21)
    stride = float(stride_km) * 1000.0
    cols = max(1, int(math.ceil((x1 - x0) / stride)))
    rows = max(1, int(math.ceil((y1 - y0) / stride)))
    n = rows * cols
    if n > max_tiles:
        fit = stride_km * math.sqrt(n / max_tiles)
        raise InputError(
            f"a stride of {stride_km * 1000:g} m over this area ({(x1 - x0) / 1000:.1f} x {(y1 - y0) / 1000:.1f} km) "
            f"makes {n:,} tiles ({cols:,} x {rows:,}), more than the limit of {max_tiles:,}; use a stride of at "
            f"least {math.ceil(fit * 1000):,} m or a smaller area"
        )
    # centre the grid on the envelope
    xc, yc = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    transform = Affine(stride, 0.0, xc - cols * stride / 2.0, 0.0, -stride, yc + rows * stride / 2.0)
    return AreaGrid((south, west, north, east), float(stride_km), crs, transform, rows, cols, epsg)


@dataclass
class ReferenceTile:
    """One reference tile of an area: grid node (row, col), centre, heading, pixels and valid fraction."""

    row: int
    col: int
    lat: float
    lon: float
    heading_deg: float
    array: np.ndarray
    valid_fraction: float


def iter_reference_tiles(source: TileSource, grid: AreaGrid, size_km: float, pixels: int,
                         headings: Sequence[float] = (0.0,), projection: str = "auto",
                         min_valid: float = 0.5) -> Iterator[ReferenceTile]:
    """Tiles of ``source`` centred on every node of ``grid`` (north row first), at each heading.

    A tile turned to heading ``h`` shows the ground as a camera facing ``h`` would have it above
    (row 0 towards ``h``). Tiles with less than ``min_valid`` of their pixels valid are left out.
    """
    lat, lon = grid.centres()
    for r in range(grid.rows):
        for c in range(grid.cols):
            for h in headings:
                tg = tile_grid(float(lat[r, c]), float(lon[r, c]), size_km, pixels, projection, float(h))
                tile = source.read_tile(tg)
                if tile.valid_fraction < min_valid:
                    continue
                yield ReferenceTile(r, c, float(lat[r, c]), float(lon[r, c]), float(h), tile.array,
                                    tile.valid_fraction)

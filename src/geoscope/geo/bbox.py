"""``BBox``: a latitude / longitude box, lat-first like every coordinate in geoscope.

``BBox(south, west, north, east)`` in degrees. It is not a tuple on purpose: it cannot be unpacked
or indexed, so it cannot be handed by accident to something that reads boxes in another order.
Tools that want a tuple ask for the order they need by name: ``to_bounds()`` gives
``(west, south, east, north)`` (rasterio, shapely, GeoJSON ``bbox``), ``to_latlon()`` gives
``(south, west, north, east)`` (geoscope's lat-first tuples, e.g. ``Geocells.grid``).

A box whose ``west`` is greater than its ``east`` crosses the antimeridian (180 degrees):
``BBox(50, 170, 70, -170)`` is 20 degrees wide, from 170 E eastwards to 170 W.
``crosses_antimeridian`` says so, ``contains`` handles it, and ``split_at_antimeridian()`` gives the
two boxes on either side for tools (shapely, rasterio) that cannot represent it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoscope.errors import InputError


@dataclass(frozen=True)
class BBox:
    """A box on the globe: latitudes ``south < north`` in [-90, 90], longitudes in [-180, 180].

    ``west > east`` means the box crosses the antimeridian; ``west == east`` is refused (a box of
    zero width, or a whole latitude band written ambiguously: write ``-180`` and ``180``).
    """

    south: float
    west: float
    north: float
    east: float

    def __post_init__(self) -> None:
        for name in ("south", "west", "north", "east"):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InputError(f"bounding box: {name} must be a number in degrees, got {value!r}") from None
            if not math.isfinite(number):
                raise InputError(f"bounding box: {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, number)
        for name in ("south", "north"):
            if not -90.0 <= getattr(self, name) <= 90.0:
                raise InputError(f"bounding box: {name} latitude {getattr(self, name):g} is outside [-90, 90]")
        for name in ("west", "east"):
            if not -180.0 <= getattr(self, name) <= 180.0:
                raise InputError(f"bounding box: {name} longitude {getattr(self, name):g} is outside [-180, 180]")
        if not self.south < self.north:
            raise InputError(f"bounding box: south {self.south:g} must be below north {self.north:g} "
                             "(boxes are written SOUTH,WEST,NORTH,EAST)")
        if self.west == self.east:
            raise InputError(f"bounding box: west and east are both {self.west:g}, so the box has no width")

    # --- reading and writing ----------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> BBox:
        """``"SOUTH,WEST,NORTH,EAST"`` (degrees, lat-first) as a ``BBox``."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4 or not all(parts):
            raise InputError(f"bounding box {text!r}: write four numbers SOUTH,WEST,NORTH,EAST (degrees)")
        try:
            south, west, north, east = (float(p) for p in parts)
        except ValueError:
            raise InputError(f"bounding box {text!r}: SOUTH,WEST,NORTH,EAST must be numbers in degrees") from None
        return cls(south, west, north, east)

    @classmethod
    def from_bounds(cls, west: float, south: float, east: float, north: float) -> BBox:
        """A ``BBox`` from lon-first bounds ``(west, south, east, north)`` (rasterio / shapely order)."""
        return cls(south=south, west=west, north=north, east=east)

    @classmethod
    def coerce(cls, value: Any, what: str = "bbox") -> BBox:
        """``value`` as a ``BBox``: a ``BBox`` as is, or a lat-first sequence ``(south, west, north, east)``."""
        if isinstance(value, cls):
            return value
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise InputError(f"{what}: expected a BBox or four numbers (south, west, north, east), got {value!r}") from None
        if len(values) != 4:
            raise InputError(f"{what}: expected four numbers (south, west, north, east), got {len(values)}")
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.south:g},{self.west:g},{self.north:g},{self.east:g}"

    def to_bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)``: the order of rasterio, ``shapely.geometry.box`` and GeoJSON.

        For a box across the antimeridian ``west > east`` (as RFC 7946 writes it); shapely cannot
        draw that as one rectangle: use ``split_at_antimeridian()``.
        """
        return (self.west, self.south, self.east, self.north)

    def to_latlon(self) -> tuple[float, float, float, float]:
        """``(south, west, north, east)``: geoscope's lat-first order (``Geocells.grid``, ``grid_gallery``)."""
        return (self.south, self.west, self.north, self.east)

    # --- geometry ---------------------------------------------------------------------------------

    @property
    def crosses_antimeridian(self) -> bool:
        """True when the box runs east from ``west`` across 180 degrees to ``east``."""
        return self.west > self.east

    @property
    def width_deg(self) -> float:
        """East-west extent in degrees of longitude (across the antimeridian when it crosses it)."""
        return self.east - self.west + (360.0 if self.crosses_antimeridian else 0.0)

    def split_at_antimeridian(self) -> tuple[BBox, ...]:
        """The box itself, or the two boxes either side of 180 degrees when it crosses it."""
        if not self.crosses_antimeridian:
            return (self,)
        return (BBox(self.south, self.west, self.north, 180.0), BBox(self.south, -180.0, self.north, self.east))

    def contains(self, lat, lon):
        """Whether points lie in the box (edges included). Scalars give a bool, arrays a bool array.

        Longitudes outside [-180, 180] are wrapped first.
        """
        lat_a = np.asarray(lat, dtype=np.float64)
        lon_a = np.asarray(lon, dtype=np.float64)
        lon_a = np.where((lon_a < -180.0) | (lon_a > 180.0), (lon_a + 180.0) % 360.0 - 180.0, lon_a)
        in_lat = (lat_a >= self.south) & (lat_a <= self.north)
        if self.crosses_antimeridian:
            in_lon = (lon_a >= self.west) | (lon_a <= self.east)
        else:
            in_lon = (lon_a >= self.west) & (lon_a <= self.east)
        inside = in_lat & in_lon
        return bool(inside) if inside.ndim == 0 else inside

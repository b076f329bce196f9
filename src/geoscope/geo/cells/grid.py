"""Grid cells: ``rows x cols`` equal steps of latitude and longitude over a bounding box."""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.geo.cells.base import Partition, rect_area_km2


class GridCells(Partition):
    """A regular latitude/longitude grid. Cell ``r * cols + c`` is row ``r`` from the south, column
    ``c`` from the west. Every cell is kept, empty or not; the northern and eastern edges belong to
    the grid, everything outside is in no cell."""

    kind = "grid"

    @classmethod
    def build(cls, bbox: BBox | Sequence[float], rows: int, cols: int) -> "GridCells":
        """``rows x cols`` cells over ``bbox``, a ``geo.bbox.BBox`` or ``(min_lat, min_lon, max_lat,
        max_lon)``; centroids start at the cell centres. A box across the antimeridian is refused."""
        if isinstance(bbox, BBox):
            if bbox.crosses_antimeridian:
                raise InputError(f"grid: bbox {bbox} crosses the antimeridian, which grid cells do not support")
            bbox = bbox.to_latlon()
        if len(bbox) != 4:
            raise InputError(f"grid: bbox needs 4 numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, got {len(bbox)}")
        min_lat, min_lon, max_lat, max_lon = (float(b) for b in bbox)
        if not all(math.isfinite(b) for b in (min_lat, min_lon, max_lat, max_lon)):
            raise InputError(f"grid: bbox {tuple(bbox)} has a value that is not a finite number")
        if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
            raise InputError(f"grid: bbox latitudes {min_lat}, {max_lat} must be within [-90, 90]")
        if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
            raise InputError(f"grid: bbox longitudes {min_lon}, {max_lon} must be within [-180, 180]")
        if min_lat >= max_lat:
            raise InputError(f"grid: bbox min latitude {min_lat} is not below max latitude {max_lat}")
        if min_lon >= max_lon:
            raise InputError(f"grid: bbox min longitude {min_lon} is not below max longitude {max_lon}")
        if int(rows) != rows or int(cols) != cols or rows < 1 or cols < 1:
            raise InputError(f"grid: rows and cols must be positive integers, got {rows} x {cols}")
        rows, cols = int(rows), int(cols)
        params = {"bbox": [min_lat, min_lon, max_lat, max_lon], "rows": rows, "cols": cols}
        cells = cls(np.zeros((rows * cols, 2)), np.zeros(rows * cols, dtype=np.int64), params)
        cells.centroids = cells.geometric_centres()
        return cells

    def _layout(self) -> tuple[float, float, float, float, int, int]:
        min_lat, min_lon, max_lat, max_lon = self.params["bbox"]
        return min_lat, min_lon, max_lat, max_lon, self.params["rows"], self.params["cols"]

    @classmethod
    def _check_params(cls, params: dict[str, Any], n: int) -> None:
        min_lat, min_lon, max_lat, max_lon = (float(b) for b in params["bbox"])
        rows, cols = int(params["rows"]), int(params["cols"])
        if not (min_lat < max_lat and min_lon < max_lon and rows >= 1 and cols >= 1):
            raise ValueError("the grid's bbox or size is empty")
        if rows * cols != n:
            raise ValueError("grid size does not match the number of cells")

    def _lookup(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        min_lat, min_lon, max_lat, max_lon, rows, cols = self._layout()
        r = np.floor((lat - min_lat) * (rows / (max_lat - min_lat))).astype(np.int64)
        c = np.floor((lon - min_lon) * (cols / (max_lon - min_lon))).astype(np.int64)
        r = np.where(lat == max_lat, rows - 1, r)  # the northern and eastern edges belong to the grid
        c = np.where(lon == max_lon, cols - 1, c)
        ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        return np.where(ok, r * cols + c, -1)

    def geometric_centres(self) -> np.ndarray:
        min_lat, min_lon, max_lat, max_lon, rows, cols = self._layout()
        lat = min_lat + (np.arange(rows) + 0.5) * (max_lat - min_lat) / rows
        lon = min_lon + (np.arange(cols) + 0.5) * (max_lon - min_lon) / cols
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        return np.stack([la.ravel(), lo.ravel()], axis=1)

    def areas_km2(self) -> np.ndarray:
        min_lat, min_lon, max_lat, max_lon, rows, cols = self._layout()
        lat = np.linspace(min_lat, max_lat, rows + 1)
        row_area = rect_area_km2(lat[:-1], 0.0, lat[1:], (max_lon - min_lon) / cols)
        return np.repeat(row_area, cols)

    def geometry(self, i: int) -> BaseGeometry:
        min_lat, min_lon, max_lat, max_lon, rows, cols = self._layout()
        r, c = divmod(int(i), cols)
        dlat, dlon = (max_lat - min_lat) / rows, (max_lon - min_lon) / cols
        return shapely.box(min_lon + c * dlon, min_lat + r * dlat, min_lon + (c + 1) * dlon, min_lat + (r + 1) * dlat)

    def _summary_params(self) -> dict[str, Any]:
        return {"bbox": self.params["bbox"], "rows": self.params["rows"], "cols": self.params["cols"]}

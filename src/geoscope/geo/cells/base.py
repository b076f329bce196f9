"""What every cell layout shares: :class:`Partition`, one partition of (part of) the Earth into cells.

A layout (grid, adaptive, admin) is a subclass that says how a point finds its cell (``_lookup``),
what a cell looks like (``geometry``, ``geometric_centres``, ``areas_km2``) and what its saved
``params`` must hold (``_check_params``). Everything else -- nearest-centroid fallback, fitted
centroids, GeoJSON, the saved form, the summary -- is written once here. Subclasses register
themselves by their ``kind``, which is what a cells file records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry

from geoscope.errors import InputError
from geoscope.geo.cells.quadtree import EARTH_AREA_KM2
from geoscope.geo.geojson import to_geojson
from geoscope.geo.sphere import EARTH_RADIUS_KM, from_unit, to_unit, validate_latlon


def group_sum_xyz(ids: np.ndarray, xyz: np.ndarray, n: int) -> np.ndarray:
    """Sum of unit vectors per group id (ids < 0 ignored), shape (n, 3)."""
    ok = ids >= 0
    ids = ids[ok]
    return np.stack([np.bincount(ids, weights=xyz[ok, c], minlength=n) for c in range(3)], axis=1)


def normalise_or(sums: np.ndarray, fallback: Callable[[], np.ndarray]) -> np.ndarray:
    """Lat/lon of normalised ``sums``; rows with no direction take ``fallback()`` (n, 2), called only
    when some row needs it."""
    norm = np.linalg.norm(sums, axis=1)
    lat, lon = from_unit(sums)
    out = np.stack([lat, lon], axis=1)
    empty = norm < 1e-12
    if empty.any():
        out[empty] = np.asarray(fallback())[empty]
    return out


def check_bounds(min_points: int, max_points: int, what: str = "cells") -> None:
    """InputError unless ``1 <= min_points <= max_points``."""
    if int(min_points) < 1:
        raise InputError(f"{what}: min points per cell must be at least 1, got {min_points}")
    if int(max_points) < int(min_points):
        raise InputError(f"{what}: max points per cell ({max_points}) is below min ({min_points})")


def rect_area_km2(lat0, lon0, lat1, lon1) -> np.ndarray:
    """Area of latitude/longitude rectangles on the sphere."""
    return (EARTH_RADIUS_KM**2 * np.radians(np.asarray(lon1) - np.asarray(lon0))
            * (np.sin(np.radians(lat1)) - np.sin(np.radians(lat0))))


class Partition(ABC):
    """One partition of (part of) the Earth into cells: one level of a ``CellHierarchy``.

    ``centroids`` (n, 2) lat/lon: the spherical mean of each cell's training points, or its geometric
    centre where it has none. ``counts`` (n,): training points per cell. ``params`` holds what the
    layout needs to locate points again (and is what :meth:`to_dict` saves).
    """

    #: the layout's name, recorded in cells files
    kind: ClassVar[str]
    #: whether a point in no cell always goes to the nearest cell (else only with ``nearest=True``)
    always_nearest: ClassVar[bool] = False
    #: cache entries that depend on the layout only, so a copy with other centroids keeps them
    _layout_cache: ClassVar[tuple[str, ...]] = ()
    _kinds: ClassVar[dict[str, type[Partition]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            Partition._kinds[cls.kind] = cls

    def __init__(self, centroids, counts, params: dict[str, Any]):
        self.centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
        self.counts = np.asarray(counts, dtype=np.int64).ravel()
        self.params = dict(params)
        self._cache: dict[str, Any] = {}
        if len(self.counts) != len(self.centroids):
            raise InputError(f"cells: {len(self.centroids)} centroids but {len(self.counts)} counts")

    def __len__(self) -> int:
        return len(self.centroids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} cells, {int(self.counts.sum())} training points)"

    # ---------------------------------------------------------------------------------- layout
    @abstractmethod
    def _lookup(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Cell index (int64) of each valid, flat point; -1 where it is in no cell."""

    @abstractmethod
    def geometric_centres(self) -> np.ndarray:
        """(n, 2) lat/lon centre of each cell's area."""

    @abstractmethod
    def areas_km2(self) -> np.ndarray:
        """Area of each cell, km2."""

    @abstractmethod
    def geometry(self, i: int) -> BaseGeometry:
        """The shapely geometry of cell ``i`` (lon/lat degrees)."""

    @classmethod
    @abstractmethod
    def _check_params(cls, params: dict[str, Any], n: int) -> None:
        """Raise KeyError / TypeError / ValueError when saved ``params`` cannot describe ``n`` cells."""

    def _summary_params(self) -> dict[str, Any]:
        """Layout-specific entries of :meth:`summary`."""
        return {}

    # ---------------------------------------------------------------------------------- lookup
    def assign(self, lat, lon, nearest: bool = False) -> np.ndarray:
        """Cell index (int64) of each point, shaped like the input; -1 where a point is in no cell.

        With ``nearest=True`` such points go to the cell with the nearest centroid instead (admin
        cells always do this: a point at sea or on a coast goes to the nearest cell).
        """
        lat, lon = validate_latlon(lat, lon, "assign")
        shape = lat.shape
        lat, lon = lat.ravel(), lon.ravel()
        out = self._lookup(lat, lon)
        if (nearest or self.always_nearest) and len(self) and (out < 0).any():
            miss = out < 0
            out[miss] = self.nearest(lat[miss], lon[miss])
        return out.reshape(shape)

    def nearest(self, lat, lon) -> np.ndarray:
        """Index of the cell whose centroid is nearest to each point (great-circle)."""
        if "tree" not in self._cache:
            self._cache["tree"] = cKDTree(to_unit(self.centroids[:, 0], self.centroids[:, 1]))
        _, idx = self._cache["tree"].query(to_unit(lat, lon))
        return np.asarray(idx, dtype=np.int64)

    # ---------------------------------------------------------------------------------- centroids
    def with_centroids(self, centroids, counts) -> "Partition":
        """A copy of this layout with other centroids and counts."""
        out = type(self)(centroids, counts, self.params)
        out._cache.update({k: v for k, v in self._cache.items() if k in self._layout_cache})
        return out

    def fit_centroids(self, lat, lon) -> "Partition":
        """A copy whose centroids are the spherical mean of the training points in each cell (the
        geometric centre where a cell has none) and whose counts are those points."""
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "fit_centroids: training points")
        ids = self.assign(lat, lon)
        n = len(self)
        sums = group_sum_xyz(ids, to_unit(lat, lon), n)
        counts = np.bincount(ids[ids >= 0], minlength=n).astype(np.int64)
        return self.with_centroids(normalise_or(sums, self.geometric_centres), counts)

    # ---------------------------------------------------------------------------------- GeoJSON
    def polygon(self, i: int) -> dict:
        """GeoJSON geometry (Polygon or MultiPolygon, [lon, lat], exterior rings counter-clockwise and
        holes clockwise as RFC 7946 asks) of cell ``i``."""
        if not 0 <= int(i) < len(self):
            raise InputError(f"cells: no cell {i} (there are {len(self)})")
        return to_geojson(self.geometry(int(i)))

    def to_geojson(self, probs=None) -> dict:
        """A FeatureCollection of all cells with id, count, centroid (and probability if given)."""
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64).ravel()
            if probs.shape != (len(self),):
                raise InputError(f"to_geojson: {probs.size} probabilities for {len(self)} cells")
        features = []
        for i in range(len(self)):
            props = {"cell": i, "count": int(self.counts[i]),
                     "centroid_lat": float(self.centroids[i, 0]), "centroid_lon": float(self.centroids[i, 1])}
            if probs is not None:
                props["probability"] = float(probs[i])
            features.append({"type": "Feature", "geometry": self.polygon(i), "properties": props})
        return {"type": "FeatureCollection", "features": features}

    # ---------------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        return {"kind": self.kind, "centroids": self.centroids.tolist(), "counts": self.counts.tolist(),
                "params": self.params}

    @staticmethod
    def from_dict(d: dict, where: str = "cells") -> "Partition":
        """The partition a :meth:`to_dict` dictionary describes, of whichever layout it names."""
        try:
            kind = d["kind"]
            cls = Partition._kinds.get(kind)
            if cls is None:
                raise InputError(f"{where}: unknown kind of cells {kind!r} (expected {', '.join(Partition._kinds)})")
            cells = cls(np.asarray(d["centroids"], dtype=np.float64), np.asarray(d["counts"]), dict(d["params"]))
            cls._check_params(cells.params, len(cells))
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{where}: not a valid geocells description ({type(exc).__name__}: {exc})") from exc
        return cells

    def summary(self) -> dict:
        """Count, sizes and coverage, for ``geoscope cells info``."""
        areas = self.areas_km2()
        c = self.counts
        return {
            "kind": self.kind, "cells": len(self), "training_points": int(c.sum()),
            "empty_cells": int((c == 0).sum()),
            "points_per_cell": {"min": int(c.min()), "median": float(np.median(c)), "max": int(c.max())}
            if len(c) else None,
            "area_km2": {"min": float(areas.min()), "median": float(np.median(areas)),
                         "max": float(areas.max()), "total": float(areas.sum())} if len(c) else None,
            "coverage_of_earth": float(areas.sum() / EARTH_AREA_KM2),
            **self._summary_params(),
        }

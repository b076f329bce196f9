"""``CellHierarchy``: the one type of geocells callers hold.

Partitions of one area from coarse to fine (``levels``), with each fine cell's parent in the level
above. A single partition is a hierarchy of one level. Every builder (:meth:`CellHierarchy.grid`,
:meth:`~CellHierarchy.adaptive`, :meth:`~CellHierarchy.admin`), :func:`load_cells` and
:meth:`~CellHierarchy.fit_centroids` return one, and it answers for its finest level what a
partition answers (``len``, ``assign``, ``centroids``, ``counts``, ``polygon``, ...), so code that
predicts over the finest cells never needs to know how many levels there are.
"""

from __future__ import annotations

import os
from typing import Any, Union
from collections.abc import Sequence

import numpy as np
from shapely.geometry.base import BaseGeometry

from geoscope.errors import InputError
from geoscope.geo import borders as geo_borders
from geoscope.geo.cells.adaptive import AdaptiveCells
from geoscope.geo.cells.admin import AdminCells
from geoscope.geo.cells.base import Partition
from geoscope.geo.cells.grid import GridCells
from geoscope.geo.cells.io import document_levels, make_document, read_document, write_document

#: What the functions here accept as cells: a hierarchy or one partition.
CellsLike = Union["CellHierarchy", Partition]


def _partition(level: CellsLike, where: str = "cell hierarchy") -> Partition:
    """The partition a level stands for: itself, or the only level of a one-level hierarchy."""
    if isinstance(level, Partition):
        return level
    if isinstance(level, CellHierarchy):
        if len(level.levels) != 1:
            raise InputError(f"{where}: a level must be one partition, got a hierarchy of {len(level.levels)} levels")
        return level.finest
    raise InputError(f"{where}: expected geocells (a CellHierarchy or a partition), got {type(level).__name__}")


class CellHierarchy:
    """Partitions of one area from coarse to fine, with each fine cell's parent in the level above.

    A fine cell's parent is the coarser cell holding most of its training points (the cell holding
    its centroid when it has none). Adaptive levels built from one training set nest exactly at the
    quadtree level; merging small cells can make a fine cell straddle two coarse ones, hence the
    majority rule.

    ``len(h)``, ``h.kind``, ``h.centroids``, ``h.counts``, ``h.params``, ``h.assign``, ``h.nearest``,
    ``h.polygon``, ``h.geometry``, ``h.to_geojson``, ``h.areas_km2``, ``h.geometric_centres`` and
    ``h.summary`` are those of the finest level; ``h.levels`` holds every level.
    """

    def __init__(self, levels: Sequence[CellsLike], parents: Sequence[Any] | None = None):
        if not levels:
            raise InputError("cell hierarchy: no levels given")
        self.levels: list[Partition] = [_partition(lv) for lv in levels]
        if parents is None:
            parents = [self._parents_by_centroid(lvl) for lvl in range(1, len(self.levels))]
        self._parents = [np.asarray(p, dtype=np.int64) for p in parents]
        if len(self._parents) != len(self.levels) - 1:
            raise InputError(f"cell hierarchy: {len(self._parents)} parent maps for {len(self.levels)} levels")
        for lvl, p in enumerate(self._parents, start=1):
            if p.shape != (len(self.levels[lvl]),) or (p.size and (p.min() < 0 or p.max() >= len(self.levels[lvl - 1]))):
                raise InputError(f"cell hierarchy: the parent map of level {lvl} does not fit its levels")

    def __repr__(self) -> str:
        sizes = " / ".join(str(len(lv)) for lv in self.levels)
        return f"CellHierarchy({self.kind!r}, {sizes} cells, {int(self.counts.sum())} training points)"

    # ---------------------------------------------------------------------------------- builders
    @classmethod
    def grid(cls, bbox: Sequence[float], rows: int, cols: int) -> "CellHierarchy":
        """``rows x cols`` cells of equal latitude and longitude steps over ``bbox``.

        ``bbox = (min_lat, min_lon, max_lat, max_lon)``. Cell ``r * cols + c`` is row ``r`` from the
        south, column ``c`` from the west. Every cell is kept; centroids start at the cell centres.
        """
        return cls([GridCells.build(bbox, rows, cols)])

    @classmethod
    def adaptive(cls, lat, lon, min_points: int, max_points: int | Sequence[int]) -> "CellHierarchy":
        """Adaptive cells holding ``min_points`` to ``max_points`` training points each; one level per
        value when ``max_points`` is a list (ordered coarse -> fine by their max). The rule is in
        :meth:`AdaptiveCells.build`."""
        given = [max_points] if isinstance(max_points, (int, np.integer)) else list(max_points)
        maxes = sorted({int(m) for m in given}, reverse=True)
        built = AdaptiveCells.build_levels(lat, lon, min_points, maxes)
        if len(built) == 1:
            return cls([built[0][0]])
        # the points' cells (in sorted-key order) come straight from the build: no second lookup
        return cls.from_training([b[0] for b in built], lat, lon, [b[1] for b in built])

    @classmethod
    def admin(cls, lat, lon, min_points: int, max_points: int,
              borders: geo_borders.BorderSet | None = None) -> "CellHierarchy":
        """Cells that follow country and first-level administrative borders; the rule is in
        :meth:`AdminCells.build`. ``borders``: an admin-1 ``BorderSet`` (default Natural Earth's)."""
        return cls([AdminCells.build(lat, lon, min_points, max_points, borders=borders)])

    @classmethod
    def from_training(cls, levels: Sequence[CellsLike], lat, lon, assigned=None) -> "CellHierarchy":
        """A hierarchy whose parent maps follow the training points (majority rule).

        ``assigned``: the cell of every training point per level, when already known (any common
        order of the points)."""
        parts = [_partition(lv) for lv in levels]
        if assigned is None:
            assigned = [lv.assign(lat, lon, nearest=True) for lv in parts]
        parents = []
        for lvl in range(1, len(parts)):
            fine, coarse = assigned[lvl], assigned[lvl - 1]
            n_c = len(parts[lvl - 1])
            pair = np.unique(fine * n_c + coarse, return_counts=True)
            f, c, k = pair[0] // n_c, pair[0] % n_c, pair[1]
            order = np.lexsort((-k, f))  # per fine cell, the most frequent coarse cell first
            f, c = f[order], c[order]
            first = np.r_[True, f[1:] != f[:-1]]
            p = parts[lvl - 1].assign(parts[lvl].centroids[:, 0], parts[lvl].centroids[:, 1], nearest=True)
            p[f[first]] = c[first]
            parents.append(p)
        return cls(parts, parents)

    # ---------------------------------------------------------------------------------- structure
    @property
    def finest(self) -> Partition:
        """The last (finest) level: the cells a classifier predicts over."""
        return self.levels[-1]

    def parents(self, level: int) -> np.ndarray:
        """For each cell of ``level`` (>= 1), the index of its parent cell in ``level - 1``."""
        if not 1 <= level < len(self.levels):
            raise InputError(f"cell hierarchy: level {level} has no parents (levels 1..{len(self.levels) - 1} do)")
        return self._parents[level - 1]

    def children(self, level: int, cell: int) -> np.ndarray:
        """Cells of ``level + 1`` whose parent is ``cell`` of ``level``."""
        return np.flatnonzero(self.parents(level + 1) == cell)

    def _parents_by_centroid(self, level: int) -> np.ndarray:
        fine, coarse = self.levels[level], self.levels[level - 1]
        return coarse.assign(fine.centroids[:, 0], fine.centroids[:, 1], nearest=True)

    # ---------------------------------------------------------------------------------- the finest level
    def __len__(self) -> int:
        """Number of finest cells (``len(h.levels)`` is the number of levels)."""
        return len(self.finest)

    @property
    def kind(self) -> str:
        return self.finest.kind

    @property
    def centroids(self) -> np.ndarray:
        return self.finest.centroids

    @centroids.setter
    def centroids(self, value) -> None:
        self.finest.centroids = np.asarray(value, dtype=np.float64).reshape(len(self), 2)
        self.finest._cache.pop("tree", None)  # the nearest-centroid index

    @property
    def counts(self) -> np.ndarray:
        return self.finest.counts

    @counts.setter
    def counts(self, value) -> None:
        self.finest.counts = np.asarray(value, dtype=np.int64).reshape(len(self))

    @property
    def params(self) -> dict[str, Any]:
        return self.finest.params

    def assign(self, lat, lon, nearest: bool = False) -> np.ndarray:
        """Finest cell (int64) of each point, shaped like the input; -1 where in no cell (with
        ``nearest=True``, or for admin cells, the cell with the nearest centroid instead)."""
        return self.finest.assign(lat, lon, nearest=nearest)

    def nearest(self, lat, lon) -> np.ndarray:
        """Finest cell whose centroid is nearest to each point."""
        return self.finest.nearest(lat, lon)

    def polygon(self, i: int) -> dict:
        """GeoJSON geometry of finest cell ``i`` (RFC 7946 winding)."""
        return self.finest.polygon(i)

    def geometry(self, i: int) -> BaseGeometry:
        """The shapely geometry of finest cell ``i``."""
        return self.finest.geometry(i)

    def to_geojson(self, probs=None) -> dict:
        """A FeatureCollection of the finest cells (with their probability if given)."""
        return self.finest.to_geojson(probs)

    def areas_km2(self) -> np.ndarray:
        return self.finest.areas_km2()

    def geometric_centres(self) -> np.ndarray:
        return self.finest.geometric_centres()

    def summary(self) -> dict:
        """The finest level's summary (``[lv.summary() for lv in h.levels]`` for every level)."""
        return self.finest.summary()

    def fit_centroids(self, lat, lon) -> "CellHierarchy":
        """A copy whose every level has centroids and counts fitted to these training points (see
        ``Partition.fit_centroids``); the parent maps are kept."""
        return CellHierarchy([lv.fit_centroids(lat, lon) for lv in self.levels], self._parents)

    # ---------------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        return make_document([lv.to_dict() for lv in self.levels], [p.tolist() for p in self._parents])

    @classmethod
    def from_dict(cls, d: dict, where: str = "cells") -> "CellHierarchy":
        """The hierarchy a :meth:`to_dict` object (or an older single-partition object) describes."""
        level_dicts, parents = document_levels(d, where)
        levels = [Partition.from_dict(lv, f"{where} level {i}" if "levels" in d else where)
                  for i, lv in enumerate(level_dicts)]
        return cls(levels, parents)

    def save(self, path: str | os.PathLike) -> None:
        """Write the hierarchy to ``path`` atomically (JSON)."""
        write_document(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CellHierarchy":
        """Read any geocells file."""
        return cls.from_dict(read_document(path), str(path))


def as_hierarchy(cells: CellsLike) -> CellHierarchy:
    """``cells`` as a hierarchy: itself when it is one, else a hierarchy of its one partition."""
    return cells if isinstance(cells, CellHierarchy) else CellHierarchy([_partition(cells)])


def load_cells(path: str | os.PathLike) -> CellHierarchy:
    """Read any geocells file (a single partition is a hierarchy of one level)."""
    return CellHierarchy.load(path)


def save_cells(cells: CellsLike, path: str | os.PathLike) -> None:
    """Write a hierarchy (or one partition) atomically as JSON."""
    as_hierarchy(cells).save(path)

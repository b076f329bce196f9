"""Natural Earth borders as shapely geometries, with a fast vectorised point-in-polygon lookup.

``countries()`` (admin-0, ISO 3166-1 alpha-2) and ``admin1()`` (first-level regions, ISO 3166-2) read
the geographic data (packaged with geoscope, or derived by ``python -m geoscope.geo.data_setup``;
where it is looked for: :mod:`geoscope.geo.data_files`), once per process.

Lookup: a global grid (0.1 degree cells) says, for each cell, which polygon covers all of it, that none
does, or that a border crosses it. Points in whole cells are answered by one array read; only points
in border cells are tested exactly against the candidate polygons (STRtree, prepared geometries). The
grid ships with the data in ``index/``; where it is missing or does not match the data, it is built on
first use (a few seconds, with rasterio) and cached there.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import shapely

from geoscope import optional
from geoscope.atomic import atomic_path
from geoscope.errors import InputError
from geoscope.geo.data_files import data_file, npz_member, read_table
from geoscope.geo.geojson import to_geojson
from geoscope.geo.sphere import validate_latlon

#: Grid cell size (degrees) of the lookup table.
GRID_RES_DEG = 0.1
_MIXED = -2  # grid value: a border crosses this cell


class BorderSet:
    """A set of named polygons (countries or regions) with vectorised point lookup.

    Attributes: ``kind`` ("countries" | "admin1"), ``codes``, ``names``, ``parent_codes`` (the
    country of each region; "" for countries), ``geometries`` (numpy object array of shapely
    (Multi)Polygons in lon/lat degrees).
    """

    def __init__(self, kind: str, codes, names, parent_codes, geometries, grid_cache: Path | None = None,
                 grid_res: float = GRID_RES_DEG):
        self.kind = kind
        self.codes = [str(c) for c in codes]
        self.names = [str(n) for n in names]
        self.parent_codes = [str(p or "") for p in parent_codes]
        self.geometries = np.asarray(list(geometries), dtype=object)
        n = len(self.codes)
        if not (len(self.names) == len(self.parent_codes) == len(self.geometries) == n):
            raise InputError(f"BorderSet {kind}: codes, names, parent_codes and geometries differ in length")
        if n >= np.iinfo(np.int16).max:
            raise InputError(f"BorderSet {kind}: too many polygons ({n}) for the lookup grid")
        shapely.prepare(self.geometries)
        self.grid_res = float(grid_res)
        self._grid_cache = grid_cache
        self._grid: np.ndarray | None = None
        self._tree: shapely.STRtree | None = None
        self._by_parent: dict[str, tuple[np.ndarray, object]] = {}
        self._index = {c: i for i, c in reversed(list(enumerate(self.codes)))}

    @classmethod
    def from_parquet(cls, path: str | Path, kind: str) -> "BorderSet":
        """Read a derived borders file (columns code, name, [parent], wkb)."""
        path = Path(path)
        t = read_table(path, ["code", "name", "wkb"])
        parents = t.get("parent") or [""] * len(t["code"])
        geoms = shapely.from_wkb(t["wkb"])
        return cls(kind, t["code"], t["name"], parents, geoms, grid_cache=path.parent / "index" / f"{path.stem}_grid.npz")

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"BorderSet({self.kind!r}, {len(self)} polygons)"

    def index(self, code: str) -> int:
        """Position of ``code`` (case-insensitive); InputError naming the code when unknown."""
        i = self._index.get(str(code).upper())
        if i is None:
            raise InputError(f"unknown {self.kind} code {code!r}")
        return i

    # -- lookup -------------------------------------------------------------------------------

    @property
    def grid(self) -> np.ndarray:
        """The (rows, cols) int16 lookup grid: polygon index, -1 (no polygon) or -2 (border cell)."""
        if self._grid is None:
            self._grid = self._load_or_build_grid()
        return self._grid

    def _grid_key(self) -> np.ndarray:
        h = hashlib.sha1()
        h.update(f"{self.grid_res}|{len(self)}|".encode())
        bounds = shapely.bounds(self.geometries).astype(np.float64)  # the same bytes as each g.bounds
        for c, b in zip(self.codes, bounds):
            h.update(c.encode())
            h.update(b.tobytes())
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def _load_or_build_grid(self) -> np.ndarray:
        key = self._grid_key()
        path = self._grid_cache
        if path is not None and path.is_file():
            try:
                grid = npz_member(path, "grid", key)  # memory-mapped from a plain copy after the first time
                if grid is not None:
                    return grid
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt
        grid = self._build_grid()
        if path is not None:
            try:
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, grid=grid, key=key)
                    os.chmod(tmp, 0o644)
            except OSError:
                pass  # a read-only data directory just means rebuilding next time
        return grid

    def _build_grid(self) -> np.ndarray:
        # rasterio (and its affine) only to build the grid, once per data set: the packaged data and
        # data_setup ship the grids, so reading borders never needs the overhead extra
        optional.require("rasterio", "building the borders' lookup grid")
        from affine import Affine
        from rasterio import features

        res = self.grid_res
        shape = (int(round(180 / res)), int(round(360 / res)))
        tr = Affine(res, 0.0, -180.0, 0.0, -res, 90.0)  # north-up, from (-180, 90)
        shapes = [(g, i) for i, g in enumerate(self.geometries) if not g.is_empty]
        if not shapes:
            return np.full(shape, -1, dtype=np.int16)
        centre = features.rasterize(shapes, out_shape=shape, transform=tr, fill=-1, dtype="int32", all_touched=False)
        edges = features.rasterize(
            [(g.boundary, 1) for g, _ in shapes], out_shape=shape, transform=tr, fill=0, dtype="uint8",
            all_touched=True,
        )
        from scipy.ndimage import binary_dilation  # only when the grid is built, not when it is read

        # one cell of margin makes the grid safe against rasterisation round-off at cell edges
        mixed = binary_dilation(edges.astype(bool), structure=np.ones((3, 3), bool))
        return np.where(mixed, _MIXED, centre).astype(np.int16)

    def locate(self, lat, lon) -> np.ndarray:
        """Index of the polygon containing each point (points on a border go to one side), -1 for none."""
        lat, lon = validate_latlon(lat, lon, f"{self.kind} lookup")
        shape = lat.shape
        lat, lon = lat.ravel(), lon.ravel()
        grid = self.grid
        rows = np.clip(((90.0 - lat) / self.grid_res).astype(np.int64), 0, grid.shape[0] - 1)
        cols = np.clip(((lon + 180.0) / self.grid_res).astype(np.int64), 0, grid.shape[1] - 1)
        out = grid[rows, cols].astype(np.int64)
        todo = np.flatnonzero(out == _MIXED)
        if todo.size:
            out[todo] = self._locate_exact(lat[todo], lon[todo])
        return out.reshape(shape)

    def _locate_exact(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        if self._tree is None:
            self._tree = shapely.STRtree(self.geometries)
        tree = self._tree
        pi, gi = tree.query(shapely.points(lon, lat))
        hit = shapely.intersects_xy(self.geometries[gi], lon[pi], lat[pi])
        pi, gi = pi[hit], gi[hit]
        order = np.lexsort((gi, pi))  # the lowest polygon index wins where polygons overlap
        pi, gi = pi[order], gi[order]
        out = np.full(lat.shape, -1, dtype=np.int64)
        first = np.unique(pi, return_index=True)[1]
        out[pi[first]] = gi[first]
        return out

    def locate_within(self, lat, lon, parent_codes) -> np.ndarray:
        """Like :meth:`locate`, but each point's polygon must belong to the given parent (country).

        Where the point lies in no polygon of that parent (a coastal point just outside a simplified
        region, or a region of the neighbour at a border), the nearest polygon of that parent is
        taken; -1 where the parent has none (or is "").
        """
        lat, lon = validate_latlon(lat, lon, f"{self.kind} lookup")
        shape = lat.shape
        lat, lon = lat.ravel(), lon.ravel()
        parents = np.broadcast_to(np.asarray(parent_codes, dtype=object), shape).ravel()
        idx = self.locate(lat, lon)
        pc = np.asarray(self.parent_codes + [None], dtype=object)
        bad = np.flatnonzero(pc[idx] != parents)  # idx -1 reads the trailing None
        if bad.size:
            for parent in np.unique(parents[bad].astype(str)):
                sel = bad[parents[bad] == parent]
                members, tree = self._parent_tree(parent)
                if tree is None:
                    idx[sel] = -1
                    continue
                nearest = tree.query_nearest(shapely.points(lon[sel], lat[sel]), return_distance=False, all_matches=False)
                out = np.full(sel.size, -1, dtype=np.int64)
                out[nearest[0]] = members[nearest[1]]
                idx[sel] = out
        return idx.reshape(shape)

    def _parent_tree(self, parent: str):
        if parent not in self._by_parent:
            members = (np.flatnonzero(np.asarray(self.parent_codes, dtype=object) == parent) if parent
                       else np.array([], dtype=np.int64))
            tree = shapely.STRtree(self.geometries[members]) if members.size else None
            self._by_parent[parent] = (members, tree)
        return self._by_parent[parent]

    # -- output -------------------------------------------------------------------------------

    def to_geojson(self, i: int) -> dict:
        """One polygon as a GeoJSON Feature with properties code, name, parent_code (exterior rings
        counter-clockwise, holes clockwise, as RFC 7946 asks)."""
        if not -len(self) <= i < len(self):
            raise InputError(f"{self.kind} index {i} is outside 0..{len(self) - 1}")
        return {
            "type": "Feature",
            "geometry": to_geojson(self.geometries[i]),
            "properties": {"code": self.codes[i], "name": self.names[i], "parent_code": self.parent_codes[i] or None},
        }

    def to_feature_collection(self, indices=None) -> dict:
        """Several polygons (all by default) as a GeoJSON FeatureCollection."""
        idx = range(len(self)) if indices is None else indices
        return {"type": "FeatureCollection", "features": [self.to_geojson(int(i)) for i in idx]}


@functools.lru_cache(maxsize=4)
def _load(path: str, kind: str) -> BorderSet:
    return BorderSet.from_parquet(path, kind)


def countries() -> BorderSet:
    """Natural Earth admin-0 countries keyed by ISO 3166-1 alpha-2 (cached after the first call)."""
    return _load(str(data_file("countries.parquet")), "countries")


def admin1() -> BorderSet:
    """Natural Earth first-level regions keyed by ISO 3166-2 (cached after the first call)."""
    return _load(str(data_file("admin1.parquet")), "admin1")

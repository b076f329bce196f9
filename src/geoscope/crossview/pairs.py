"""Training pairs for cross-view matching: a query view and a north-up reference tile of one place.

Two sources, one type (:class:`Pairs`):

- :func:`pairs_from_manifest`: the folder / ``pairs.csv`` that ``geoscope crossview build`` writes (a photo
  and an overhead tile per row);
- :func:`pairs_from_rasters`: two georeferenced rasters and a list of positions: the query tile cut from
  one (e.g. shaded relief), the reference tile from the other (e.g. Blue Marble), both centred on the
  position. A position outside either raster is an ``InputError`` naming it.

Images are loaded lazily (``Pairs.query(i)``, ``Pairs.reference(i)``), so a pair set over a planet costs
nothing until its views are embedded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
from PIL import Image

from geoscope.data.images import load_image
from geoscope.errors import InputError
from geoscope.geo.sphere import destination, validate_latlon


@dataclass
class Pairs:
    """N pairs: ``ids``, positions ``lat`` / ``lon``, image loaders, and ``describe`` (what they are, for
    cache keys). ``overhead_query``: the queries are overhead views too (rotation augmentation applies)."""

    ids: list[str]
    lat: np.ndarray
    lon: np.ndarray
    query: Callable[[int], Image.Image]
    reference: Callable[[int], Image.Image]
    describe: dict = field(default_factory=dict)
    overhead_query: bool = True

    def __len__(self) -> int:
        return len(self.ids)


def pairs_from_manifest(path: str | os.PathLike, modality: str | None = None) -> Pairs:
    """Pairs from a ``geoscope crossview build`` folder or its ``pairs.csv`` (photo = query, tile = reference);
    ``modality`` keeps one kind of tile (``raster`` / ``osm``) when the folder holds both."""
    from geoscope.data.crossview_pairs import read_pairs

    df = read_pairs(path)
    if modality is not None:
        df = df[df["modality"] == modality]
    if df.empty:
        raise InputError(f"{path}: the pairs manifest holds no pairs" + (f" of modality {modality}" if modality else ""))
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    photos = [p if os.path.isabs(p) else str(base / p) for p in df["photo"].astype(str)]
    tiles = list(df["tile"].astype(str))
    lat, lon = validate_latlon(df["lat"].to_numpy(np.float64), df["lon"].to_numpy(np.float64), f"{path} positions")
    ids = [f"{i}:{m}" for i, m in zip(df["id"].astype(str), df["modality"].astype(str))]
    return Pairs(ids, lat, lon, lambda i: load_image(photos[i]), lambda i: load_image(tiles[i]),
                 {"kind": "manifest", "path": str(Path(path).resolve()), "n": len(ids), "modality": modality},
                 overhead_query=False)


def pairs_from_rasters(query_raster, reference_raster, lat, lon, size_km: float, pixels: int = 160,
                       ids: list[str] | None = None, jitter_km: float = 0.0, seed: int = 0) -> Pairs:
    """Pairs cut from two rasters (``open_raster`` sources or ``Raster`` objects) at positions lat / lon:
    square ``size_km`` tiles of ``pixels`` px, north up, in the position's local projection.

    ``jitter_km``: each query tile is centred up to this far from its reference (a seeded random bearing and
    distance per pair), so the model learns to match queries that do not sit on a reference's centre."""
    from geoscope.data.overhead import Raster, cut_tile_array, open_raster

    q = query_raster if isinstance(query_raster, Raster) else open_raster(query_raster)
    r = reference_raster if isinstance(reference_raster, Raster) else open_raster(reference_raster)
    lat, lon = validate_latlon(lat, lon, "pair positions")
    for raster, what in ((q, "query"), (r, "reference")):
        inside = np.asarray(raster.contains(lat, lon), dtype=bool)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            w, s, e, n = raster.bounds_latlon
            raise InputError(f"position {i} ({lat[i]:.4f}, {lon[i]:.4f}) lies outside the {what} raster {raster.name} "
                             f"(lat {s:.2f}..{n:.2f}, lon {w:.2f}..{e:.2f}); drop it or use a raster that covers it")
    ids = ids if ids is not None else [f"p{i:06d}" for i in range(len(lat))]
    q_lat, q_lon = lat, lon
    if jitter_km > 0:
        rng = np.random.default_rng([seed, 41])
        bearing = rng.uniform(0.0, 360.0, len(lat))
        dist = jitter_km * np.sqrt(rng.uniform(0.0, 1.0, len(lat)))  # uniform over the disc
        q_lat, q_lon = destination(lat, lon, bearing, dist)
        q_lat, q_lon = np.asarray(q_lat, dtype=np.float64), np.asarray(q_lon, dtype=np.float64)

    def cut(raster, la, lo, i: int) -> Image.Image:
        arr, _ = cut_tile_array(raster, float(la[i]), float(lo[i]), size_km, pixels)
        return Image.fromarray(arr, "RGB")

    return Pairs(list(ids), lat, lon, lambda i: cut(q, q_lat, q_lon, i), lambda i: cut(r, lat, lon, i),
                 {"kind": "rasters", "query": str(q.name), "reference": str(r.name), "size_km": float(size_km),
                  "pixels": int(pixels), "n": len(ids), "jitter_km": float(jitter_km), "seed": int(seed),
                  "first": [float(lat[0]), float(lon[0])] if len(lat) else None})

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

import hashlib
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
    #: centres of the query tiles where they differ from the pair positions (jittered raster pairs), else None
    query_lat: np.ndarray | None = None
    query_lon: np.ndarray | None = None
    #: the id each pair's reference is embedded under (pairs sharing one share its embedding); None: ``ids``
    reference_ids: list[str] | None = None
    #: True where a pair only gives its reference to the gallery: its query is never embedded nor trained on
    #: (e.g. its query tile lies too near a held-out query); None: every pair trains
    gallery_only: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def query_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of every query view's centre: the pair position unless the query tiles were jittered."""
        if self.query_lat is None or self.query_lon is None:
            return self.lat, self.lon
        return self.query_lat, self.query_lon

    def ref_ids(self) -> list[str]:
        """The id of every pair's reference embedding (shared by pairs with one reference)."""
        return list(self.ids) if self.reference_ids is None else list(self.reference_ids)

    def trainable(self) -> np.ndarray:
        """(N,) True where the pair's query is embedded and trained on."""
        return np.ones(len(self), bool) if self.gallery_only is None else ~np.asarray(self.gallery_only, bool)

    def gallery(self) -> tuple[list[str], np.ndarray]:
        """The distinct references: (their ids, the index of the first pair holding each), in pair order."""
        seen: dict[str, int] = {}
        for i, rid in enumerate(self.ref_ids()):
            seen.setdefault(rid, i)
        return list(seen), np.fromiter(seen.values(), dtype=np.int64, count=len(seen))

    def key(self) -> dict:
        """What the pairs are, for cache keys: ``describe`` plus digests of the shared references and the
        gallery-only mask where they are set."""
        out = dict(self.describe)
        if self.reference_ids is not None:
            out["reference_ids"] = hashlib.sha256("\n".join(self.reference_ids).encode()).hexdigest()[:12]
        if self.gallery_only is not None:
            out["gallery_only"] = _digest(np.flatnonzero(self.gallery_only))
        return out

    def subset(self, keep) -> "Pairs":
        """The pairs at indices ``keep`` (their loaders still cut the same tiles)."""
        keep = np.asarray(keep, dtype=np.int64)
        ql, qn = self.query_centres()
        rids = None if self.reference_ids is None else [self.reference_ids[i] for i in keep]
        only = None if self.gallery_only is None else np.asarray(self.gallery_only, bool)[keep]
        return Pairs([self.ids[i] for i in keep], self.lat[keep], self.lon[keep],
                     lambda i: self.query(int(keep[i])), lambda i: self.reference(int(keep[i])),
                     {**self.describe, "subset": _digest(keep)}, self.overhead_query, ql[keep], qn[keep], rids, only)


def concat_pairs(*parts: Pairs) -> Pairs:
    """One pair set from several (ids must not repeat; references keep their ids, so sets may share them)."""
    ids = [pid for p in parts for pid in p.ids]
    if len(set(ids)) != len(ids):
        raise InputError("the pair sets to join repeat pair ids; give each set its own ids")
    starts = np.cumsum([0] + [len(p) for p in parts])

    def locate(i: int) -> tuple[Pairs, int]:
        k = int(np.searchsorted(starts, i, side="right") - 1)
        return parts[k], i - int(starts[k])

    def query(i: int) -> Image.Image:
        p, j = locate(i)
        return p.query(j)

    def reference(i: int) -> Image.Image:
        p, j = locate(i)
        return p.reference(j)

    centres = [p.query_centres() for p in parts]
    return Pairs(ids, np.concatenate([p.lat for p in parts]), np.concatenate([p.lon for p in parts]), query, reference,
                 {"kind": "joined", "parts": [p.key() for p in parts]}, all(p.overhead_query for p in parts),
                 np.concatenate([c[0] for c in centres]), np.concatenate([c[1] for c in centres]),
                 [rid for p in parts for rid in p.ref_ids()], np.concatenate([~p.trainable() for p in parts]))

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
                       ids: list[str] | None = None, jitter_km: float = 0.0, seed: int = 0,
                       query_latlon: tuple[np.ndarray, np.ndarray] | None = None,
                       reference_ids: list[str] | None = None) -> Pairs:
    """Pairs cut from two rasters (``open_raster`` sources or ``Raster`` objects) at positions lat / lon:
    square ``size_km`` tiles of ``pixels`` px, north up, in the position's local projection.

    ``jitter_km``: each query tile is centred up to this far from its reference (a seeded random bearing and
    distance per pair), so the model learns to match queries that do not sit on a reference's centre.
    ``query_latlon``: the query tiles' centres given instead (no jitter), e.g. random places each paired with
    its nearest reference tile; ``reference_ids``: the ids their references are embedded under (pairs with one
    reference tile share one id, so it is embedded once)."""
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
    if query_latlon is not None:
        q_lat, q_lon = validate_latlon(query_latlon[0], query_latlon[1], "query tile centres")
        if len(q_lat) != len(lat):
            raise InputError(f"{len(q_lat)} query tile centres for {len(lat)} pair positions: give one per pair")
        inside = np.asarray(q.contains(q_lat, q_lon), dtype=bool)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise InputError(f"query tile centre {i} ({q_lat[i]:.4f}, {q_lon[i]:.4f}) lies outside the query raster "
                             f"{q.name}; drop it or use a raster that covers it")
    elif jitter_km > 0:
        rng = np.random.default_rng([seed, 41])
        bearing = rng.uniform(0.0, 360.0, len(lat))
        dist = jitter_km * np.sqrt(rng.uniform(0.0, 1.0, len(lat)))  # uniform over the disc
        q_lat, q_lon = destination(lat, lon, bearing, dist)
        q_lat, q_lon = np.asarray(q_lat, dtype=np.float64), np.asarray(q_lon, dtype=np.float64)

    last: dict[str, tuple[int, np.ndarray]] = {}

    def cut(raster, la, lo, i: int, side: str) -> Image.Image:
        # each side's last tile is kept: a pair's query views are made one after another from one cut tile
        if side not in last or last[side][0] != i:
            arr, _ = cut_tile_array(raster, float(la[i]), float(lo[i]), size_km, pixels)
            last[side] = (i, arr)
        return Image.fromarray(last[side][1], "RGB")

    return Pairs(list(ids), lat, lon, lambda i: cut(q, q_lat, q_lon, i, "query"), lambda i: cut(r, lat, lon, i, "reference"),
                 {"kind": "rasters", "query": str(q.name), "reference": str(r.name), "size_km": float(size_km),
                  "pixels": int(pixels), "n": len(ids), "jitter_km": float(jitter_km), "seed": int(seed),
                  "first": [float(lat[0]), float(lon[0])] if len(lat) else None,
                  **({"query_centres": places_digest(q_lat, q_lon, decimals=5)}
                     if query_latlon is not None else {})},
                 query_lat=np.asarray(q_lat, dtype=np.float64), query_lon=np.asarray(q_lon, dtype=np.float64),
                 reference_ids=None if reference_ids is None else [str(r) for r in reference_ids])


def places_digest(*coords, decimals: int) -> str:
    """12 hex digits naming a set of places: its coordinate arrays (lat, lon, ...) rounded to ``decimals`` (a cache key)."""
    return hashlib.sha256(np.round(np.stack(coords), decimals).tobytes()).hexdigest()[:12]


def _digest(keep: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(keep, dtype=np.int64).tobytes()).hexdigest()[:12]

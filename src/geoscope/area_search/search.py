"""Area search: where in an area does a photo (or a route of photos) fit?

``AreaSearch.prepare(source, bbox, matcher, ...)`` lays a grid of tile centres over the area, embeds
every reference tile once (cached and resumable: ``references.py``), and then answers many photos:
``locate(image)`` (one photo, the best heading at each position) and ``locate_route(images,
spacing_m)`` (photos along a route, combined by a Viterbi pass; the answer is the **last** photo's
position). Each answer is an :class:`AreaResult`: the score grid, probabilities, the top candidates
(one per peak), a ``Prediction`` and ``write(out_dir)`` for the files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from geoscope.area_search import outputs
from geoscope.area_search.matcher import as_pil, heading_mode
from geoscope.area_search.references import (
    ReferenceSet,
    ReferenceSpec,
    check_tile_count,
    embed_references,
    headings_for,
    source_identity,
)
from geoscope.area_search.scoring import PhotoScores, probabilities, route_scores, score_photo
from geoscope.data.area_grid import area_grid, clip_bbox
from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.prediction import Candidate, Prediction

logger = logging.getLogger(__name__)

#: the most reference tiles (positions x headings) a search embeds unless told otherwise
MAX_TILES = 250_000


def open_area(area: str | os.PathLike | None = None, osm: str | os.PathLike | None = None,
              bbox: BBox | Sequence[float] | None = None, margin_m: float = 0.0):
    """The tile source and the searched box: a GeoTIFF (``area``) or an OpenStreetMap extract (``osm``),
    the box clipped to what the source covers (the whole source when ``bbox`` is None).

    Returns (source, (south, west, north, east)). A raster without georeferencing, an empty or
    truncated extract and a box outside the source are InputErrors, raised before anything is written.
    """
    if (area is None) == (osm is None):
        raise InputError("area search needs one overhead source: --area R.tif or --osm F.osm.pbf")
    box = None if bbox is None else BBox.coerce(bbox)
    source: Any
    if box is not None and box.crosses_antimeridian:
        raise InputError(f"the bounding box {box} crosses the antimeridian; search each side separately")
    if area is not None:
        from geoscope.data.overhead import open_raster

        source = open_raster(area)
        what = f"the raster {source.name}"
    else:
        from geoscope.data.osm_render import OsmMap

        assert osm is not None
        what = f"the OpenStreetMap extract {Path(osm).name}"
        load_box = None
        if box is not None:
            header = _osm_header_bounds(osm)
            if header is not None:  # a box outside the extract is said as such, before reading it
                clip_bbox(box.to_latlon(), header, what)
            # keep what reaches into the box and a tile beyond it
            pad = margin_m / 111_000.0 + 1e-3
            load_box = (box.south - pad, box.west - pad * 2, box.north + pad, box.east + pad * 2)
        source = OsmMap.load(osm, bbox=load_box)
        source.path = Path(osm)  # what the reference cache is keyed by (with the bounds read)
    bounds = source.bounds_latlon  # west, south, east, north
    if box is None:
        return source, (bounds[1], bounds[0], bounds[3], bounds[2])
    return source, clip_bbox(box.to_latlon(), bounds, what)


def _osm_header_bounds(path) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) from an extract's header, or None when it has none or cannot be read
    (reading the extract then says what is wrong)."""
    try:
        import osmium
    except ImportError:
        return None  # OsmMap.load says what to install
    try:
        reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
        try:
            b = reader.header().box()
        finally:
            reader.close()
        if not b.valid():
            return None
        return (b.bottom_left.lon, b.bottom_left.lat, b.top_right.lon, b.top_right.lat)
    except (RuntimeError, OSError, ValueError):  # an unreadable extract: OsmMap.load says what is wrong
        return None


@dataclass
class AreaResult:
    """One answer: ``scores`` (rows, cols; a photo's best cosine, or a route's summed log-likelihood),
    ``probs`` (softmax over the area), ``candidates`` (dicts: rank, lat, lon, score, probability,
    heading_deg, row, col), the ``prediction`` and, for a route, its best ``route`` (one dict per photo)."""

    search: "AreaSearch"
    sources: list[str]
    scores: np.ndarray
    probs: np.ndarray
    heading: np.ndarray | None
    candidates: list[dict]
    prediction: Prediction
    temperature: float
    route: list[dict] | None = None
    photo_scores: list[PhotoScores] = field(default_factory=list)

    @property
    def best(self) -> dict:
        return self.candidates[0]

    def write(self, out_dir: str | os.PathLike, png: bool = True, truth: tuple[float, float] | None = None) -> dict:
        """Write ``heatmap.tif``, ``heatmap.png``, ``candidates.geojson``, ``candidates.csv`` and
        ``prediction.json`` into ``out_dir``; returns {kind: path}."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        grid = self.search.grid
        tags = {"geoscope": "area search", "model": self.search.matcher.name, "photos": " ".join(self.sources),
                "stride_m": grid.stride_km * 1000.0, "size_m": self.search.spec.size_m,
                "score": "route log-likelihood" if self.route else "cosine similarity (best heading)"}
        paths = {"heatmap_tif": outputs.write_heatmap_tif(out / "heatmap.tif", grid, self.scores, self.probs, tags)}
        gj, cs = outputs.write_candidates(out, self.candidates, self.route)
        paths["candidates_geojson"], paths["candidates_csv"] = gj, cs
        if png:
            title = (f"{Path(self.sources[-1]).name}: route of {len(self.sources)} photos (last photo)" if self.route
                     else f"{Path(self.sources[0]).name}") + f" - {self.search.matcher.name}"
            paths["heatmap_png"] = outputs.write_heatmap_png(out / "heatmap.png", grid, self.probs, self.search.source,
                                                             self.candidates[:10], self.route, truth, title)
        from geoscope.atomic import write_json

        write_json(out / "prediction.json", self.prediction.to_dict())
        paths["prediction"] = out / "prediction.json"
        return {k: str(v) for k, v in paths.items()}


class AreaSearch:
    """A matcher and the embedded reference tiles of one area; answers photos and routes."""

    def __init__(self, source: Any, refs: ReferenceSet, matcher: Any, heading_steps: int = 8,
                 temperature: float | None = None):
        self.source = source
        self.refs = refs
        self.matcher = matcher
        self.steps = headings_for(heading_steps)
        self.temperature = temperature

    @property
    def grid(self):
        return self.refs.grid

    @property
    def spec(self) -> ReferenceSpec:
        return self.refs.spec

    @classmethod
    def prepare(cls, source: Any, bbox: Sequence[float] | BBox, matcher: Any, stride_m: float | None = None,
                size_m: float = 225.0, px: int = 320, heading_steps: int = 8, projection: str = "auto",
                min_valid: float = 0.5, cache: str | os.PathLike | None = None, max_tiles: int = MAX_TILES,
                batch_size: int = 32, progress: bool = True, temperature: float | None = None) -> "AreaSearch":
        """Lay the grid (``stride_m`` apart; default half a tile) over ``bbox`` (south, west, north, east)
        and embed its reference tiles (``size_m`` on the ground, ``px`` pixels), or read them from the cache."""
        if not size_m > 0:
            raise InputError(f"the tile size must be a positive number of metres, got {size_m}")
        stride_m = float(stride_m) if stride_m is not None else size_m / 2.0
        if not stride_m > 0:
            raise InputError(f"the stride must be a positive number of metres, got {stride_m}")
        box = BBox.coerce(bbox).to_latlon() if isinstance(bbox, BBox) else tuple(float(v) for v in bbox)
        mode = heading_mode(matcher)
        ref_headings = headings_for(heading_steps) if mode == "reference" else (0.0,)
        grid = area_grid(box, stride_m / 1000.0, max_tiles=max(1, max_tiles // len(ref_headings)))
        check_tile_count(len(grid), len(ref_headings), max_tiles, stride_m)
        spec = ReferenceSpec(source_identity(source), grid, float(size_m), int(px), ref_headings, projection,
                             float(min_valid))
        refs = embed_references(source, spec, matcher, cache=cache, batch_size=batch_size, progress=progress)
        if len(refs) == 0:
            raise InputError(f"no reference tile over the area has at least {min_valid:.0%} of its pixels with data; "
                             "check the bounding box against the imagery")
        return cls(source, refs, matcher, heading_steps, temperature)

    # --- answering --------------------------------------------------------------------------------

    def score(self, image: Any, heading: float | None = None) -> PhotoScores:
        """The photo's score at every position (``load_image`` first when ``image`` is a path)."""
        return score_photo(self.refs, self.matcher, _image(image), heading, self.steps)

    def locate(self, image: Any, heading: float | None = None, top_k: int = 10, separation_m: float | None = None,
               source: str | None = None) -> AreaResult:
        """Where in the area ``image`` fits: candidates one per peak (``separation_m`` apart, default
        half a tile)."""
        ps = self.score(image, heading)
        probs, t = probabilities(ps.scores, self.temperature)
        name = source or _name(image)
        return self._result([name], ps.scores, probs, ps.heading, t, top_k, separation_m, None, [ps])

    def locate_route(self, images: Sequence[Any], spacing_m: float, headings: Sequence[float | None] | None = None,
                     top_k: int = 10, separation_m: float | None = None, tolerance_m: float | None = None,
                     sources: Sequence[str] | None = None) -> AreaResult:
        """Photos taken ``spacing_m`` apart along a route, in order, combined into one answer: the
        position of the **last** photo (the end of the best path)."""
        images = list(images)
        if len(images) < 1:
            raise InputError("a route needs at least one photo")
        if headings is not None and len(headings) != len(images):
            raise InputError(f"{len(images)} photos but {len(headings)} headings: give one heading per photo")
        hs = list(headings) if headings is not None else [None] * len(images)
        per = [self.score(im, h) for im, h in zip(images, hs)]
        return self.combine_route(per, spacing_m, top_k=top_k, separation_m=separation_m, tolerance_m=tolerance_m,
                                  sources=list(sources) if sources is not None else [_name(im) for im in images])

    def combine_route(self, per: Sequence[PhotoScores], spacing_m: float, top_k: int = 10,
                      separation_m: float | None = None, tolerance_m: float | None = None,
                      sources: Sequence[str] | None = None) -> AreaResult:
        """The route answer from photos already scored (``score``), in route order."""
        route = route_scores([p.scores for p in per], spacing_m, self.grid.stride_km * 1000.0, tolerance_m,
                             self.temperature)
        values = np.where(np.isfinite(route.scores), route.scores, np.nan).astype(np.float32)
        probs, t = probabilities(values, 1.0)  # route scores are log-likelihoods already
        names = list(sources) if sources is not None else [f"photo {i + 1}" for i in range(len(per))]
        res = self._result(names, values, probs, per[-1].heading, t, top_k, separation_m, None, list(per))
        r0, c0 = res.best["row"], res.best["col"]
        lat, lon = self.grid.centres()
        res.route = [{"photo": n, "lat": float(lat[r, c]), "lon": float(lon[r, c]), "row": r, "col": c}
                     for n, (r, c) in zip(names, route.path(r0, c0))]
        res.prediction.extra["route"] = {"spacing_m": float(spacing_m), "photos": names, "answer": "last photo",
                                         "path": res.route, "temperatures": route.temperatures}
        return res

    def _result(self, names, scores, probs, heading, temperature, top_k, separation_m, route, per) -> AreaResult:
        grid = self.grid
        sep = self.spec.size_m / 2.0 if separation_m is None else float(separation_m)
        nodes = outputs.top_nodes(scores, grid, top_k, sep)
        if not nodes:
            raise InputError("no position in the area could be scored")
        rows = outputs.candidates_rows(nodes, grid, scores, probs, heading)
        stride = grid.stride_km * 1000.0
        best = rows[0]
        extra = {
            "area_search": {
                "grid": grid.to_dict(), "stride_m": stride, "size_m": self.spec.size_m, "px": self.spec.px,
                "reference_headings": list(self.spec.headings), "heading_mode": heading_mode(self.matcher),
                "headings_tried": list(per[-1].headings_tried) if per else [], "temperature": temperature,
                "positions_scored": int(np.isfinite(scores).sum()), "references": str(self.refs.path),
                "candidates": rows,
            },
            "mass_within_m": outputs.mass_within(grid, probs, best["lat"], best["lon"], (stride, 4 * stride, 16 * stride)),
        }
        pred = Prediction(
            source=names[-1],
            candidates=[Candidate(r["lat"], r["lon"], r["probability"]) for r in rows],
            model=self.matcher.name,
            extra=extra,
            neighbourhood={"kind": "grid cell", "size_m": stride},
            calibrated=False,
        )
        return AreaResult(self, list(names), scores, probs, heading, rows, pred, temperature, route, per)


def _image(image: Any):
    if isinstance(image, (str, os.PathLike, bytes)):
        from geoscope.data.images import load_image

        return load_image(image)
    return as_pil(image)


def _name(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return getattr(image, "filename", "") or "<image>"


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call (benchmarks)."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t

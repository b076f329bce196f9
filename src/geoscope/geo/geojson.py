"""GeoJSON geometry as RFC 7946 wants it: ``[lon, lat]`` positions, exterior rings counter-clockwise,
holes clockwise (the right-hand rule of §3.1.6).

Every place geoscope writes a polygon (cell polygons, borders, prediction exports) goes through
:func:`to_geojson` (shapely in) or :func:`rewind` (a GeoJSON dict in); :func:`winding_problems`
is the check. Orientation is measured in the plane of longitude and latitude, as GeoJSON readers
measure it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient


def signed_area(ring: Any) -> float:
    """Shoelace area of a closed ring of ``[lon, lat]`` positions: positive when counter-clockwise.

    Positions are taken relative to the first one, so slivers far from the origin keep their sign."""
    xy = np.asarray(ring, dtype=np.float64)[:, :2]
    xy = xy - xy[0]
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _polygons(geom: BaseGeometry) -> list:
    if geom.geom_type == "Polygon":
        return [] if geom.is_empty else [geom]
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for part in geom.geoms for p in _polygons(part)]
    return []


def oriented(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal parts of ``geom`` with counter-clockwise exteriors and clockwise holes.

    Lines and points (what an intersection can leave along an edge) are dropped, so the result is a
    Polygon (when ``geom`` is a non-empty Polygon) or a MultiPolygon (possibly empty).
    """
    if geom.geom_type == "Polygon" and not geom.is_empty:
        return orient(geom, sign=1.0)
    return shapely.MultiPolygon([orient(p, sign=1.0) for p in _polygons(geom)])


def _ring(coords: Any) -> list[list[float]]:
    return np.asarray(coords, dtype=np.float64)[:, :2].tolist()


def _polygon(p: BaseGeometry) -> list[list[list[float]]]:
    return [_ring(p.exterior.coords)] + [_ring(r.coords) for r in p.interiors]


def to_geojson(geom: BaseGeometry) -> dict:
    """A shapely polygonal geometry as a GeoJSON geometry dict with RFC 7946 winding (plain lists)."""
    g = oriented(geom)
    if g.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": _polygon(g)}
    return {"type": "MultiPolygon", "coordinates": [_polygon(p) for p in g.geoms]}


def _rewind_polygon(rings: list) -> list:
    out = []
    for k, ring in enumerate(rings):
        right = len(ring) < 4 or (signed_area(ring) > 0) == (k == 0)  # too short to have a winding
        out.append(list(ring) if right else list(ring)[::-1])
    return out


def rewind(geometry: dict) -> dict:
    """A copy of a GeoJSON geometry dict whose polygon rings follow the right-hand rule (other
    geometry types are returned as they are)."""
    t = geometry.get("type")
    if t == "Polygon":
        return {**geometry, "coordinates": _rewind_polygon(geometry["coordinates"])}
    if t == "MultiPolygon":
        return {**geometry, "coordinates": [_rewind_polygon(p) for p in geometry["coordinates"]]}
    if t == "GeometryCollection":
        return {**geometry, "geometries": [rewind(g) for g in geometry["geometries"]]}
    return geometry


def winding_problems(rings: list, where: str) -> list[str]:
    """What breaks the right-hand rule in one Polygon's ``rings`` (exterior first, then holes)."""
    out = []
    for k, ring in enumerate(rings):
        area = signed_area(ring)
        if k == 0 and area < 0:
            out.append(f"{where}[0]: exterior ring is clockwise; RFC 7946 wants it counter-clockwise")
        elif k > 0 and area > 0:
            out.append(f"{where}[{k}]: hole is counter-clockwise; RFC 7946 wants holes clockwise")
    return out

"""Files for other tools: GeoJSON (QGIS, geojson.io), KML (Google Earth), CSV (spreadsheets, batches).

- ``prediction_geojson(pred)``: a FeatureCollection of the most probable cells (Polygons with their
  probability and rank), the candidates (Points) and the EXIF-claimed location (a Point), all in the
  GeoJSON order ``[lon, lat]``, polygon rings wound as RFC 7946 asks (exterior counter-clockwise,
  holes clockwise). ``geojson_problems(obj)`` checks a document against the GeoJSON rules (RFC 7946:
  types, positions, closed rings, winding) and lists what is wrong.
- ``prediction_kml(pred)``: candidates as placemarks and the cells shaded by probability.
- ``write_predictions_csv(preds, path)``: one row per image (failed images included), top-k columns.

These live here rather than as ``Prediction`` methods so that prediction.py (plain data, bottom of
the stack) imports nothing from report/.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import numpy as np

from geoscope.atomic import write_json, write_text
from geoscope.geo.geojson import rewind, winding_problems
from geoscope.prediction import CONFIDENCE_RADII_KM, Prediction


def _cells_to_show(pred: Prediction, max_cells: int, mass: float) -> np.ndarray:
    from geoscope.report.maps import significant_cells

    if pred.cell_probs is None or pred.cells is None or not hasattr(pred.cells, "polygon"):
        return np.zeros(0, dtype=np.int64)
    return significant_cells(pred.cell_probs, mass=mass, max_cells=max_cells)


def _place_props(cand: Any) -> dict:
    place = getattr(cand, "place", None)
    if place is None:
        return {"label": None, "country_code": None, "country": None, "region": None, "town": None}
    return {"label": place.label(), "country_code": place.country_code, "country": place.country,
            "region": place.region, "town": place.town}


def prediction_geojson(pred: Prediction, max_cells: int = 500, mass: float = 0.99) -> dict:
    """The Prediction as a GeoJSON FeatureCollection (RFC 7946).

    Features: the cells holding ``mass`` of the probability (at most ``max_cells``), each a Polygon /
    MultiPolygon with properties ``kind="cell"``, ``cell``, ``probability``, ``rank``; each candidate a
    Point with ``kind="candidate"``, ``rank``, ``probability`` and place names; the EXIF GPS position
    as a Point with ``kind="exif_claim"``. The collection's ``properties`` hold source and model.
    """
    features = []
    # no cell probabilities -> _cells_to_show is empty
    probs = np.asarray([] if pred.cell_probs is None else pred.cell_probs, dtype=np.float64)
    for rank, i in enumerate(_cells_to_show(pred, max_cells, mass), start=1):
        features.append({
            "type": "Feature",
            "geometry": rewind(pred.cells.polygon(int(i))),
            "properties": {"kind": "cell", "cell": int(i), "probability": float(probs[i]), "rank": rank},
        })
    for rank, c in enumerate(pred.candidates, start=1):
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(c.lon), float(c.lat)]},
            "properties": {"kind": "candidate", "rank": rank, "probability": float(c.probability),
                           "cell": None if c.cell is None else int(c.cell), **_place_props(c)},
        })
    exif = pred.exif
    if exif is not None and exif.lat is not None and exif.lon is not None:  # exif.has_gps, spelled out for mypy
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(exif.lon), float(exif.lat)]},
            "properties": {"kind": "exif_claim", "distance_to_best_km": pred.exif_distance_km,
                           "time": exif.time, "camera": " ".join(x for x in (exif.make, exif.model) if x)
                           or None},
        })
    return {"type": "FeatureCollection",
            "properties": {"source": str(pred.source), "model": pred.model, "error": pred.error},
            "features": features}


def write_geojson(pred: Prediction, path: str | Path, **kw: Any) -> Path:
    """Write ``prediction_geojson(pred)`` to ``path`` atomically."""
    write_json(path, prediction_geojson(pred, **kw))
    return Path(path)


# ------------------------------------------------------------------------------- GeoJSON checking
_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                   "GeometryCollection"}


def _position_problems(pos: Any, where: str) -> list[str]:
    if not isinstance(pos, (list, tuple)) or len(pos) < 2 or len(pos) > 3:
        return [f"{where}: a position must be an array of 2 or 3 numbers, got {pos!r}"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pos):
        return [f"{where}: position {pos!r} has a value that is not a finite number"]
    lon, lat = pos[0], pos[1]
    out = []
    if not -180.0 <= lon <= 180.0:
        out.append(f"{where}: longitude {lon} (first value) outside [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        out.append(f"{where}: latitude {lat} (second value) outside [-90, 90] - lat/lon swapped?")
    return out


def _ring_problems(ring: Any, where: str) -> list[str]:
    if not isinstance(ring, list) or len(ring) < 4:
        return [f"{where}: a linear ring needs at least 4 positions"]
    out = [p for i, pos in enumerate(ring) for p in _position_problems(pos, f"{where}[{i}]")]
    if not out and list(ring[0]) != list(ring[-1]):
        out.append(f"{where}: ring is not closed (first position {ring[0]} != last {ring[-1]})")
    return out


def _geometry_problems(g: Any, where: str) -> list[str]:
    if g is None:
        return []  # a Feature may have a null geometry
    if not isinstance(g, dict) or g.get("type") not in _GEOMETRY_TYPES:
        return [f"{where}: not a GeoJSON geometry (type {None if not isinstance(g, dict) else g.get('type')!r})"]
    t = g["type"]
    if t == "GeometryCollection":
        geoms = g.get("geometries")
        if not isinstance(geoms, list):
            return [f"{where}: GeometryCollection without a 'geometries' array"]
        return [p for i, sub in enumerate(geoms) for p in _geometry_problems(sub, f"{where}.geometries[{i}]")]
    c = g.get("coordinates")
    if not isinstance(c, list):
        return [f"{where}: {t} without a 'coordinates' array"]
    if t == "Point":
        return _position_problems(c, where)
    if t in ("MultiPoint", "LineString"):
        out = [p for i, pos in enumerate(c) for p in _position_problems(pos, f"{where}[{i}]")]
        if t == "LineString" and len(c) < 2:
            out.append(f"{where}: a LineString needs at least 2 positions")
        return out
    if t == "MultiLineString":
        return [p for i, line in enumerate(c)
                for p in _geometry_problems({"type": "LineString", "coordinates": line}, f"{where}[{i}]")]
    if t == "Polygon":
        if not c:
            return [f"{where}: a Polygon needs at least one ring"]
        out = [p for i, ring in enumerate(c) for p in _ring_problems(ring, f"{where}[{i}]")]
        return out or winding_problems(c, where)
    # MultiPolygon
    return [p for i, poly in enumerate(c)
            for p in _geometry_problems({"type": "Polygon", "coordinates": poly}, f"{where}[{i}]")]


def geojson_problems(obj: Any) -> list[str]:
    """Everything that breaks the GeoJSON rules (RFC 7946) in ``obj``; an empty list when valid.

    Checks object types, Feature / FeatureCollection structure, positions (``[lon, lat]`` with
    lon in [-180, 180] and lat in [-90, 90], finite numbers), LineString lengths, and linear rings
    (at least 4 positions, closed, exterior rings counter-clockwise and holes clockwise).
    """
    if not isinstance(obj, dict):
        return [f"root: a GeoJSON object must be a JSON object, got {type(obj).__name__}"]
    t = obj.get("type")
    if t == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list):
            return ["root: FeatureCollection without a 'features' array"]
        return [p for i, f in enumerate(feats) for p in _feature_problems(f, f"features[{i}]")]
    if t == "Feature":
        return _feature_problems(obj, "root")
    return _geometry_problems(obj, "root")


def _feature_problems(f: Any, where: str) -> list[str]:
    if not isinstance(f, dict) or f.get("type") != "Feature":
        return [f"{where}: not a Feature"]
    if "geometry" not in f:
        return [f"{where}: Feature without a 'geometry' member"]
    out = _geometry_problems(f["geometry"], f"{where}.geometry")
    if "properties" not in f or not (f["properties"] is None or isinstance(f["properties"], dict)):
        out.append(f"{where}: Feature 'properties' must be an object or null")
    return out


# ------------------------------------------------------------------------------- KML
def _kml_colour(rgb: tuple[float, float, float], alpha: float) -> str:
    """KML's aabbggrr hex colour."""
    r, g, b = (int(round(255 * max(0.0, min(1.0, v)))) for v in rgb)
    a = int(round(255 * max(0.0, min(1.0, alpha))))
    return f"{a:02x}{b:02x}{g:02x}{r:02x}"


def prediction_kml(pred: Prediction, max_cells: int = 300, mass: float = 0.99) -> str:
    """The Prediction as a KML document for Google Earth: a folder of candidate placemarks (name,
    probability, place) and a folder of cells shaded by probability; plus the EXIF claim if any."""
    import simplekml
    from matplotlib import colormaps

    kml = simplekml.Kml(name=f"geoscope: {Path(str(pred.source)).name}")
    cand_folder = kml.newfolder(name="Candidates")
    for rank, c in enumerate(pred.candidates, start=1):
        label = _place_props(c)["label"] or f"{c.lat:.4f}, {c.lon:.4f}"
        pt = cand_folder.newpoint(name=f"{rank}. {label}", coords=[(float(c.lon), float(c.lat))])
        pt.description = f"probability {100 * c.probability:.2f}%; lat {c.lat:.5f}, lon {c.lon:.5f}"
    exif = pred.exif
    if exif is not None and exif.lat is not None and exif.lon is not None:  # exif.has_gps, spelled out for mypy
        pt = kml.newpoint(name="EXIF claimed location", coords=[(float(exif.lon), float(exif.lat))])
        d = pred.exif_distance_km
        pt.description = "metadata GPS" + ("" if d is None else f"; {d:.0f} km from the best candidate")
        pt.style.iconstyle.color = _kml_colour((0.0, 0.74, 0.83), 1.0)
    shown = _cells_to_show(pred, max_cells, mass)
    if len(shown):
        probs = np.asarray(pred.cell_probs, dtype=np.float64)
        vmax = float(probs[shown].max()) or 1.0
        cmap = colormaps["YlOrRd"]
        cell_folder = kml.newfolder(name="Cell probabilities")
        for i in shown:
            level = math.sqrt(probs[i] / vmax)
            colour = _kml_colour(cmap(level)[:3], 0.25 + 0.5 * level)
            geom = pred.cells.polygon(int(i))
            parts = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
            for part in parts:
                poly = cell_folder.newpolygon(name=f"cell {int(i)}: {100 * probs[i]:.2f}%")
                poly.outerboundaryis = [tuple(p[:2]) for p in part[0]]
                if len(part) > 1:
                    poly.innerboundaryis = [[tuple(p[:2]) for p in ring] for ring in part[1:]]
                poly.style.polystyle.color = colour
                poly.style.linestyle.width = 0
    return kml.kml()


def write_kml(pred: Prediction, path: str | Path, **kw: Any) -> Path:
    """Write ``prediction_kml(pred)`` to ``path`` atomically."""
    write_text(path, prediction_kml(pred, **kw))
    return Path(path)


# ------------------------------------------------------------------------------- CSV
def csv_header(top_k: int = 5) -> list[str]:
    head = ["source", "model", "error", "exif_lat", "exif_lon", "exif_distance_km"]
    head += [f"confidence_{r}km" for r in CONFIDENCE_RADII_KM]
    for k in range(1, top_k + 1):
        head += [f"lat_{k}", f"lon_{k}", f"probability_{k}", f"place_{k}", f"country_code_{k}"]
    return head


def csv_row(pred: Prediction, top_k: int = 5) -> list[Any]:
    exif = pred.exif if pred.exif is not None and pred.exif.has_gps else None
    row: list[Any] = [pred.source, pred.model or "", pred.error or "",
                      "" if exif is None else exif.lat, "" if exif is None else exif.lon,
                      "" if pred.exif_distance_km is None else round(pred.exif_distance_km, 3)]
    row += ["" if pred.confidence.get(r) is None else round(float(pred.confidence[r]), 6) for r in CONFIDENCE_RADII_KM]
    for k in range(top_k):
        if k < len(pred.candidates):
            c = pred.candidates[k]
            props = _place_props(c)
            row += [round(float(c.lat), 6), round(float(c.lon), 6), round(float(c.probability), 6),
                    props["label"] or "", props["country_code"] or ""]
        else:
            row += ["", "", "", "", ""]
    return row


def predictions_csv(preds: Iterable[Prediction], top_k: int = 5) -> str:
    """CSV text with one row per Prediction (failed images keep their row, with ``error`` set)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_header(top_k))
    for p in preds:
        w.writerow(csv_row(p, top_k))
    return buf.getvalue()


def write_predictions_csv(preds: Iterable[Prediction], path: str | Path, top_k: int = 5) -> Path:
    """Write ``predictions_csv`` to ``path`` atomically."""
    write_text(path, predictions_csv(preds, top_k))
    return Path(path)

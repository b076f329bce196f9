"""``Prediction``: the one result type. Every front door (Python, CLI, HTTP, web page) shows it.

A Prediction is plain data: ranked candidate places with probabilities and names, the distribution
over the model's geocells, a confidence, a localizability score, and what the EXIF metadata claims.
It serialises to a JSON-ready dict and back; GeoJSON and KML exports are built from the same dict.

Candidates are sorted by the probability they show, and that probability is the mass the model puts
on the candidate's **neighbourhood**, named in ``neighbourhood`` (and in the JSON): ``{"kind": "cell"}``
the candidate's finest geocell; ``"gallery entry"`` the locations nearer to the candidate than to any
other point of a GPS gallery; ``"town"`` the candidate town; ``{"kind": "disc", "radius_km": R}`` the
disc of radius R around a single point estimate. ``confidence`` is the mass within 25 / 200 / 750 km
of the best candidate, and ``localizability`` how much location signal the image carries
(``geoscope.calibration``); both are calibrated when ``calibrated`` is true (a model trained with a
held-out calibration split), and the head's raw numbers otherwise.

Both types speak the geo interface (``__geo_interface__``, a GeoJSON Feature with [lon, lat]
coordinates), so other geospatial tools take them directly: ``shapely.geometry.shape(pred)`` is the
best candidate's point, ``geopandas.GeoDataFrame.from_features(preds)`` one row per image and
``from_features(pred.candidates)`` one row per candidate, ``folium.GeoJson(pred)`` a marker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoscope.data.exif import ExifFindings
from geoscope.geo.places import Place
from geoscope.geo.sphere import haversine_km

#: Radii (km) at which confidence is reported: probability mass within this distance of the best candidate.
CONFIDENCE_RADII_KM = (25, 200, 750)


@dataclass
class Candidate:
    lat: float
    lon: float
    probability: float
    place: Place | None = None
    cell: int | None = None  # index into the model's finest geocells, when the candidate is a cell

    def to_dict(self) -> dict:
        return {
            "lat": float(self.lat),
            "lon": float(self.lon),
            "probability": float(self.probability),
            "place": None if self.place is None else self.place.to_dict(),
            "cell": None if self.cell is None else int(self.cell),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(d["lat"], d["lon"], d["probability"], Place.from_dict(d.get("place")), d.get("cell"))

    @property
    def __geo_interface__(self) -> dict:
        """A GeoJSON Point Feature (RFC 7946: [lon, lat]) with probability, place label and cell."""
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(self.lon), float(self.lat)]},
            "properties": {
                "probability": float(self.probability),
                "place": None if self.place is None else self.place.label(),
                "cell": None if self.cell is None else int(self.cell),
            },
        }


@dataclass
class Prediction:
    source: str  # image path or sample id
    candidates: list[Candidate] = field(default_factory=list)
    #: probability of each of the model's finest geocells (sums to 1), or None for models without cells
    cell_probs: np.ndarray | None = None
    #: the Geocells that ``cell_probs`` refers to (not serialised beyond cell centroids)
    cells: Any = None
    #: {radius_km: probability mass within that radius of the best candidate}
    confidence: dict[int, float] = field(default_factory=dict)
    exif: ExifFindings | None = None
    model: str | None = None
    #: set when this image could not be processed; candidates are then empty
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: 0..1, how much location signal the image carries (None when the model cannot say)
    localizability: float | None = None
    #: what a candidate's probability is the mass of: {"kind": "cell" | "gallery entry" | "town" | "disc", ...}
    neighbourhood: dict[str, Any] = field(default_factory=dict)
    #: the probabilities come from a model calibrated on held-out data
    calibrated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.candidates)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def exif_distance_km(self) -> float | None:
        """Great-circle km from the best candidate to the EXIF GPS position, when both exist."""
        if self.best is None or self.exif is None or not self.exif.has_gps:
            return None
        return float(haversine_km(self.best.lat, self.best.lon, self.exif.lat, self.exif.lon))

    def top_cells(self, n: int = 50) -> list[dict]:
        """The ``n`` most probable cells as dicts (cell, probability, lat, lon of the cell centroid)."""
        if self.cell_probs is None:
            return []
        probs = np.asarray(self.cell_probs)
        order = np.argsort(-probs)[:n]
        centroids = None if self.cells is None else np.asarray(self.cells.centroids)
        out = []
        for i in order:
            d = {"cell": int(i), "probability": float(probs[i])}
            if centroids is not None:
                d["lat"], d["lon"] = float(centroids[i, 0]), float(centroids[i, 1])
            out.append(d)
        return out

    def to_dict(self, top_cells: int = 50) -> dict:
        return {
            "source": self.source,
            "model": self.model,
            "error": self.error,
            "candidates": [c.to_dict() for c in self.candidates],
            "confidence": {str(k): float(v) for k, v in self.confidence.items()},
            "localizability": None if self.localizability is None else float(self.localizability),
            "neighbourhood": dict(self.neighbourhood),
            "calibrated": bool(self.calibrated),
            "exif": None if self.exif is None else self.exif.to_dict(),
            "exif_distance_km": self.exif_distance_km,
            "top_cells": self.top_cells(top_cells),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Prediction":
        """Rebuild from ``to_dict`` output. The full cell distribution is not kept in JSON."""
        return cls(
            source=d["source"],
            candidates=[Candidate.from_dict(c) for c in d.get("candidates", [])],
            confidence={int(k): float(v) for k, v in (d.get("confidence") or {}).items()},
            exif=ExifFindings.from_dict(d.get("exif")),
            model=d.get("model"),
            error=d.get("error"),
            extra=dict(d.get("extra") or {}),
            localizability=None if d.get("localizability") is None else float(d["localizability"]),
            neighbourhood=dict(d.get("neighbourhood") or {}),  # absent in JSON written by older versions
            calibrated=bool(d.get("calibrated", False)),
        )

    @property
    def __geo_interface__(self) -> dict:
        """A GeoJSON Feature: the best candidate's Point ([lon, lat]; null geometry for a failed image),
        with the source, model, error, its probability and place, the confidence, localizability, the
        neighbourhood the probabilities refer to and every candidate (lat, lon, probability, place) in
        ``properties``."""
        best = self.best
        return {
            "type": "Feature",
            "geometry": None if best is None else {"type": "Point", "coordinates": [float(best.lon), float(best.lat)]},
            "properties": {
                "source": self.source,
                "model": self.model,
                "error": self.error,
                "probability": None if best is None else float(best.probability),
                "place": None if best is None or best.place is None else best.place.label(),
                "confidence": {str(k): float(v) for k, v in self.confidence.items()},
                "localizability": None if self.localizability is None else float(self.localizability),
                "neighbourhood": dict(self.neighbourhood),
                "candidates": [
                    {"lat": float(c.lat), "lon": float(c.lon), "probability": float(c.probability),
                     "place": None if c.place is None else c.place.label()}
                    for c in self.candidates
                ],
            },
        }

    def to_json(self, indent: int | None = 2, top_cells: int = 50) -> str:
        return json.dumps(self.to_dict(top_cells), indent=indent, ensure_ascii=False)

    @classmethod
    def failed(cls, source: str, error: str, model: str | None = None) -> "Prediction":
        """The result for an image that could not be processed (kept in a batch, never dropped)."""
        return cls(source=source, error=error, model=model)

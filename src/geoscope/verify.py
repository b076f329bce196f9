"""Does what the pixels say agree with what the metadata claims?

Metadata can be forged; the pixels are harder to fake. ``verify_prediction(pred)`` sets a Prediction
against a claimed position (the EXIF GPS by default) and reports:

- ``distance_to_best_km``: from the claimed point to the best candidate;
- ``mass_within_km``: the probability the model puts within ``radius_km`` of the claimed point;
- ``prior_within_km``: the share of the model's training data (cell counts) within that radius, i.e.
  what a model that learnt nothing from the pixels would put there;
- ``measure``: what those two were summed over. Normally the cells whose centroids lie within the
  radius (``"centroids"``). When the radius holds no centroid (coarse cells, or a small radius), or
  only centroids of cells without training data, the area within the radius decides (``"overlap"``):
  every cell overlapping it counts with the share of its area inside (measured with points spread
  evenly over the disc), so a disc inside one big cell gets that cell's mass against its prior.
  Models without cells (regressors, retrieval) measure their candidates against a prior spread
  evenly over the Earth (``"candidates"``). A claim near no cell with training data is
  ``"outside coverage"``: the pixels can say nothing about it;
- ``lift`` = (mass + eps) / (prior + eps): how much more (or less) the pixels favour the claimed
  area than the prior does (None outside coverage). The verdict is decided on the lift:
  ``consistent`` if lift >= ``consistent_lift``, ``inconsistent`` if lift <= ``inconsistent_lift``,
  ``inconclusive`` otherwise (also outside coverage, when there is no claim or the image could not
  be located). The reason names the measure that decided;
- ``claimed_cell_rank``: the rank (1 = most probable) of the cell containing the claimed point.

Thresholds. ``DEFAULT_THRESHOLDS`` (radius 750 km, consistent at lift >= 3, inconsistent at lift
<= 0.2) are used when no calibration exists. ``calibrate_thresholds(predictions, true_lat, true_lon)``
picks them from a held-out validation set: each image's true position is a genuine claim, and a
forged claim is made for it by moving its GPS to another validation image's position at least
``min_forge_km`` away (another continent). The radius with the best separation (AUC) is kept;
``inconsistent_lift`` is the largest value that calls at most ``max_false_inconsistent`` of genuine
claims inconsistent, ``consistent_lift`` the smallest that calls at most ``max_false_consistent`` of
forged claims consistent; lifts between 1 / 1.5 and 1.5 always stay inconclusive (``LIFT_MARGIN``);
claims outside coverage set no threshold. They are saved as ``verify_thresholds.json`` next to the
model; every verdict names the thresholds it used and where they came from.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from geoscope.atomic import write_json
from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM, destination, haversine_km, validate_latlon

THRESHOLDS_FILE = "verify_thresholds.json"
VERDICTS = ("consistent", "inconsistent", "inconclusive")
#: added to mass and prior before the ratio, so that areas the model knows nothing about give lift ~1
LIFT_EPS = 1e-4
#: calibrated thresholds keep lift in (1 / LIFT_MARGIN, LIFT_MARGIN) inconclusive
LIFT_MARGIN = 1.5


@dataclass
class VerifyThresholds:
    radius_km: float = 750.0
    consistent_lift: float = 3.0
    inconsistent_lift: float = 0.2
    #: where these came from: "defaults", or "calibrated on N validation images" (+ file when loaded)
    source: str = "defaults"
    #: what the calibration measured (rates on the validation set, AUC per radius, ...)
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "thresholds") -> "VerifyThresholds":
        try:
            out = cls(float(d["radius_km"]), float(d["consistent_lift"]), float(d["inconsistent_lift"]),
                      str(d.get("source", "file")), dict(d.get("calibration") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: not a verify thresholds file ({type(exc).__name__}: {exc})") from None
        if not (out.radius_km > 0 and out.inconsistent_lift <= out.consistent_lift):
            raise InputError(f"{where}: needs radius_km > 0 and inconsistent_lift <= consistent_lift")
        return out

    def describe(self) -> str:
        return (f"within {self.radius_km:g} km; consistent at lift >= {self.consistent_lift:.3g}, "
                f"inconsistent at lift <= {self.inconsistent_lift:.3g} ({self.source})")


DEFAULT_THRESHOLDS = VerifyThresholds()


def save_thresholds(thresholds: VerifyThresholds, path: str | Path) -> Path:
    """Write thresholds as JSON; a directory gets ``verify_thresholds.json`` inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / THRESHOLDS_FILE
    write_json(path, thresholds.to_dict())
    return path


def load_thresholds(path: str | Path | None) -> VerifyThresholds:
    """Thresholds from a JSON file or a model directory holding ``verify_thresholds.json``;
    ``DEFAULT_THRESHOLDS`` (saying so) when there is none."""
    if path is None:
        return DEFAULT_THRESHOLDS
    p = Path(path)
    if p.is_dir():
        p = p / THRESHOLDS_FILE
        if not p.exists():
            return VerifyThresholds(source=f"defaults (no {THRESHOLDS_FILE} in {p.parent})")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: thresholds file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: cannot read the thresholds file ({exc})") from None
    out = VerifyThresholds.from_dict(d, where=str(p))
    out.source = f"{out.source}, from {p}"
    return out


@dataclass
class Verification:
    source: str
    verdict: str
    reason: str
    claimed_lat: float | None = None
    claimed_lon: float | None = None
    claim_from: str | None = None  # "exif" or "argument"
    best_lat: float | None = None
    best_lon: float | None = None
    distance_to_best_km: float | None = None
    radius_km: float | None = None
    mass_within_km: float | None = None
    prior_within_km: float | None = None
    lift: float | None = None
    claimed_cell: int | None = None
    claimed_cell_rank: int | None = None
    claimed_cell_probability: float | None = None
    #: share of the claimed cell's area inside the radius, when the "overlap" measure decided
    claimed_cell_share: float | None = None
    n_cells: int | None = None
    #: what mass and prior were measured over: a key of ``MEASURES`` ("centroids", "overlap", "candidates",
    #: "outside coverage"); the reason says it in words
    measure: str | None = None
    measured_cells: int | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------- statistics
#: points spread evenly over the disc around a claim to measure how much of each cell lies inside it
OVERLAP_SAMPLES = 2048
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
#: per-cells caches (areas, admin polygons), dropped with the cells object
_AREAS: weakref.WeakKeyDictionary[Any, np.ndarray] = weakref.WeakKeyDictionary()
_SHAPES: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _cached(cache: weakref.WeakKeyDictionary, cells: Any, make):
    try:
        return cache[cells]
    except (KeyError, TypeError):
        pass
    value = make()
    try:
        cache[cells] = value
    except TypeError:  # cells that cannot be weakly referenced: no cache
        pass
    return value


def _finest(cells: Any) -> Any:
    """The partition cell probabilities refer to (a ``CellHierarchy``'s finest level, or the cells)."""
    return getattr(cells, "finest", cells)


def _prior_weights(cells: Any) -> np.ndarray:
    """What an uninformed model would give each cell: its share of the training data, or of the area."""
    counts = np.asarray(getattr(cells, "counts", np.zeros(0)), dtype=np.float64)
    if counts.size == len(cells.centroids) and counts.sum() > 0:
        return counts / counts.sum()
    if hasattr(cells, "areas_km2"):
        area = _cached(_AREAS, cells, lambda: np.asarray(cells.areas_km2(), dtype=np.float64))
        if area.sum() > 0:
            return area / area.sum()
    return np.full(len(cells.centroids), 1.0 / len(cells.centroids))


def disc_points(lat: float, lon: float, radius_km: float, n: int = OVERLAP_SAMPLES) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` points spread evenly (equal area each, a Fibonacci spiral) over the spherical disc of
    ``radius_km`` around (lat, lon), and the disc's area in km²."""
    theta = min(float(radius_km) / EARTH_RADIUS_KM, math.pi)
    k = np.arange(n) + 0.5
    cos_t = 1.0 - (k / n) * (1.0 - math.cos(theta))
    dist = np.arccos(np.clip(cos_t, -1.0, 1.0)) * EARTH_RADIUS_KM
    la, lo = destination(np.full(n, lat), np.full(n, lon), np.degrees(k * _GOLDEN_ANGLE) % 360.0, dist)
    return np.asarray(la), np.asarray(lo), 2.0 * math.pi * EARTH_RADIUS_KM**2 * (1.0 - math.cos(theta))


def _inside_admin(cells: Any, ids: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Admin cells send points at sea to the nearest cell; keep only the points inside a cell's polygons."""
    import shapely
    from shapely.geometry import shape

    shapes = _cached(_SHAPES, cells, dict)
    keep = np.zeros(len(ids), dtype=bool)
    for i in np.unique(ids[ids >= 0]):
        if i not in shapes:
            shapes[i] = shape(cells.polygon(int(i)))
            shapely.prepare(shapes[i])
        sel = ids == i
        keep[sel] = shapely.contains_xy(shapes[i], lon[sel], lat[sel])
    return keep


def cell_overlap(cells: Any, lat: float, lon: float, radius_km: float,
                 n: int = OVERLAP_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The cells that overlap the disc of ``radius_km`` around (lat, lon), and the share (0..1] of each
    cell's area inside the disc, measured with ``n`` evenly spread points. Empty arrays when the disc
    lies in no cell (outside the cells' coverage)."""
    la, lo, disc_km2 = disc_points(lat, lon, radius_km, n)
    la, lo = np.append(la, lat), np.append(lo, lon)  # the claimed point itself always counts
    ids = np.asarray(cells.assign(la, lo), dtype=np.int64).ravel()
    if getattr(cells, "kind", None) == "admin":
        ids = np.where(_inside_admin(cells, ids, la, lo), ids, -1)
    hit = np.bincount(ids[ids >= 0], minlength=len(cells.centroids)).astype(np.float64)
    idx = np.flatnonzero(hit)
    if not hasattr(cells, "areas_km2"):  # no areas: each cell weighs by its share of the disc
        return idx, hit[idx] / len(ids)
    areas = _cached(_AREAS, cells, lambda: np.asarray(cells.areas_km2(), dtype=np.float64))[idx]
    inside_km2 = hit[idx] * disc_km2 / len(ids)
    share = np.where(areas > 0, inside_km2 / np.where(areas > 0, areas, 1.0), 1.0)
    return idx, np.clip(share, 1e-12, 1.0)


MEASURES = {
    "centroids": "the cells whose centres lie within the radius",
    "overlap": "the cells overlapping the radius, weighted by the share of each inside it (no cell centre lies "
               "within the radius)",
    "candidates": "the candidate points within the radius, against a prior spread evenly over the Earth "
                  "(the model has no cells)",
    "outside coverage": "no cell with training data lies within the radius",
}


def claim_statistics(pred: Any, lat: float, lon: float, radius_km: float) -> dict[str, Any]:
    """Mass, prior, lift, claimed cell and its rank for one claimed point (see the module doc).

    ``measure`` says what the mass and prior were summed over (a key of ``MEASURES``): the cells whose
    centroids lie within ``radius_km``; when there are none (or none of them has training data), the
    cells overlapping the disc weighted by the share of each inside it; for models without cells the
    candidates. When no cell with training data overlaps the disc either, the claim is outside the
    model's coverage: ``lift`` is None (the pixels say nothing about it).
    """
    lat_a, lon_a = validate_latlon(lat, lon, "claimed position")
    lat, lon = float(lat_a), float(lon_a)
    out: dict[str, Any] = {"claimed_cell": None, "claimed_cell_rank": None, "claimed_cell_probability": None,
                           "claimed_cell_share": None, "n_cells": None, "measured_cells": None}
    cells = _finest(pred.cells)
    if pred.cell_probs is not None and cells is not None:
        probs = np.asarray(pred.cell_probs, dtype=np.float64)
        probs = probs / max(probs.sum(), 1e-12)
        prior_w = _prior_weights(cells)
        cen = np.asarray(cells.centroids, dtype=np.float64)
        near = np.flatnonzero(haversine_km(cen[:, 0], cen[:, 1], lat, lon) <= radius_km)
        mass, prior, eps, measure = float(probs[near].sum()), float(prior_w[near].sum()), LIFT_EPS, "centroids"
        out["n_cells"], out["measured_cells"] = len(probs), len(near)
        share = np.zeros(0)
        if not len(near) or prior <= 0:
            near, share = cell_overlap(cells, lat, lon, radius_km)
            mass, prior = float(probs[near] @ share), float(prior_w[near] @ share)
            # the smoothing shrinks with the measured area, so a disc inside one big cell gets that cell's lift
            eps, measure = LIFT_EPS * min(1.0, float(share.sum())), "overlap"
            out["measured_cells"] = len(near)
        cell = int(np.asarray(cells.assign(np.array([lat]), np.array([lon]))).ravel()[0]) \
            if hasattr(cells, "assign") else -1
        if cell >= 0:
            out.update(claimed_cell=cell, claimed_cell_rank=int(1 + (probs > probs[cell]).sum()),
                       claimed_cell_probability=float(probs[cell]))
            if measure == "overlap" and cell in near:
                out["claimed_cell_share"] = float(share[np.flatnonzero(near == cell)[0]])
        if prior <= 0:
            measure = "outside coverage"
    else:  # candidates only: their probabilities, against a prior spread evenly over the sphere
        near_c = [c for c in pred.candidates if haversine_km(c.lat, c.lon, lat, lon) <= radius_km]
        mass, eps, measure = float(sum(c.probability for c in near_c)), LIFT_EPS, "candidates"
        prior = (1.0 - math.cos(min(radius_km / EARTH_RADIUS_KM, math.pi))) / 2.0
        out["measured_cells"] = None
    lift = None if measure == "outside coverage" else (mass + eps) / (prior + eps)
    out.update(mass_within_km=mass, prior_within_km=prior, lift=lift, measure=measure)
    return out


def decide(lift: float | None, thresholds: VerifyThresholds) -> str:
    """The verdict for a lift; ``None`` (a claim outside the model's coverage) is inconclusive."""
    if lift is None:
        return "inconclusive"
    if lift >= thresholds.consistent_lift:
        return "consistent"
    if lift <= thresholds.inconsistent_lift:
        return "inconsistent"
    return "inconclusive"


def _cells(n: int) -> str:
    return "1 cell" if n == 1 else f"{n} cells"


def _evidence(stats: dict[str, Any], radius_km: float) -> str:
    """What was measured and what it showed, in words (the start of a verdict's reason)."""
    r = f"{radius_km:g} km"
    mass, prior = 100 * stats["mass_within_km"], 100 * stats["prior_within_km"]
    measure = stats["measure"]
    if measure == "outside coverage":
        return (f"the claimed point is outside the model's training coverage: no cell with training data lies "
                f"within {r} of it, so the pixels can neither support nor contradict it")
    lift = f"(lift {stats['lift']:.2f})"
    if measure == "candidates":
        return (f"the model has no cells; its candidates put {mass:.1f}% of the probability within {r} of the "
                f"claimed point against {prior:.2f}% for a prior spread evenly over the Earth {lift}")
    if measure == "centroids":
        n = stats["measured_cells"]
        cells = "the cell whose centre lies" if n == 1 else f"the {n} cells whose centres lie"
        return (f"measured over {cells} within {r} of the claimed point: the pixels put {mass:.1f}% of the "
                f"probability there against {prior:.1f}% a priori {lift}")
    claimed = "" if stats.get("claimed_cell_share") is None else \
        f", {100 * stats['claimed_cell_share']:.0f}% of the claimed cell {stats['claimed_cell']} among them"
    return (f"no cell centre lies within {r} of the claimed point, so the measure is the area within {r}: "
            f"{_cells(stats['measured_cells'])} {'overlaps' if stats['measured_cells'] == 1 else 'overlap'} it, "
            f"each weighted by its share inside{claimed}; the pixels "
            f"put {mass:.2f}% of the probability there against {prior:.2f}% a priori {lift}")


def verify_prediction(
    pred: Any,
    claim: tuple[float, float] | None = None,
    thresholds: VerifyThresholds | None = None,
) -> Verification:
    """Compare ``pred`` with ``claim`` (lat, lon), by default the Prediction's EXIF GPS position."""
    thr = thresholds or DEFAULT_THRESHOLDS
    common: dict[str, Any] = {"source": str(pred.source), "thresholds": thr.to_dict(), "radius_km": thr.radius_km}
    claim_from = "argument"
    if claim is None and pred.exif is not None and pred.exif.has_gps:
        claim, claim_from = (float(pred.exif.lat), float(pred.exif.lon)), "exif"
    if not pred.ok:
        return Verification(verdict="inconclusive", claimed_lat=None if claim is None else claim[0],
                            claimed_lon=None if claim is None else claim[1], claim_from=claim and claim_from,
                            reason=f"the image could not be located: {pred.error or 'no candidates'}", **common)
    if claim is None:
        return Verification(verdict="inconclusive", reason="the file has no GPS position in its metadata and no "
                            "claimed position was given, so there is nothing to verify", **common)
    stats = claim_statistics(pred, claim[0], claim[1], thr.radius_km)
    verdict = decide(stats["lift"], thr)
    best = pred.best
    dist = float(haversine_km(best.lat, best.lon, claim[0], claim[1]))
    rank = "" if stats["claimed_cell_rank"] is None else \
        f"; the claimed cell ranks {stats['claimed_cell_rank']} of {stats['n_cells']} " \
        f"({100 * stats['claimed_cell_probability']:.2f}%)"
    reason = (f"{_evidence(stats, thr.radius_km)}, and the best candidate is {dist:.0f} km away{rank}; "
              f"thresholds: {thr.describe()}")
    return Verification(verdict=verdict, reason=reason, claimed_lat=claim[0], claimed_lon=claim[1],
                        claim_from=claim_from, best_lat=float(best.lat), best_lon=float(best.lon),
                        distance_to_best_km=dist, **stats, **common)


# --------------------------------------------------------------------------------- calibration
def forged_claims(true_lat: npt.ArrayLike, true_lon: npt.ArrayLike, min_km: float = 3000.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each true position, a forged one at least ``min_km`` away (another continent): another
    sample's position where one is that far, else a point ``min_km``..10000 km away in a random direction."""
    lat, lon = validate_latlon(np.ravel(true_lat), np.ravel(true_lon), "true positions")
    rng = np.random.default_rng(seed)
    out_lat, out_lon = lat.copy(), lon.copy()
    for i in range(len(lat)):
        far = np.flatnonzero(haversine_km(lat, lon, lat[i], lon[i]) >= min_km)
        if len(far):
            j = int(rng.choice(far))
            out_lat[i], out_lon[i] = lat[j], lon[j]
        else:
            la, lo = destination(lat[i], lon[i], rng.uniform(0, 360), rng.uniform(min_km, 10000.0))
            out_lat[i], out_lon[i] = float(la), float(lo)
    return out_lat, out_lon


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) (Mann-Whitney)."""
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # average 1-based rank of each tied group
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def calibrate_thresholds(
    predictions: Sequence[Any],
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    radii_km: Sequence[float] = (200.0, 750.0, 2500.0),
    max_false_inconsistent: float = 0.05,
    max_false_consistent: float = 0.05,
    min_forge_km: float = 3000.0,
    seed: int = 0,
) -> VerifyThresholds:
    """Thresholds picked on a held-out validation set (see the module doc); ``calibration`` holds the
    rates they give on that set."""
    preds = list(predictions)
    lat, lon = validate_latlon(np.ravel(true_lat), np.ravel(true_lon), "calibration true positions")
    if len(preds) != len(lat):
        raise InputError(f"calibration: {len(preds)} predictions but {len(lat)} true positions")
    keep = [i for i, p in enumerate(preds) if p.ok]
    if len(keep) < 20:
        raise InputError(f"calibration needs at least 20 located validation images, got {len(keep)}")
    preds = [preds[i] for i in keep]
    lat, lon = lat[keep], lon[keep]
    f_lat, f_lon = forged_claims(lat, lon, min_forge_km, seed)
    per_radius = {}
    for r in radii_km:
        g_all = [claim_statistics(p, a, b, r)["lift"] for p, a, b in zip(preds, lat, lon)]
        f_all = [claim_statistics(p, a, b, r)["lift"] for p, a, b in zip(preds, f_lat, f_lon)]
        # claims outside the model's coverage (lift None) are always inconclusive: they set no threshold
        g = np.array([x for x in g_all if x is not None], dtype=np.float64)
        f = np.array([x for x in f_all if x is not None], dtype=np.float64)
        if len(g) and len(f):
            per_radius[float(r)] = (g, f, _auc(g, f), g_all, f_all)
    if not per_radius:
        raise InputError("calibration: no genuine or no forged claim fell inside the model's training coverage "
                         "at any radius; calibrate on validation images from the area the model was trained on")
    radius = max(per_radius, key=lambda r: per_radius[r][2])
    g, f, _, g_all, f_all = per_radius[radius]
    gs, fs = np.sort(g), np.sort(f)
    values = np.unique(np.concatenate([g, f]))
    # largest t with P(genuine <= t) <= max_false_inconsistent
    ok_in = values[np.searchsorted(gs, values, side="right") / len(gs) <= max_false_inconsistent]
    t_in = float(ok_in.max()) if len(ok_in) else 0.0
    # smallest t with P(forged >= t) <= max_false_consistent
    ok_con = values[1.0 - np.searchsorted(fs, values, side="left") / len(fs) <= max_false_consistent]
    t_con = float(ok_con.min()) if len(ok_con) else float(fs[-1]) * 1.000001
    # a prediction that says nothing (lift ~1) stays inconclusive however well the sets separate
    t_con, t_in = max(t_con, LIFT_MARGIN), min(t_in, 1.0 / LIFT_MARGIN)
    thr = VerifyThresholds(radius, t_con, t_in, f"calibrated on {len(preds)} validation images")
    dec_g = [decide(x, thr) for x in g_all]
    dec_f = [decide(x, thr) for x in f_all]
    thr.calibration = {
        "n": len(preds),
        "min_forge_km": float(min_forge_km),
        "auc_by_radius_km": {str(r): round(v[2], 4) for r, v in per_radius.items()},
        "genuine_called_inconsistent": dec_g.count("inconsistent") / len(dec_g),
        "genuine_called_consistent": dec_g.count("consistent") / len(dec_g),
        "forged_called_consistent": dec_f.count("consistent") / len(dec_f),
        "forged_called_inconsistent": dec_f.count("inconsistent") / len(dec_f),
        "genuine_outside_coverage": (len(dec_g) - len(g)) / len(dec_g),
        "forged_outside_coverage": (len(dec_f) - len(f)) / len(dec_f),
        "median_lift_genuine": float(np.median(g)),
        "median_lift_forged": float(np.median(f)),
        "max_false_inconsistent": max_false_inconsistent,
        "max_false_consistent": max_false_consistent,
    }
    return thr

"""Does what the pixels say agree with what the metadata claims?

Metadata can be forged; the pixels are harder to fake. ``verify_prediction(pred)`` sets a Prediction
against a claimed position (the EXIF GPS by default) and reports:

- ``distance_to_best_km``: from the claimed point to the best candidate;
- ``mass_within_km``: the probability the model puts within ``radius_km`` of the claimed point;
- ``prior_within_km``: the share of the model's training data (cell counts) within that radius, i.e.
  what a model that learnt nothing from the pixels would put there;
- ``lift`` = (mass + eps) / (prior + eps): how much more (or less) the pixels favour the claimed
  area than the prior does. The verdict is decided on the lift:
  ``consistent`` if lift >= ``consistent_lift``, ``inconsistent`` if lift <= ``inconsistent_lift``,
  ``inconclusive`` otherwise (also when there is no claim or the image could not be located);
- ``claimed_cell_rank``: the rank (1 = most probable) of the cell containing the claimed point.

Thresholds. ``DEFAULT_THRESHOLDS`` (radius 750 km, consistent at lift >= 3, inconsistent at lift
<= 0.2) are used when no calibration exists. ``calibrate_thresholds(predictions, true_lat, true_lon)``
picks them from a held-out validation set: each image's true position is a genuine claim, and a
forged claim is made for it by moving its GPS to another validation image's position at least
``min_forge_km`` away (another continent). The radius with the best separation (AUC) is kept;
``inconsistent_lift`` is the largest value that calls at most ``max_false_inconsistent`` of genuine
claims inconsistent, ``consistent_lift`` the smallest that calls at most ``max_false_consistent`` of
forged claims consistent; lifts between 1 / 1.5 and 1.5 always stay inconclusive (``LIFT_MARGIN``). They are saved as ``verify_thresholds.json`` next to the model; every
verdict names the thresholds it used and where they came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
    n_cells: int | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------- statistics
def _prior_weights(cells: Any) -> np.ndarray:
    """What an uninformed model would give each cell: its share of the training data, or of the area."""
    counts = np.asarray(getattr(cells, "counts", np.zeros(0)), dtype=np.float64)
    if counts.size == len(cells.centroids) and counts.sum() > 0:
        return counts / counts.sum()
    if hasattr(cells, "areas_km2"):
        area = np.asarray(cells.areas_km2(), dtype=np.float64)
        if area.sum() > 0:
            return area / area.sum()
    return np.full(len(cells.centroids), 1.0 / len(cells.centroids))


def claim_statistics(pred: Any, lat: float, lon: float, radius_km: float) -> dict[str, Any]:
    """Mass, prior, lift, claimed cell and its rank for one claimed point (see the module doc)."""
    lat_a, lon_a = validate_latlon(lat, lon, "claimed position")
    lat, lon = float(lat_a), float(lon_a)
    out: dict[str, Any] = {"claimed_cell": None, "claimed_cell_rank": None, "claimed_cell_probability": None,
                           "n_cells": None}
    if pred.cell_probs is not None and pred.cells is not None:
        probs = np.asarray(pred.cell_probs, dtype=np.float64)
        cen = np.asarray(pred.cells.centroids, dtype=np.float64)
        near = haversine_km(cen[:, 0], cen[:, 1], lat, lon) <= radius_km
        mass = float(probs[near].sum() / max(probs.sum(), 1e-12))
        prior = float(_prior_weights(pred.cells)[near].sum())
        out["n_cells"] = int(len(probs))
        cell = int(np.asarray(pred.cells.assign(np.array([lat]), np.array([lon]))).ravel()[0]) \
            if hasattr(pred.cells, "assign") else -1
        if cell >= 0:
            out.update(claimed_cell=cell, claimed_cell_rank=int(1 + (probs > probs[cell]).sum()),
                       claimed_cell_probability=float(probs[cell]))
    else:  # candidates only: their probabilities, against a prior spread evenly over the sphere
        near = [c for c in pred.candidates if haversine_km(c.lat, c.lon, lat, lon) <= radius_km]
        mass = float(sum(c.probability for c in near))
        prior = (1.0 - math.cos(radius_km / EARTH_RADIUS_KM)) / 2.0
    out.update(mass_within_km=mass, prior_within_km=prior, lift=(mass + LIFT_EPS) / (prior + LIFT_EPS))
    return out


def decide(lift: float, thresholds: VerifyThresholds) -> str:
    if lift >= thresholds.consistent_lift:
        return "consistent"
    if lift <= thresholds.inconsistent_lift:
        return "inconsistent"
    return "inconclusive"


def verify_prediction(
    pred: Any,
    claim: tuple[float, float] | None = None,
    thresholds: VerifyThresholds | None = None,
) -> Verification:
    """Compare ``pred`` with ``claim`` (lat, lon), by default the Prediction's EXIF GPS position."""
    thr = thresholds or DEFAULT_THRESHOLDS
    common = {"source": str(pred.source), "thresholds": thr.to_dict(), "radius_km": thr.radius_km}
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
        f"; the claimed cell ranks {stats['claimed_cell_rank']} of {stats['n_cells']}"
    reason = (f"the pixels put {100 * stats['mass_within_km']:.1f}% of the probability within {thr.radius_km:g} km "
              f"of the claimed point against {100 * stats['prior_within_km']:.1f}% a priori (lift "
              f"{stats['lift']:.2f}), and the best candidate is {dist:.0f} km away{rank}; thresholds: "
              f"{thr.describe()}")
    return Verification(verdict=verdict, reason=reason, claimed_lat=claim[0], claimed_lon=claim[1],
                        claim_from=claim_from, best_lat=float(best.lat), best_lon=float(best.lon),
                        distance_to_best_km=dist, **stats, **common)


# --------------------------------------------------------------------------------- calibration
def forged_claims(true_lat: Sequence[float], true_lon: Sequence[float], min_km: float = 3000.0,
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
    true_lat: Sequence[float],
    true_lon: Sequence[float],
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
        g = np.array([claim_statistics(p, a, b, r)["lift"] for p, a, b in zip(preds, lat, lon)])
        f = np.array([claim_statistics(p, a, b, r)["lift"] for p, a, b in zip(preds, f_lat, f_lon)])
        per_radius[float(r)] = (g, f, _auc(g, f))
    radius = max(per_radius, key=lambda r: per_radius[r][2])
    g, f, auc = per_radius[radius]
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
    dec_g = [decide(x, thr) for x in g]
    dec_f = [decide(x, thr) for x in f]
    thr.calibration = {
        "n": len(preds),
        "min_forge_km": float(min_forge_km),
        "auc_by_radius_km": {str(r): round(v[2], 4) for r, v in per_radius.items()},
        "genuine_called_inconsistent": dec_g.count("inconsistent") / len(g),
        "genuine_called_consistent": dec_g.count("consistent") / len(g),
        "forged_called_consistent": dec_f.count("consistent") / len(f),
        "forged_called_inconsistent": dec_f.count("inconsistent") / len(f),
        "median_lift_genuine": float(np.median(g)),
        "median_lift_forged": float(np.median(f)),
        "max_false_inconsistent": max_false_inconsistent,
        "max_false_consistent": max_false_consistent,
    }
    return thr

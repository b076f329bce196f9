"""Verify: EXIF GPS against the pixels, with thresholds calibrated on held-out data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoscope.data.exif import ExifFindings
from geoscope.errors import InputError
from geoscope.geo.cells import Geocells
from geoscope.geo.sphere import haversine_km
from geoscope.prediction import Candidate, Prediction
from geoscope.verify import (
    DEFAULT_THRESHOLDS,
    THRESHOLDS_FILE,
    VerifyThresholds,
    calibrate_thresholds,
    claim_statistics,
    forged_claims,
    load_thresholds,
    save_thresholds,
    verify_prediction,
)

CITIES = [(60.17, 24.94), (48.86, 2.35), (40.71, -74.0), (-33.87, 151.2), (35.68, 139.7), (-23.55, -46.63),
          (19.43, -99.13), (-1.29, 36.82), (28.61, 77.2), (55.75, 37.62), (-34.6, -58.38), (30.04, 31.24)]


@pytest.fixture(scope="module")
def cells() -> Geocells:
    c = Geocells.grid((-60, -180, 75, 180), 27, 72)  # 5-degree cells
    # training data clustered around the cities (what a real model's cells carry)
    near = np.min([haversine_km(c.centroids[:, 0], c.centroids[:, 1], la, lo) for la, lo in CITIES], axis=0)
    c.counts = np.where(near < 1500, 50, 1).astype(np.int64)
    return c


def located(cells: Geocells, lat: float, lon: float, rng, exif=None, sharp: float = 600.0) -> Prediction:
    """A prediction whose mass sits (noisily) around the position the pixels show."""
    d = haversine_km(cells.centroids[:, 0], cells.centroids[:, 1], lat, lon)
    logits = -d / sharp + rng.normal(0, 0.7, len(d))
    p = np.exp(logits - logits.max())
    p = 0.9 * p / p.sum() + 0.1 * cells.counts / cells.counts.sum()
    order = np.argsort(-p)[:5]
    cands = [Candidate(float(cells.centroids[i, 0]), float(cells.centroids[i, 1]), float(p[i]), cell=int(i))
             for i in order]
    return Prediction("img.jpg", cands, p, cells, exif=exif, model="fixture")


def sample_truths(rng, n):
    idx = rng.integers(0, len(CITIES), n)
    pts = np.array(CITIES)[idx] + rng.normal(0, 1.5, (n, 2))
    return pts[:, 0], pts[:, 1]


@pytest.fixture(scope="module")
def calibrated(cells) -> VerifyThresholds:
    rng = np.random.default_rng(1)
    lat, lon = sample_truths(rng, 80)
    preds = [located(cells, a, b, rng) for a, b in zip(lat, lon)]
    return calibrate_thresholds(preds, lat, lon)


def test_calibration_states_its_rates_and_picks_ordered_thresholds(calibrated):
    thr = calibrated
    assert thr.source == "calibrated on 80 validation images"
    assert thr.inconsistent_lift <= thr.consistent_lift
    assert thr.radius_km in (200.0, 750.0, 2500.0)
    cal = thr.calibration
    assert cal["n"] == 80
    assert cal["genuine_called_inconsistent"] <= 0.05
    assert cal["forged_called_consistent"] <= 0.05
    assert cal["median_lift_genuine"] > 1 > cal["median_lift_forged"]
    assert max(cal["auc_by_radius_km"].values()) > 0.95


def test_true_exif_is_consistent_and_forged_exif_is_inconsistent_on_held_out_fixtures(cells, calibrated):
    rng = np.random.default_rng(7)
    lat, lon = sample_truths(rng, 30)
    f_lat, f_lon = forged_claims(lat, lon, min_km=3000, seed=3)
    assert (haversine_km(lat, lon, f_lat, f_lon) >= 3000).all()
    genuine = [verify_prediction(located(cells, a, b, rng, ExifFindings(lat=a, lon=b)), thresholds=calibrated)
               for a, b in zip(lat, lon)]
    forged = [verify_prediction(located(cells, a, b, rng, ExifFindings(lat=fa, lon=fb)), thresholds=calibrated)
              for a, b, fa, fb in zip(lat, lon, f_lat, f_lon)]
    g = [v.verdict for v in genuine]
    f = [v.verdict for v in forged]
    assert g.count("inconsistent") <= 1 and g.count("consistent") >= 27
    assert f.count("consistent") <= 1 and f.count("inconsistent") >= 27
    v = forged[0]
    assert v.claim_from == "exif" and v.distance_to_best_km > 1500
    assert "calibrated on 80 validation images" in v.reason
    assert v.thresholds["consistent_lift"] == calibrated.consistent_lift
    assert genuine[0].claimed_cell_rank < forged[0].claimed_cell_rank


def test_statistics_are_what_they_say(cells):
    # all mass on one cell: mass within R of its centroid is 1, the cell ranks first
    p = np.zeros(len(cells))
    p[100] = 1.0
    pred = Prediction("x", [Candidate(*cells.centroids[100], 1.0, cell=100)], p, cells)
    la, lo = cells.centroids[100]
    s = claim_statistics(pred, la, lo, 200.0)
    assert s["mass_within_km"] == pytest.approx(1.0)
    assert s["claimed_cell"] == 100 and s["claimed_cell_rank"] == 1
    prior = cells.counts[haversine_km(cells.centroids[:, 0], cells.centroids[:, 1], la, lo) <= 200].sum()
    assert s["prior_within_km"] == pytest.approx(prior / cells.counts.sum())
    far = claim_statistics(pred, -la, lo + 120 if lo < 0 else lo - 120, 200.0)
    assert far["mass_within_km"] == 0.0 and far["claimed_cell_rank"] > 1
    assert far["lift"] < 1


def test_uninformative_prediction_is_inconclusive(cells):
    p = cells.counts / cells.counts.sum()  # the prior itself: the pixels said nothing
    i = int(np.argmax(p))
    pred = Prediction("x", [Candidate(*cells.centroids[i], float(p[i]), cell=i)], p, cells,
                      exif=ExifFindings(lat=48.86, lon=2.35))
    v = verify_prediction(pred)
    assert v.verdict == "inconclusive"
    assert v.lift == pytest.approx(1.0, abs=0.05)
    assert "defaults" in v.reason


def test_no_claim_or_failed_prediction_is_inconclusive_with_a_reason(cells):
    rng = np.random.default_rng(0)
    v = verify_prediction(located(cells, 10, 10, rng))
    assert v.verdict == "inconclusive" and "no GPS" in v.reason
    v = verify_prediction(Prediction.failed("bad.jpg", "not an image"), claim=(1.0, 2.0))
    assert v.verdict == "inconclusive" and "not an image" in v.reason
    with pytest.raises(InputError, match="claimed position"):
        verify_prediction(located(cells, 10, 10, rng), claim=(95.0, 0.0))


def test_candidates_only_predictions_are_verified_too():
    pred = Prediction("x", [Candidate(60.2, 24.9, 0.7), Candidate(59.4, 24.7, 0.2)])
    assert verify_prediction(pred, claim=(60.1, 24.8)).verdict == "consistent"
    assert verify_prediction(pred, claim=(-33.9, 151.2)).verdict == "inconsistent"


def test_thresholds_round_trip_next_to_a_model(tmp_path, calibrated):
    path = save_thresholds(calibrated, tmp_path)
    assert path.name == THRESHOLDS_FILE
    back = load_thresholds(tmp_path)
    assert back.consistent_lift == calibrated.consistent_lift and str(path) in back.source
    with pytest.raises(InputError, match="not found"):
        load_thresholds(tmp_path / "nothing-here-yet.json")
    empty = tmp_path / "model"
    empty.mkdir()
    assert load_thresholds(empty).source.startswith("defaults (no verify_thresholds.json")
    assert load_thresholds(None) is DEFAULT_THRESHOLDS
    (tmp_path / "bad.json").write_text(json.dumps({"radius_km": 10}))
    with pytest.raises(InputError, match="bad.json"):
        load_thresholds(tmp_path / "bad.json")


def test_calibration_refuses_too_few_images(cells):
    rng = np.random.default_rng(0)
    preds = [located(cells, 10, 10, rng) for _ in range(5)]
    with pytest.raises(InputError, match="at least 20"):
        calibrate_thresholds(preds, [10] * 5, [10] * 5)

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
    cell_overlap,
    claim_statistics,
    disc_points,
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


# ------------------------------------------------------------------- coarse cells (issue 14)
COARSE_CITIES = CITIES[:-1] + [(-31.95, 115.86)]  # Perth instead of Cairo: Australia has training photos
PARIS = (48.86, 2.35)
OUTBACK = (-25.0, 134.0)  # in the cell of the Australian photos, ~1,000 km from every cell centre
SOUTH_PACIFIC = (-45.0, -130.0)  # no training photo within thousands of km


@pytest.fixture(scope="module")
def coarse() -> Geocells:
    rng = np.random.default_rng(0)
    pts = np.array(COARSE_CITIES)[rng.integers(0, len(COARSE_CITIES), 3000)] + rng.normal(0, 3, (3000, 2))
    return Geocells.adaptive(pts[:, 0], pts[:, 1], 80, 250)


def paris_photo(cells: Geocells, exif=None) -> Prediction:
    """What the pixels of a photo taken in Paris say: 48% on its cell, the rest fading with distance."""
    home = int(cells.assign(np.array([PARIS[0]]), np.array([PARIS[1]]))[0])
    d = haversine_km(cells.centroids[:, 0], cells.centroids[:, 1], *PARIS)
    w = np.exp(-d / 4000.0)
    w[home] = 0.0
    p = 0.52 * w / w.sum()
    p[home] = 0.48
    order = np.argsort(-p)[:5]
    cands = [Candidate(*cells.centroids[i], float(p[i]), cell=int(i)) for i in order]
    return Prediction("paris.jpg", cands, p, cells, exif=exif, model="coarse")


def test_coarse_cells_call_a_forged_claim_in_covered_territory_inconsistent(coarse):
    assert 14 <= len(coarse) <= 20
    cen = coarse.centroids
    # the situation of issue 14: no cell centre within the 750 km radius of the forged claim ...
    assert haversine_km(cen[:, 0], cen[:, 1], *OUTBACK).min() > 750
    claimed_cell = int(coarse.assign(np.array([OUTBACK[0]]), np.array([OUTBACK[1]]))[0])
    assert claimed_cell >= 0 and coarse.counts[claimed_cell] > 0  # ... yet the model has training photos there
    pred = paris_photo(coarse, ExifFindings(lat=OUTBACK[0], lon=OUTBACK[1]))
    v = verify_prediction(pred)
    assert v.distance_to_best_km > 14_000
    assert v.verdict == "inconsistent", v.reason
    assert v.measure == "overlap" and v.claimed_cell == claimed_cell
    assert v.lift <= DEFAULT_THRESHOLDS.inconsistent_lift
    assert 0 < v.claimed_cell_share < 1 and v.measured_cells >= 1
    # the measure: the claimed cell's probability against its prior, over the share of it inside the radius
    assert v.lift == pytest.approx(
        (pred.cell_probs[claimed_cell] / (coarse.counts[claimed_cell] / coarse.counts.sum())), rel=0.5)
    assert "no cell centre lies within 750 km" in v.reason and "weighted by its share" in v.reason
    # the genuine claim is consistent, measured on the centroids within the radius
    g = verify_prediction(pred, claim=PARIS)
    assert g.verdict == "consistent" and g.measure == "centroids", g.reason
    assert "whose centre lies within 750 km" in g.reason or "whose centres lie within 750 km" in g.reason


def test_coarse_cells_call_a_claim_outside_all_coverage_inconclusive(coarse):
    assert coarse.assign(np.array([SOUTH_PACIFIC[0]]), np.array([SOUTH_PACIFIC[1]]))[0] == -1
    v = verify_prediction(paris_photo(coarse), claim=SOUTH_PACIFIC)
    assert v.verdict == "inconclusive"
    assert v.measure == "outside coverage" and v.lift is None and v.claimed_cell is None
    assert "outside the model's training coverage" in v.reason
    # however large the radius, a claim reaching covered cells is judged again
    wide = verify_prediction(paris_photo(coarse), claim=SOUTH_PACIFIC,
                             thresholds=VerifyThresholds(radius_km=7000.0))
    assert wide.measure in ("centroids", "overlap") and wide.lift is not None


def test_cells_without_training_data_do_not_make_a_claim_consistent():
    # a 1-degree grid with training photos only in Europe: a claim in the Pacific sits among cell centres
    # that have no training data; before, the smoothing made any stray probability there "consistent"
    grid = Geocells.grid((-60, -180, 75, 180), 135, 360)
    lat, lon = grid.centroids[:, 0], grid.centroids[:, 1]
    grid.counts = np.where((lat > 35) & (lat < 60) & (lon > -10) & (lon < 30), 10, 0).astype(np.int64)
    p = np.full(len(grid), 1e-3 / len(grid))
    claim = (-10.0, -140.0)
    i = int(grid.assign(np.array([claim[0]]), np.array([claim[1]]))[0])
    p[i] += 1e-3  # the model wastes a little probability on the claimed ocean cell
    home = int(grid.assign(np.array([48.0]), np.array([2.0]))[0])
    p[home] += 1 - p.sum()
    pred = Prediction("x", [Candidate(*grid.centroids[home], float(p[home]), cell=home)], p, grid)
    v = verify_prediction(pred, claim=claim)
    assert v.verdict == "inconclusive" and v.measure == "outside coverage", v.reason


def test_models_without_cells_get_a_verdict_that_names_the_measure():
    regressor = Prediction("x", [Candidate(-33.9, 151.1, 1.0)])  # one point estimate, probability 1
    near = verify_prediction(regressor, claim=(-33.87, 151.2))
    far = verify_prediction(regressor, claim=(48.86, 2.35))
    assert (near.verdict, far.verdict) == ("consistent", "inconsistent")
    assert near.measure == far.measure == "candidates" and near.n_cells is None
    assert "the model has no cells" in far.reason and "spread evenly over the Earth" in far.reason
    retrieval = Prediction("y", [Candidate(35.7, 139.7, 0.3), Candidate(35.0, 135.8, 0.2),
                                 Candidate(34.7, 135.5, 0.1), Candidate(37.5, 127.0, 0.05)])
    assert verify_prediction(retrieval, claim=(35.68, 139.69)).verdict == "consistent"
    assert verify_prediction(retrieval, claim=(-23.5, -46.6)).verdict == "inconsistent"


def test_cell_overlap_measures_the_share_of_each_cell_inside_the_disc():
    grid = Geocells.grid((-90, -180, 90, 180), 2, 4)  # 8 cells of 90 x 90 degrees
    la, lo, area = disc_points(45.0, -135.0, 500.0)
    assert haversine_km(la, lo, 45.0, -135.0).max() <= 500.0 + 1e-6
    assert area == pytest.approx(np.pi * 500.0**2, rel=0.01)  # a small disc is almost flat
    idx, share = cell_overlap(grid, 45.0, -135.0, 500.0)
    assert list(idx) == [4]
    assert share[0] == pytest.approx(area / grid.areas_km2()[4], rel=0.02)
    # a disc over the corner where four cells meet: a quarter of it in each
    idx, share = cell_overlap(grid, 0.0, -90.0, 1000.0)
    assert sorted(idx) == [0, 1, 4, 5]
    assert np.allclose(share, share.mean(), rtol=0.05)
    # a disc larger than the Earth holds every cell whole
    idx, share = cell_overlap(grid, 10.0, 10.0, 30_000.0)
    assert len(idx) == 8 and np.allclose(share, 1.0, atol=0.02)
    # outside a regional grid: nothing
    regional = Geocells.grid((40, 0, 50, 10), 2, 2)
    assert len(cell_overlap(regional, -40.0, 100.0, 500.0)[0]) == 0


def test_calibration_keeps_working_on_coarse_cells(coarse):
    rng = np.random.default_rng(5)
    idx = rng.integers(0, len(COARSE_CITIES), 60)
    pts = np.array(COARSE_CITIES)[idx] + rng.normal(0, 2, (60, 2))
    preds = []
    for a, b in pts:
        d = haversine_km(coarse.centroids[:, 0], coarse.centroids[:, 1], a, b)
        logits = -d / 800.0 + rng.normal(0, 0.5, len(d))
        p = np.exp(logits - logits.max())
        p /= p.sum()
        i = int(np.argmax(p))
        preds.append(Prediction("v", [Candidate(*coarse.centroids[i], float(p[i]), cell=i)], p, coarse))
    thr = calibrate_thresholds(preds, pts[:, 0], pts[:, 1])
    cal = thr.calibration
    assert cal["genuine_called_inconsistent"] <= 0.05 and cal["forged_called_consistent"] <= 0.05
    assert cal["median_lift_genuine"] > 1 > cal["median_lift_forged"]
    assert 0 <= cal["genuine_outside_coverage"] <= 1 and 0 <= cal["forged_outside_coverage"] <= 1

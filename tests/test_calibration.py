"""Calibration: reliability numbers against hand computations, the kernel against closed forms, and the
fit correcting a deliberately over-confident toy head on a synthetic world."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import chndtr

from geoscope.calibration import (
    Calibration,
    auroc,
    cell_spread_km,
    disc_mass,
    entropy_score,
    RadiusMap,
    fit_radius_maps,
    fit_radius_models,
    mixture_mass,
    plot_reliability,
    reliability,
    reliability_at_radii,
)
from geoscope.errors import InputError
from geoscope.geo.cells import CellHierarchy
from geoscope.geo.sphere import EARTH_RADIUS_KM, destination, haversine_km
from geoscope.geolocator import Geolocator
from geoscope.heads.base import Head, HeadOutput
from geoscope.train import calibrate_head, location_groups, split_indices


def test_reliability_matches_a_hand_computation():
    stated = [0.05, 0.15, 0.15, 0.95, 1.0]
    hit = [False, True, False, True, True]
    r = reliability(stated, hit, n_bins=10)
    # bins: [0, .1): .05 vs 0; [.1, .2): .15 vs .5; [.9, 1]: (.95 + 1) / 2 = .975 vs 1
    assert r["n"] == 5
    assert r["ece"] == pytest.approx(1 / 5 * 0.05 + 2 / 5 * 0.35 + 2 / 5 * 0.025)
    assert r["mean_stated"] == pytest.approx(np.mean(stated)) and r["observed"] == pytest.approx(0.6)
    filled = [b for b in r["bins"] if b["n"]]
    assert [(b["lo"], b["n"]) for b in filled] == [(0.0, 1), (pytest.approx(0.1), 2), (pytest.approx(0.9), 2)]
    assert filled[1]["stated"] == pytest.approx(0.15) and filled[1]["observed"] == pytest.approx(0.5)
    assert len(r["bins"]) == 10 and r["bins"][5]["stated"] is None


def test_reliability_at_radii_scores_the_events_within_each_radius():
    errors = np.array([10.0, 100.0, 300.0, 1000.0])
    stated = np.array([[0.5, 0.9], [0.5, 0.9], [0.0, 0.9], [0.0, 0.2]])
    t = reliability_at_radii(stated, errors, radii_km=[50, 500])
    # within 50 km: hits 1, 0, 0, 0; stated .5, .5 (one bin: .5 vs .5) and 0, 0 (0 vs 0) -> ECE 0
    assert t["50"]["ece"] == pytest.approx(0.0) and t["50"]["observed"] == pytest.approx(0.25)
    # within 500 km: hits 1, 1, 1, 0; bin .9: .9 vs 1 (3 images), bin .2: .2 vs 0 (1 image)
    assert t["500"]["ece"] == pytest.approx(3 / 4 * 0.1 + 1 / 4 * 0.2)
    with pytest.raises(InputError, match="2 columns of stated probability for 3 radii"):
        reliability_at_radii(stated, errors, radii_km=[1, 2, 3])


def test_auroc_hand_computation_and_degenerate_labels():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 1, 1], [0, 1, 1]) == pytest.approx(0.5)
    assert np.isnan(auroc([0.2, 0.3], [1, 1]))


def test_disc_mass_matches_the_rice_distribution():
    # at the kernel's own centre: 1 - exp(-R^2 / 2 sigma^2)
    r = np.array([10.0, 100.0, 250.0])
    np.testing.assert_allclose(disc_mass(0.0, r, 100.0), 1 - np.exp(-(r**2) / 2e4), atol=1e-3)
    # anywhere: the non-central chi-square cdf with two degrees of freedom
    rng = np.random.default_rng(0)
    d, rad, s = rng.uniform(0, 3000, 5000), rng.choice([25, 200, 750, 2500], 5000), np.exp(rng.uniform(1, 8, 5000))
    np.testing.assert_allclose(disc_mass(d, rad, s), chndtr((rad / s) ** 2, 2, (d / s) ** 2), atol=2e-3)
    # sigma 0: a point mass
    np.testing.assert_array_equal(disc_mass([0.0, 24.9, 25.1], 25.0, 0.0), [1.0, 1.0, 0.0])


def test_mixture_mass_agrees_with_sampling():
    rng = np.random.default_rng(1)
    support = np.array([[45.0, 5.0], [46.0, 7.0], [-10.0, 120.0]])
    probs = np.array([[0.5, 0.3, 0.2]])
    sigma = np.array([50.0, 120.0, 80.0])
    center = np.array([[45.5, 5.5]])
    got = mixture_mass(center, support, probs, sigma, [25, 100, 300])[0]
    n = 200_000
    comp = rng.choice(3, n, p=probs[0])
    off = rng.normal(0, 1, (n, 2)) * sigma[comp, None]
    dist, bearing = np.hypot(off[:, 0], off[:, 1]), np.degrees(np.arctan2(off[:, 0], off[:, 1]))
    lat, lon = destination(support[comp, 0], support[comp, 1], bearing, dist)
    d = haversine_km(lat, lon, center[0, 0], center[0, 1])
    expected = [(d <= r).mean() for r in (25, 100, 300)]
    np.testing.assert_allclose(got, expected, atol=0.01)
    # point masses: plain sums of the weights inside each radius
    np.testing.assert_allclose(mixture_mass(support[:1], support, probs, None, [1, 300, 20000])[0], [0.5, 0.8, 1.0])


def test_entropy_score_and_cell_spread():
    assert entropy_score(np.array([[1.0, 0, 0, 0], [0.25] * 4])) == pytest.approx([1.0, 0.0])
    cent = np.array([[0.0, 0.0], [10.0, 10.0]])
    lat = np.array([0.0, 0.0, 0.0, 10.0])
    lon = np.array([1.0, -1.0, 0.0, 10.0])
    spread = cell_spread_km(cent, lat, lon, [0, 0, 0, 1], min_points=3)
    one_deg = np.pi / 180 * EARTH_RADIUS_KM
    assert spread[0] == pytest.approx(np.sqrt(2 * one_deg**2 / 3 / 2), rel=1e-3)
    assert spread[1] == pytest.approx(spread[0])  # too few points: the median of the others


def test_calibration_round_trips_and_rejects_foreign_files():
    cal = Calibration(temperature=2.5, point_sigma_km=40.0, cell_sigma_scale=1.3, weight_sharpening=0.0,
                      cell_spread_km=[10.0, 20.0],
                      localizability_coef=(0.5, 1.0, 2.0), fitted=True, report={"n": 3})
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal
    with pytest.raises(InputError, match="is not a geoscope calibration"):
        Calibration.from_dict({"temperature": 1})
    identity = Calibration()
    p = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(identity.weights(p), p)
    assert identity.sigmas(3) is None  # point masses: what models without a calibration did
    np.testing.assert_allclose(cal.weights(p), p ** 0.4 / (p ** 0.4).sum())
    np.testing.assert_allclose(cal.sigmas(2, refined=np.array([[True, False]]), cells=True),
                               [[40.0, np.hypot(40.0, 1.3 * 20.0)]])
    sharp = Calibration.from_dict({**cal.to_dict(), "weight_sharpening": 0.7})
    np.testing.assert_allclose(sharp.sigmas(2, cells=True, weights=np.array([[0.9, 0.1]])),
                               [[np.hypot(40.0, 13.0) * np.exp(-0.63), np.hypot(40.0, 26.0) * np.exp(-0.07)]])
    # localizability: the logistic model on (logit of the mass within 750 km, entropy score)
    w = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    z = 0.5 + 1.0 * np.log(0.8 / 0.2) + 2.0 * np.array([1.0, 0.0])
    np.testing.assert_allclose(cal.localizability(w, np.array([0.8, 0.8])), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(identity.localizability(w, np.array([0.8, 0.3])), [0.8, 0.3])  # unfitted: the mass


def test_radius_maps_apply_interpolate_round_trip_and_keep_masses_ordered():
    m = np.array([[0.1, 0.4, 0.7, 0.9], [0.0, 0.2, 0.2, 1.0]])
    radii = (25, 200, 750, 2500)
    np.testing.assert_allclose(Calibration().recalibrate(m, radii), m)  # no maps: unchanged
    identity = Calibration(radius_maps=[(200.0, 0.0, 1.0, 1.0), (750.0, 0.0, 1.0, 1.0)])
    np.testing.assert_allclose(identity.recalibrate(m[:1], radii), m[:1], atol=1e-9)
    # a Platt-like map at 750 km (a = b = 2: logit doubled), identity at 200 km
    cal = Calibration(radius_maps=[(200.0, 0.0, 1.0, 1.0), (750.0, 0.0, 2.0, 2.0)])
    q = cal.recalibrate(np.array([[0.7, 0.7]]), (200, 750))[0]
    assert q[0] == pytest.approx(0.7)
    assert q[1] == pytest.approx(1 / (1 + (0.3 / 0.7) ** 2))
    # halfway in log R between the rows: a = b = 1.5; beyond the last row the last map holds
    mid = float(np.sqrt(200.0 * 750.0))
    q_mid = cal.recalibrate(np.array([[0.7]]), (mid,))[0, 0]
    assert q_mid == pytest.approx(1 / (1 + (0.3 / 0.7) ** 1.5))
    assert cal.recalibrate(np.array([[0.7]]), (5000,))[0, 0] == pytest.approx(q[1])
    # the mass within a larger radius never falls below a smaller one's after the maps
    shrink = Calibration(radius_maps=[(200.0, 2.0, 1.0, 1.0), (750.0, -2.0, 1.0, 1.0)])
    out = shrink.recalibrate(np.array([[0.5, 0.6]]), (200, 750))[0]
    assert out[1] == pytest.approx(out[0]) and out[0] > 0.6
    # saved and read back; a file written before the maps existed reads as None
    back = Calibration.from_dict(cal.to_dict())
    assert back.radius_maps == cal.radius_maps
    old = {k: v for k, v in cal.to_dict().items() if k != "radius_maps"}
    assert Calibration.from_dict(old).radius_maps is None
    with pytest.raises(InputError, match="malformed"):
        Calibration.from_dict({**cal.to_dict(), "radius_maps": [[200.0, 0.0, 1.0]]})


def test_radius_maps_are_kept_only_where_cross_validation_says_they_help():
    rng = np.random.default_rng(2)
    n = 1200
    m = rng.uniform(0.02, 0.98, (n, 2))
    # radius 0: outcomes drawn from the stated mass (already right); radius 1: the truth is far more
    # decided than stated (logit x 3)
    z = np.log(m[:, 1] / (1 - m[:, 1]))
    hits = np.column_stack([rng.random(n) < m[:, 0], rng.random(n) < 1 / (1 + np.exp(-3 * z))]).astype(float)
    maps, notes = fit_radius_maps(m, hits, (100, 1000))
    assert [note["kept"] for note in notes] == [False, True]
    assert maps[0][1:] == (0.0, 1.0, 1.0)  # not kept: the identity
    assert maps[1][2] > 2 and maps[1][3] > 2  # about a = b = 3
    cal = Calibration(radius_maps=maps)
    m_new = rng.uniform(0.02, 0.98, n)  # fresh data from the same world
    z_new = np.log(m_new / (1 - m_new))
    y_new = rng.random(n) < 1 / (1 + np.exp(-3 * z_new))
    fixed = cal.recalibrate(m_new[:, None], (1000,))[:, 0]
    assert reliability(m_new, y_new)["ece"] > 0.1
    assert reliability(fixed, y_new)["ece"] < 0.05
    # too few hits to judge: no map
    rare = np.zeros((n, 1))
    rare[:3] = 1
    _, notes = fit_radius_maps(m[:, :1], rare, (25,))
    assert not notes[0]["kept"] and "fewer than" in notes[0]["reason"]


def _s_curve_world(rng, n):
    """Masses m whose true hit rate is an S in logit m with plateaus at 0.15 and 0.85: a reliability curve
    no beta map can follow (beta sends q to 0 as m goes to 0 and to 1 as m goes to 1)."""
    m = rng.uniform(0.01, 0.99, n)
    q = 0.15 + 0.7 / (1 + np.exp(-3 * np.log(m / (1 - m))))
    return m, (rng.random(n) < q).astype(float), q


def test_radius_models_choose_a_monotone_spline_that_fixes_a_curve_beta_cannot():
    rng = np.random.default_rng(3)
    m, y, _ = _s_curve_world(rng, 3000)
    maps, notes, oof = fit_radius_models(m[:, None], y[:, None], (100,))
    assert notes[0]["kind"].startswith("spline")
    cv = notes[0]["cv"]
    assert cv["spline"]["cv_ece"] < 0.03 < cv["beta"]["cv_ece"]
    assert reliability(oof[:, 0], y)["ece"] == pytest.approx(cv[notes[0]["kind"]]["cv_ece"], abs=0.015)
    m_new, y_new, q_new = _s_curve_world(rng, 20000)  # fresh data from the same world
    fixed = Calibration(radius_models=maps).recalibrate(m_new[:, None], (100,))[:, 0]
    beta = fit_radius_models(m[:, None], y[:, None], (100,), kinds=("beta",))[0]
    by_beta = Calibration(radius_models=beta).recalibrate(m_new[:, None], (100,))[:, 0]
    assert reliability(by_beta, y_new)["ece"] > 0.06 and np.abs(by_beta - q_new).mean() > 0.06
    assert reliability(fixed, y_new)["ece"] < 0.03 and np.abs(fixed - q_new).mean() < 0.03
    assert np.all(np.diff(fixed[np.argsort(m_new)]) >= -1e-12)  # monotone in the mass


def test_radius_models_read_the_masses_within_other_radii():
    """Two images with the same mass within 100 km but different masses within 1,000 km are not alike (a
    sea tile spreads its mass wider than a land tile): a map that reads the other radius fixes both
    groups where a map of the own mass alone can only fix their average."""
    rng = np.random.default_rng(4)

    def world(n):
        m = rng.uniform(0.05, 0.9, n)
        wide = 1 / (1 + np.exp(-rng.normal(0.0, 1.5, n)))
        q = 1 / (1 + np.exp(-(np.log(m / (1 - m)) + 1.5 * np.log(wide / (1 - wide)))))
        masses = np.column_stack([m, wide])  # (not kept above m: the maps need not know that)
        return masses, (rng.random(n) < q).astype(float), wide < 0.3

    M, y, _ = world(3000)
    maps, notes, _ = fit_radius_models(M, np.column_stack([y, np.ones_like(y)]), (100, 1000))
    assert notes[0]["kind"].endswith("context") and maps[0].context_radii == (1000.0,)
    assert notes[1]["kind"] == "identity" and "fewer than" in notes[1]["reason"]  # every image a hit
    M2, y2, low = world(20000)
    q = Calibration(radius_models=maps).recalibrate(M2, (100, 1000))[:, 0]
    own = Calibration(radius_models=fit_radius_models(M, y[:, None], (100,), kinds=("spline",))[0])
    q_own = own.recalibrate(M2[:, :1], (100,))[:, 0]
    for group in (low, ~low):
        assert reliability(q[group], y2[group])["ece"] < 0.04
    assert max(reliability(q_own[g], y2[g])["ece"] for g in (low, ~low)) > 0.1


def test_radius_models_stay_ordered_across_radii_round_trip_and_old_files_load():
    radii = (25.0, 200.0, 750.0)
    maps = [RadiusMap(25.0, "beta", (1.5, 1.0, 1.0)),  # pushes the 25 km mass up past the 200 km one
            RadiusMap(200.0, "beta+context", (0.0, 1.0, 1.0, 0.0, -0.5), context_radii=(25.0, 750.0)),
            RadiusMap(750.0, "spline", (0.0, 1.0, 1.0, 0.5, 2.0), knots=(-1.0, 0.0, 1.0))]
    cal = Calibration(radius_models=maps)
    rng = np.random.default_rng(0)
    m = np.sort(rng.uniform(0.01, 0.99, (500, 3)), axis=1)
    q = cal.recalibrate(m, radii)
    assert np.all(np.diff(q, axis=1) >= 0)  # never less mass within a larger radius
    assert np.any(q[:, 1] > _sig(maps[1].logit(m[:, 1], m, radii)) + 1e-9)  # ... because the running max acted
    # the maps read every fitted radius: asked for fewer, the caller computes the rest (needed_radii)
    assert cal.needed_radii((200, 100)) == [200.0, 100.0, 25.0, 750.0]
    with pytest.raises(InputError, match="needs the masses within 25, 750 km"):
        cal.recalibrate(m[:, 1:2], (200,))
    # a radius between two fitted ones blends their logits linearly in log R; one asked alone (with the
    # fitted radii beside it) gets what it gets among the others
    mid = float(np.sqrt(200.0 * 750.0))
    cols = np.column_stack([m[:, 1], m[:, 0], m[:, 1], m[:, 2]])
    q_mid = cal.recalibrate(cols, (mid, 25.0, 200.0, 750.0))
    blend = _sig(0.5 * maps[1].logit(m[:, 1], m, radii) + 0.5 * maps[2].logit(m[:, 1], m, radii))
    np.testing.assert_allclose(q_mid[:, 0], np.maximum(blend, q_mid[:, 2]))
    assert np.all(q_mid[:, 0] <= q_mid[:, 3] + 1e-12)
    # saved and read back; a file from before (beta maps, no radius_models) loads and applies as before
    back = Calibration.from_dict(cal.to_dict())
    assert back.radius_models == cal.radius_models
    np.testing.assert_allclose(back.recalibrate(m, radii), q)
    old = Calibration(radius_maps=[(200.0, 0.0, 2.0, 2.0)]).to_dict()
    del old["radius_models"]
    loaded = Calibration.from_dict(old)
    assert loaded.radius_models is None and loaded.needed_radii((200,)) == [200.0]
    assert loaded.recalibrate(np.array([[0.7]]), (200,))[0, 0] == pytest.approx(1 / (1 + (0.3 / 0.7) ** 2))
    with pytest.raises(InputError, match="malformed"):
        Calibration.from_dict({**cal.to_dict(), "radius_models": [{**maps[0].to_dict(), "coef": [0.0, 1.0]}]})
    with pytest.raises(InputError, match="malformed"):  # reads a radius that has no map
        Calibration.from_dict({**cal.to_dict(), "radius_models": [maps[1].to_dict()]})


def _sig(z):
    return 1 / (1 + np.exp(-z))


def test_grouped_split_keeps_views_of_one_place_together():
    lat = np.repeat(np.arange(50.0), 2)
    lon = np.zeros(100)
    tr, va = split_indices(100, 0.2, seed=1, groups=location_groups(lat, lon))
    assert len(va) == 20 and not set(lat[tr]) & set(lat[va])
    # one row per place: exactly the plain split
    plain = split_indices(100, 0.2, seed=1)
    grouped = split_indices(100, 0.2, seed=1, groups=np.arange(100))
    np.testing.assert_array_equal(plain[1], grouped[1])


# --- a deliberately over-confident toy head ---------------------------------------------------------


class OverconfidentHead(Head):
    """Puts 0.9 on the cell named by the embedding's first number and spreads 0.1 over the rest. The
    synthetic world names the true cell 40 % of the time, so 0.9 is far too sure, and the cell is
    hundreds of km wide, so the point mass at its centroid claims a precision it does not have."""

    kind = "overconfident-toy"

    def __init__(self, centroids):
        super().__init__()
        self.centroids = np.asarray(centroids, dtype=np.float64)
        self.n_cells = len(self.centroids)

    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        chosen = np.asarray(emb)[:, 0].astype(np.int64)
        B, n = len(chosen), self.n_cells
        probs = np.full((B, n), 0.1 / (n - 1))
        probs[np.arange(B), chosen] = 0.9
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return HeadOutput(probs, self.centroids[order], np.take_along_axis(probs, order, 1), order, {},
                          self.centroids, probs, support_cells=True, candidate_support=order, neighbourhood="cell")


def _world(cells, n, rng, p_right=0.4):
    z = rng.uniform(np.sin(np.radians(-55)), np.sin(np.radians(55)), n)
    lat, lon = np.degrees(np.arcsin(z)), rng.uniform(-180, 180, n)
    true_cell = cells.finest.assign(lat, lon, nearest=True)
    right = rng.random(n) < p_right
    chosen = np.where(right, true_cell, rng.integers(0, len(cells.finest), n))
    return np.stack([chosen, rng.normal(size=n)], 1).astype(np.float32), lat, lon


def test_fit_corrects_an_overconfident_toy_head_on_fresh_data():
    rng = np.random.default_rng(5)
    cells = CellHierarchy.grid((-60, -180, 60, 180), 8, 16)  # cells about 1,700 x 2,200 km
    head = OverconfidentHead(cells.finest.centroids)
    emb, lat, lon = _world(cells, 1500, rng)
    train_lat = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-55)), np.sin(np.radians(55)), 5000)))
    train_lon = rng.uniform(-180, 180, 5000)
    cal = calibrate_head(head, cells, emb, lat, lon, train_lat, train_lon)
    assert cal.fitted and cal.temperature > 1.2  # 0.9 was too sure: the fit flattens it

    test_emb, test_lat, test_lon = _world(cells, 1500, rng)  # a fresh draw from the same world
    radii = (25, 200, 750, 2500)
    raw = Geolocator(None, head, cells, places=False).distribution(test_emb, top_k=3, radii_km=radii)
    fixed = Geolocator(None, head, cells, places=False, calibration=cal).distribution(test_emb, top_k=3,
                                                                                       radii_km=radii)
    err = haversine_km(raw.coords[:, 0, 0], raw.coords[:, 0, 1], test_lat, test_lon)
    before = reliability_at_radii(raw.confidence, err, radii)
    after = reliability_at_radii(fixed.confidence, err, radii)
    assert before["25"]["ece"] > 0.5 and before["200"]["ece"] > 0.3  # a point mass of 0.9 at the centroid
    for r in ("25", "200", "750", "2500"):
        assert after[r]["ece"] <= 0.04, (r, after[r])
    # the per-radius maps read the masses within every fitted radius: a radius asked alone, or between
    # fitted ones, is computed with them, and more radius never means less mass
    # (this toy's kernel needs no maps; these are set by hand, one reading the other radii)
    kernel = dataclasses.replace(cal, radius_models=None)
    maps = [RadiusMap(25.0, "beta", (0.5, 1.0, 1.0)),
            RadiusMap(200.0, "beta+context", (0.0, 1.0, 1.0, 0.4, -0.3), context_radii=(25.0, 2500.0)),
            RadiusMap(750.0, "identity"), RadiusMap(2500.0, "beta", (-0.5, 1.0, 1.0))]
    mapped = dataclasses.replace(cal, radius_models=maps)
    sub = test_emb[:200]
    geo = Geolocator(None, head, cells, places=False, calibration=mapped)
    full = geo.distribution(sub, top_k=3, radii_km=radii).confidence
    plain = Geolocator(None, head, cells, places=False, calibration=kernel).distribution(sub, top_k=3, radii_km=radii)
    np.testing.assert_allclose(full, mapped.recalibrate(plain.confidence, radii))
    alone = geo.distribution(sub, top_k=3, radii_km=(200,)).confidence
    np.testing.assert_allclose(alone[:, 0], full[:, 1])
    between = geo.distribution(sub, top_k=3, radii_km=(100, 1000)).confidence
    ladder = np.column_stack([full[:, 0], between[:, 0], full[:, 1], full[:, 2], between[:, 1], full[:, 3]])
    assert np.all(np.diff(ladder, axis=1) >= -1e-12)
    # the candidate's probability (its cell's mass) is now about the share of truths in that cell
    in_cell = cells.finest.assign(test_lat, test_lon, nearest=True) == fixed.cells[:, 0]
    assert fixed.probs[:, 0].mean() == pytest.approx(in_cell.mean(), abs=0.05)
    assert raw.probs[:, 0].mean() == pytest.approx(0.9)


def test_reliability_plot_is_written(tmp_path):
    errors = np.array([10.0, 100.0, 300.0, 1000.0])
    table = reliability_at_radii(np.array([[0.5, 0.9]] * 4), errors, radii_km=[50, 500])
    out = plot_reliability({"a": table}, tmp_path / "r.png", title="t")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out == tmp_path / "r.png"


def test_geoclip_head_gets_the_same_calibration_report(tmp_path):
    """The published GeoCLIP head (its own logit scale, i.e. its published temperature) through
    ``evaluate_model``: the machinery only. The embeddings are random, not CLIP ViT-L/14 ones (no such
    weights install here), so the numbers say nothing about GeoCLIP itself."""
    from geoscope.evaluate import evaluate_model
    from geoscope.heads.retrieval import RetrievalHead, grid_gallery
    from geoscope.store import EmbeddingStore

    head = RetrievalHead.from_geoclip(gallery=grid_gallery((-60, -180, 70, 180), 10.0))
    geo = Geolocator(None, head, name="geoclip", places=False)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-50, 60, 40), rng.uniform(-170, 170, 40)
    EmbeddingStore.from_arrays(tmp_path / "s", range(40), rng.normal(size=(40, 768)).astype(np.float32), lat, lon,
                               encoder="clip-vit-l14")
    result = evaluate_model(geo, tmp_path / "s", progress=False, reliability_plot=tmp_path / "r.png")
    cal = result["calibration"]
    assert cal["calibrated"] is False and set(cal["reliability"]) == {"25", "200", "750", "2500"}
    assert all(0 <= v["mean_stated"] <= 1 and v["n"] == 40 for v in cal["reliability"].values())
    assert cal["localizability_auroc"] is None or 0 <= cal["localizability_auroc"] <= 1
    assert (tmp_path / "r.png").is_file()
    p = geo.locate_embeddings(rng.normal(size=(1, 768)).astype(np.float32), top_k=5)[0]
    probs = [c.probability for c in p.candidates]
    assert probs == sorted(probs, reverse=True) and p.neighbourhood == {"kind": "gallery entry"}


def test_training_fits_the_calibration_on_a_given_store(tmp_path):
    from geoscope.store import EmbeddingStore
    from geoscope.train import TrainConfig, train_from_store

    rng = np.random.default_rng(8)

    def store(name, n, encoder="toy"):
        lat, lon = rng.uniform(-50, 60, n), rng.uniform(-170, 170, n)
        emb = np.column_stack([lat / 60, lon / 170, rng.normal(0, 0.2, (n, 6))]).astype(np.float32)
        return EmbeddingStore.from_arrays(tmp_path / name, range(n), emb, lat, lon, encoder=encoder), lat, lon

    train, lat, lon = store("train", 300)
    held_out, _, _ = store("held-out", 60)
    cells = CellHierarchy.adaptive(lat, lon, 5, [30])
    geo, result = train_from_store(train, "classifier", tmp_path / "m", cells=cells, progress=False,
                                   config=TrainConfig(epochs=2, batch_size=64), calibration_store=held_out)
    cal = result.report["calibration"]
    assert cal["status"].startswith("fitted on the calibration store") and cal["n"] == 60
    assert geo.calibration.report["n"] == 60
    other, _, _ = store("other-encoder", 30, encoder="another")
    with pytest.raises(InputError, match="was embedded with 'another' but the training store with 'toy'"):
        train_from_store(train, "classifier", tmp_path / "m2", cells=cells, progress=False,
                         config=TrainConfig(epochs=1, batch_size=64), calibration_store=other)
    assert not (tmp_path / "m2").exists()  # refused before any training
    geo, result = train_from_store(train, "classifier", tmp_path / "m3", cells=cells, progress=False,
                                   config=TrainConfig(epochs=1, batch_size=64), calibrate=False)
    assert geo.calibration is None and not (tmp_path / "m3" / "calibration.json").exists()

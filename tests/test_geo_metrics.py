"""Metrics: threshold accuracy, median / mean error, GeoScore, place agreement, report and plot."""

import math
import types

import numpy as np
import pytest

from geoscope.errors import InputError
from geoscope.geo import data_setup, metrics
from geoscope.geo.metrics import evaluate, format_report, geoscore, plot_cumulative_error
from geoscope.geo.sphere import EARTH_RADIUS_KM, destination


def _at_distances(d_km, seed=0):
    """True points anywhere, predictions exactly d km away in random directions."""
    rng = np.random.default_rng(seed)
    tlat, tlon = rng.uniform(-70, 70, len(d_km)), rng.uniform(-180, 180, len(d_km))
    plat, plon = destination(tlat, tlon, rng.uniform(0, 360, len(d_km)), np.asarray(d_km, dtype=float))
    return plat, plon, tlat, tlon


def test_geoscore_formula():
    assert geoscore(0) == pytest.approx(5000)
    assert geoscore(1492.7) == pytest.approx(5000 / math.e)
    assert geoscore([0, 20000]).tolist()[1] == pytest.approx(5000 * math.exp(-20000 / 1492.7))


def test_accuracy_median_mean_geoscore():
    d = np.array([0.5, 10, 100, 500, 1000, 2000, 5000, 10000])
    r = evaluate(*_at_distances(d))
    assert r["n"] == 8
    assert r["acc_1km"] == pytest.approx(1 / 8)
    assert r["acc_25km"] == pytest.approx(2 / 8)
    assert r["acc_200km"] == pytest.approx(3 / 8)
    assert r["acc_750km"] == pytest.approx(4 / 8)
    assert r["acc_2500km"] == pytest.approx(6 / 8)
    assert r["median_km"] == pytest.approx(750, rel=1e-6)
    assert r["mean_km"] == pytest.approx(d.mean(), rel=1e-6)
    assert r["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-d / 1492.7)), rel=1e-6)


def test_thresholds_are_configurable_and_inclusive():
    r = evaluate(*_at_distances([5.0, 50.0, 150.0]), thresholds=(100, 0.5, 50.000001))
    assert r["acc_0.5km"] == 0.0
    assert r["acc_50.000001km"] == pytest.approx(2 / 3)
    assert r["acc_100km"] == pytest.approx(2 / 3)
    assert "acc_25km" not in r


def test_perfect_and_antipodal():
    r = evaluate([10, 20], [30, 40], [10, 20], [30, 40])
    assert r["acc_1km"] == 1.0 and r["median_km"] == 0.0 and r["geoscore"] == pytest.approx(5000)
    r = evaluate([0], [0], [0], [180])
    assert r["mean_km"] == pytest.approx(math.pi * EARTH_RADIUS_KM) and r["acc_2500km"] == 0.0


@pytest.mark.parametrize("args, kw, match", [
    (([0, 1], [0, 1], [0], [0]), {}, "2 predictions but 1"),
    (([], [], [], []), {}, "nothing to evaluate"),
    (([0, 95], [0, 0], [0, 0], [0, 0]), {}, "predictions: row 1"),
    (([0], [0], [0], [0]), {"thresholds": (0,)}, "positive"),
])
def test_bad_input(args, kw, match):
    with pytest.raises(InputError, match=match):
        evaluate(*args, **kw)


def test_place_accuracy_only_when_asked(monkeypatch):
    calls = []

    def country_codes(lat, lon):
        calls.append("country")
        return np.where(np.asarray(lon) < 0, "US", np.where(np.asarray(lat) > 50, "FI", ""))

    def region_codes(lat, lon):
        return np.where(np.asarray(lat) > 62, "FI-11", "FI-18")

    def reverse_geocode(lat, lon):
        return [types.SimpleNamespace(country_code="FI", region="r", town=("Tampere" if la > 61 else "Helsinki"))
                for la in lat]

    fake = types.SimpleNamespace(country_codes=country_codes, region_codes=region_codes,
                                 reverse_geocode=reverse_geocode)
    monkeypatch.setattr(metrics, "places", fake)
    evaluate([60.2], [24.9], [60.2], [24.9])
    assert calls == []  # not asked, not computed
    # truth: Helsinki, Tampere, New York; predictions: Helsinki area, Helsinki, somewhere in Finland (wrong country)
    r = evaluate([60.3, 60.2, 63.0], [25.0, 24.9, 25.0], [60.17, 61.5, 40.7], [24.9, 23.8, -74.0], places=True)
    assert calls == ["country"]
    assert r["country_acc"] == pytest.approx(2 / 3)
    assert r["region_acc"] == pytest.approx(2 / 3)
    assert r["city_acc"] == pytest.approx(1 / 3)


@pytest.mark.skipif(not data_setup.is_ready(), reason="geographic data not derived: run bash scripts/setup.sh")
def test_place_accuracy_with_real_places():
    # truth Helsinki twice; predictions north of Helsinki (Finland) and Tallinn (Estonia)
    r = evaluate([60.3, 59.4], [24.7, 24.7], [60.17, 60.17], [24.94, 24.94], places=True)
    assert r["country_acc"] == pytest.approx(0.5)  # Tallinn is in Estonia
    assert r["region_acc"] == pytest.approx(0.5)  # the Finnish prediction is still in Uusimaa
    assert r["city_acc"] == 0.0  # neither is nearest to Helsinki itself


def test_report_and_plot(tmp_path):
    r = evaluate(*_at_distances([1, 10, 100, 1000]))
    text = format_report({"model-a": r, "model-b": r})
    lines = text.splitlines()
    assert len(lines) == 3 and "model-b" in lines[2] and "GeoScore" in lines[0]
    assert "50.0%" in lines[1]  # 2 of 4 within 25 km
    path = tmp_path / "cum.png"
    plot_cumulative_error({"model-a": metrics.errors_km(*_at_distances([1, 10, 100, 1000]))}, path)
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 400

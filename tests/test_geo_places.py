"""geo.places reverse geocoding and the ``geoscope place`` command, on the derived Natural Earth and
GeoNames data (skipped, saying how to make it, where ``bash scripts/setup.sh`` has not run)."""

import json

import numpy as np
import pytest

from geoscope.errors import GeoscopeError, InputError
from geoscope.geo import data_setup
from geoscope.geo.sphere import haversine_km

pytestmark = pytest.mark.skipif(not data_setup.is_ready(),
                                reason="geographic data not derived: run bash scripts/setup.sh")

from geoscope.geo import places  # noqa: E402

# (name, lat, lon, country, region code, region name or None)
BORDER_TOWNS = [
    ("Strasbourg", 48.5734, 7.7521, "FR", "FR-67", "Bas-Rhin"),
    ("Kehl", 48.5724, 7.8156, "DE", "DE-BW", "Baden-Württemberg"),
    ("Basel", 47.5596, 7.5886, "CH", "CH-BS", "Basel-Stadt"),
    ("Weil am Rhein", 47.5947, 7.6108, "DE", "DE-BW", None),
    ("Saint-Louis", 47.5903, 7.5600, "FR", "FR-68", None),
    ("El Paso", 31.7619, -106.4850, "US", "US-TX", "Texas"),
    ("Ciudad Juárez", 31.6904, -106.4245, "MX", "MX-CHH", "Chihuahua"),
    ("Detroit", 42.3314, -83.0458, "US", "US-MI", "Michigan"),
    ("Windsor", 42.3149, -83.0364, "CA", "CA-ON", "Ontario"),
    ("Valga", 57.7772, 26.0473, "EE", None, None),
    ("Valka", 57.7753, 26.0197, "LV", None, None),
    ("Helsinki", 60.1699, 24.9384, "FI", "FI-18", "Uusimaa"),
    ("Tampere", 61.4978, 23.7610, "FI", "FI-11", "Pirkanmaa"),
]
AT_SEA = [(30.0, -40.0), (0.0, -150.0), (-40.0, 80.0)]  # mid-Atlantic, mid-Pacific, Indian Ocean


@pytest.mark.parametrize("name,lat,lon,country,region_code,region", BORDER_TOWNS, ids=[t[0] for t in BORDER_TOWNS])
def test_country_and_region_on_both_sides_of_borders(name, lat, lon, country, region_code, region):
    p = places.place_at(lat, lon)
    assert p.country_code == country and not p.at_sea
    if region_code:
        assert p.region_code == region_code
    if region:
        assert p.region == region
    assert p.town_km < 10  # each is a town of its own


def test_countries_have_names():
    p = places.place_at(60.1699, 24.9384)
    assert p.country == "Finland" and p.label().endswith("Uusimaa, Finland")
    assert places.place_at(42.3314, -83.0458).country == "United States"


@pytest.mark.parametrize("lat,lon", AT_SEA)
def test_at_sea(lat, lon):
    p = places.place_at(lat, lon)
    assert p.at_sea and p.country_code is None and p.region is None
    assert p.town and p.town_km > 300  # the nearest place is far away
    assert p.label().startswith("at sea")


def test_vectorised_results_equal_one_at_a_time():
    lat = np.array([t[1] for t in BORDER_TOWNS] + [a[0] for a in AT_SEA])
    lon = np.array([t[2] for t in BORDER_TOWNS] + [a[1] for a in AT_SEA])
    many = places.reverse_geocode(lat, lon)
    assert many == [places.place_at(a, o) for a, o in zip(lat, lon)]
    cc = places.country_codes(lat, lon)
    assert cc.tolist() == [p.country_code or "" for p in many]
    assert places.region_codes(lat, lon).tolist() == [p.region_code or "" for p in many]
    assert places.country_codes(lat.reshape(2, -1), lon.reshape(2, -1)).shape == (2, lat.size // 2)
    names, km = places.nearest_towns(lat, lon)
    assert names.tolist() == [p.town for p in many]
    np.testing.assert_allclose(km, [p.town_km for p in many], atol=1e-3)


def test_regions_always_belong_to_the_country():
    rng = np.random.default_rng(3)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 20000)))
    lon = rng.uniform(-180, 180, 20000)
    from geoscope.geo.borders import admin1

    cc = places.country_codes(lat, lon)
    rc = places.region_codes(lat, lon)
    parent = dict(zip(admin1().codes, admin1().parent_codes))
    has = rc != ""
    assert all(parent[r] == c for r, c in zip(rc[has], cc[has]))
    assert not (has & (cc == "")).any()  # no region at sea
    assert has[cc != ""].mean() > 0.99  # and nearly every land point has one


def test_nearest_town_is_the_true_nearest():
    towns = places.list_towns(min_population=0)
    tlat = np.array([t["lat"] for t in towns])
    tlon = np.array([t["lon"] for t in towns])
    rng = np.random.default_rng(5)
    lat = rng.uniform(-60, 70, 40)
    lon = rng.uniform(-180, 180, 40)
    names, km = places.nearest_towns(lat, lon)
    for i in range(lat.size):
        d = haversine_km(lat[i], lon[i], tlat, tlon)
        j = int(np.argmin(d))
        assert km[i] == pytest.approx(d[j], abs=0.05)  # towns are stored as float32
        assert d[[k for k, t in enumerate(towns) if t["name"] == names[i]]].min() == pytest.approx(d[j], abs=0.05)


def test_few_points_by_matrix_product_equal_the_tree():
    towns = places._towns()
    rng = np.random.default_rng(11)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, places.BRUTE_FORCE_POINTS)))
    lon = rng.uniform(-180, 180, places.BRUTE_FORCE_POINTS)
    i1, km1 = towns.nearest_by_product(lat, lon)
    i2, km2 = towns.nearest_by_tree(lat, lon)
    np.testing.assert_allclose(km1, km2, atol=1e-6)
    assert (i1 == i2).mean() > 0.95  # different indices only where two towns are equally near
    np.testing.assert_allclose(haversine_km(lat, lon, towns.lat[i1], towns.lon[i1]), km1, atol=0.05)


def test_large_batches_give_the_same_towns_as_small_ones():
    rng = np.random.default_rng(9)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 12000)))
    lon = rng.uniform(-180, 180, 12000)
    names, km = places.nearest_towns(lat, lon)  # large: queried in a locality order, then put back
    small = [places.nearest_towns(lat[i:i + 4000], lon[i:i + 4000]) for i in range(0, 12000, 4000)]
    assert names.tolist() == [n for part, _ in small for n in part.tolist()]
    np.testing.assert_array_equal(km, np.concatenate([k for _, k in small]))


def test_list_countries_and_regions():
    countries = places.list_countries()
    assert ("FI", "Finland") in countries and ("XK", "Kosovo") in countries
    assert [n for _, n in countries] == sorted(n for _, n in countries)
    regions = places.list_regions("fi")
    assert len(regions) == 18 and ("FI-11", "Pirkanmaa") in regions and ("FI-18", "Uusimaa") in regions
    assert all(code.startswith("FI-") for code, _ in regions)
    with pytest.raises(InputError, match="'ZZ'"):
        places.list_regions("ZZ")


def test_list_towns_filters_and_sorts():
    fi = places.list_towns("FI", min_population=100_000)
    assert fi[0]["name"] == "Helsinki" and {t["country_code"] for t in fi} == {"FI"}
    pops = [t["population"] for t in fi]
    assert pops == sorted(pops, reverse=True) and min(pops) >= 100_000
    pirkanmaa = places.list_towns(region_code="FI-11", limit=5)
    assert pirkanmaa[0]["name"] == "Tampere" and len(pirkanmaa) == 5
    assert {t["region_code"] for t in pirkanmaa} == {"FI-11"}
    assert set(pirkanmaa[0]) == {"name", "lat", "lon", "population", "country_code", "region_code"}
    assert places.list_towns("FI", min_population=10**9) == []
    with pytest.raises(InputError):
        places.list_towns(region_code="XX-99")
    with pytest.raises(InputError):
        places.list_towns("FI", limit=-1)


def test_bad_input_and_missing_data(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="row 1"):
        places.reverse_geocode([10.0, 95.0], [0.0, 0.0])
    with pytest.raises(InputError):
        places.place_at([1.0, 2.0], [3.0, 4.0])
    monkeypatch.setenv("GEOSCOPE_DATA", str(tmp_path))
    with pytest.raises(GeoscopeError, match="setup.sh"):
        places.place_at(10.0, 10.0)


def test_cli_place(capsys):
    from geoscope.cli import main

    assert main(["place", "61.4978", "23.7610", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["country_code"] == "FI" and out["region_code"] == "FI-11" and out["at_sea"] is False
    assert out["lat"] == 61.4978 and "Pirkanmaa" in out["label"]
    assert main(["place", "-33.8688", "151.2093"]) == 0  # negative numbers are coordinates, not options
    text = capsys.readouterr().out
    assert "Australia (AU)" in text and "New South Wales" in text
    assert main(["place", "0", "-150"]) == 0
    assert "at sea" in capsys.readouterr().out
    assert main(["place", "95", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LAT 95.0" in err

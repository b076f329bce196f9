"""Sphere math: known distances, stability at the extremes, and properties that must always hold."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoscope.errors import InputError
from geoscope.geo.sphere import (
    EARTH_RADIUS_KM,
    destination,
    from_unit,
    haversine_km,
    initial_bearing,
    pairwise_km,
    spherical_mean,
    to_unit,
    validate_latlon,
    wrap_lon,
)

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False, exclude_max=True)
points = st.tuples(lats, lons)
FAST = settings(max_examples=200, deadline=None)


def _angle_km(lat1, lon1, lat2, lon2):
    """Independent reference: angle between unit vectors via arccos of the dot product (fine mid-range)."""
    a, b = to_unit(lat1, lon1), to_unit(lat2, lon2)
    return EARTH_RADIUS_KM * math.acos(max(-1.0, min(1.0, float(np.dot(a, b)))))


def test_known_distances():
    assert haversine_km(60.1699, 24.9384, 61.4978, 23.7610) == pytest.approx(160.8, abs=1.0)  # Helsinki-Tampere
    assert haversine_km(51.5074, -0.1278, 40.7128, -74.0060) == pytest.approx(5570, abs=10)  # London-New York


def test_antipodes_are_half_the_circumference():
    lat = np.array([0.0, 45.0, -30.5, 89.9, 90.0])
    lon = np.array([0.0, 10.0, 179.0, -45.0, 0.0])
    d = haversine_km(lat, lon, -lat, wrap_lon(lon + 180))
    np.testing.assert_allclose(d, math.pi * EARTH_RADIUS_KM, rtol=1e-12)


def test_nearly_antipodal_points_are_stable():
    # 1 m short of the antipode: arccos loses this completely; the atan2 form keeps it.
    d = haversine_km(0.0, 0.0, 0.0, 180.0 - 0.001 / 111.195)
    assert d == pytest.approx(math.pi * EARTH_RADIUS_KM - 0.001, abs=1e-6)


def test_centimetre_distances():
    one_cm_deg = 1e-5 / (EARTH_RADIUS_KM * math.pi / 180)  # 1 cm of latitude in degrees
    assert haversine_km(45.0, 7.0, 45.0 + one_cm_deg, 7.0) == pytest.approx(1e-5, rel=1e-6)
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0


def test_pairwise_matches_elementwise():
    rng = np.random.default_rng(0)
    a = rng.uniform(-80, 80, (5, 2))
    b = rng.uniform(-80, 80, (7, 2))
    m = pairwise_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    assert m.shape == (5, 7)
    assert m[3, 4] == pytest.approx(float(haversine_km(a[3, 0], a[3, 1], b[4, 0], b[4, 1])))


@FAST
@given(points, points)
def test_distance_symmetric_bounded_and_matches_reference(p, q):
    d1 = float(haversine_km(*p, *q))
    d2 = float(haversine_km(*q, *p))
    assert d1 == pytest.approx(d2, abs=1e-9)
    assert 0.0 <= d1 <= math.pi * EARTH_RADIUS_KM + 1e-9
    ref = _angle_km(*p, *q)
    if 1.0 < ref < math.pi * EARTH_RADIUS_KM - 1.0:  # arccos is only trustworthy away from 0 and pi
        assert d1 == pytest.approx(ref, abs=1e-3)


@FAST
@given(points, points, points)
def test_triangle_inequality(p, q, r):
    assert haversine_km(*p, *r) <= haversine_km(*p, *q) + haversine_km(*q, *r) + 1e-6


@FAST
@given(points)
def test_unit_vector_round_trip(p):
    v = to_unit(*p)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    lat, lon = from_unit(v)
    assert float(lat) == pytest.approx(p[0], abs=1e-9)
    if abs(p[0]) < 89.999:  # longitude is undefined at the poles
        assert float(haversine_km(lat, lon, *p)) < 1e-6


@FAST
@given(st.floats(-85, 85), lons, st.floats(0, 359.999), st.floats(0.001, 15000))
def test_destination_bearing_round_trip(lat, lon, bearing, dist):
    lat2, lon2 = destination(lat, lon, bearing, dist)
    assert float(haversine_km(lat, lon, lat2, lon2)) == pytest.approx(dist, rel=1e-7, abs=1e-6)
    if 0.01 < dist < 19000:
        b = float(initial_bearing(lat, lon, lat2, lon2))
        diff = (b - bearing + 180) % 360 - 180
        assert abs(diff) < 1e-5


def test_bearing_cardinal_directions():
    assert float(initial_bearing(0, 0, 10, 0)) == pytest.approx(0.0)
    assert float(initial_bearing(0, 0, 0, 10)) == pytest.approx(90.0)
    assert float(initial_bearing(10, 0, 0, 0)) == pytest.approx(180.0)
    assert float(initial_bearing(0, 10, 0, 0)) == pytest.approx(270.0)


def test_spherical_mean():
    lat, lon = spherical_mean([10, -10], [179, -179])  # across the antimeridian
    assert lat == pytest.approx(0.0, abs=1e-9) and abs(lon) == pytest.approx(180.0)
    with pytest.raises(InputError, match="cancel out"):
        spherical_mean([0, 0], [0, 180])
    with pytest.raises(InputError, match="no points"):
        spherical_mean([], [])


def test_validate_names_the_bad_row_and_wraps_longitude():
    lat, lon = validate_latlon([1, 2, 3], [190, -190, 540])
    np.testing.assert_allclose(lon, [-170, 170, -180])
    with pytest.raises(InputError, match=r"row 2 .*lat=91"):
        validate_latlon([0, 10, 91, 95], [0, 0, 0, 0], "points.csv")
    with pytest.raises(InputError, match="row 1"):
        validate_latlon([0, float("nan")], [0, 0])
    with pytest.raises(InputError, match="row 0 .*longitude"):
        validate_latlon([0], [float("inf")])

"""Geocells: grid and adaptive builders, point -> cell, centroids, polygons, hierarchy, save/load."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from geoscope.errors import InputError
from geoscope.geo.cells import (
    CellHierarchy,
    Geocells,
    MAX_LEVEL,
    load_cells,
    quadtree_keys,
    save_cells,
)
from geoscope.geo.sphere import haversine_km, spherical_mean


def _clustered(n, seed=0):
    """Training points: dense cities, a sparse spread over land-ish latitudes, a few loners."""
    rng = np.random.default_rng(seed)
    centres = np.array([[60.17, 24.94], [48.85, 2.35], [40.71, -74.0], [-33.87, 151.2], [35.68, 139.7]])
    k = int(n * 0.7)
    c = centres[rng.integers(0, len(centres), k)]
    lat = np.concatenate([c[:, 0] + rng.normal(0, 0.5, k), rng.uniform(-60, 75, n - k - 3), [89.9, -89.9, 0.0]])
    lon = np.concatenate([c[:, 1] + rng.normal(0, 0.5, k), rng.uniform(-180, 180, n - k - 3), [0.0, 179.9, -180.0]])
    return np.clip(lat, -90, 90), (lon + 180) % 360 - 180


# ------------------------------------------------------------------------------------------ grid


def test_grid_finland_40x30_assigns_by_row_and_column():
    cells = Geocells.grid((59.0, 19.0, 70.0, 32.0), rows=40, cols=30)
    assert len(cells) == 1200 and cells.kind == "grid"
    dlat, dlon = 11 / 40, 13 / 30
    # a point in row 5, column 7 (counted from the south-west corner)
    lat, lon = 59.0 + 5.5 * dlat, 19.0 + 7.5 * dlon
    assert cells.assign([lat], [lon])[0] == 5 * 30 + 7
    np.testing.assert_allclose(cells.centroids[5 * 30 + 7], [lat, lon])
    # corners and edges belong to the grid; outside is -1
    out = cells.assign([59.0, 70.0, 70.0, 58.99, 64.0], [19.0, 32.0, 19.0, 25.0, 32.01])
    assert out.tolist() == [0, 1199, 39 * 30, -1, -1]


def test_grid_polygon_contains_its_points_and_centroids_fit():
    cells = Geocells.grid((0.0, 0.0, 10.0, 20.0), rows=2, cols=4)
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(0, 10, 500), rng.uniform(0, 20, 500)
    ids = cells.assign(lat, lon)
    for i in range(len(cells)):
        poly = shape(cells.polygon(i))
        mine = ids == i
        assert all(poly.covers(Point(x, y)) for x, y in zip(lon[mine], lat[mine]))
    fitted = cells.fit_centroids(lat[lat < 5], lon[lat < 5])  # top row gets no training points
    assert fitted.counts[:4].sum() == (lat < 5).sum() and fitted.counts[4:].sum() == 0
    m = ids == 1
    m &= lat < 5
    assert haversine_km(*fitted.centroids[1], *spherical_mean(lat[m], lon[m])) < 1e-6
    np.testing.assert_allclose(fitted.centroids[4:], cells.centroids[4:])  # geometric centre kept
    assert cells.counts.sum() == 0  # the original is unchanged


@pytest.mark.parametrize("bbox, match", [
    ((10, 0, 5, 1), "min latitude"), ((0, 10, 1, 5), "min longitude"),
    ((0, 0, 95, 1), "within"), ((0, 0, 1), "4 numbers"), ((0, 0, float("nan"), 1), "finite"),
])
def test_grid_rejects_bad_boxes(bbox, match):
    with pytest.raises(InputError, match=match):
        Geocells.grid(bbox, 2, 2)


def test_grid_rejects_bad_sizes():
    with pytest.raises(InputError, match="rows and cols"):
        Geocells.grid((0, 0, 1, 1), 0, 3)


# ------------------------------------------------------------------------------------------ adaptive


def test_quadtree_keys_nest_by_level():
    lat, lon = _clustered(1000)
    k = quadtree_keys(lat, lon)
    assert k.min() >= 0 and k.max() < 4**MAX_LEVEL
    # two points in the same level-L quadrant share the top 2L bits
    a, b = quadtree_keys([10.0, 10.0001], [20.0, 20.0001])
    assert a >> 20 == b >> 20 and a != b
    # quadrants of the first split: (u, v) halves = west/east of lon 0, south/north of the equator
    q = quadtree_keys([-10.0, -10.0, 10.0, 10.0], [-10.0, 10.0, -10.0, 10.0]) >> (2 * MAX_LEVEL - 2)
    assert q.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("min_points, max_points", [(5, 50), (20, 200), (1, 30)])
def test_adaptive_covers_every_point_and_respects_bounds(min_points, max_points):
    lat, lon = _clustered(6000)
    cells = Geocells.adaptive(lat, lon, min_points, max_points)
    ids = cells.assign(lat, lon)
    assert (ids >= 0).all(), "every training point is in a cell"
    counts = np.bincount(ids, minlength=len(cells))
    np.testing.assert_array_equal(counts, cells.counts)
    assert counts.sum() == len(lat)
    assert counts.min() >= min_points
    assert counts.max() <= max_points
    s = cells.summary()
    assert s["below_min"] == 0 and s["above_max"] == 0 and s["cells"] == len(cells)


def test_adaptive_is_finer_where_points_are_dense():
    lat, lon = _clustered(6000)
    cells = Geocells.adaptive(lat, lon, 10, 100)
    areas = cells.areas_km2()
    helsinki = cells.assign([60.17], [24.94])[0]
    assert areas[helsinki] < np.median(areas)


def test_adaptive_centroids_are_means_of_their_points():
    lat, lon = _clustered(3000)
    cells = Geocells.adaptive(lat, lon, 10, 100)
    ids = cells.assign(lat, lon)
    for i in [0, len(cells) // 2, len(cells) - 1]:
        m = ids == i
        assert haversine_km(*cells.centroids[i], *spherical_mean(lat[m], lon[m])) < 1e-6


def test_adaptive_drops_empty_areas_and_nearest_fills_them():
    lat = np.random.default_rng(2).uniform(59, 61, 400)
    lon = np.random.default_rng(3).uniform(20, 22, 400)
    cells = Geocells.adaptive(lat, lon, 5, 50)
    far = cells.assign([-40.0], [-100.0])
    assert far[0] == -1
    near = cells.assign([-40.0], [-100.0], nearest=True)[0]
    d = haversine_km(-40.0, -100.0, cells.centroids[:, 0], cells.centroids[:, 1])
    assert near == int(np.argmin(d))


def test_adaptive_polygons_hold_their_points():
    lat, lon = _clustered(2000)
    cells = Geocells.adaptive(lat, lon, 10, 80)
    ids = cells.assign(lat, lon)
    total = 0.0
    for i in range(len(cells)):
        geom = shape(cells.polygon(i))
        assert geom.geom_type in ("Polygon", "MultiPolygon")
        mine = np.flatnonzero(ids == i)[:20]
        assert all(geom.buffer(1e-9).covers(Point(lon[j], lat[j])) for j in mine)
        total += geom.area
    gj = cells.to_geojson(probs=np.full(len(cells), 1 / len(cells)))
    assert len(gj["features"]) == len(cells)
    assert gj["features"][0]["properties"]["probability"] == pytest.approx(1 / len(cells))
    json.dumps(gj)  # plain JSON


def test_adaptive_small_input_and_identical_points():
    cells = Geocells.adaptive([10.0, 10.1, 10.2], [5.0, 5.0, 5.0], min_points=10, max_points=100)
    assert len(cells) == 1 and cells.counts.tolist() == [3]  # fewer than min in all: one cell
    same = Geocells.adaptive(np.full(30, 45.0), np.full(30, 7.0), 1, 10)
    assert same.counts.sum() == 30 and len(same) == 1  # cannot be split below ~2 m
    assert same.summary()["above_max"] == 1


@pytest.mark.parametrize("args, match", [
    (([], [], 1, 10), "no training points"),
    (([0.0], [0.0], 0, 10), "at least 1"),
    (([0.0], [0.0], 10, 5), "below min"),
    (([0.0, 100.0], [0.0, 0.0], 1, 10), "row 1"),
])
def test_adaptive_bad_input(args, match):
    with pytest.raises(InputError, match=match):
        Geocells.adaptive(*args)


def test_assign_is_vectorised_and_keeps_shape():
    lat, lon = _clustered(3000)
    cells = Geocells.adaptive(lat, lon, 10, 100)
    ids = cells.assign(lat.reshape(30, 100), lon.reshape(30, 100))
    assert ids.shape == (30, 100) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids.ravel(), cells.assign(lat, lon))


# ------------------------------------------------------------------------------------------ hierarchy, files


def test_hierarchy_levels_and_parents():
    lat, lon = _clustered(8000)
    h = CellHierarchy.adaptive(lat, lon, 10, [100, 400, 1000])  # any order: sorted coarse -> fine
    assert [lv.params["max_points"] for lv in h.levels] == [1000, 400, 100]
    assert len(h.levels[0]) < len(h.levels[1]) < len(h.finest)
    for level in (1, 2):
        parents = h.parents(level)
        fine = h.levels[level].assign(lat, lon)
        coarse = h.levels[level - 1].assign(lat, lon)
        # most training points of each fine cell lie in its parent
        agree = np.mean(parents[fine] == coarse)
        assert agree > 0.97
        kids = h.children(level - 1, int(parents[0]))
        assert 0 in kids
    with pytest.raises(InputError):
        h.parents(0)


def test_save_load_round_trip(tmp_path):
    lat, lon = _clustered(3000)
    h = CellHierarchy.adaptive(lat, lon, 10, [300, 100])
    path = tmp_path / "cells.json"
    h.save(path)
    back = load_cells(path)
    assert isinstance(back, CellHierarchy) and len(back.levels) == 2 and len(back) == len(h.finest)
    for a, b in zip(h.levels, back.levels):
        np.testing.assert_array_equal(a.assign(lat, lon), b.assign(lat, lon))
        np.testing.assert_allclose(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(back.parents(1), h.parents(1))
    grid = Geocells.grid((0, 0, 1, 1), 3, 3)
    save_cells(grid, tmp_path / "grid.json")
    g = load_cells(tmp_path / "grid.json")
    assert len(g.levels) == 1 and g.kind == "grid" and len(g) == 9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_cells(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_cells(bad)
    bad.write_text(json.dumps({"kind": "adaptive", "centroids": [[0, 0]], "counts": [1],
                               "params": {"leaf_level": [0], "leaf_prefix": [0], "leaf_cell": [3]}}))
    with pytest.raises(InputError, match="does not exist"):
        load_cells(bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(1, 20), st.integers(0, 60))
def test_adaptive_properties(seed, n, min_points, extra):
    """Any training set: every point in exactly one cell, counts agree, and no cell below min
    unless everything is one cell."""
    rng = np.random.default_rng(seed)
    spread = rng.choice([0.001, 1.0, 60.0])
    lat = np.clip(rng.normal(rng.uniform(-80, 80), spread, n), -90, 90)
    lon = rng.normal(rng.uniform(-180, 180), spread * 2, n)
    max_points = min_points + extra
    cells = Geocells.adaptive(lat, lon, min_points, max_points)
    ids = cells.assign(lat, lon)
    assert (ids >= 0).all()
    np.testing.assert_array_equal(np.bincount(ids, minlength=len(cells)), cells.counts)
    assert len(cells) == 1 or cells.counts.min() >= min_points
    if n <= max_points:
        assert len(cells) == 1

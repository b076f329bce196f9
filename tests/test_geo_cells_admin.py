"""Admin geocells over a small synthetic map of boxes (the rule does not need the Natural Earth data)."""

import numpy as np
import pytest
from shapely.geometry import LinearRing, Point, box, shape

import geoscope.geo.borders as borders_mod
from geoscope.errors import InputError
from geoscope.geo import data_setup
from geoscope.geo.borders import BorderSet
from geoscope.geo.cells import AdminCells, CellHierarchy, Geocells, load_cells, save_cells

# Country A: A-1 (south-west), A-2 (south-east), A-3 (north). Country B: B-1 and a small island B-2.
# Country C: one region with only a few points. Sea everywhere else.
MAP = [
    ("A-1", "A", box(0, 0, 10, 10)), ("A-2", "A", box(10, 0, 20, 10)), ("A-3", "A", box(0, 10, 20, 20)),
    ("B-1", "B", box(20, 0, 30, 20)), ("B-2", "B", box(40, 0, 42, 2)), ("C-1", "C", box(-30, 0, -20, 10)),
]


@pytest.fixture(scope="module")
def borders():
    codes, parents, geoms = zip(*MAP)
    return BorderSet("admin1", codes, codes, parents, geoms, grid_res=1.0)


def _uniform_in(rng, n, lon0, lat0, lon1, lat1):
    return rng.uniform(lat0, lat1, n), rng.uniform(lon0, lon1, n)


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(0)
    parts = [
        _uniform_in(rng, 900, 0, 0, 10, 10),   # more than max -> split
        _uniform_in(rng, 15, 10, 0, 20, 10),   # fewer than min -> merged inside A
        _uniform_in(rng, 200, 0, 10, 20, 20),
        _uniform_in(rng, 120, 20, 0, 30, 20),  # B-1
        _uniform_in(rng, 10, 40, 0, 42, 2),    # B-2: small island, merged with B-1
        _uniform_in(rng, 8, -30, 0, -20, 10),  # C: a whole country below min stays one cell
        _uniform_in(rng, 5, 50, -20, 60, -10),  # at sea
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.fixture(scope="module")
def cells(borders, training):
    return Geocells.admin(*training, min_points=30, max_points=300, borders=borders)


def test_admin_rule(cells, borders, training):
    lat, lon = training
    regions = cells.params["regions"]
    flat = [c for r in regions for c in r]
    assert sorted(flat) == ["A-1", "A-2", "A-3", "B-1", "B-2", "C-1"]
    # merging never crosses a country border
    assert all(len({c.split("-")[0] for c in r}) == 1 for r in regions)
    assert ["C-1"] in regions
    assert any("B-2" in r and "B-1" in r for r in regions)
    assert not any(r == ["A-2"] for r in regions)  # too small alone
    ids = cells.assign(lat, lon)
    assert (ids >= 0).all()  # sea points go to the nearest cell
    counts = np.bincount(ids, minlength=len(cells))
    np.testing.assert_array_equal(counts, cells.counts)
    in_a1 = (lon < 10) & (lat < 10) & (lat >= 0) & (lon >= 0)
    assert len(np.unique(ids[in_a1])) >= 3  # A-1 was split by the quadtree
    land = ~((lon >= 50) & (lat < -5))
    land_counts = np.bincount(ids[land], minlength=len(cells))
    small = np.flatnonzero(land_counts < 30)
    # only country C may be below min, and no cell of A or B is above max
    assert [regions_of(cells, i) for i in small] == [["C-1"]]
    assert land_counts.max() <= 300


def regions_of(cells, i):
    level = np.asarray(cells.params["leaf_level"])
    prefix = np.asarray(cells.params["leaf_prefix"])
    leaf = np.flatnonzero(np.asarray(cells.params["leaf_cell"]) == i)[0]
    return cells.params["regions"][int(prefix[leaf] >> (2 * level[leaf]))]


def test_admin_cells_do_not_cross_borders(cells, borders, training):
    lat, lon = training
    ids = cells.assign(lat, lon)
    where = np.asarray(borders.codes + ["sea"])[borders.locate(lat, lon)]
    for i in range(len(cells)):
        countries = {c.split("-")[0] for c in where[ids == i] if c != "sea"}
        assert len(countries) == 1


def test_admin_polygons_follow_the_regions(cells, training):
    lat, lon = training
    ids = cells.assign(lat, lon)
    c_cell = int(ids[np.flatnonzero(lon < -20)[0]])
    geom = shape(cells.polygon(c_cell))
    assert geom.equals(box(-30, 0, -20, 10))
    for i in range(len(cells)):
        g = shape(cells.polygon(i)).buffer(1e-9)
        mine = np.flatnonzero((ids == i) & (lon < 45))[:10]  # sea points lie outside every polygon
        assert all(g.covers(Point(lon[j], lat[j])) for j in mine)


def test_admin_save_load(cells, borders, training, tmp_path, monkeypatch):
    lat, lon = training
    save_cells(cells, tmp_path / "admin.json")
    monkeypatch.setattr(borders_mod, "admin1", lambda: borders)
    back = load_cells(tmp_path / "admin.json")
    assert isinstance(back, CellHierarchy) and isinstance(back.finest, AdminCells) and back.kind == "admin"
    np.testing.assert_array_equal(back.assign(lat, lon), cells.assign(lat, lon))
    np.testing.assert_array_equal(back.counts, cells.counts)
    np.testing.assert_allclose(back.centroids, cells.centroids)
    assert back.params["regions"] == cells.params["regions"]
    for i in range(len(cells)):
        assert shape(back.polygon(i)).equals(shape(cells.polygon(i)))


def test_admin_polygons_wind_counter_clockwise_with_clockwise_holes():
    # a region with a hole (a lake) and, inside the hole, another country's island
    lake = box(0, 0, 10, 10).difference(box(4, 4, 6, 6))
    regions = BorderSet("admin1", ["L-1", "I-1"], ["L-1", "I-1"], ["L", "I"], [lake, box(4.5, 4.5, 5.5, 5.5)],
                        grid_res=1.0)
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(0, 10, 400), rng.uniform(0, 10, 400)
    keep = ~((lat > 4) & (lat < 6) & (lon > 4) & (lon < 6)) | ((lat > 4.5) & (lat < 5.5) & (lon > 4.5) & (lon < 5.5))
    for max_points in (10_000, 120):  # whole regions, then regions split by the quadtree
        cells = Geocells.admin(lat[keep], lon[keep], 1, max_points, borders=regions)
        holes = 0
        for i in range(len(cells)):
            geom = cells.polygon(i)
            polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
            for rings in polys:
                assert LinearRing(rings[0]).is_ccw, f"cell {i}: exterior ring is clockwise"
                assert not any(LinearRing(r).is_ccw for r in rings[1:]), f"cell {i}: a hole is counter-clockwise"
                holes += len(rings) - 1
        if max_points == 10_000:
            assert holes == 1  # the lake stays a hole


def test_admin_bad_input(borders):
    with pytest.raises(InputError, match="none of the training points"):
        Geocells.admin([-50.0], [100.0], 1, 10, borders=borders)
    with pytest.raises(InputError, match="below min"):
        Geocells.admin([5.0], [5.0], 10, 1, borders=borders)


@pytest.mark.skipif(not data_setup.is_ready(), reason="geographic data not derived: run bash scripts/setup.sh")
def test_admin_cells_on_natural_earth():
    real = borders_mod.admin1()
    rng = np.random.default_rng(5)
    # inland Uusimaa (FI-18), Tampere (Pirkanmaa, FI-11), Tallinn (Harju, EE-37)
    centres = [(60.45, 25.0, 400), (61.50, 23.76, 40), (59.40, 24.75, 60)]
    lat = np.concatenate([rng.normal(a, 0.02, n) for a, _, n in centres])
    lon = np.concatenate([rng.normal(b, 0.04, n) for _, b, n in centres])
    codes = np.asarray(real.codes + ["sea"])[real.locate(lat, lon)]
    assert (codes[:400] == "FI-18").all() and (codes[400:440] == "FI-11").all() and (codes[440:] == "EE-37").all()
    cells = Geocells.admin(lat, lon, min_points=50, max_points=250, borders=real)
    ids = cells.assign(lat, lon)
    helsinki, tampere, tallinn = ids[0], ids[400], ids[440]
    assert tallinn != tampere and tallinn != helsinki  # never across the FI / EE border
    # Pirkanmaa holds 40 < 50 points: merged with the nearest Finnish region, Uusimaa
    assert any("FI-11" in r and "FI-18" in r for r in cells.params["regions"])
    assert len(np.unique(ids[:400])) >= 2  # Uusimaa's 440 points are split under max 250
    assert cells.counts.sum() == len(lat)
    assert cells.counts.min() >= 50 and cells.counts.max() <= 250

"""Cells files and the one type callers hold: every layout round-trips through save/load, files written
before the cells split still load and answer the same, and every builder hands back a CellHierarchy."""

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LinearRing, box, shape

import geoscope.geo.borders as borders_mod
from geoscope.errors import InputError
from geoscope.geo.borders import BorderSet
from geoscope.geo.cells import (
    AdaptiveCells,
    AdminCells,
    CellHierarchy,
    Geocells,
    GridCells,
    Partition,
    as_hierarchy,
    load_cells,
    save_cells,
)

V1 = Path(__file__).parent / "data" / "cells_v1"

# the synthetic map the v1 admin file was built over (tests/test_geo_cells_admin.py)
MAP = [
    ("A-1", "A", box(0, 0, 10, 10)), ("A-2", "A", box(10, 0, 20, 10)), ("A-3", "A", box(0, 10, 20, 20)),
    ("B-1", "B", box(20, 0, 30, 20)), ("B-2", "B", box(40, 0, 42, 2)), ("C-1", "C", box(-30, 0, -20, 10)),
]


@pytest.fixture(scope="module")
def toy_admin1():
    codes, parents, geoms = zip(*MAP)
    return BorderSet("admin1", codes, codes, parents, geoms, grid_res=1.0)


@pytest.fixture
def use_toy_admin1(toy_admin1, monkeypatch):
    monkeypatch.setattr(borders_mod, "admin1", lambda: toy_admin1)
    return toy_admin1


def _training(seed=0):
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.normal(60.2, 0.3, 600), rng.uniform(0, 20, 600), rng.uniform(-50, 70, 300)])
    lon = np.concatenate([rng.normal(24.9, 0.5, 600), rng.uniform(0, 30, 600), rng.uniform(-180, 180, 300)])
    return lat, lon


def _all_layouts(borders):
    lat, lon = _training()
    return {
        "grid": Geocells.grid((55.0, 15.0, 70.0, 35.0), 6, 8).fit_centroids(lat, lon),
        "adaptive": CellHierarchy.adaptive(lat, lon, 10, [300, 60]),
        "admin": CellHierarchy.admin(lat, lon, 20, 200, borders=borders),
    }


def _rings(geojson_geometry):
    g = geojson_geometry
    return [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]


# ------------------------------------------------------------------------------------------ the one type


def test_every_builder_hands_back_a_hierarchy(toy_admin1):
    layouts = _all_layouts(toy_admin1)
    expected = {"grid": GridCells, "adaptive": AdaptiveCells, "admin": AdminCells}
    for kind, cells in layouts.items():
        assert isinstance(cells, CellHierarchy), kind
        assert cells.kind == kind and isinstance(cells.finest, expected[kind])
        assert all(isinstance(lv, Partition) for lv in cells.levels)
        # the hierarchy answers for its finest level
        assert len(cells) == len(cells.finest)
        np.testing.assert_array_equal(cells.centroids, cells.finest.centroids)
        np.testing.assert_array_equal(cells.counts, cells.finest.counts)
        lat, lon = _training(1)
        np.testing.assert_array_equal(cells.assign(lat, lon, nearest=True), cells.finest.assign(lat, lon, nearest=True))
        assert cells.polygon(0) == cells.finest.polygon(0)
        assert cells.summary() == cells.finest.summary()
    assert [len(lv) for lv in layouts["adaptive"].levels] == sorted(len(lv) for lv in layouts["adaptive"].levels)
    assert len(layouts["adaptive"].levels) == 2 and len(layouts["grid"].levels) == 1
    assert Geocells is CellHierarchy  # the older name builds the same type


def test_as_hierarchy_and_levels_accept_partitions_or_one_level_hierarchies():
    lat, lon = _training()
    grid = Geocells.grid((0, 0, 20, 30), 2, 3)
    assert as_hierarchy(grid) is grid
    wrapped = as_hierarchy(grid.finest)
    assert isinstance(wrapped, CellHierarchy) and wrapped.finest is grid.finest
    fine = Geocells.grid((0, 0, 20, 30), 4, 6)
    two = CellHierarchy([grid, fine.finest])  # a one-level hierarchy and a bare partition as levels
    assert [len(lv) for lv in two.levels] == [6, 24] and len(two) == 24
    assert two.parents(1).tolist() == [0, 0, 1, 1, 2, 2] * 2 + [3, 3, 4, 4, 5, 5] * 2
    with pytest.raises(InputError, match="hierarchy of 2 levels"):
        CellHierarchy([two])
    with pytest.raises(InputError, match="expected geocells"):
        as_hierarchy("cells.json")
    # fitting centroids fits every level and keeps the structure
    fitted = two.fit_centroids(lat, lon)
    assert isinstance(fitted, CellHierarchy) and fitted.parents(1).tolist() == two.parents(1).tolist()
    inside = (lat >= 0) & (lat <= 20) & (lon >= 0) & (lon <= 30)
    assert fitted.levels[0].counts.sum() == fitted.counts.sum() == inside.sum() > 500
    assert two.counts.sum() == 0  # the original is unchanged


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", ["grid", "adaptive", "admin"])
def test_every_layout_round_trips_through_save_and_load(kind, use_toy_admin1, tmp_path):
    cells = _all_layouts(use_toy_admin1)[kind]
    path = tmp_path / f"{kind}.json"
    save_cells(cells, path)
    back = load_cells(path)
    assert [type(lv) for lv in back.levels] == [type(lv) for lv in cells.levels]
    lat, lon = _training(2)
    for a, b in zip(cells.levels, back.levels):
        assert a.params == b.params
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_allclose(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.assign(lat, lon), b.assign(lat, lon))
        for i in range(0, len(a), max(1, len(a) // 7)):
            assert shape(a.polygon(i)).equals(shape(b.polygon(i)))
    for lvl in range(1, len(cells.levels)):
        np.testing.assert_array_equal(back.parents(lvl), cells.parents(lvl))
    assert json.loads(path.read_text())["format"] == "geoscope-cells"


# ------------------------------------------------------------------------------------------ files of v1


def _check_against_v1(cells, answers, probe):
    lat, lon = probe
    np.testing.assert_array_equal(cells.assign(lat, lon), answers["assign"])
    np.testing.assert_array_equal(cells.assign(lat, lon, nearest=True), answers["assign_nearest"])
    np.testing.assert_allclose(cells.areas_km2(), answers["areas_km2"], rtol=1e-9)
    for i in range(len(cells)):
        geom = shape(cells.polygon(i))
        assert geom.area == pytest.approx(answers["polygon_area"][i], rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(geom.bounds, answers["polygon_bounds"][i], atol=1e-9)


def test_files_written_before_the_split_load_and_answer_the_same(use_toy_admin1):
    expected = json.loads((V1 / "expected.json").read_text())
    probe = (np.asarray(expected["probe_lat"]), np.asarray(expected["probe_lon"]))
    grid = load_cells(V1 / "grid.json")
    assert isinstance(grid.finest, GridCells) and len(grid) == 12 and grid.counts.sum() > 0
    _check_against_v1(grid, expected["grid"], probe)
    adaptive = load_cells(V1 / "adaptive.json")
    assert [len(lv) for lv in adaptive.levels] == [9, 26]
    for level, answers in zip(adaptive.levels, expected["adaptive"]):
        _check_against_v1(level, answers, probe)
    admin = load_cells(V1 / "admin.json")
    assert isinstance(admin.finest, AdminCells)
    _check_against_v1(admin, expected["admin"], probe)
    bare = load_cells(V1 / "grid_partition.json")  # a single partition's object, no "levels"
    assert len(bare.levels) == 1 and len(bare) == 8
    _check_against_v1(bare, expected["grid_partition"], probe)


def test_saved_files_keep_the_v1_form(tmp_path):
    """What the split writes is what v1 wrote, so an older geoscope reads it too."""
    old = json.loads((V1 / "adaptive.json").read_text())
    back = load_cells(V1 / "adaptive.json")
    save_cells(back, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == old


def test_bad_cells_files_are_one_clear_error(tmp_path):
    path = tmp_path / "c.json"
    for doc, match in [
        ({"kind": "hexagons", "centroids": [], "counts": [], "params": {}}, "unknown kind of cells 'hexagons'"),
        ({"kind": "grid", "centroids": [[0, 0]], "counts": [0], "params": {"bbox": [0, 0, 1, 1], "rows": 2,
                                                                             "cols": 1}}, "does not match"),
        ({"kind": "admin", "centroids": [[0, 0]], "counts": [1], "params": {
            "leaf_level": [0], "leaf_prefix": [0], "leaf_cell": [0]}}, "list of regions"),
        ({"format": "geoscope-cells", "version": 99, "levels": []}, "version <= 1"),
        ([1, 2], "expected a JSON object"),
    ]:
        path.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=match):
            load_cells(path)


# ------------------------------------------------------------------------------------------ GeoJSON winding


@pytest.mark.parametrize("kind", ["grid", "adaptive", "admin"])
def test_cell_polygons_follow_the_right_hand_rule(kind, toy_admin1):
    """RFC 7946 section 3.1.6: exterior rings counter-clockwise, holes clockwise, for every cell of
    every level, through polygon() and to_geojson()."""
    cells = _all_layouts(toy_admin1)[kind]
    for level in cells.levels:
        fc = level.to_geojson()
        assert len(fc["features"]) == len(level)
        for i, feature in enumerate(fc["features"]):
            assert feature["geometry"] == level.polygon(i)
            for rings in _rings(feature["geometry"]):
                assert LinearRing(rings[0]).is_ccw, f"{kind} cell {i}: exterior ring is clockwise"
                assert not any(LinearRing(r).is_ccw for r in rings[1:]), f"{kind} cell {i}: a hole is counter-clockwise"

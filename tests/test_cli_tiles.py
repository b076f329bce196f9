import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


def test_tiles_cli_writes_manifest_usable_as_dataset(tmp_path):
    tif = tmp_path / "r.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 50, 60), dtype=np.uint8)
    with rasterio.open(tif, "w", driver="GTiff", width=60, height=50, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(20.0, 60.0, 0.05, 0.05)) as ds:
        ds.write(data)
    pts = tmp_path / "pts.csv"
    pts.write_text("id,lat,lon\na,59.0,21.0\nb,58.5,22.0\nout,10.0,10.0\n")
    r = subprocess.run([sys.executable, "-m", "geoscope", "tiles", str(tif), "--points", str(pts), "-o",
                        str(tmp_path / "t"), "--size-km", "10", "--pixels", "16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 tiles written, 1 skipped" in r.stdout
    from geoscope.data.datasets import open_dataset

    ds = open_dataset(str(tmp_path / "t" / "manifest.csv"))
    samples = list(ds)
    assert sorted(s.id for s in samples) == ["a", "b"]
    assert ds.load_image(samples[0]).size == (16, 16)


def test_tiles_bbox_of_a_plain_image_is_lat_first_and_the_old_bounds_still_work(tmp_path, capsys):
    from PIL import Image

    from geoscope.cli import main

    # a plain image covering 50..60 N, 10..30 E: colour changes west to east and south to north
    h, w = 100, 200
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    png = tmp_path / "plain.png"
    Image.fromarray(img).save(png)
    pts = tmp_path / "pts.csv"
    pts.write_text("id,lat,lon\nsw,51.0,12.0\nne,59.0,28.0\n")
    new = ["tiles", str(png), "--points", str(pts), "--size-km", "20", "--pixels", "8", "--json", "--no-progress"]
    assert main([*new, "-o", str(tmp_path / "a"), "--bbox", "50,10,60,30"]) == 0
    assert json.loads(capsys.readouterr().out)["tiles"] == 2
    sw = np.asarray(Image.open(tmp_path / "a" / "tiles" / "sw.jpg"), dtype=float).mean(axis=(0, 1))
    ne = np.asarray(Image.open(tmp_path / "a" / "tiles" / "ne.jpg"), dtype=float).mean(axis=(0, 1))
    assert ne[0] > sw[0] + 100  # red grows eastwards: the east tile is right of the west one
    assert sw[1] > ne[1] + 100  # green grows downwards (southwards): the south tile is lower
    assert main([*new, "--out", str(tmp_path / "b"), "--bounds", "10,50,30,60"]) == 0  # old: WEST,SOUTH,EAST,NORTH
    assert capsys.readouterr().err.count("deprecated") == 2
    for name in ("sw.jpg", "ne.jpg"):
        assert (tmp_path / "a" / "tiles" / name).read_bytes() == (tmp_path / "b" / "tiles" / name).read_bytes()
    with pytest.raises(SystemExit) as exc:
        main([*new, "-o", str(tmp_path / "c"), "--bbox", "50,170,60,-170"])
    assert exc.value.code == 2 and "antimeridian" in capsys.readouterr().err

import subprocess
import sys

import numpy as np
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

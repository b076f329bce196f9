"""geoscope demo --quick: the whole pipeline on real Blue Marble tiles, and its stage cache."""

import json
import subprocess
import sys
import time


def test_quick_demo_runs_end_to_end_and_reuses_its_cache(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "geoscope", "demo", "--quick", "--out", str(out), "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    first = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    land = report["results"]["land"]
    names = set(land)
    assert {"hybrid (classify + refine)", "baseline: training mean", "baseline: NN raw pixels",
            "baseline: NN encoder features"} <= names
    for res in land.values():
        assert res["n"] == report["n_test"]["land"] and 0 <= res["acc_2500km"] <= 1
    # the trained model beats predicting the training mean even in the tiny quick setting
    assert land["hybrid (classify + refine)"]["median_km"] < land["baseline: training mean"]["median_km"]
    assert (out / "model" / "config.json").exists() and (out / "report.txt").exists()
    assert report["heatmaps"] and all((out / h.split("/")[-1]).exists() for h in report["heatmaps"])
    # second run: every stage comes from the cache
    t0 = time.perf_counter()
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    second = time.perf_counter() - t0
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "load cached model" in r2.stderr
    assert json.loads(r2.stdout)["results"] == report["results"]
    assert second < first

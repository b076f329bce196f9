"""geoscope crossview demo, end to end on the real basemap rasters with the cheap test encoder: the report's
keys and ranges, the plots, the cache (a second run trains nothing), and the coverage rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

import _crossviewfixtures  # noqa: F401  (registers test-thumbs)
from geoscope.crossview.demo import CrossViewDemoConfig, check_coverage, run_crossview_demo
from geoscope.errors import InputError

TINY = dict(encoder="test-thumbs", n_train=60, n_test=8, size_km=3000.0, pixels=32, views=1, rotations=2, epochs=2,
            batch_size=32, jitter_km=100.0, n_examples=2, progress=False)


@pytest.mark.slow
def test_demo_runs_caches_and_reports(tmp_path):
    cfg = CrossViewDemoConfig(out=str(tmp_path / "xv"), **TINY)
    rep = run_crossview_demo(cfg)
    for key in ("recall@1", "recall@5", "recall@10", "within_200km"):
        assert 0.0 <= rep[key] <= 1.0
        assert 0.0 <= rep["baseline"][key] <= 1.0
    assert rep["recall@1"] <= rep["recall@5"] <= rep["recall@10"]
    assert rep["median_km"] > 0 and rep["n_queries"] == 8 and rep["gallery_size"] == 60
    assert rep["results"]["oracle: nearest reference tile"]["recall@1"] == 1.0
    for plot in rep["plots"]:
        assert plot.endswith(".png") and (tmp_path / "xv" / plot.split("/")[-1]).stat().st_size > 1000
    assert json.loads((tmp_path / "xv" / "report.json").read_text())["recall@1"] == rep["recall@1"]
    # the second run loads the cached model and stores, and says the same
    again = run_crossview_demo(cfg)
    assert "load cached model" in again["timings_s"]
    assert again["recall@1"] == rep["recall@1"] and again["median_km"] == pytest.approx(rep["median_km"])


def test_queries_outside_every_reference_tile_are_one_sentence():
    gallery = np.array([[0.0, 0.0], [0.0, 10.0]])
    check_coverage(np.array([0.0]), np.array([5.0]), gallery, 800.0)
    with pytest.raises(InputError, match=r"query 1 at \(40\.000, 40\.000\) lies outside every reference tile"):
        check_coverage(np.array([0.0, 40.0]), np.array([5.0, 40.0]), gallery, 800.0)

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
            batch_size=32, jitter_km=100.0, n_examples=2, n_near=60, progress=False, verify_pairs=40,
            verify_steps=20, verify_top_k=5, verify_rotations=8, verify_dim=8, verify_hidden=16)


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
    assert not any(stage.startswith("fit the verifier") for stage in again["timings_s"])  # saved with the model
    assert rep["verifier"]["fit"]["pairs"] == 40 and rep["global_only"]["recall@1"] <= 1.0
    assert (rep["verifier"]["config"]["dim"], rep["verifier"]["config"]["hidden"]) == (8, 16)  # the demo's twin size
    assert again["recall@1"] == rep["recall@1"] and again["median_km"] == pytest.approx(rep["median_km"])


def test_queries_outside_every_reference_tile_are_one_sentence():
    gallery = np.array([[0.0, 0.0], [0.0, 10.0]])
    check_coverage(np.array([0.0]), np.array([5.0]), gallery, 800.0)
    with pytest.raises(InputError, match=r"query 1 at \(40\.000, 40\.000\) lies outside every reference tile"):
        check_coverage(np.array([0.0, 40.0]), np.array([5.0, 40.0]), gallery, 800.0)


@pytest.mark.slow  # about 10 s: the land mask and the raster are read
def test_no_training_query_tile_lies_within_the_guard_of_a_held_out_query():
    from geoscope.crossview.demo import covered_queries, guard_violations, training_pairs
    from geoscope.data.overhead import open_raster
    from geoscope.demo import train_positions
    from geoscope.geo.sphere import pairwise_km

    cfg = CrossViewDemoConfig(**{**TINY, "n_train": 300, "n_test": 40, "size_km": 800.0, "jitter_km": 150.0,
                                 "n_near": 400})
    raster = open_raster("bmng")  # one raster for both sides: only positions matter here (tiles are cut lazily)
    q_lat, q_lon, _, _ = covered_queries(cfg.n_test, cfg.seed, np.stack(train_positions(cfg.n_train), 1), cfg.size_km)
    pairs = training_pairs(cfg, raster, raster, q_lat, q_lon)
    assert guard_violations(pairs, q_lat, q_lon, 150.0) == 0
    # the guard bites: lattice pairs whose jittered query tile came near a query only give their reference ...
    only = ~pairs.trainable()
    assert 0 < only.sum() < 300 and not only[300:].any()
    # ... and the gallery still holds every lattice tile; every extra place found a lattice tile as reference
    ids, first = pairs.gallery()
    assert len(ids) == 300 and first.tolist() == list(range(300))
    assert len(pairs) > 300 + 300 and set(pairs.ref_ids()[300:]) <= set(ids)
    # an extra place's reference is its nearest lattice tile, and the place itself keeps out of the guard
    ql, qn = pairs.query_centres()
    lat, lon = train_positions(cfg.n_train)
    nearest = pairwise_km(ql[300:], qn[300:], lat, lon).argmin(1)
    assert [pairs.ids[j] for j in nearest] == pairs.ref_ids()[300:]
    assert pairwise_km(ql[300:], qn[300:], q_lat, q_lon).min() > 150.0
    # a wider guard than the one used finds the tiles just outside it
    assert guard_violations(pairs, q_lat, q_lon, 400.0) > 0


def test_a_query_seed_draws_a_validation_split_apart_from_the_test_queries():
    from geoscope.crossview.demo import covered_queries
    from geoscope.demo import train_positions

    test_cfg, val_cfg = CrossViewDemoConfig(**TINY), CrossViewDemoConfig(**{**TINY, "query_seed": 1})
    assert test_cfg.queries_seed == test_cfg.seed == 0 and val_cfg.queries_seed == 1 and val_cfg.seed == 0
    lattice = np.stack(train_positions(300), 1)
    test = covered_queries(40, test_cfg.queries_seed, lattice, 800.0)
    val = covered_queries(40, val_cfg.queries_seed, lattice, 800.0)
    assert not np.isin(val[0], test[0]).any() and not np.allclose(val[2], test[2])  # other places and headings

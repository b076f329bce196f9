"""The training loop: resume after interruption gives the same model, early stopping, seeds, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _features import location_features

from geoscope.errors import InputError
from geoscope.geo.cells import CellHierarchy, Geocells, save_cells
from geoscope.geo.metrics import evaluate
from geoscope.heads import create_head
from geoscope.store import EmbeddingStore
from geoscope.train import (
    TrainConfig,
    fit_head,
    make_targets,
    predict_coords,
    split_indices,
    train_from_store,
)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(5)
    n = 600
    lat = rng.uniform(-50, 60, n)
    lon = rng.uniform(-170, 170, n)
    cells = CellHierarchy.adaptive(lat, lon, 5, [80, 25])
    return lat, lon, torch.from_numpy(location_features(lat, lon, dim=24)), cells


def _fit(small, ckpt=None, log=None, epochs=4, seed=0, patience=10):
    lat, lon, emb, cells = small
    targets = make_targets(lat, lon, cells)
    torch.manual_seed(seed)
    head = create_head("classifier", emb.shape[1], cells, hidden=32)
    cfg = TrainConfig(epochs=epochs, batch_size=64, seed=seed, patience=patience)
    result = fit_head(head, emb[:500], targets.take(slice(0, 500)), emb[500:], targets.take(slice(500, None)),
                      cfg, checkpoint=ckpt, progress=False, log=log)
    return head, result


def test_resume_after_interruption_matches_an_uninterrupted_run(small, tmp_path):
    ref_head, ref = _fit(small)
    ckpt = tmp_path / "checkpoint.pt"

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(small, ckpt, log=interrupt)
    assert ckpt.exists()  # epoch 1's checkpoint; the interrupt came before epoch 2's was written
    seen = []
    head, result = _fit(small, ckpt, log=seen.append)
    assert [r["epoch"] for r in seen] == [2, 3, 4]
    assert [r["val_median_km"] for r in result.history] == pytest.approx([r["val_median_km"] for r in ref.history])
    for k, v in ref_head.state_dict().items():
        torch.testing.assert_close(head.state_dict()[k], v, rtol=0, atol=0)
    # a finished run resumes to nothing and returns the same model
    again, _ = _fit(small, ckpt, log=seen.append)
    assert len(seen) == 3
    for k, v in ref_head.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)


def test_checkpoint_from_other_settings_is_refused(small, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    _fit(small, ckpt, epochs=2)
    with pytest.raises(InputError, match="another head, data or settings"):
        _fit(small, ckpt, epochs=3)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read the training checkpoint"):
        _fit(small, ckpt, epochs=2)


def test_seeds_make_runs_repeatable_and_differ_between_seeds(small):
    a, _ = _fit(small, epochs=2, seed=1)
    b, _ = _fit(small, epochs=2, seed=1)
    c, _ = _fit(small, epochs=2, seed=2)
    w = "level_heads.1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_early_stopping_keeps_the_best_epoch(small):
    lat, lon, emb, cells = small
    targets = make_targets(lat, lon, cells)
    torch.manual_seed(0)
    head = create_head("classifier", emb.shape[1], cells, hidden=32)
    cfg = TrainConfig(epochs=40, batch_size=64, patience=2, lr=0.05)
    result = fit_head(head, emb[:500], targets.take(slice(0, 500)), emb[500:], targets.take(slice(500, None)),
                      cfg, progress=False)
    medians = [r["val_median_km"] for r in result.history]
    assert result.stopped_early and len(medians) < 40
    assert result.best_epoch == int(np.argmin(medians)) + 1
    assert len(medians) - result.best_epoch == 2
    # the head returned holds the best epoch's weights, not the last epoch's
    pred = predict_coords(head, emb[500:])
    final = evaluate(pred[:, 0], pred[:, 1], np.float32(lat[500:]), np.float32(lon[500:]))["median_km"]
    assert final == pytest.approx(medians[result.best_epoch - 1], rel=1e-9)  # scored as the loop does
    assert final < medians[-1]


def test_split_is_seeded_and_disjoint():
    tr, va = split_indices(100, 0.2, seed=3)
    tr2, va2 = split_indices(100, 0.2, seed=3)
    assert np.array_equal(va, va2) and len(va) == 20 and not set(tr) & set(va)
    assert not np.array_equal(va, split_indices(100, 0.2, seed=4)[1])
    with pytest.raises(InputError, match="at least 2 samples"):
        split_indices(1, 0.2, 0)


def test_store_without_coordinates_or_with_foreign_cells_is_refused(small, tmp_path):
    lat, lon, emb, cells = small
    store = EmbeddingStore.from_arrays(tmp_path / "nocoords", range(len(emb)), emb.numpy(), encoder="x")
    with pytest.raises(InputError, match="no coordinates"):
        train_from_store(store, "regressor", tmp_path / "m1", progress=False)
    good = EmbeddingStore.from_arrays(tmp_path / "good", range(len(emb)), emb.numpy(), lat, lon, encoder="x")
    elsewhere = Geocells.grid((-89, 100, -80, 110), 2, 2)  # covers none of the points
    save_cells(elsewhere, tmp_path / "cells.json")
    with pytest.raises(InputError, match="outside the given cells"):
        train_from_store(good, "classifier", tmp_path / "m2", cells=tmp_path / "cells.json", progress=False)
    with pytest.raises(InputError, match="needs geocells"):
        train_from_store(good, "hybrid", tmp_path / "m3", progress=False)


def test_scene_column_becomes_an_auxiliary_head(small, tmp_path):
    lat, lon, emb, cells = small
    store = EmbeddingStore.from_arrays(tmp_path / "s", range(len(emb)), emb.numpy(), lat, lon, encoder="x")
    meta = store.meta.copy()
    meta["scene"] = np.where(lat > 0, "urban", "natural").astype(object)
    meta.loc[::7, "scene"] = None
    meta.to_parquet(store.path / "meta.parquet")
    save_cells(cells, tmp_path / "cells.json")
    geo, result = train_from_store(tmp_path / "s", "classifier", tmp_path / "m", cells=tmp_path / "cells.json",
                                   config=TrainConfig(epochs=3, batch_size=128), progress=False)
    assert geo.head.scene_labels == ["natural", "urban"]
    pred = geo.locate_embeddings(emb[:4].numpy(), top_k=2)
    assert set(pred[0].extra["scene_probs"]) == {"natural", "urban"}
    lines = (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert result.report["validation"]["n"] == result.report["n_val"] == 60

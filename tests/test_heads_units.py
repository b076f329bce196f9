"""Heads over plain arrays: label smoothing, hierarchy, losses, gallery search, refinement, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoscope.errors import InputError
from geoscope.geo.cells import CellHierarchy, Geocells
from geoscope.geo.metrics import evaluate
from geoscope.geo.sphere import EARTH_RADIUS_KM, haversine_km
from geoscope.heads import build_head, create_head
from geoscope.heads.base import great_circle_km, latlon_to_unit, load_head_state
from geoscope.heads.classifier import ClassifierHead, ancestors_from_parents
from geoscope.heads.hybrid import HybridHead
from geoscope.heads.regressor import RegressorHead
from geoscope.heads.retrieval import RetrievalHead, grid_gallery
from geoscope.train import TrainConfig, fit_head, make_targets, predict_coords

from _features import location_features


def assert_keeps_best_epoch(result, head, emb, lat, lon):
    """The trained head holds the weights of its best epoch: its validation median is that epoch's record,
    and that record is the lowest of the run."""
    medians = [r["val_median_km"] for r in result.history]
    assert result.best_epoch == int(np.argmin(medians)) + 1, (result.best_epoch, medians)
    pred = predict_coords(head, emb)
    # scored like the training loop does: against float32 copies of the true coordinates
    now = evaluate(pred[:, 0], pred[:, 1], np.float32(lat), np.float32(lon))["median_km"]
    assert now == pytest.approx(medians[result.best_epoch - 1], rel=1e-9), (now, medians)
    return now


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 2000
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.9, n)))
    lon = rng.uniform(-180, 180, n)
    cells = CellHierarchy.adaptive(lat, lon, 5, [150, 40])
    return lat, lon, torch.from_numpy(location_features(lat, lon)), cells


def test_soft_targets_follow_pigeon_haversine_smoothing():
    centroids = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [-30.0, 100.0]])
    head = ClassifierHead(4, [centroids], tau_km=300.0)
    lat, lon = np.array([1.0, -20.0]), np.array([2.0, 90.0])
    got = head.soft_targets(0, latlon_to_unit(torch.tensor(lat), torch.tensor(lon)).float()).double().numpy()
    for i in range(2):
        d = haversine_km(centroids[:, 0], centroids[:, 1], lat[i], lon[i])
        true_cell = int(np.argmin(d))
        ref = np.exp(-(d - d[true_cell]) / 300.0)
        np.testing.assert_allclose(got[i], ref / ref.sum(), rtol=2e-3, atol=1e-6)
    units = latlon_to_unit(torch.tensor(lat), torch.tensor(lon)).float()
    sharper = ClassifierHead(4, [centroids], tau_km=30.0).soft_targets(0, units)
    assert sharper.max(1).values.min() > torch.as_tensor(got).max(1).values.min()


def test_hierarchical_combination_multiplies_parent_probabilities():
    coarse = np.array([[0.0, 0.0], [0.0, 90.0]])
    fine = np.array([[0.0, -10.0], [0.0, 10.0], [0.0, 80.0], [0.0, 100.0], [5.0, 95.0]])
    parents = [None, np.array([0, 0, 1, 1, 1])]
    torch.manual_seed(0)
    head = ClassifierHead(6, [coarse, fine], parents).eval()
    emb = torch.randn(3, 6)
    logits = [x.detach() for x in head(emb)]
    p0, p1 = torch.softmax(logits[0], 1), torch.softmax(logits[1], 1)
    manual = p1 * p0[:, parents[1]]
    manual = manual / manual.sum(1, keepdim=True)
    out = head.predict(emb, top_k=5)
    np.testing.assert_allclose(out.cell_probs, manual.double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.cell_probs.sum(1), 1.0, rtol=1e-9)
    assert np.allclose(out.coords[:, 0], fine[out.cells[:, 0]])
    assert (np.diff(out.scores, axis=1) <= 1e-12).all()


def test_ancestors_compose_parent_maps_and_reject_bad_ones():
    anc = ancestors_from_parents([None, np.array([0, 0, 1]), np.array([2, 1, 0, 0])], [2, 3, 4])
    assert anc.tolist() == [[1, 0, 0, 0], [2, 1, 0, 0], [0, 1, 2, 3]]
    with pytest.raises(InputError, match="parent indices outside"):
        ancestors_from_parents([None, np.array([0, 5])], [2, 2])


def test_classifier_and_scene_head_learn(data):
    lat, lon, emb, cells = data
    rng = np.random.default_rng(0)
    scene = np.where(lat > 20, 1, 0)
    scene[rng.random(len(lat)) < 0.2] = -1  # unknown for some samples
    targets = make_targets(lat, lon, cells, scene)
    torch.manual_seed(0)
    head = create_head("classifier", emb.shape[1], cells, scene_labels=["south", "north"], hidden=64)
    tr, va = slice(0, 1600), slice(1600, None)
    result = fit_head(head, emb[tr], targets.take(tr), emb[va], targets.take(va),
                      TrainConfig(epochs=12, batch_size=256), progress=False)
    median = assert_keeps_best_epoch(result, head, emb[va], lat[va], lon[va])
    assert median < 1500, median
    out = head.predict(emb[va], top_k=3)
    acc = (out.extra["scene_probs"].argmax(1) == np.where(lat[va] > 20, 1, 0)).mean()
    assert acc > 0.85, acc


def test_regressor_great_circle_loss_and_modes(data):
    a = latlon_to_unit(torch.tensor([10.0, -45.0]), torch.tensor([20.0, 170.0]))
    b = latlon_to_unit(torch.tensor([11.0, 45.0]), torch.tensor([21.0, -10.0]))
    ref = haversine_km([10, -45], [20, 170], [11, 45], [21, -10])
    np.testing.assert_allclose(great_circle_km(a, b).numpy(), ref, rtol=1e-4)
    lat, lon, emb, _ = data
    targets = make_targets(lat, lon)
    tr, va = slice(0, 1600), slice(1600, None)
    medians = {}
    for mode in ("sphere", "latlon"):
        torch.manual_seed(0)
        head = RegressorHead(emb.shape[1], d_model=32, n_heads=2, mode=mode)
        result = fit_head(head, emb[tr], targets.take(tr), emb[va], targets.take(va),
                          TrainConfig(epochs=10, batch_size=128), progress=False)
        pred = head.predict(emb[va]).coords[:, 0]
        assert (np.abs(pred[:, 0]) <= 90).all() and (np.abs(pred[:, 1]) <= 180).all()
        medians[mode] = assert_keeps_best_epoch(result, head, emb[va], lat[va], lon[va])
        losses = [r["loss"] for r in result.history]
        assert losses[-1] < 0.5 * losses[0], (mode, losses)  # each mode's own loss goes down
    # predicting the training mean gives ~9,800 km here; both modes learn, and the great-circle
    # loss on the sphere beats plain lat/lon regression (which distorts distances away from the equator)
    assert medians["sphere"] < 1000 and medians["latlon"] < 2500, medians
    assert medians["sphere"] < medians["latlon"], medians
    # tokens (B, T, D) are accepted as well as pooled embeddings
    tokens = torch.randn(4, 7, emb.shape[1])
    assert head.predict(tokens).coords.shape == (4, 1, 2)
    with pytest.raises(InputError, match="expects 48-dimensional"):
        head.predict(np.zeros((2, 5), np.float32))


def test_retrieval_gallery_is_data_and_cached(data):
    lat, lon, emb, _ = data
    targets = make_targets(lat, lon)
    torch.manual_seed(0)
    head = RetrievalHead(emb.shape[1], hidden_dims=(64,), queue_size=256,
                         location_encoder={"sigmas": [1.0, 8.0], "n_freq": 32, "hidden": 64, "depth": 1, "out_dim": 32})
    tr, va = slice(0, 1600), slice(1600, None)
    fit_head(head, emb[tr], targets.take(tr), emb[va], targets.take(va), TrainConfig(epochs=8, batch_size=128),
             progress=False)
    assert len(head.gps_queue) == 256
    assert len(head.gallery) == 1600  # the training coordinates
    pred = predict_coords(head, emb[va])
    assert np.median(haversine_km(pred[:, 0], pred[:, 1], lat[va], lon[va])) < 2500
    g1 = head.gallery_embeddings()
    assert head.gallery_embeddings() is g1  # cached, not recomputed
    # adding entries needs no retraining and only embeds the new ones
    extra = grid_gallery((-10, -10, 10, 10), 5.0)
    head.add_to_gallery(extra)
    fresh = RetrievalHead.from_config(head.config())
    load_head_state(fresh, head.state_dict())
    torch.testing.assert_close(head.gallery_embeddings(), fresh.eval().gallery_embeddings(), rtol=1e-5, atol=1e-6)
    out = head.predict(emb[va][:3], top_k=4)
    assert out.support.shape == (1600 + len(extra), 2) and out.support_probs.shape == (3, 1600 + len(extra))
    np.testing.assert_allclose(out.support_probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(InputError, match="row 0"):
        head.set_gallery([[95.0, 0.0]])


def test_geoclip_head_is_an_instance():
    head = RetrievalHead.from_geoclip(gallery=[[48.85, 2.35], [35.68, 139.7]])
    assert head.config()["hidden_dims"] == [768] and head.out_dim == 512 and head.in_dim == 768
    assert head.logit_scale.exp().item() > 10
    out = head.predict(np.random.default_rng(0).normal(size=(2, 768)).astype(np.float32), top_k=2)
    assert out.coords.shape == (2, 2, 2)
    # a trainable head can start from the published location encoder and still round-trip
    fresh = RetrievalHead(64, hidden_dims=(), location_encoder="geoclip")
    torch.testing.assert_close(fresh.location_encoder.state_dict()["branches.0.freqs"],
                               head.location_encoder.state_dict()["branches.0.freqs"])
    assert fresh.out_dim == 512 and build_head(fresh.config()).location_encoder.sigmas == (1.0, 16.0, 256.0)


def test_hybrid_refines_inside_the_chosen_cells(data):
    lat, lon, emb, cells = data
    targets = make_targets(lat, lon, cells)
    torch.manual_seed(0)
    head = create_head("hybrid", emb.shape[1], cells, hidden=64, k_neighbors=5)
    assert isinstance(head, HybridHead)
    tr, va = slice(0, 1600), slice(1600, None)
    fit_head(head, emb[tr], targets.take(tr), emb[va], targets.take(va), TrainConfig(epochs=8, batch_size=256),
             progress=False)
    out = head.predict(emb[va], top_k=3)
    flat = out.coords.reshape(-1, 2)
    assigned = cells.finest.assign(flat[:, 0], flat[:, 1]).reshape(out.cells.shape)
    assert (assigned == out.cells).all()  # every refined guess stays in its cell
    classifier_only = ClassifierHead.predict(head, emb[va], top_k=1).coords[:, 0]
    hybrid_err = np.median(haversine_km(out.coords[:, 0, 0], out.coords[:, 0, 1], lat[va], lon[va]))
    class_err = np.median(haversine_km(classifier_only[:, 0], classifier_only[:, 1], lat[va], lon[va]))
    assert hybrid_err < class_err
    # the matches of all images at once (each cell's bank converted once, in bounded products) are the
    # matches of each image and cell alone, computed here directly from the cell's bank
    def alone(query, cell):
        s, e = int(head.bank_offsets[cell]), int(head.bank_offsets[cell + 1])
        if e <= s:
            return None
        top, idx = (head.bank_emb[s:e].float() @ query).topk(min(head.k_neighbors, e - s))
        return top.double().numpy(), head.bank_latlon[s:e][idx].double().numpy()

    queries = head._bank_vectors(emb[va][:40])
    cand = out.cells[:40]
    for budget in (1 << 24, 7):
        every = head._all_matches(queries, cand, budget=budget)
        for b in range(len(cand)):
            for j, c in enumerate(cand[b]):
                one, many = alone(queries[b], int(c)), every[b][j]
                assert (one is None) == (many is None)
                if one is not None:
                    np.testing.assert_allclose(many[0], one[0], atol=1e-5)
                    np.testing.assert_allclose(many[1][0], one[1][0])


@pytest.mark.parametrize("kind", ["classifier", "hybrid", "regressor", "retrieval"])
def test_build_head_round_trip_gives_identical_predictions(kind, data):
    lat, lon, emb, cells = data
    torch.manual_seed(1)
    opts = {"retrieval": {"location_encoder": {"sigmas": [1.0], "n_freq": 8, "hidden": 16, "depth": 1, "out_dim": 16}},
            "regressor": {"d_model": 16, "n_heads": 2}}.get(kind, {})
    head = create_head(kind, emb.shape[1], cells, **opts)
    head.on_train_start(emb[:500], make_targets(lat[:500], lon[:500], cells))
    head.fit_data(emb[:500], make_targets(lat[:500], lon[:500], cells))
    again = build_head(head.config())
    load_head_state(again, head.state_dict())
    if hasattr(again, "bind_cells"):  # as Geolocator.from_pretrained does: cells travel beside the weights
        again.bind_cells(cells)
    a, b = head.predict(emb[500:520], top_k=3), again.predict(emb[500:520], top_k=3)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_bad_head_arguments():
    with pytest.raises(InputError, match="unknown head kind"):
        build_head({"kind": "oracle"})
    with pytest.raises(InputError, match="needs geocells"):
        create_head("classifier", 8, None)
    with pytest.raises(InputError, match="bad option for the regressor head"):
        create_head("regressor", 8, None, depth=3)
    with pytest.raises(InputError, match="tau_km"):
        ClassifierHead(8, [np.zeros((2, 2))], tau_km=0)
    with pytest.raises(InputError, match="mode"):
        RegressorHead(8, mode="polar")
    assert math.isclose(EARTH_RADIUS_KM, 6371.0088)
    grid = Geocells.grid((0, 0, 10, 10), 2, 2)
    assert create_head("classifier", 8, grid).n_cells == 4


def test_sparse_precomputed_targets_match_the_dense_loss(data):
    lat, lon, emb, cells = data
    torch.manual_seed(0)
    head = create_head("classifier", emb.shape[1], cells, tau_km=75.0)
    targets = make_targets(lat, lon, cells)
    head.on_train_start(emb, targets)
    sparse = head.prepare_targets(targets)
    head.eval()  # no dropout: both losses see the same features
    assert sparse.extra["soft_idx_1"].shape == (len(lat), 32)
    with torch.no_grad():
        dense_loss = head.loss(emb[:500], targets.take(slice(0, 500)))
        sparse_loss = head.loss(emb[:500], sparse.take(slice(0, 500)))
    assert float(sparse_loss) == pytest.approx(float(dense_loss), rel=1e-5)

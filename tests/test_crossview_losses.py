"""The cross-view losses on hand-computed toy batches, and hard-negative mining."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoscope.heads.crossview.losses import hardest_negatives, info_nce, same_place_loss, triplet_loss
from geoscope.heads.crossview.mining import (
    nearest_positions,
    proximity_batches,
    same_place_mask,
    similarity_negatives,
)


def test_info_nce_matches_hand_computation():
    # two orthogonal pairs: q0 = r0 = e0, q1 = r1 = e1; scale = 1 (logit_scale 0)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = info_nce(q, q.clone(), torch.tensor(0.0))
    # each row: logits [1, 0] -> CE = -log(e / (e + 1))
    expected = -math.log(math.e / (math.e + 1))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_symmetric_and_temperature_sharpens():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]), dim=1)
    r = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    assert float(info_nce(q, r, torch.tensor(0.0))) == pytest.approx(float(info_nce(r, q, torch.tensor(0.0))), rel=1e-6)
    # correct pairs are the most similar, so a lower temperature (higher scale) lowers the loss
    assert float(info_nce(q, r, torch.tensor(3.0))) < float(info_nce(q, r, torch.tensor(0.0)))
    # the scale is capped at 100 (temperature 0.01)
    assert float(info_nce(q, r, torch.tensor(50.0))) == pytest.approx(float(info_nce(q, r, torch.tensor(4.6052))), rel=1e-5)


def test_info_nce_extra_negative_and_same_place_mask():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    base = float(info_nce(q, q.clone(), torch.tensor(0.0)))
    # an extra reference identical to q0 is a hard negative: q->r CE for row 0 becomes -log(e / (e + 1 + e))
    extra = torch.tensor([[1.0, 0.0]])
    row0 = -math.log(math.e / (2 * math.e + 1))
    row1 = -math.log(math.e / (math.e + 1 + 1))  # q1 . extra = 0 -> exp(0) = 1
    sym = -math.log(math.e / (math.e + 1))
    expected = 0.5 * ((row0 + row1) / 2 + sym)
    assert float(info_nce(q, q.clone(), torch.tensor(0.0), extra_refs=extra)) == pytest.approx(expected, rel=1e-6)
    # when both rows are the same place, neither is the other's negative: the loss is 0
    same = torch.ones(2, 2, dtype=torch.bool)
    assert float(info_nce(q, q.clone(), torch.tensor(0.0), same=same)) == pytest.approx(0.0, abs=1e-6)
    assert base > 0


def test_triplet_loss_hand_computed():
    # q0 . r0 = 1, q0 . r1 = 0.6; q1 . r1 = 0.8, q1 . r0 = 0 (unit vectors)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # q->r gaps: row0 0.6 - 1 = -0.4, row1 0 - 0.8 = -0.8; r->q: r0 vs q1: 0 - 1 = -1, r1 vs q0: 0.6 - 0.8 = -0.2
    gaps = torch.tensor([-0.4, -0.8, -1.0, -0.2])
    assert float(triplet_loss(q, r, margin=0.5)) == pytest.approx(float(torch.relu(0.5 + gaps).mean()), rel=1e-6)
    assert float(triplet_loss(q, r, margin=0.5)) == pytest.approx((0.1 + 0 + 0 + 0.3) / 4, rel=1e-5)
    soft = float(triplet_loss(q, r, soft=True))
    assert soft == pytest.approx(float(torch.nn.functional.softplus(10 * gaps).mean()), rel=1e-6)


def test_hardest_negative_skips_self_and_same_place():
    sim = torch.tensor([[1.0, 0.9, 0.5], [0.2, 1.0, 0.3], [0.8, 0.1, 1.0]])
    assert hardest_negatives(sim).tolist() == [1, 2, 0]
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    assert hardest_negatives(sim, same).tolist() == [2, 2, 0]


def test_same_place_loss_is_bce():
    logits = torch.tensor([2.0, -1.0])
    labels = torch.tensor([1, 0])
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 - 1 / (1 + math.exp(1)))) / 2
    assert float(same_place_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_nearest_positions_returns_nearby_places():
    # a cluster around Paris, one around Sydney, one around Lima
    lat = np.array([48.85, 48.90, 48.80, -33.87, -33.80, -12.05])
    lon = np.array([2.35, 2.30, 2.40, 151.21, 151.10, -77.04])
    knn = nearest_positions(lat, lon, 2)
    assert set(knn[0]) == {1, 2} and set(knn[1]) == {0, 2}
    assert knn[3, 0] == 4 and knn[4, 0] == 3
    # min_km leaves out views of the same place: 0 and 2 are ~8 km apart
    knn = nearest_positions(lat, lon, 1, min_km=20.0)
    assert knn[0, 0] not in (1, 2)


def test_proximity_batches_group_neighbours_and_cover_every_row():
    rng = np.random.default_rng(0)
    centres = np.array([[50, 10], [-30, 140], [40, -100], [0, 30]])
    lat = np.concatenate([c[0] + rng.normal(0, 0.5, 8) for c in centres])
    lon = np.concatenate([c[1] + rng.normal(0, 0.5, 8) for c in centres])
    batches = proximity_batches(lat, lon, batch_size=8, seed=1, neighbours=3)
    allrows = np.concatenate(batches)
    assert sorted(allrows.tolist()) == list(range(32))
    cluster = np.repeat(np.arange(4), 8)

    def same_cluster_share(bs):  # share of batch-mate pairs from one cluster (random batches: 7/31 = 0.23)
        shares = [(cluster[b][:, None] == cluster[b][None]).sum() - len(b) for b in bs]
        return sum(shares) / sum(len(b) * (len(b) - 1) for b in bs)

    random = proximity_batches(lat, lon, batch_size=8, seed=1, neighbours=0)
    assert sorted(np.concatenate(random).tolist()) == list(range(32))
    # anchors bring their neighbours: batches hold far more places of one cluster than random batches
    # (groups of 4 in batches of 8: at most 2 x 12 of 56 pairs, 0.43)
    assert same_cluster_share(batches) >= 0.35 > same_cluster_share(random) + 0.1


def test_similarity_negatives_and_same_place_mask():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    neg = similarity_negatives(q, r, 1)
    assert neg[:, 0].tolist() == [2, 2, 0] or neg[:, 0].tolist() == [2, 2, 1]
    mask = same_place_mask(np.array([10.0, 10.001, 50.0]), np.array([20.0, 20.0, 20.0]), 1.0)
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]

"""The voting neighbours head: a region many gallery entries match outvotes one lookalike far away."""

import numpy as np
import pytest
import torch

from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km
from geoscope.heads import build_head
from geoscope.heads.base import Targets, load_head_state
from geoscope.heads.neighbours import NeighboursHead


def _bank():
    rng = np.random.default_rng(0)
    q = rng.normal(size=16)
    q /= np.linalg.norm(q)
    other = rng.normal(size=(40, 16))
    other -= np.outer(other @ q, q)  # orthogonal to the query: similarity 0
    other /= np.linalg.norm(other, axis=1, keepdims=True)

    def at(sim):  # a unit vector with cosine ``sim`` to q
        return sim * q + np.sqrt(1 - sim**2) * other[len(vecs)]

    vecs, lat, lon = [], [], []
    # one lookalike in Australia, slightly the most similar
    vecs.append(at(0.95))
    lat.append(-25.0)
    lon.append(135.0)
    # five entries around (48, 10) within 100 km, nearly as similar
    for k, (dla, dlo) in enumerate([(0, 0), (0.5, 0), (-0.5, 0), (0, 0.7), (0, -0.7)]):
        vecs.append(at(0.93 - 0.001 * k))
        lat.append(48.0 + dla)
        lon.append(10.0 + dlo)
    # unrelated entries elsewhere
    for k in range(20):
        vecs.append(at(0.2))
        lat.append(-50.0 + 5 * k)
        lon.append(-120.0 + 3 * k)
    return q, np.array(vecs, dtype=np.float32), np.array(lat), np.array(lon)


def _head(**kw):
    q, vecs, lat, lon = _bank()
    head = NeighboursHead(16, k_neighbors=10, **kw)
    head.fit_data(torch.from_numpy(vecs), Targets(torch.tensor(lat, dtype=torch.float32), torch.tensor(lon, dtype=torch.float32)))
    return head, q


def test_votes_prefer_a_supported_region_over_one_lookalike():
    head, q = _head(sim_temperature=0.05, vote_radius_km=150.0)
    out = head.predict(q[None].astype(np.float32), top_k=3)
    best = out.coords[0, 0]
    assert haversine_km(best[0], best[1], 48.0, 10.0) < 60.0  # refined inside the supported cluster
    second = out.coords[0, 1]
    assert haversine_km(second[0], second[1], -25.0, 135.0) < 1.0
    assert out.scores[0, 0] > out.scores[0, 1] > 0
    assert out.support_probs.sum(1) == pytest.approx(1.0)
    # plain nearest neighbour (a tiny temperature: only the best entry votes) takes the lookalike
    nn, _ = _head(sim_temperature=1e-4, vote_radius_km=150.0)
    b = nn.predict(q[None].astype(np.float32), top_k=1).coords[0, 0]
    assert haversine_km(b[0], b[1], -25.0, 135.0) < 1.0


def test_config_and_state_round_trip():
    head, q = _head()
    again = build_head(head.config())
    load_head_state(again, head.state_dict())
    a, b = head.predict(q[None].astype(np.float32)), again.predict(q[None].astype(np.float32))
    assert np.allclose(a.coords, b.coords) and np.allclose(a.scores, b.scores)


def test_bad_input_is_clear():
    head = NeighboursHead(16)
    with pytest.raises(InputError, match="empty gallery"):
        head.predict(np.zeros((1, 16), np.float32))
    head, _ = _head()
    with pytest.raises(InputError, match="16-dimensional"):
        head.predict(np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="k_neighbors"):
        NeighboursHead(16, k_neighbors=0)


def _two_part_bank():
    """A query of two parts (A: 4 dims, B: 4 dims) and three places: a lookalike at (0, 0) that wins the
    combined cosine on one entry, and a region at (40, 20) whose entries part A matches best."""
    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / np.linalg.norm(v)

    def emb(a, b):  # [sqrt(.5) a, sqrt(.5) b] with a, b unit: the combined cosine is the mean of the parts'
        return np.concatenate([unit(a), unit(b)]) * np.sqrt(0.5)

    q = emb([1, 0, 0, 0], [1, 0, 0, 0])
    vecs, lat, lon = [], [], []
    # the lookalike: part B identical, part A poor -> combined 0.5 * (0.55 + 1.0) = 0.775
    vecs.append(emb([0.55, np.sqrt(1 - 0.55**2), 0, 0], [1, 0, 0, 0]))
    lat.append(0.0)
    lon.append(0.0)
    # the true region: one entry with part A identical and part B fair (combined 0.5 * (1 + 0.5) = 0.75), and
    # a neighbour 111 km away (outside the 60 km vote radius, inside the re-score's 250 km) matched by neither
    vecs.append(emb([1, 0, 0, 0], [0.5, 0, np.sqrt(1 - 0.25), 0]))
    lat.append(40.0)
    lon.append(20.0)
    vecs.append(emb([0.3, 0, 0, np.sqrt(1 - 0.09)], [0.7, 0, 0, np.sqrt(1 - 0.49)]))
    lat.append(41.0)
    lon.append(20.0)
    for k in range(10):  # unrelated entries
        vecs.append(emb([0, 0, 1, 0], [0, 0, 0, 1]))
        lat.append(-40.0 + 4 * k)
        lon.append(100.0 + 3 * k)
    return q.astype(np.float32), np.array(vecs, dtype=np.float32), np.array(lat), np.array(lon)


def _two_part_head(**kw):
    q, vecs, lat, lon = _two_part_bank()
    head = NeighboursHead(8, k_neighbors=6, sim_temperature=0.04, vote_radius_km=60.0, **kw)
    head.fit_data(torch.from_numpy(vecs), Targets(torch.tensor(lat, dtype=torch.float32), torch.tensor(lon, dtype=torch.float32)))
    return head, q


def test_rescore_lets_a_part_outvote_a_lookalike_of_the_other_part():
    # votes alone: the lookalike's combined cosine is the best, so it is the first candidate
    plain, q = _two_part_head()
    out = plain.predict(q[None], top_k=3)
    assert haversine_km(*out.coords[0, 0], 0.0, 0.0) < 1.0
    # re-scored with part A weighted most: the region whose entries part A matches comes first
    head, q = _two_part_head(parts=(4, 4), rescore_weights=(0.8, 0.2), rescore_candidates=4, rescore_radius_km=250.0)
    out = head.predict(q[None], top_k=3)
    assert haversine_km(*out.coords[0, 0], 40.0, 20.0) < 60.0
    # the region's other entry is near the same best part-A cosine, so it too outranks the lookalike
    assert haversine_km(*out.coords[0, 1], 41.0, 20.0) < 60.0
    assert haversine_km(*out.coords[0, 2], 0.0, 0.0) < 1.0
    assert out.scores[0, 0] > out.scores[0, 1] > out.scores[0, 2]
    assert out.support_probs.sum(1) == pytest.approx(1.0)  # still a distribution
    # part B weighted most: the lookalike stays first
    other, _ = _two_part_head(parts=(4, 4), rescore_weights=(0.2, 0.8), rescore_candidates=4)
    assert haversine_km(*other.predict(q[None], top_k=1).coords[0, 0], 0.0, 0.0) < 1.0


def test_rescore_that_adds_nothing_leaves_the_votes_as_they_were():
    plain, q = _two_part_head()
    a = plain.predict(q[None], top_k=3)
    # all weights zero: every candidate's score is its vote share
    flat, _ = _two_part_head(parts=(4, 4), rescore_weights=(0.0, 0.0), rescore_candidates=4)
    b = flat.predict(q[None], top_k=3)
    assert np.allclose(a.coords, b.coords) and np.allclose(a.scores, b.scores)
    assert np.allclose(a.support_probs, b.support_probs)


def test_rescore_config_round_trips_and_old_configs_load():
    head, q = _two_part_head(parts=(4, 4), rescore_weights=(0.8, 0.2), rescore_candidates=4, rescore_radius_km=250.0)
    cfg = head.config()
    assert cfg["parts"] == [4, 4] and cfg["rescore_candidates"] == 4
    again = build_head(cfg)
    load_head_state(again, head.state_dict())
    a, b = head.predict(q[None], top_k=2), again.predict(q[None], top_k=2)
    assert np.allclose(a.coords, b.coords) and np.allclose(a.scores, b.scores)
    # a head saved before the re-score existed has none of its keys, and votes alone
    plain, _ = _two_part_head()
    assert "parts" not in plain.config() and build_head(plain.config()).rescore_candidates == 0


def test_rescore_bad_settings_are_clear():
    with pytest.raises(InputError, match="summing to its embedding size"):
        NeighboursHead(8, parts=(4, 3))
    with pytest.raises(InputError, match="one non-negative weight per part"):
        NeighboursHead(8, parts=(4, 4), rescore_weights=(1.0,))
    with pytest.raises(InputError, match="rescore_candidates >= 0"):
        NeighboursHead(8, rescore_candidates=-1)

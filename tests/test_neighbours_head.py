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

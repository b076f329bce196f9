"""The cross-view verifier: alignment over turns and shifts, the dense loss, the verifier's save / load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoscope.errors import InputError
from geoscope.heads.crossview.align import (angles, correlate, disc_mask, offset_position, peaks, rotate_batch,
                                            shift_to_offset_km)
from geoscope.heads.crossview.dense import DenseTwin, dense_info_nce
from geoscope.heads.crossview.verifier import Verifier


def _smooth_field(c: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, size, size, generator=g)
    for _ in range(3):
        x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return F.normalize(x, dim=1)[0]


def test_alignment_recovers_a_known_turn_and_shift():
    field = _smooth_field(4, 96, 0)
    window = field[:, 8:88, 8:88]  # (4, 80, 80)
    dy, dx = 7, -11  # the query's centre from the window's centre (rows down, columns right)
    cy, cx = 40 + dy, 40 + dx
    patch = window[:, cy - 20:cy + 20, cx - 20:cx + 20]  # (4, 40, 40) centred on (cy, cx)
    turned = rotate_batch(patch, [-60.0])[0]  # what a view at another heading shows
    query = rotate_batch(turned, angles(36))  # every trial turn
    scores = correlate(query, window[None], disc_mask(40, 40, 18))
    pk = peaks(scores)
    assert angles(36)[pk["rotation"][0]] == pytest.approx(60.0)
    east, north = shift_to_offset_km(pk["y"], pk["x"], (40, 40), (80, 80), 20.0)
    assert east[0] == pytest.approx(dx * 20.0, abs=8.0)
    assert north[0] == pytest.approx(-dy * 20.0, abs=8.0)
    assert pk["score"][0] > 0.9 and pk["score"][0] > pk["mean"][0] + 3 * pk["std"][0]


def test_correlate_matches_a_direct_sum():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 4, 4, generator=g)
    w = torch.randn(2, 3, 9, 7, generator=g)
    mask = disc_mask(4, 4, 2.0)
    out = correlate(q, w, mask)
    assert out.shape == (2, 2, 6, 4)
    k, r, y, x = 1, 0, 3, 2
    direct = (q[r] * mask * w[k, :, y:y + 4, x:x + 4]).sum() / mask.sum()
    assert float(out[k, r, y, x]) == pytest.approx(float(direct), abs=1e-4)


def test_offset_position_moves_east_and_north():
    lat, lon = offset_position(np.array([0.0]), np.array([0.0]), np.array([111.19]), np.array([0.0]))
    assert lat[0] == pytest.approx(0.0, abs=1e-6) and lon[0] == pytest.approx(1.0, abs=1e-3)
    lat, lon = offset_position(np.array([10.0]), np.array([20.0]), np.array([0.0]), np.array([-111.19]))
    assert lat[0] == pytest.approx(9.0, abs=1e-3) and lon[0] == pytest.approx(20.0, abs=1e-6)


def test_dense_info_nce_on_a_hand_computed_batch():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(0.0)  # logit scale exp(0) = 1
    # rows: [1, 0.6] -> -log(e / (e + e^0.6)); [0, 0.8] -> -log(e^0.8 / (1 + e^0.8))
    row = -math.log(math.e / (math.e + math.exp(0.6))) - math.log(math.exp(0.8) / (1 + math.exp(0.8)))
    # columns: [1, 0] -> -log(e / (e + 1)); [0.6, 0.8] -> -log(e^0.8 / (e^0.6 + e^0.8))
    col = -math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))
    assert float(dense_info_nce(q, r, scale)) == pytest.approx(0.5 * (row + col) / 2, abs=1e-6)


def test_dense_twin_gives_unit_features_per_pixel():
    twin = DenseTwin(dim=8, hidden=16)
    out = twin.embed_query(torch.randn(2, 22, 5, 6))
    assert out.shape == (2, 8, 5, 6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 5, 6), atol=1e-5)


def test_verifier_save_load_round_trip_and_bad_windows(tmp_path):
    torch.manual_seed(0)
    v = Verifier(dim=8, hidden=16, query_km=400.0, window_km=800.0, km_per_px=40.0, rotations=8, top_k=3)
    s = v.window_fine_px
    rng = np.random.default_rng(0)
    v.set_windows(rng.integers(0, 256, (4, s, s, 3), dtype=np.uint8))
    tile = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    centres = np.array([[10.0, 20.0], [11.0, 21.0], [12.0, 22.0], [13.0, 23.0]])
    before = v.align(tile, [2, 0], centres[[2, 0]])
    torch.save({"config": v.config(), "state": v.state_dict()}, tmp_path / "v.pt")
    saved = torch.load(tmp_path / "v.pt")
    w = Verifier(**saved["config"])
    w.load_state_dict(saved["state"])
    after = w.align(tile, [2, 0], centres[[2, 0]])
    for key in ("peak", "lat", "lon", "rotation_deg"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="uint8"):
        w.set_windows(np.zeros((2, s + 1, s + 1, 3), np.uint8))
    with pytest.raises(InputError, match="outside"):
        w.align(tile, [7], centres[:1])

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
    # run as matrix products over the pixels, it equals the convolutions it stands for
    x = torch.randn(2, 22, 5, 6)
    ref = F.normalize(twin.query((x - twin.q_mean) / twin.q_std), dim=1)
    assert torch.allclose(twin.embed_query(x), ref, atol=1e-5)


def test_a_dense_twin_side_that_does_not_act_per_pixel_is_refused():
    twin = DenseTwin(dim=8, hidden=16)
    twin.query[2] = torch.nn.Conv2d(16, 16, 3, padding=1)  # would mix neighbouring pixels
    with pytest.raises(TypeError, match="per pixel"):
        twin.embed_query(torch.randn(1, 22, 5, 6))
    twin.query[2] = torch.nn.BatchNorm2d(16)  # a statistic over the whole map
    with pytest.raises(TypeError, match="per pixel"):
        twin.embed_query(torch.randn(1, 22, 5, 6))


def test_disc_only_query_maps_equal_the_full_maps_inside_the_disc():
    torch.manual_seed(0)
    v = Verifier(dim=8, hidden=16, query_km=400.0, window_km=800.0, km_per_px=20.0, rotations=6, top_k=2)
    tile = np.random.default_rng(3).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    full, disc = v.query_maps(tile), v.query_maps(tile, disc_only=True)
    inside = v.query_disc().bool()
    assert 0 < int(inside.sum()) < inside.numel()
    torch.testing.assert_close(disc[:, :, inside], full[:, :, inside], rtol=1e-5, atol=1e-6)
    assert float(disc[:, :, ~inside].abs().max()) == 0.0 < float(full[:, :, ~inside].abs().max())
    # the alignment compares only the disc: its scores are those of the full maps, masked
    windows = F.normalize(torch.randn(2, 8, v.window_px, v.window_px), dim=1)
    np.testing.assert_allclose(correlate(disc, windows, v.query_disc()).numpy(),
                               correlate(full, windows, v.query_disc()).numpy(), rtol=1e-4, atol=1e-6)


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


def test_aligned_pairs_cut_on_threads_equal_the_tiles_cut_one_by_one(tmp_path):
    from PIL import Image

    from geoscope.crossview.verifier_train import aligned_pairs, reference_windows
    from geoscope.data.overhead import cut_tile_array, open_raster

    rng = np.random.default_rng(5)
    paths = []
    for name in ("q", "r"):  # smooth global images, twice as wide as high: decoded into memory
        img = F.interpolate(torch.from_numpy(rng.random((1, 3, 12, 24))).float(), size=(90, 180), mode="bilinear")
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(paths[-1])
    q, r = open_raster(paths[0]), open_raster(paths[1])
    assert q.in_memory and r.in_memory
    lat, lon = rng.uniform(-60, 60, 9), rng.uniform(-170, 170, 9)
    heading = rng.uniform(0, 360, 9)
    qt, rt = aligned_pairs(q, r, lat, lon, heading, 1500.0, 24, progress=False)
    for i in range(9):
        np.testing.assert_array_equal(qt[i], cut_tile_array(q, lat[i], lon[i], 1500.0, 24, rotation_deg=heading[i])[0])
        np.testing.assert_array_equal(rt[i], cut_tile_array(r, lat[i], lon[i], 1500.0, 24, rotation_deg=heading[i])[0])
    v = Verifier(dim=4, hidden=8, query_km=1000.0, window_km=2000.0, km_per_px=100.0)
    win = reference_windows(r, np.stack([lat, lon], 1), v, progress=False)
    np.testing.assert_array_equal(win[4], cut_tile_array(r, lat[4], lon[4], 2000.0, v.window_fine_px)[0])


def test_the_dense_twin_fits_in_bf16_and_refuses_int8():
    from geoscope.crossview.verifier_train import fit_verifier

    rng = np.random.default_rng(2)
    base = F.interpolate(torch.from_numpy(rng.random((24, 3, 5, 5))).float(), size=(40, 40), mode="bilinear")
    r_tiles = (base.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    q_tiles = 255 - r_tiles  # another "modality": the same ground, inverted
    v = Verifier(dim=8, hidden=16, query_km=400.0, window_km=800.0, km_per_px=40.0, rotations=4)
    fit = fit_verifier(v, q_tiles, r_tiles, steps=60, batch=8, pixels=8, progress=False, precision="bf16")
    assert fit["precision"] == "bf16" and fit["loss_end"] < fit["loss_start"]
    assert all(p.dtype == torch.float32 for p in v.twin.parameters())  # the parameters stay fp32
    with pytest.raises(InputError, match="fp32 or bf16"):
        fit_verifier(v, q_tiles, r_tiles, steps=2, progress=False, precision="int8")

"""The rotation-robust overhead embedding (encoders.overhead) and the demo's batched tile cutter."""

import numpy as np
import pytest
import torch

from geoscope.encoders.overhead import (
    DescriptorProjection,
    OverheadEncoder,
    describe,
    ring_descriptor,
    train_projection,
)
from geoscope.errors import InputError


def _tiles(n=6, px=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, px // 8, px // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", align_corners=False)


def test_ring_descriptor_is_unchanged_by_right_angle_turns_and_tells_tiles_apart():
    x = _tiles()
    d = ring_descriptor(x)
    for k in (1, 2, 3):
        dk = ring_descriptor(torch.rot90(x, k, (2, 3)))
        assert torch.allclose(d, dk, atol=1e-4 * float(d.abs().max()))
    # different tiles give clearly different descriptors
    gap = torch.cdist(d, d)
    turn_error = float((d - ring_descriptor(torch.rot90(x, 1, (2, 3)))).abs().max())
    assert float(gap[~torch.eye(len(d), dtype=bool)].min()) > 10 * turn_error


class _FakeBackbone:
    """A tiny deterministic 'CNN' (mean colour per quadrant): not rotation invariant by itself."""

    name = "fake-backbone"
    dim = 12
    input_size = 32

    class transform:  # noqa: N801
        mean = (0.5, 0.5, 0.5)
        std = (0.25, 0.25, 0.25)

    def eval(self):
        return self

    def encode_pixels(self, x):
        x = np.asarray(x)
        h = x.shape[-1] // 2
        q = [x[..., :h, :h], x[..., :h, h:], x[..., h:, :h], x[..., h:, h:]]
        return np.concatenate([t.mean(axis=(2, 3)) for t in q], 1).astype(np.float32)


def _trained_projection(seed=0):
    x = _tiles(40, 64, seed)
    g = torch.Generator().manual_seed(1)
    views = torch.stack([describe((x * (0.8 + 0.4 * torch.rand(40, 1, 1, 1, generator=g))).clamp(0, 1)) for _ in range(2)])
    return train_projection(views, describe(x), epochs=30, batch=40, pca=16, hidden=32, dim=8), x


def test_projection_training_pulls_views_to_their_place():
    proj, x = _trained_projection()
    with torch.no_grad():
        zr = proj(describe(x))
        zq = proj(describe((x * 0.85).clamp(0, 1)))
    top1 = (zq @ zr.T).argmax(1)
    assert float((top1 == torch.arange(len(x))).float().mean()) >= 0.9


def test_encoder_is_invariant_to_right_angle_turns_and_round_trips(tmp_path):
    proj, x = _trained_projection()
    enc = OverheadEncoder(_FakeBackbone(), proj, cnn_weight=0.6)
    assert enc.dim == 12 + 8
    e = enc.encode_tiles(x[:5])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    e90 = enc.encode_tiles(torch.rot90(x[:5], 1, (2, 3)))
    assert np.allclose(e, e90, atol=1e-4)
    # the cosine is the weighted sum of the two views' cosines
    c, d = enc.cnn_features(x[:2]), enc.descriptor_features(x[:2])
    assert float(e[0] @ e[1]) == pytest.approx(0.6 * float(c[0] @ c[1]) + 0.4 * float(d[0] @ d[1]), abs=1e-5)
    enc.save(tmp_path / "enc")
    back = OverheadEncoder.load(tmp_path / "enc", backbone=_FakeBackbone())
    assert np.allclose(back.encode_tiles(x[:5]), e, atol=1e-6)
    (tmp_path / "enc" / "overhead.json").write_text("{}")
    with pytest.raises(InputError, match="overhead-encoder config"):
        OverheadEncoder.load(tmp_path / "enc", backbone=_FakeBackbone())


def test_an_ensemble_of_projections_averages_their_cosines_and_round_trips(tmp_path):
    x = _trained_projection()[1]
    g = torch.Generator().manual_seed(1)
    views = torch.stack([describe((x * (0.8 + 0.4 * torch.rand(40, 1, 1, 1, generator=g))).clamp(0, 1)) for _ in range(2)])
    projs = [train_projection(views, describe(x), epochs=10, batch=40, pca=16, hidden=32, dim=8, seed=s) for s in (0, 1, 2)]
    enc = OverheadEncoder(_FakeBackbone(), projs, cnn_weight=0.6)
    assert enc.dim == 12 + 3 * 8 and enc.desc_dim == 24
    e = enc.encode_tiles(x[:4])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # the descriptor cosine is the mean of the three projections' cosines (each differs: other seeds)
    with torch.no_grad():
        each = [p(describe(x[:2])).numpy() for p in projs]
    cosines = [float(z[0] @ z[1]) for z in each]
    assert len({round(c, 4) for c in cosines}) == 3
    c = enc.cnn_features(x[:2])
    assert float(e[0] @ e[1]) == pytest.approx(0.6 * float(c[0] @ c[1]) + 0.4 * float(np.mean(cosines)), abs=1e-5)
    enc.save(tmp_path / "enc")
    back = OverheadEncoder.load(tmp_path / "enc", backbone=_FakeBackbone())
    assert len(back.projections) == 3 and np.allclose(back.encode_tiles(x[:4]), e, atol=1e-6)
    # a single projection still writes (and reads) the first format
    OverheadEncoder(_FakeBackbone(), projs[0]).save(tmp_path / "one")
    assert '"geoscope-overhead-encoder/1"' in (tmp_path / "one" / "overhead.json").read_text()
    assert len(OverheadEncoder.load(tmp_path / "one", backbone=_FakeBackbone()).projections) == 1


def test_bad_arguments_are_clear():
    with pytest.raises(InputError, match="same input and output size"):
        OverheadEncoder(_FakeBackbone(), [DescriptorProjection(10, pca=4, hidden=8, dim=4),
                                          DescriptorProjection(10, pca=4, hidden=8, dim=6)])
    with pytest.raises(InputError, match="cnn_weight"):
        OverheadEncoder(_FakeBackbone(), DescriptorProjection(10, pca=4, hidden=8, dim=4), cnn_weight=1.5)
    with pytest.raises(InputError, match="views, N, D"):
        train_projection(torch.zeros(5, 3), torch.zeros(5, 3))


def test_batched_cutter_matches_the_package_tile_cutter():
    from geoscope.data.overhead import cut_tile_array, open_raster
    from geoscope.demo_overhead import GlobalTiles

    raster = open_raster("bmng")
    tiles = GlobalTiles(raster)
    cases = [(47.0, 8.0, 0.0), (-33.9, 151.2, 30.0), (64.0, -150.0, 200.0), (82.0, 40.0, 75.0), (10.0, 179.5, 0.0)]
    lat, lon, rot = (np.array(v) for v in zip(*cases))
    batch = tiles.cut(lat, lon, 800.0, 96, rot)
    for i, (la, lo, r) in enumerate(cases):
        ref, _ = cut_tile_array(raster, la, lo, 800.0, 96, projection="aeqd", rotation_deg=r)
        ours = (batch[i].permute(1, 2, 0).numpy() * 255).astype(np.float32)
        diff = np.abs(ours - ref.astype(np.float32))
        assert np.median(diff) < 3.0 and diff.mean() < 6.0, (la, lo, r, np.median(diff), diff.mean())


def test_gallery_lattice_reaches_islands_and_coasts_but_not_open_sea():
    pytest.importorskip("global_land_mask")
    from scipy.spatial import cKDTree

    from geoscope.demo import is_land
    from geoscope.demo_overhead import land_lattice
    from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit

    land = land_lattice(100.0, -60.0, 84.0)
    reach = land_lattice(100.0, -60.0, 84.0, reach_km=60.0)
    assert is_land(*land).all()
    # a superset: every land point stays, and the added points are sea with land within the reach
    assert (cKDTree(to_unit(*reach)).query(to_unit(*land))[0] < 1e-9).all()
    added = ~is_land(*reach)
    assert 0.05 * len(land[0]) < added.sum() < 0.4 * len(land[0])
    # Bahamas and Solomon Islands: land centres with no land-lattice entry near, one with the reach
    points = np.array([[22.7, -74.2], [-8.6, 157.9]])
    assert is_land(points[:, 0], points[:, 1]).all()
    far = cKDTree(to_unit(*land)).query(to_unit(points[:, 0], points[:, 1]))[0] * EARTH_RADIUS_KM
    near = cKDTree(to_unit(*reach)).query(to_unit(points[:, 0], points[:, 1]))[0] * EARTH_RADIUS_KM
    assert (far > 120).all() and (near < 70).all()
    # the middle of the Pacific stays out
    mid = cKDTree(to_unit(*reach)).query(to_unit(np.array([-30.0]), np.array([-130.0])))[0] * EARTH_RADIUS_KM
    assert mid[0] > 500

"""LocationEncoder: Equal Earth projection, shapes, saving, and agreement with the published GeoCLIP encoder."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from geoscope.testing.geoclip import reference_geoclip_class
from geoscope.heads.location_encoder import (
    LocationEncoder,
    convert_geoclip_state,
    equal_earth,
    geoclip_file,
)


def _reference_location_module():
    """``geoclip.model.location_encoder``, imported without the package's training code."""
    reference_geoclip_class()
    return importlib.import_module("geoclip.model.location_encoder")


def test_equal_earth_matches_pyproj():
    pyproj = pytest.importorskip("pyproj")
    rng = np.random.default_rng(0)
    lat = np.concatenate([[0.0, 89.9, -89.9, 45.0], rng.uniform(-90, 90, 200)])
    lon = np.concatenate([[180.0, 0.0, -179.9, -90.0], rng.uniform(-180, 180, 200)])
    x, y = pyproj.Proj("+proj=eqearth +R=1 +lon_0=0")(lon, lat)
    want = np.stack([x, y], 1) * 66.50336 / 180.0  # GeoCLIP's units
    got = equal_earth(torch.tensor(np.stack([lat, lon], 1), dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_shapes_config_and_state_roundtrip(tmp_path):
    torch.manual_seed(0)
    enc = LocationEncoder(sigmas=(1, 8), n_freq=16, hidden=32, depth=2, out_dim=24)
    x = torch.tensor([[10.0, 20.0], [-45.0, 170.0], [0.0, -180.0]])
    out = enc(x)
    assert out.shape == (3, 24) and torch.isfinite(out).all()
    # the frequencies are saved with the weights, so a reloaded encoder gives the same output
    torch.save(enc.state_dict(), tmp_path / "loc.pt")
    torch.manual_seed(1)
    again = LocationEncoder.from_config(enc.config())
    assert not torch.allclose(again(x), out)
    again.load_state_dict(torch.load(tmp_path / "loc.pt", weights_only=True))
    torch.testing.assert_close(again(x), out)
    # frequencies are not trained
    assert "branches.0.freqs" not in dict(enc.named_parameters())


def test_encode_batches_and_validates():
    torch.manual_seed(0)
    enc = LocationEncoder(sigmas=(1,), n_freq=8, hidden=16, depth=1, out_dim=8)
    pts = np.random.default_rng(1).uniform(-50, 50, size=(37, 2))
    full = enc.encode(pts, batch_size=1000)
    small = enc.encode(pts, batch_size=5)
    torch.testing.assert_close(full, small)
    assert enc.encode(np.zeros((0, 2))).shape == (0, 8)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        enc.encode(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least one scale"):
        LocationEncoder(sigmas=())


def test_published_geoclip_encoder_matches_reference():
    ref_mod = _reference_location_module()
    reference = ref_mod.LocationEncoder().eval()  # loads the package's weights
    ours = LocationEncoder.from_geoclip()
    rng = np.random.default_rng(2)
    pts = np.concatenate(
        [[[0, 0], [89.99, 180], [-89.99, -180], [47.6, -122.3], [-33.9, 151.2]],
         np.stack([rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)], 1)]
    )
    x = torch.tensor(pts, dtype=torch.float32)
    with torch.no_grad():
        want = reference(x)
        got = ours(x)
    # float32 rounding differs in the projection; phases at sigma=256 reach ~2000 rad
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert cos.min() > 0.99999


def test_convert_rejects_foreign_state():
    with pytest.raises(ValueError, match="unexpected key"):
        convert_geoclip_state({"encoder.weight": torch.zeros(1)})


def test_geoclip_file_missing_names_the_file():
    from geoscope.errors import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="no_such_file"):
        geoclip_file("weights/no_such_file.pth")

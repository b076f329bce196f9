"""GPS -> embedding, GeoCLIP-compatible.

A location ``(lat, lon)`` in degrees is projected with the Equal Earth projection, mapped through
random Fourier features at several scales (one fixed Gaussian matrix per scale), and each scale's
features go through their own MLP; the per-scale outputs are summed. With the default settings the
module has the same shape as the location encoder published with GeoCLIP (Vivanco Cepeda et al.,
NeurIPS 2023) and :meth:`LocationEncoder.from_geoclip` loads those weights from the installed
``geoclip`` package (MIT), read with ``torch.load(weights_only=True)``.

Used by ``heads/retrieval.py`` (trainable retrieval head) and the pretrained ``geoclip`` model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn
from tqdm.auto import tqdm

from geoscope.heads.geoclip_files import geoclip_file, geoclip_package_dir  # noqa: F401  (kept importable here)

#: Equal Earth polynomial coefficients (Šavrič, Patterson & Jenny 2018).
_EE_A = (1.340264, -0.081106, 0.000893, 0.003796)
#: GeoCLIP scales the projected plane by this factor and divides by 180 (units of its training).
_GEOCLIP_SCALE = 66.50336

#: Scales (standard deviations of the Fourier matrices) of the published GeoCLIP encoder.
GEOCLIP_SIGMAS = (1.0, 16.0, 256.0)


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """Equal Earth projection of (B, 2) lat/lon degrees to (B, 2) plane coordinates, in GeoCLIP's units.

    x lies in about [-1, 1] (times 0.9 at the poles) and y in about [-0.49, 0.49].
    """
    a1, a2, a3, a4 = _EE_A
    phi = torch.deg2rad(latlon[:, 0])
    lam = torch.deg2rad(latlon[:, 1])
    half_root3 = math.sqrt(3.0) / 2.0
    theta = torch.asin(half_root3 * torch.sin(phi))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    denom = 3.0 * (9.0 * a4 * t6 * t2 + 7.0 * a3 * t6 + 3.0 * a2 * t2 + a1)
    x = 2.0 * math.sqrt(3.0) * lam * torch.cos(theta) / denom
    y = theta * (a1 + a2 * t2 + a3 * t6 + a4 * t6 * t2)
    return torch.stack((x, y), dim=1) * (_GEOCLIP_SCALE / 180.0)


class _ScaleBranch(nn.Module):
    """Fourier features at one scale, then an MLP."""

    freqs: torch.Tensor  # a buffer registered in __init__

    def __init__(self, sigma: float, n_freq: int, hidden: int, depth: int, out_dim: int):
        super().__init__()
        # The frequency matrix is fixed (not trained) but saved with the weights.
        self.register_buffer("freqs", torch.randn(n_freq, 2) * float(sigma))
        layers: list[nn.Module] = []
        width = 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        phase = (2.0 * math.pi * xy) @ self.freqs.T
        return self.out(self.mlp(torch.cat((torch.cos(phase), torch.sin(phase)), dim=-1)))


class LocationEncoder(nn.Module):
    """(B, 2) lat/lon degrees -> (B, out_dim) location embeddings (not normalised).

    ``sigmas``: one branch per scale (larger = finer detail); ``n_freq`` Fourier frequencies per
    branch; ``depth`` hidden layers of width ``hidden`` per branch.
    """

    def __init__(
        self,
        sigmas: Sequence[float] = GEOCLIP_SIGMAS,
        n_freq: int = 256,
        hidden: int = 1024,
        depth: int = 3,
        out_dim: int = 512,
    ):
        super().__init__()
        if not sigmas:
            raise ValueError("LocationEncoder needs at least one scale in sigmas")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.n_freq, self.hidden, self.depth, self.out_dim = int(n_freq), int(hidden), int(depth), int(out_dim)
        self.branches = nn.ModuleList(
            _ScaleBranch(s, self.n_freq, self.hidden, self.depth, self.out_dim) for s in self.sigmas
        )

    def config(self) -> dict:
        return {
            "sigmas": list(self.sigmas),
            "n_freq": self.n_freq,
            "hidden": self.hidden,
            "depth": self.depth,
            "out_dim": self.out_dim,
        }

    @classmethod
    def from_config(cls, config: dict) -> "LocationEncoder":
        return cls(**config)

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        xy = equal_earth(latlon.to(cast(_ScaleBranch, self.branches[0]).freqs.dtype))
        out = self.branches[0](xy)
        for branch in self.branches[1:]:
            out = out + branch(xy)
        return out

    @torch.inference_mode()
    def encode(
        self, latlon, batch_size: int = 8192, dtype: torch.dtype = torch.float32, progress: bool = False
    ) -> torch.Tensor:
        """Embed many locations (array-like (N, 2)) in batches, without gradients; returns (N, out_dim).

        ``progress`` shows a tqdm bar on stderr (the 100K-point GeoCLIP gallery takes tens of seconds).
        """
        latlon = torch.as_tensor(latlon, dtype=torch.float32)
        if latlon.ndim != 2 or latlon.shape[1] != 2:
            raise ValueError(f"locations must have shape (N, 2) lat/lon, got {tuple(latlon.shape)}")
        out = torch.empty(len(latlon), self.out_dim, dtype=dtype)
        starts = range(0, len(latlon), batch_size)
        if progress:
            starts = tqdm(starts, desc="embedding locations", unit="batch", leave=False)
        for i in starts:
            out[i : i + batch_size] = self(latlon[i : i + batch_size]).to(dtype)
        return out

    # --- the published GeoCLIP weights -------------------------------------------------------------

    @classmethod
    def from_geoclip(cls, weights_file: str | Path | None = None) -> "LocationEncoder":
        """The location encoder published with GeoCLIP, from the installed ``geoclip`` package."""
        path = Path(weights_file) if weights_file else geoclip_file("weights/location_encoder_weights.pth")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(convert_geoclip_state(state))
        return model.eval()


def convert_geoclip_state(state: dict) -> dict:
    """Rename a GeoCLIP location-encoder state dict (``LocEnc{i}.capsule.{j}...``) to this module's keys."""
    out = {}
    # GeoCLIP's capsule is Sequential(rff, Linear, ReLU, Linear, ReLU, Linear, ReLU): Linear at 1, 3, 5.
    linear_index = {1: 0, 3: 2, 5: 4}
    for key, value in state.items():
        parts = key.split(".")
        if not parts[0].startswith("LocEnc"):
            raise ValueError(f"unexpected key {key!r} in a GeoCLIP location-encoder state dict")
        branch = int(parts[0][len("LocEnc") :])
        if parts[1] == "capsule" and parts[2] == "0" and parts[3] == "b":
            new = f"branches.{branch}.freqs"
        elif parts[1] == "capsule" and int(parts[2]) in linear_index:
            new = f"branches.{branch}.mlp.{linear_index[int(parts[2])]}.{parts[3]}"
        elif parts[1] == "head" and parts[2] == "0":
            new = f"branches.{branch}.out.{parts[3]}"
        else:
            raise ValueError(f"unexpected key {key!r} in a GeoCLIP location-encoder state dict")
        out[new] = value
    return out

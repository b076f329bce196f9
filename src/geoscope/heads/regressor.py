"""Direct location regression: a small transformer over the backbone output, predicting a point.

Input is either the encoder's tokens (B, T, D) or its pooled embedding (B, D); a pooled embedding
is turned into ``n_tokens`` learned tokens by one linear map, so attention has something to mix.
A learned query token is prepended, two transformer-encoder layers run, and the query's output is
mapped to the answer:

- ``mode="sphere"`` (default): a 3-vector normalised onto the unit sphere, trained with the
  great-circle distance itself as the loss (in units of the Earth radius, so it is well scaled);
- ``mode="latlon"``: plain (lat/90, lon/180) regression with a mean-squared loss, kept to compare
  (it cannot wrap across the antimeridian and distorts distances near the poles).

The head predicts one point and no cell distribution: its mixture is that one point, whose spread a
fitted calibration supplies (``geoscope.calibration``); the candidate's probability is then the mass
within ``CANDIDATE_DISC_KM`` of it (1 for a model without calibration, which says nothing about spread).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM
from geoscope.heads.base import (
    Head,
    HeadOutput,
    Standardize,
    Targets,
    as_float_tensor,
    check_dim,
    eval_mode,
    great_circle_km,
    unit_to_latlon,
)
from geoscope.heads.registry import register_head

MODES = ("sphere", "latlon")


@register_head("regressor")
class RegressorHead(Head):
    """Transformer location regressor.

    Args:
        in_dim: embedding (or token) dimension.
        d_model: transformer width.
        n_tokens: tokens made from a pooled embedding.
        n_layers: transformer-encoder layers (2 by default).
        n_heads: attention heads.
        dropout: dropout inside the transformer.
        mode: "sphere" (unit-vector output, great-circle loss) or "latlon" (plain regression).
    """

    streaming = True  # on_train_start streams the standardisation statistics

    def __init__(
        self,
        in_dim: int,
        d_model: int = 128,
        n_tokens: int = 4,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        mode: str = "sphere",
    ):
        super().__init__()
        if mode not in MODES:
            raise InputError(f"regressor mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.in_dim, self.d_model, self.n_tokens = int(in_dim), int(d_model), int(n_tokens)
        self.n_layers, self.n_heads, self.dropout_p, self.mode = int(n_layers), int(n_heads), float(dropout), mode
        self.norm = Standardize(self.in_dim)
        self.tokenize = nn.Linear(self.in_dim, self.n_tokens * self.d_model)
        self.token_proj = nn.Linear(self.in_dim, self.d_model)
        self.query = nn.Parameter(torch.zeros(1, 1, self.d_model))
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens + 1, self.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            self.d_model, self.n_heads, dim_feedforward=2 * self.d_model, dropout=self.dropout_p,
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, self.n_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(self.d_model), nn.Linear(self.d_model, 3 if mode == "sphere" else 2))

    def config(self) -> dict:
        return {
            "kind": self.kind, "in_dim": self.in_dim, "d_model": self.d_model, "n_tokens": self.n_tokens,
            "n_layers": self.n_layers, "n_heads": self.n_heads, "dropout": self.dropout_p, "mode": self.mode,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> "RegressorHead":
        return cls(**{k: v for k, v in cfg.items() if k != "kind"})

    def on_train_start(self, emb: torch.Tensor, targets: Targets) -> None:
        self.norm.fit(emb)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Raw output: (B, 3) unnormalised vectors (sphere) or (B, 2) scaled lat/lon (latlon)."""
        x = self.norm(emb)
        if x.dim() == 2:
            tokens = self.tokenize(x).view(len(x), self.n_tokens, self.d_model) + self.pos[:, 1:]
        else:
            tokens = self.token_proj(x)
            if tokens.shape[1] == self.n_tokens:
                tokens = tokens + self.pos[:, 1:]
        q = (self.query + self.pos[:, :1]).expand(len(x), -1, -1)
        h = self.encoder(torch.cat([q, tokens], dim=1))
        return self.out(h[:, 0])

    def latlon(self, emb: torch.Tensor) -> torch.Tensor:
        raw = self.forward(emb)
        if self.mode == "sphere":
            return unit_to_latlon(raw)
        lat = (raw[:, 0] * 90.0).clamp(-90.0, 90.0)
        lon = torch.remainder(raw[:, 1] * 180.0 + 180.0, 360.0) - 180.0
        return torch.stack([lat, lon], dim=1)

    def loss(self, emb: torch.Tensor, batch: Targets) -> torch.Tensor:
        raw = self.forward(emb)
        if self.mode == "sphere":
            pred = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-6)
            return (great_circle_km(pred, batch.unit()) / EARTH_RADIUS_KM).mean()
        target = torch.stack([batch.lat / 90.0, batch.lon / 180.0], dim=1)
        return ((raw - target) ** 2).mean()

    @torch.no_grad()
    def predict(self, emb, top_k: int = 1) -> HeadOutput:
        with eval_mode(self):
            emb = as_float_tensor(emb)
            check_dim(emb, self.in_dim, self.kind)
            coords = self.latlon(emb).double()
        point = coords[:, None, :].numpy()
        one = np.ones((len(coords), 1))
        return HeadOutput(None, point, one, support=point, support_probs=one,
                          candidate_support=np.zeros((len(coords), 1), dtype=np.int64), neighbourhood="disc")

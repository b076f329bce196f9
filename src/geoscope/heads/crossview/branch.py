"""One branch of the cross-view twin network: frozen backbone features -> a unit embedding.

    features (B, in_dim), or token / feature maps (B, T, in_dim)
      --aggregate (tokens only: learned attention pooling beside the mean)--> (B, in_dim)
      --Standardize (statistics of the training features)--> MLP (in_dim -> hidden -> out_dim, GELU)
      --> L2-normalised (B, out_dim)

The backbone stays frozen (its features come from the embedding store or from ``Encoder.forward_tokens``);
only the aggregation and the projection train. The query branch and the reference branch are two
instances (or one, when the head shares them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoscope.heads.base import Standardize


class TokenPooling(nn.Module):
    """Learned attention pooling over tokens, averaged with the plain mean (so it starts as the mean)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.score(tokens).squeeze(-1), dim=1)
        return 0.5 * (torch.einsum("bt,btd->bd", w, tokens) + tokens.mean(dim=1))


class ViewBranch(nn.Module):
    """Aggregation + projection of one view's frozen features into the shared, unit-norm space."""

    def __init__(self, in_dim: int, out_dim: int = 256, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden, self.dropout = int(in_dim), int(out_dim), int(hidden), float(dropout)
        self.pool = TokenPooling(self.in_dim)
        self.norm = Standardize(self.in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(self.in_dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout),
            nn.Linear(self.hidden, self.out_dim),
        )

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) features unchanged; (B, T, in_dim) tokens pooled to (B, in_dim)."""
        return self.pool(x) if x.dim() == 3 else x

    @torch.no_grad()
    def fit_stats(self, x: torch.Tensor) -> None:
        """Standardisation statistics from training features (pooled first when tokens)."""
        self.norm.fit(self.aggregate(x.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.norm(self.aggregate(x.float()))), dim=-1)

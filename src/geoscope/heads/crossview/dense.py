"""Dense twin: per-pixel, modality-invariant features of a query view and of an overhead reference.

Each side (separate weights per modality) is a per-pixel network (1x1 convolutions) over the hand-made
descriptors of ``heads.crossview.pixel_features``, standardised with the training set's statistics, giving
L2-normalised ``dim``-vectors per pixel. Trained on pixel-aligned pairs (query view and reference cut at the same
centre and heading, so pixel (i, j) of one shows the ground of pixel (i, j) of the other) with
:func:`dense_info_nce`: the query's vector at a sampled pixel should match the reference's vector at that pixel
against the reference's vectors at every other sampled pixel of the batch (other places, other parts of the same
tile), and the other way round. The aligner (``heads.crossview.align``) correlates these maps over turns and shifts
to verify and place a candidate reference tile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geoscope.heads.crossview.losses import info_nce
from geoscope.heads.crossview.pixel_features import N_FEATURES


def _side(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(N_FEATURES, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                         nn.Conv2d(hidden, dim, 1))


#: layers that act on each pixel alone, so that a side made of them (and 1x1 convolutions) runs over rows of pixels
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Identity)


def _rows(side: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """``side`` (1x1 convolutions and activations) over (M, C) rows of per-pixel descriptors, as matrix products.
    Any other layer (a wider kernel, a normalisation over the map) would not compute per pixel: refused."""
    for m in side:
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            y = F.linear(y, m.weight.flatten(1), m.bias)
        elif isinstance(m, _ELEMENTWISE):
            y = m(y)
        else:
            raise TypeError(f"the dense twin's sides run per pixel: 1x1 convolutions and element-wise activations "
                            f"only, not {m}")
    return y


def _per_pixel(side: nn.Sequential, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``side`` over (N, C, H, W) ``x``, run as matrix products over the pixels (channels last): the same numbers
    to float rounding, ~1.4x faster than ``conv2d`` on CPU at the demo's sizes. With an (H, W) ``mask``, only the
    pixels where it is non-zero are computed; the others come back as zero vectors."""
    n, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    if mask is None:
        return _rows(side, y.reshape(-1, c)).reshape(n, h, w, -1).permute(0, 3, 1, 2)
    keep = torch.as_tensor(mask).reshape(-1) != 0
    part = _rows(side, y[:, keep].reshape(-1, c))
    out = part.new_zeros(n, h * w, part.shape[-1])
    out[:, keep] = part.reshape(n, -1, part.shape[-1])
    return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)


class DenseTwin(nn.Module):
    """``query`` and ``reference`` per-pixel networks into one ``dim``-space (see the module docstring)."""

    q_mean: torch.Tensor
    q_std: torch.Tensor
    r_mean: torch.Tensor
    r_std: torch.Tensor

    def __init__(self, dim: int = 16, hidden: int = 64):
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.query = _side(self.dim, self.hidden)
        self.reference = _side(self.dim, self.hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for name in ("q_mean", "r_mean"):
            self.register_buffer(name, torch.zeros(N_FEATURES, 1, 1))
        for name in ("q_std", "r_std"):
            self.register_buffer(name, torch.ones(N_FEATURES, 1, 1))

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden}

    def fit_stats(self, q_desc: torch.Tensor, r_desc: torch.Tensor) -> None:
        """Standardise each side's descriptors (N, N_FEATURES, ...) with their mean and spread."""
        for desc, mean, std in ((q_desc, self.q_mean, self.q_std), (r_desc, self.r_mean, self.r_std)):
            flat = desc.transpose(0, 1).reshape(N_FEATURES, -1).float()
            mean.copy_(flat.mean(1)[:, None, None])
            std.copy_(flat.std(1)[:, None, None] + 1e-6)

    def embed_query(self, desc: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Descriptors (N, N_FEATURES, H, W) of query views -> unit features (N, dim, H, W); with an (H, W)
        ``mask``, features only where it is non-zero (zero vectors elsewhere, not computed)."""
        return F.normalize(_per_pixel(self.query, (desc - self.q_mean) / self.q_std, mask), dim=1)

    def embed_reference(self, desc: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, N_FEATURES, H, W) of reference tiles -> unit features (N, dim, H, W)."""
        return F.normalize(_per_pixel(self.reference, (desc - self.r_mean) / self.r_std), dim=1)


def dense_info_nce(q: torch.Tensor, r: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of unit vectors ``q`` and ``r`` (M, dim): the features of M sampled
    pixels (of several pairs) on the query side and at the same pixels on the reference side. Row k's positive is
    column k; every other row is a negative. The twin's own loss (``losses.info_nce``) over pixels instead of
    tiles."""
    return info_nce(q, r, logit_scale)

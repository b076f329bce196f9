"""The same-place classifier: do a query view and a reference tile show the same place?

A logit from a pair of unit embeddings: a learned affine function of their cosine plus a small MLP over
their product, their absolute difference and their cosine (which starts at zero, so the classifier starts as
a thresholded similarity); a Platt scaling ``sigmoid(a * logit + b)`` fitted on held-out pairs (true pairs and pairs
with another place's reference, half and half) turns it into a probability that means what it says:
of the held-out pairs given probability p, about a share p showed the same place (at that 1 : 1 mix;
:meth:`SamePlaceClassifier.probability` takes ``prior`` to restate it for another share of true pairs).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SamePlaceClassifier(nn.Module):
    platt: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        last = nn.Linear(self.hidden, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(2 * self.dim + 1, self.hidden), nn.ReLU(), last)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.shift = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))
        self.register_buffer("fitted", torch.tensor(0.0))

    def logit(self, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits (B,) for pairs of unit embeddings q (B, D), r (B, D)."""
        cos = (q * r).sum(-1, keepdim=True)
        residual = self.mlp(torch.cat([q * r, (q - r).abs(), cos], dim=-1)).squeeze(-1)
        return self.scale * (cos.squeeze(-1) - self.shift) + residual

    def probability(self, q: torch.Tensor, r: torch.Tensor, prior: float = 0.5) -> torch.Tensor:
        """Calibrated P(same place) (B,); ``prior``: the share of true pairs among those asked about
        (the calibration assumed 0.5)."""
        z = self.platt[0] * self.logit(q, r) + self.platt[1]
        if prior != 0.5:
            z = z + float(np.log(prior / (1.0 - prior)))
        return torch.sigmoid(z)

    @torch.no_grad()
    def calibrate(self, q: torch.Tensor, r: torch.Tensor, labels: torch.Tensor) -> dict:
        """Fit the Platt scaling on held-out pairs; returns the fit and the reliability before / after."""
        z = self.logit(q, r).double().numpy()
        y = labels.double().numpy()
        before = _log_loss(_sigmoid(z), y)
        a, b = fit_platt(z, y)
        self.platt.copy_(torch.tensor([a, b], dtype=torch.float32))
        self.fitted.fill_(1.0)
        p = _sigmoid(a * z + b)
        return {"a": a, "b": b, "n": int(len(y)), "log_loss_before": before, "log_loss_after": _log_loss(p, y),
                "ece_after": expected_calibration_error(p, y), "accuracy": float(((p > 0.5) == (y > 0.5)).mean())}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def fit_platt(z: np.ndarray, y: np.ndarray, iters: int = 100, ridge: float = 1e-3) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the log loss of sigmoid(a z + b) against Platt's smoothed targets
    ((n+ + 1) / (n+ + 2) for true pairs, 1 / (n- + 2) for others), which keeps the fit finite when the
    held-out pairs are perfectly separated. Newton's method on standardised logits with a backtracking line
    search (the loss never rises), and a small ridge on the slope."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n_pos, n_neg = float((y > 0.5).sum()), float((y <= 0.5).sum())
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu, sd = float(z.mean()), float(z.std()) or 1.0
    x = np.stack([(z - mu) / sd, np.ones_like(z)], 1)
    reg = np.diag([ridge, 0.0])

    def loss(w: np.ndarray) -> float:
        u = x @ w
        return float((np.logaddexp(0.0, u) - t * u).mean() + 0.5 * w @ reg @ w)

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(iters):
        p = _sigmoid(x @ w)
        g = x.T @ (p - t) / len(t) + reg @ w
        h = (x * (p * (1 - p))[:, None]).T @ x / len(t) + reg + 1e-12 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current:
            scale *= 0.5
        w_new = w - scale * step
        new = loss(w_new)
        if current - new < 1e-12:
            break
        w, current = w_new, new
    a = w[0] / sd
    return float(a), float(w[1] - a * mu)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE = sum over probability bins of share x |mean stated - observed rate|."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))

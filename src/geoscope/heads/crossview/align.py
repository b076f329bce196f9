"""Align a query view to a reference window over rotations and translations by correlating dense feature maps.

The query's feature map, turned to each of R candidate headings, is cut to a disc about its centre (what every
turn of a square view holds) and slid over the reference window's feature map: the score at a shift is the mean
cosine similarity of the disc's features with the window's features under it. The best (rotation, shift) of a
window verifies its candidate (the score) and places the query (the shift, in the window's pixels, refined to
sub-pixel by a parabola through the peak and its neighbours). Correlation runs through the FFT: every window
against every turn at once, in a cost that does not depend on the disc size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def disc_mask(h: int, w: int, radius: float) -> torch.Tensor:
    """(h, w) float mask: 1 on pixels whose centre lies within ``radius`` pixels of the map's centre."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5 - h / 2.0
    xs = torch.arange(w, dtype=torch.float32) + 0.5 - w / 2.0
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= float(radius) ** 2).float()


def rotate_batch(x: torch.Tensor, angles_deg) -> torch.Tensor:
    """``x`` (C, H, W) turned counter-clockwise by each angle about its centre: (R, C, H, W), zeros outside."""
    a = torch.as_tensor(np.radians(np.asarray(angles_deg, np.float64)), dtype=torch.float32)
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps output coordinates to input ones: turning the content by +a samples the input at -a
    theta = torch.zeros(len(a), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    x = x[None].expand(len(a), *x.shape)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def correlate(query: torch.Tensor, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean feature similarity of every masked query map over every window at every shift.

    ``query`` (R, C, h, w) (R turns), ``windows`` (K, C, H, W) with H >= h, W >= w, ``mask`` (h, w) weights.
    Returns (K, R, H - h + 1, W - w + 1): entry [k, r, y, x] = sum_ij mask_ij <query[r, :, i, j],
    windows[k, :, y + i, x + j]> / sum(mask)."""
    k, c, hh, ww = windows.shape
    r, _, h, w = query.shape
    q = query * (mask / mask.sum().clamp(min=1e-12))
    qpad = torch.zeros(r, c, hh, ww, dtype=windows.dtype)
    qpad[:, :, :h, :w] = q
    fw = torch.fft.rfft2(windows)  # (K, C, H, W')
    fq = torch.fft.rfft2(qpad).conj()  # (R, C, H, W')
    bins = fw.shape[-2] * fw.shape[-1]
    a = fw.reshape(k, c, bins).permute(2, 0, 1)  # (bins, K, C)
    b = fq.reshape(r, c, bins).permute(2, 1, 0)  # (bins, C, R)
    prod = torch.bmm(a, b).permute(1, 2, 0).reshape(k, r, fw.shape[-2], fw.shape[-1])
    out = torch.fft.irfft2(prod, s=(hh, ww))
    return out[:, :, : hh - h + 1, : ww - w + 1]


def _parabola(lo: torch.Tensor, mid: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    den = lo - 2 * mid + hi
    off = torch.where(den < -1e-9, 0.5 * (lo - hi) / den.clamp(max=-1e-9), torch.zeros_like(mid))
    return off.clamp(-0.5, 0.5)


def peaks(scores: torch.Tensor) -> dict[str, np.ndarray]:
    """The best (turn, shift) of each window in ``scores`` (K, R, Y, X): ``score`` (K,), ``rotation`` (K,)
    index, ``y`` / ``x`` (K,) sub-pixel shifts, and ``mean`` / ``std`` (K,) of the window's scores over all
    turns and shifts (how much the peak stands out)."""
    k, r, ny, nx = scores.shape
    flat = scores.reshape(k, -1)
    best, idx = flat.max(1)
    ri, rem = idx // (ny * nx), idx % (ny * nx)
    yi, xi = rem // nx, rem % nx
    ar = torch.arange(k)
    m = scores[ar, ri]  # (K, Y, X)
    y0, y1 = (yi - 1).clamp(min=0), (yi + 1).clamp(max=ny - 1)
    x0, x1 = (xi - 1).clamp(min=0), (xi + 1).clamp(max=nx - 1)
    dy = torch.where((yi > 0) & (yi < ny - 1), _parabola(m[ar, y0, xi], best, m[ar, y1, xi]), torch.zeros_like(best))
    dx = torch.where((xi > 0) & (xi < nx - 1), _parabola(m[ar, yi, x0], best, m[ar, yi, x1]), torch.zeros_like(best))
    return {"score": best.numpy(), "rotation": ri.numpy(), "y": (yi.float() + dy).numpy(),
            "x": (xi.float() + dx).numpy(), "mean": flat.mean(1).numpy(), "std": flat.std(1).numpy()}


def shift_to_offset_km(y, x, query_hw: tuple[int, int], window_hw: tuple[int, int], km_per_px: float):
    """A peak's shift (rows ``y``, columns ``x`` of the window map) -> where the query's centre lies from the
    window's centre: (east_km, north_km)."""
    h, w = query_hw
    hh, ww = window_hw
    east = (np.asarray(x, np.float64) + w / 2.0 - ww / 2.0) * km_per_px
    north = -(np.asarray(y, np.float64) + h / 2.0 - hh / 2.0) * km_per_px
    return east, north


def angles(n: int) -> np.ndarray:
    """``n`` headings evenly over the circle (degrees)."""
    return np.arange(n, dtype=np.float64) * (360.0 / max(1, int(n)))


def offset_position(lat, lon, east_km, north_km):
    """The point ``east_km`` / ``north_km`` from (lat, lon) on the sphere (azimuthal equidistant, like the
    windows are cut)."""
    from geoscope.geo.sphere import destination

    bearing = np.degrees(np.arctan2(east_km, north_km))
    return destination(np.asarray(lat, np.float64), np.asarray(lon, np.float64), bearing,
                       np.hypot(east_km, north_km))


__all__ = ["angles", "correlate", "disc_mask", "offset_position", "peaks", "rotate_batch", "shift_to_offset_km"]

"""Geometric verification and refinement of a cross-view model's best gallery entries.

The global embedding ranks the reference gallery; its top ``top_k`` entries are then checked one by one on the
pixels: the query view (a tile of ``query_km``, any heading) is turned to ``rotations`` headings, described per
pixel by the dense twin (``heads.crossview.dense``) at ``km_per_px``, cut to its central disc and slid over the
dense map of a north-up reference window of ``window_km`` around the entry (``heads.crossview.align``). An entry's
verified score is its global score plus ``weight`` times its best mean feature similarity; the best shift places
the query continuously (the window's centre moved by the shift), so the position is no longer tied to the
gallery's lattice.

The reference windows are held as uint8 pixels at the descriptors' fine resolution (a buffer, saved with the
model); their dense maps are computed when first needed and kept (``cache_maps``) for the next queries.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoscope.errors import InputError
from geoscope.heads.crossview.align import (angles, correlate, disc_mask, offset_position, peaks, rotate_batch,
                                            shift_to_offset_km)
from geoscope.heads.crossview.dense import DenseTwin
from geoscope.heads.crossview.pixel_features import FINE, pixel_features, to_float


class Verifier(nn.Module):
    """Dense-twin verification of gallery candidates (see the module docstring).

    Args:
        dim, hidden: the dense twin's feature size and hidden width.
        query_km: the ground width of a query view (the tiles the model was trained on).
        window_km: the ground width of the reference window around a gallery entry (the search reaches
            ``(window_km - query_km) / 2`` from the entry's centre).
        km_per_px: the dense maps' resolution. rotations: headings tried (evenly over the circle).
        disc: the radius of the query's compared disc, as a share of half the query's width.
        weight: the verified score is ``global + weight * peak``. top_k: gallery entries verified per query.
        n_windows: the number of reference windows (one per gallery entry; 0 until ``set_windows``).
    """

    windows: torch.Tensor

    def __init__(self, dim: int = 16, hidden: int = 64, query_km: float = 800.0, window_km: float = 1600.0,
                 km_per_px: float = 20.0, rotations: int = 36, disc: float = 0.9, weight: float = 4.0,
                 top_k: int = 50, n_windows: int = 0):
        super().__init__()
        self.query_km, self.window_km, self.km_per_px = float(query_km), float(window_km), float(km_per_px)
        if self.window_km <= self.query_km:
            raise InputError(f"the verifier's reference window ({self.window_km:g} km) must be wider than a query "
                             f"view ({self.query_km:g} km)")
        self.rotations, self.disc, self.weight, self.top_k = int(rotations), float(disc), float(weight), int(top_k)
        self.twin = DenseTwin(dim, hidden)
        self.register_buffer("windows", torch.zeros(int(n_windows), self.window_fine_px, self.window_fine_px, 3,
                                                    dtype=torch.uint8))
        self._maps: torch.Tensor | None = None
        self._have: torch.Tensor | None = None
        self.cache_maps = True

    def config(self) -> dict:
        return {**self.twin.config(), "query_km": self.query_km, "window_km": self.window_km,
                "km_per_px": self.km_per_px, "rotations": self.rotations, "disc": self.disc, "weight": self.weight,
                "top_k": self.top_k, "n_windows": int(len(self.windows))}

    @property
    def query_px(self) -> int:
        """The width of a query's dense map (pixels)."""
        return int(round(self.query_km / self.km_per_px))

    @property
    def window_px(self) -> int:
        """The width of a reference window's dense map (pixels)."""
        return int(round(self.window_km / self.km_per_px))

    @property
    def window_fine_px(self) -> int:
        """The width of a reference window as stored (pixels at the descriptors' fine resolution)."""
        return self.window_px * FINE

    # --- reference windows -------------------------------------------------------------------------

    @torch.no_grad()
    def set_windows(self, tiles) -> None:
        """Use (N, S, S, 3) uint8 north-up reference windows (S = ``window_fine_px``), one per gallery entry."""
        arr = np.asarray(tiles)
        s = self.window_fine_px
        if arr.ndim != 4 or arr.shape[1:] != (s, s, 3) or arr.dtype != np.uint8:
            raise InputError(f"the verifier's reference windows must be (N, {s}, {s}, 3) uint8 tiles of "
                             f"{self.window_km:g} km, got {arr.shape} {arr.dtype}")
        self.register_buffer("windows", torch.from_numpy(np.ascontiguousarray(arr)))
        self.forget_maps()

    def forget_maps(self) -> None:
        """Drop the cached dense maps of the reference windows (new windows, or a twin fitted again)."""
        self._maps = self._have = None

    @torch.no_grad()
    def window_maps(self, idx) -> torch.Tensor:
        """Dense maps (len(idx), dim, P, P) of the reference windows ``idx`` (computed once when ``cache_maps``)."""
        idx = torch.as_tensor(np.asarray(idx, np.int64))
        if not self.cache_maps:
            return self._embed_windows(idx)
        if self._maps is None or self._have is None or len(self._have) != len(self.windows):
            p = self.window_px
            self._maps = torch.zeros(len(self.windows), self.twin.dim, p, p, dtype=torch.float16)
            self._have = torch.zeros(len(self.windows), dtype=torch.bool)
        todo = torch.unique(idx[~self._have[idx]])
        for s in range(0, len(todo), 64):
            part = todo[s:s + 64]
            self._maps[part] = self._embed_windows(part).half()
            self._have[part] = True
        return self._maps[idx].float()

    def _embed_windows(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.twin.embed_reference(pixel_features(to_float(self.windows[idx])))

    # --- queries -----------------------------------------------------------------------------------

    @torch.no_grad()
    def query_maps(self, tile, disc_only: bool = False) -> torch.Tensor:
        """Dense maps (rotations, dim, Q, Q) of one query view (H, W, 3) uint8 covering ``query_km``, turned to
        each heading of ``angles(rotations)`` (counter-clockwise). ``disc_only``: features only inside the
        compared disc (``disc_mask``), zero vectors outside: what the alignment uses, in ~2/3 of the time."""
        x = to_float(np.asarray(tile))
        side = 2 * FINE * self.query_px  # turn at twice the fine resolution, then average down
        x = F.interpolate(x, size=(side, side), mode="area") if x.shape[-1] >= side else \
            F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        turned = F.avg_pool2d(rotate_batch(x[0], angles(self.rotations)), 2)
        return self.twin.embed_query(pixel_features(turned), self.query_disc() if disc_only else None)

    def query_disc(self) -> torch.Tensor:
        """The (Q, Q) mask of the query's compared disc: the pixels every turn of a square view holds."""
        return disc_mask(self.query_px, self.query_px, self.disc * self.query_px / 2.0)

    @torch.no_grad()
    def align(self, tile, idx, latlon) -> dict[str, np.ndarray]:
        """Align one query view with the reference windows ``idx`` (K,) centred at ``latlon`` (K, 2).

        Returns ``peak`` (K,) the best mean feature similarity, ``lat`` / ``lon`` (K,) where each window's best
        shift puts the query's centre, and ``rotation_deg`` (K,) the best turn."""
        idx = np.asarray(idx, np.int64)
        if len(self.windows) == 0:
            raise InputError("the crossview model's verifier has no reference windows; set them with the gallery")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.windows)):
            raise InputError(f"gallery entries {idx.min()}..{idx.max()} lie outside the verifier's "
                             f"{len(self.windows)} reference windows")
        pk = peaks(correlate(self.query_maps(tile, disc_only=True), self.window_maps(idx), self.query_disc()))
        east, north = shift_to_offset_km(pk["y"], pk["x"], (self.query_px, self.query_px),
                                         (self.window_px, self.window_px), self.km_per_px)
        latlon = np.asarray(latlon, np.float64).reshape(-1, 2)
        lat, lon = offset_position(latlon[:, 0], latlon[:, 1], east, north)
        return {"peak": pk["score"].astype(np.float64), "lat": np.asarray(lat), "lon": np.asarray(lon),
                "rotation_deg": angles(self.rotations)[pk["rotation"]]}

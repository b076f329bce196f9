"""Training the cross-view verifier's dense twin on pixel-aligned pairs, and cutting its reference windows.

A pixel-aligned pair is a query-modality tile and a reference tile cut at the same centre and the same heading,
so each pixel of one shows the ground of the same pixel of the other (``aligned_pairs``). The dense twin
(``heads.crossview.dense``) is fitted on pixels sampled from them (``fit_verifier``: every step draws
``batch`` pairs and ``pixels`` pixels of each, away from the border; their positives are the same pixels on the other side,
every other sampled pixel a negative). The reference windows (``reference_windows``) are
north-up reference tiles of the verifier's window width around each gallery entry.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from geoscope.errors import InputError
from geoscope.heads.crossview.dense import dense_info_nce
from geoscope.heads.crossview.pixel_features import FINE, N_FEATURES, pixel_features, to_float
from geoscope.heads.crossview.verifier import Verifier

log = logging.getLogger(__name__)


def _cut_all(fill, n: int, desc: str, unit: str, progress: bool, threaded: bool) -> None:
    """``fill(i)`` for i in 0..n-1, on two threads when ``threaded`` (GDAL's warper, most of a cut, runs without
    the GIL: cutting the cross-view demo's pairs took 1.4-1.7x less time on 2 cores), with a progress bar."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    bar = tqdm(total=n, desc=desc, unit=unit, disable=not progress)
    workers = min(2, os.cpu_count() or 1) if threaded else 1
    try:
        if workers == 1:
            for i in range(n):
                fill(i)
                bar.update()
            return
        # rasterio warns, from worker threads only, that the in-memory source it builds for the warper has no
        # geotransform yet; it sets one before warping (the tiles equal those cut on one thread)
        with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
            warnings.filterwarnings("ignore", message="Dataset has no geotransform")
            for _ in pool.map(fill, range(n)):
                bar.update()
    finally:
        bar.close()


def _shareable(*rasters) -> bool:
    """Whether threads may read these rasters at once (decoded into memory; a file raster's handle is not)."""
    return all(r.in_memory for r in rasters)


def aligned_pairs(query_raster, ref_raster, lat, lon, heading, size_km: float, pixels: int,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, pixels, pixels, 3) uint8 query-modality and reference tiles of ``size_km``, each pair cut at the same
    centre (lat, lon) and the same ``heading`` (degrees)."""
    from geoscope.data.overhead import cut_tile_array

    n = len(lat)
    q = np.empty((n, pixels, pixels, 3), np.uint8)
    r = np.empty((n, pixels, pixels, 3), np.uint8)

    def fill(i: int) -> None:
        la, lo, h = float(lat[i]), float(lon[i]), float(heading[i])
        q[i] = cut_tile_array(query_raster, la, lo, size_km, pixels, rotation_deg=h)[0]
        r[i] = cut_tile_array(ref_raster, la, lo, size_km, pixels, rotation_deg=h)[0]

    _cut_all(fill, n, "aligned pairs", "pair", progress, _shareable(query_raster, ref_raster))
    return q, r


def reference_windows(ref_raster, latlon, verifier: Verifier, progress: bool = True) -> np.ndarray:
    """North-up reference windows (N, S, S, 3) uint8 of the verifier's window width around each (lat, lon)."""
    from geoscope.data.overhead import cut_tile_array

    latlon = np.asarray(latlon, np.float64).reshape(-1, 2)
    s = verifier.window_fine_px
    out = np.empty((len(latlon), s, s, 3), np.uint8)

    def fill(i: int) -> None:
        out[i] = cut_tile_array(ref_raster, float(latlon[i, 0]), float(latlon[i, 1]), verifier.window_km, s)[0]

    _cut_all(fill, len(latlon), "reference windows", "window", progress, _shareable(ref_raster))
    return out


def _descriptors(tiles: np.ndarray, verifier: Verifier, chunk: int = 256) -> torch.Tensor:
    """(N, N_FEATURES, Q, Q) float16 descriptors of query-sized tiles at the verifier's resolution."""
    side = verifier.query_px * FINE
    out = []
    for s in range(0, len(tiles), chunk):
        x = to_float(tiles[s:s + chunk])
        x = F.interpolate(x, size=(side, side), mode="area")
        out.append(pixel_features(x).half())
    return torch.cat(out) if out else torch.zeros(0, N_FEATURES, verifier.query_px, verifier.query_px)


def fit_verifier(verifier: Verifier, q_tiles: np.ndarray, r_tiles: np.ndarray, steps: int = 3000, batch: int = 64,
                 pixels: int = 32, lr: float = 3e-3, seed: int = 0, progress: bool = True,
                 precision: str = "fp32") -> dict:
    """Fit ``verifier``'s dense twin on pixel-aligned tiles (N, H, W, 3) uint8 of ``verifier.query_km``. Returns
    the fit's report (loss at the start and end, seconds, pixels per second).

    ``precision``: ``fp32``, ``bf16`` (the twin's matrix products under bfloat16 autocast; the loss, parameters
    and optimiser in fp32) or ``auto`` (``bf16`` where the CPU computes it natively, see
    ``encoders.precision.resolve_precision``)."""
    from tqdm import tqdm

    from geoscope.encoders.precision import resolve_precision

    precision = resolve_precision(precision)
    if precision not in ("fp32", "bf16"):
        raise InputError(f"the verifier's fit runs in fp32 or bf16, not {precision}")

    if len(q_tiles) != len(r_tiles) or len(q_tiles) < 2:
        raise InputError(f"the verifier needs at least 2 aligned pairs with tiles on both sides, got "
                         f"{len(q_tiles)} and {len(r_tiles)}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    dq, dr = _descriptors(q_tiles, verifier), _descriptors(r_tiles, verifier)
    twin = verifier.twin
    twin.fit_stats(dq, dr)
    n, c, h, w = dq.shape
    margin = 3
    ys, xs = torch.meshgrid(torch.arange(margin, h - margin), torch.arange(margin, w - margin), indexing="ij")
    flat = (ys * w + xs).reshape(-1)
    dq, dr = dq.reshape(n, c, -1), dr.reshape(n, c, -1)
    opt = torch.optim.AdamW(twin.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    losses: list[float] = []
    twin.train()
    for _ in tqdm(range(steps), desc="verifier fit", unit="step", disable=not progress):
        rows = torch.randint(0, n, (batch,), generator=gen)
        pix = flat[torch.randint(0, len(flat), (batch, pixels), generator=gen)]
        at = pix[:, None, :].expand(batch, c, pixels)
        q = torch.gather(dq[rows], 2, at).float().permute(0, 2, 1).reshape(-1, c, 1, 1)
        r = torch.gather(dr[rows], 2, at).float().permute(0, 2, 1).reshape(-1, c, 1, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            qe, re = twin.embed_query(q).flatten(1), twin.embed_reference(r).flatten(1)
        loss = dense_info_nce(qe.float(), re.float(), twin.logit_scale)  # the logits in fp32
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    twin.eval()
    verifier.forget_maps()
    secs = time.perf_counter() - t0
    k = max(1, min(50, len(losses) // 10))
    report = {"pairs": int(n), "steps": int(steps), "batch": int(batch), "pixels": int(pixels), "precision": precision,
              "loss_start": float(np.mean(losses[:k])) if losses else None,
              "loss_end": float(np.mean(losses[-k:])) if losses else None,
              "chance_loss": float(np.log(batch * pixels)), "fit_s": round(secs, 2),
              "pixels_per_s": round(steps * batch * pixels / max(secs, 1e-9), 1)}
    log.info("verifier fitted: %s", report)
    return report

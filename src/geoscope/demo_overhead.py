"""The demo's overhead-retrieval model: a reference gallery of Blue Marble tiles over land, searched
with the rotation-robust overhead embedding (``encoders.overhead``) and the voting neighbours head.

Stages (each cached under ``OUT/cache/overhead-KEY/``, so a rerun or an interrupted run resumes):

1. a Fibonacci lattice over land every ``gallery_km`` (the gallery) and a coarser one every
   ``cnn_gallery_km`` (where the CNN view is computed: four backbone passes per tile are the cost),
   each with the sea points that have land within ``gallery_reach_km`` / ``cnn_reach_km``: a held-out
   tile centred on a small island or a coast between land lattice points otherwise has no gallery entry
   within 100-300 km. Measured on the demo with reaches of 60 / 150 km and the descriptor projection
   of the land-only gallery, misses beyond 750 km went 11 -> 7 of 500 held-out land tiles and 19 -> 12
   of 500 calibration tiles (the coastal and island ones); with the projection retrained on the larger
   gallery (a cold run) they were 11 and 19 again, other tiles this time: training the projection moves
   about as many tiles across 750 km as the coastal entries fix, while the median fell 28 -> 27 km;
2. ring descriptors of clean north-up gallery tiles and of ``desc_views`` perturbed views of each
   (any heading, zoom x0.8-1.25, colour / contrast / gamma / hue / channel shifts, greyscale, blur,
   noise, resolution loss: wider than the held-out perturbations, for imagery from other sources);
3. the descriptor projection trained contrastively on those pairs (``train_projection``);
4. the CNN view of the coarse lattice's clean tiles; each gallery entry takes the CNN view of its
   nearest coarse tile and its own descriptor (the CNN view matters most at a candidate: the head's
   re-score weights it 0.7, so a finer coarse lattice pays, see ``DemoConfig.cnn_gallery_km``);
5. the model: ``OverheadEncoder`` + ``NeighboursHead`` over the gallery, calibrated on the demo's
   held-out calibration tiles, saved as a model folder with the encoder in ``encoder/``.

Tiles are cut in batches straight from the global raster held as a tensor (``GlobalTiles``), with the
same geometry as ``data.overhead.cut_tile_array`` (azimuthal equidistant about the centre, row 0
facing the heading), evaluated exactly on a coarse lattice of each tile and interpolated between.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from geoscope.errors import InputError

EARTH_RADIUS_KM = 6371.0088


def land_lattice(spacing_km: float, min_lat: float, max_lat: float,
                 reach_km: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of a Fibonacci lattice with neighbours about ``spacing_km`` apart, on land, and in the
    sea where land lies within ``reach_km`` (tested on rings at a third, two thirds and all of the
    reach: 8, 16 and 24 bearings), so that islands and coasts between lattice points have entries."""
    from geoscope.demo import fibonacci_sphere, is_land
    from geoscope.geo.sphere import destination

    n = int(round(4 * math.pi * EARTH_RADIUS_KM**2 / (math.sqrt(3) / 2 * spacing_km**2)))
    lat, lon = fibonacci_sphere(max(n, 16))
    band = (lat >= min_lat) & (lat <= max_lat)
    keep = band & is_land(lat, lon)
    if reach_km > 0:
        sea = np.flatnonzero(band & ~keep)
        for frac, bearings in ((1 / 3, 8), (2 / 3, 16), (1.0, 24)):
            if not len(sea):
                break
            b = np.arange(bearings) * (360.0 / bearings)
            la, lo = destination(np.repeat(lat[sea], bearings), np.repeat(lon[sea], bearings), np.tile(b, len(sea)),
                                 reach_km * frac)
            hit = is_land(la, lo).reshape(len(sea), bearings).any(1)
            keep[sea[hit]] = True
            sea = sea[~hit]
    return lat[keep], lon[keep]


class GlobalTiles:
    """Batched tile cutting from a global plate-carree raster (lon -180..180, lat 90..-90)."""

    def __init__(self, raster, pad: int = 8):
        import torch

        if not getattr(raster, "wraps", False):
            raise InputError(f"raster {raster.name} is not global; the overhead gallery needs a whole-Earth raster")
        data = torch.from_numpy(np.ascontiguousarray(raster.data)).permute(2, 0, 1).float().div_(255.0)
        self.pad = pad
        self.height, self.width = data.shape[1], data.shape[2]
        self.image = torch.cat([data[:, :, -pad:], data, data[:, :, :pad]], 2)[None].contiguous()

    @staticmethod
    def _latlon(lat, lon, size, rot, fracs):
        """Exact (lat, lon) (k, g, g) of points at fractions ``fracs`` (g,) of each tile's side."""
        import torch

        dt = torch.float64
        lat, lon = torch.as_tensor(lat, dtype=dt), torch.as_tensor(lon, dtype=dt)
        size, rot = torch.as_tensor(size, dtype=dt), torch.as_tensor(rot, dtype=dt)
        u = torch.as_tensor(fracs, dtype=dt)
        x = u[None, None, :] * size[:, None, None]  # east (km)
        y = -u[None, :, None] * size[:, None, None]  # north (km)
        x, y = torch.broadcast_tensors(x, y)
        t = torch.deg2rad(rot)[:, None, None]
        x, y = x * torch.cos(t) + y * torch.sin(t), -x * torch.sin(t) + y * torch.cos(t)
        phi, lam = torch.deg2rad(lat)[:, None, None], torch.deg2rad(lon)[:, None, None]
        c = torch.stack([torch.cos(phi) * torch.cos(lam), torch.cos(phi) * torch.sin(lam), torch.sin(phi)], -1)
        e = torch.stack([-torch.sin(lam), torch.cos(lam), torch.zeros_like(lam)], -1)
        n = torch.stack([-torch.sin(phi) * torch.cos(lam), -torch.sin(phi) * torch.sin(lam), torch.cos(phi)], -1)
        d = torch.sqrt(x * x + y * y).clamp_min(1e-9)
        ang = d / EARTH_RADIUS_KM
        sinc = torch.sin(ang) / d
        p = c * torch.cos(ang)[..., None] + (x * sinc)[..., None] * e + (y * sinc)[..., None] * n
        plat = torch.rad2deg(torch.asin(p[..., 2].clamp(-1, 1)))
        plon = torch.rad2deg(torch.atan2(p[..., 1], p[..., 0]))
        return plat, plon

    def cut(self, lat, lon, size_km, pixels: int, rotation_deg=0.0, coarse: int = 9, chunk: int = 512):
        """(N, 3, P, P) float tiles in [0, 1], bilinear from the raster."""
        import torch
        import torch.nn.functional as F

        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        n = len(lat)
        size = np.broadcast_to(np.asarray(size_km, dtype=np.float64), (n,)).copy()
        rot = np.broadcast_to(np.asarray(rotation_deg, dtype=np.float64), (n,)).copy()
        outs = []
        centres = (np.arange(pixels) + 0.5) / pixels - 0.5
        lattice = np.linspace(centres[0], centres[-1], coarse)
        wp = self.width + 2 * self.pad
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            k = len(lat[sl])
            plat, plon = self._latlon(lat[sl], lon[sl], size[sl], rot[sl], lattice)
            c0 = torch.as_tensor(lon[sl], dtype=torch.float64)[:, None, None]
            dlon = (plon - c0 + 180.0) % 360.0 - 180.0
            both = F.interpolate(torch.stack([plat, dlon], 1), size=(pixels, pixels), mode="bilinear",
                                 align_corners=True)
            plat, dlon = both[:, 0], both[:, 1]
            # tiles reaching near a pole: longitude is not smooth there, so every pixel exactly
            reach = np.degrees(size[sl] * 0.75 / EARTH_RADIUS_KM)
            polar = np.flatnonzero(90.0 - np.abs(lat[sl]) < reach + 1.0)
            if len(polar):
                el, eo = self._latlon(lat[sl][polar], lon[sl][polar], size[sl][polar], rot[sl][polar], centres)
                plat[polar] = el
                dlon[polar] = (eo - c0[polar] + 180.0) % 360.0 - 180.0
            gx = ((c0 + dlon + 180.0) % 360.0 / 360.0 * self.width + self.pad) / wp * 2 - 1
            gy = (90.0 - plat) / 180.0 * 2 - 1
            grid = torch.stack([gx, gy], -1).float()
            out = F.grid_sample(self.image, grid.reshape(1, k * pixels, pixels, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)
            outs.append(out.reshape(3, k, pixels, pixels).transpose(0, 1))
        return torch.cat(outs).contiguous() if outs else torch.zeros(0, 3, pixels, pixels)


def perturb(x, g, strength: float = 1.0):
    """Photometric perturbations of float tiles (N, 3, P, P) with generator ``g``: contrast, brightness,
    saturation, hue, per-channel shifts, gamma, greyscale, blur, noise, resolution loss, 8-bit."""
    import torch
    import torch.nn.functional as F

    n, px = x.shape[0], x.shape[-1]
    s = strength

    def u(lo, hi, shape=(n, 1, 1, 1)):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - 0.5 * s, 1 + 0.5 * s) + mean * u(1 - 0.4 * s, 1 + 0.4 * s)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * u(1 - 0.8 * s, 1 + 0.6 * s)
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.pi * 0.25 * s
    k = torch.ones(3) / math.sqrt(3)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = torch.eye(3) + torch.sin(ang)[:, None, None] * kx + (1 - torch.cos(ang))[:, None, None] * (kx @ kx)
    x = torch.einsum("nij,njhw->nihw", rot, x)
    x = x + u(-0.08 * s, 0.08 * s, (n, 3, 1, 1))
    x = x.clamp(0, 1) ** torch.exp(u(-0.4 * s, 0.4 * s))
    m = (torch.rand(n, 1, 1, 1, generator=g) < 0.2 * s).float()
    x = m * x.mean(1, keepdim=True).expand_as(x) + (1 - m) * x
    blur = torch.nonzero(torch.rand(n, generator=g) < 0.3 * s).flatten()
    if len(blur):  # a [1, 2, 1] / 4 binomial blur along each axis (shifts and adds: cheaper than a conv)
        b = F.pad(x[blur], (1, 1, 1, 1), mode="replicate")
        b = (b[..., :-2] + 2 * b[..., 1:-1] + b[..., 2:]) / 4
        x[blur] = (b[..., :-2, :] + 2 * b[..., 1:-1, :] + b[..., 2:, :]) / 4
    noisy = torch.nonzero(torch.rand(n, generator=g) < 0.3 * s).flatten()
    if len(noisy):
        x[noisy] = x[noisy] + torch.randn((len(noisy),) + x.shape[1:], generator=g) * u(0.0, 0.04 * s, (len(noisy), 1, 1, 1))
    out = x.clamp(0, 1)
    lose = torch.rand(n, generator=g) < 0.3 * s
    factor = torch.randint(2, 5, (n,), generator=g)
    for f in (2, 3, 4):  # resolution loss, a batch per factor
        idx = torch.nonzero(lose & (factor == f)).flatten()
        if len(idx):
            small = F.interpolate(out[idx], size=(px // f,) * 2, mode="bilinear", antialias=True)
            out[idx] = F.interpolate(small, size=(px, px), mode="bilinear", align_corners=False)
    return (out * 255 + 0.5).clamp(0, 255).floor() / 255


def _save_tensor(path: Path, t) -> None:
    import torch

    from geoscope.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(t, fh)


def _load_tensor(path: Path):
    import torch

    return torch.load(path, weights_only=True)


def build_gallery(raster, cfg, folder: Path, backbone, stage, min_lat: float, max_lat: float):
    """Stages 1-4: returns (encoder, gallery embeddings (M, dim), gallery lat, gallery lon)."""
    import torch
    import torch.nn.functional as F

    from geoscope.encoders.overhead import DESCRIPTOR_PX, OverheadEncoder, describe, train_projection

    folder.mkdir(parents=True, exist_ok=True)
    g_lat, g_lon = land_lattice(cfg.gallery_km, min_lat, max_lat, cfg.gallery_reach_km)
    c_lat, c_lon = land_lattice(cfg.cnn_gallery_km, min_lat, max_lat, cfg.cnn_reach_km)
    if len(g_lat) < 2 or len(c_lat) < 1:
        raise InputError("gallery_km / cnn_gallery_km leave fewer than 2 gallery positions on land; make them smaller")
    tiles = GlobalTiles(raster)
    size, chunk = cfg.size_km, 1024

    desc_path = folder / "descriptors.pt"
    if desc_path.exists():
        ref, views = _load_tensor(desc_path)
    else:
        def describe_all():
            g = torch.Generator().manual_seed(cfg.seed + 29)
            rng = np.random.default_rng(cfg.seed + 31)
            refs: list = []
            qs: list[list] = [[] for _ in range(cfg.desc_views)]
            for s in range(0, len(g_lat), chunk):
                la, lo = g_lat[s:s + chunk], g_lon[s:s + chunk]
                refs.append(describe(tiles.cut(la, lo, size, 128)))
                for v in range(cfg.desc_views):
                    zoom = np.exp(rng.uniform(np.log(0.8), np.log(1.25), len(la)))
                    x = tiles.cut(la, lo, size * zoom, 128, rng.uniform(0.0, 360.0, len(la)))
                    x = F.interpolate(x, size=(DESCRIPTOR_PX,) * 2, mode="bilinear", antialias=True, align_corners=False)
                    qs[v].append(describe(perturb(x, g)))  # perturbed at the size described: 4x cheaper
            return torch.cat(refs), torch.stack([torch.cat(q) for q in qs])

        ref, views = stage.run(f"cut and describe {len(g_lat)} gallery tiles and {cfg.desc_views} perturbed views "
                               f"of each (every {cfg.gallery_km:g} km over land and the sea within "
                               f"{cfg.gallery_reach_km:g} km of it)", describe_all)
        _save_tensor(desc_path, (ref, views))

    proj_dir = folder / "encoder"
    if (proj_dir / "overhead.json").exists():
        encoder = OverheadEncoder.load(proj_dir, backbone=backbone)
    else:
        def train_all():
            return [train_projection(views, ref, epochs=cfg.desc_epochs, seed=cfg.seed + i, progress=cfg.progress)
                    for i in range(cfg.desc_seeds)]

        many = f"{cfg.desc_seeds} ring-descriptor projections (seeds)" if cfg.desc_seeds > 1 else "the ring-descriptor projection"
        projs = stage.run(f"train {many} on {len(g_lat)} places x {cfg.desc_views} views", train_all)
        encoder = OverheadEncoder(backbone, projs, cfg.cnn_weight)
        encoder.save(proj_dir)

    cnn_path = folder / "cnn.npy"
    if cnn_path.exists():
        cnn = np.load(cnn_path)
    else:
        def cnn_all():
            from tqdm import tqdm

            out = np.zeros((len(c_lat), backbone.dim), dtype=np.float32)
            step = 64
            for s in tqdm(range(0, len(c_lat), step), desc="CNN view of gallery tiles", unit="batch",
                          disable=not cfg.progress):
                out[s:s + step] = encoder.cnn_features(tiles.cut(c_lat[s:s + step], c_lon[s:s + step], size, cfg.pixels))
            return out

        cnn = stage.run(f"CNN view of {len(c_lat)} gallery tiles (every {cfg.cnn_gallery_km:g} km, 4 turns each)", cnn_all)
        from geoscope.atomic import atomic_path

        with atomic_path(cnn_path) as tmp:
            np.save(tmp, cnn)
    from scipy.spatial import cKDTree

    from geoscope.geo.sphere import to_unit

    _, nearest = cKDTree(to_unit(c_lat, c_lon)).query(to_unit(g_lat, g_lon))
    emb = encoder.combine(cnn[nearest], encoder.project_descriptors(ref))
    return encoder, emb, g_lat, g_lon

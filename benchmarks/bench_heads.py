"""Heads: classifier training throughput over cached embeddings, and locate latency per image.

1. Training: N float32 embeddings (dim D, held in one tensor, as ``geoscope train`` holds a store)
   and a two-level adaptive cell hierarchy over N random points; ``train.fit_head`` runs E epochs of
   the hierarchical classifier (haversine label smoothing at both levels) with large batches. The
   throughput is samples per second of the training pass (validation excluded), best epoch of E
   (the machine is shared: the best epoch is the least disturbed one).
2. Locate: a Geolocator = ``efficientnet-lite0`` encoder + that classifier + cells, on synthetic
   640x480 JPEG files: milliseconds per image for one image at a time and for a batch of 16
   (reading, decoding, EXIF, encoder, head, reverse geocoding of the candidates).

    python3 benchmarks/bench_heads.py [--n 200000] [--dim 768] [--threads 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def training_throughput(n: int, dim: int, batch_size: int, epochs: int, hidden: int, max_points: list[int]):
    import torch

    from geoscope.geo.cells import CellHierarchy
    from geoscope.heads import create_head
    from geoscope.train import TrainConfig, fit_head, make_targets

    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-0.9, 0.95, n)))
    lon = rng.uniform(-180, 180, n)
    cells = CellHierarchy.adaptive(lat, lon, 20, max_points)
    emb = torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32))
    targets = make_targets(lat, lon, cells)
    n_val = min(5000, n // 10)
    torch.manual_seed(0)
    head = create_head("classifier", dim, cells, hidden=hidden)
    result = fit_head(head, emb[n_val:], targets.take(slice(n_val, None)), emb[:n_val], targets.take(slice(0, n_val)),
                      TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs + 1), progress=False)
    rates = [r["samples_per_s"] for r in result.history]
    threads = torch.get_num_threads()
    # samples per second of `threads` cores' CPU time: what dedicated cores would give, on a shared machine
    cpu_rates = [r["samples_per_s"] * r["seconds"] / (r["cpu_seconds"] / threads) for r in result.history]
    return max(rates), max(cpu_rates), [len(level) for level in cells.levels], cells


def locate_latency(cells, n_images: int):
    from PIL import Image

    from geoscope.encoders import create_encoder
    from geoscope.geolocator import Geolocator
    from geoscope.heads import create_head

    encoder = create_encoder("efficientnet-lite0")
    rng = np.random.default_rng(1)
    head = create_head("classifier", encoder.dim, cells, hidden=256)
    geo = Geolocator(encoder, head, cells, name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        y, x = np.mgrid[0:480, 0:640].astype(np.float32)
        for i in range(n_images):
            img = np.stack([np.sin(x / (20 + i)) * 60 + 120, np.cos(y / (15 + i)) * 60 + 110, x / 640 * 200], -1)
            img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
            p = Path(tmp) / f"img{i}.jpg"
            Image.fromarray(img).save(p, quality=90)
            paths.append(str(p))
        geo.locate(paths[:2], top_k=5)  # warm up (first reverse geocoding loads the gazetteer)
        single = []
        for p in paths:
            t0 = time.perf_counter()
            geo.locate([p], top_k=5)
            single.append(time.perf_counter() - t0)
        geo.locate(paths[:16], top_k=5, batch_size=16)  # warm up the batch-16 kernels too
        t0 = time.perf_counter()
        geo.locate(paths, top_k=5, batch_size=16)
        batched = (time.perf_counter() - t0) / len(paths)
    return 1000 * float(np.median(single)), 1000 * batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="training embeddings")
    ap.add_argument("--dim", type=int, default=768, help="embedding dimension (CLIP ViT-L/14: 768)")
    ap.add_argument("--hidden", type=int, default=256, help="classifier hidden width")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-points", default="4000,1000", help="adaptive cells: max points per cell, coarse,fine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=32, help="JPEGs for the locate latency")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    max_points = [int(v) for v in args.max_points.split(",")]
    best, cpu_rate, sizes, cells = training_throughput(args.n, args.dim, args.batch_size, args.epochs,
                                                           args.hidden, max_points)
    single_ms, batch_ms = locate_latency(cells, args.images)
    rows = [
        [f"classifier training, {args.n:,} x {args.dim} float32, cells {sizes[0]}/{sizes[1]}, hidden {args.hidden}, "
         f"batch {args.batch_size}", "samples/s (best epoch)", best],
        ["  same", f"samples/s per {args.threads} cores of CPU time (best epoch)", cpu_rate],
        ["locate, efficientnet-lite0 + classifier, 640x480 JPEG, one at a time", "ms/image (median)", single_ms],
        ["locate, same, batches of 16", "ms/image", batch_ms],
    ]
    write_result("heads", "Heads: training throughput and locate latency", ["what", "unit", "value"], rows,
                 notes=f"{args.threads} torch threads; goal: classifier training >= 50,000 samples/s on 2 cores. "
                 f"Load average when done: {os.getloadavg()[0]:.1f} (other jobs share the cores; the CPU-time figure "
                 "divides the samples by the process's CPU seconds per thread, i.e. what dedicated cores would give).")


if __name__ == "__main__":
    main()

"""Throughput of the whole ``embed`` pipeline against the encoder's forward pass alone.

The pipeline (decode JPEG in worker processes -> resize/crop -> normalise -> forward -> float16 rows
+ journal, synced every batch) is timed end to end, pool start-up included, on N synthetic
640x480 JPEG photos. "Forward only" times ``encoder.encode_pixels`` at the same batch size on
pixels preprocessed beforehand. Runs alternate and medians of ``--repeats`` are reported; the ratio is taken pairwise with the
forward-only run just before (the machine is shared and its load drifts).

    python3 benchmarks/bench_embed.py [--encoder efficientnet-lite0] [--n 96] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def make_photos(folder: Path, n: int, size=(640, 480)) -> list[tuple[str, str, float, float]]:
    """Photo-like JPEGs (smooth gradients + texture + noise, ~quality 90), a few tens of kB each."""
    rng = np.random.default_rng(0)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    items = []
    for i in range(n):
        fx, fy, ph = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
        base = np.stack([np.sin(fx * x + ph) * 60 + 120 + y / h * 50,
                         np.cos(fy * y + ph) * 60 + 110,
                         np.sin(fx * x + fy * y) * 50 + 100 + x / w * 40], -1)
        img = base + rng.normal(0, 12, base.shape)
        p = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        items.append((f"p{i}", str(p), float(lat), float(lon)))
    return items


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the decoding workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_forward(encoder, pixels: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU ms/image) of the forward pass alone."""
    start, cpu = time.perf_counter(), _cpu()
    for s in range(0, len(pixels), batch_size):
        encoder.encode_pixels(pixels[s : s + batch_size])
    return len(pixels) / (time.perf_counter() - start), (_cpu() - cpu) / len(pixels) * 1000


def time_pipeline(encoder, items, out: Path, batch_size: int, workers: int) -> tuple[float, float, float]:
    """(images/s, CPU ms/image, share of wall time spent in the forward pass) of embed_dataset end to end."""
    from geoscope.store import embed_dataset

    shutil.rmtree(out, ignore_errors=True)
    in_forward = [0.0]
    forward = encoder.encode_pixels

    def timed(pixels):  # time spent in the forward pass inside the pipeline
        t = time.perf_counter()
        try:
            return forward(pixels)
        finally:
            in_forward[0] += time.perf_counter() - t

    encoder.encode_pixels = timed
    try:
        start, cpu = time.perf_counter(), _cpu()
        embed_dataset(items, encoder, out, batch_size=batch_size, workers=workers, progress=False)
        wall = time.perf_counter() - start
    finally:
        del encoder.encode_pixels
    return len(items) / wall, (_cpu() - cpu) / len(items) * 1000, in_forward[0] / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--runtime", default="auto", help="encoder runtime (torch, onnx, openvino, auto)")
    ap.add_argument("--precision", default=None, help="encoder precision (auto, fp32, bf16, int8; default: the encoder's)")
    ap.add_argument("--photo-size", default="640x480", help="WIDTHxHEIGHT of the synthetic JPEGs")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from geoscope.data.images import load_image
    from geoscope.encoders import create_encoder
    from geoscope.store import default_workers

    load0 = f"{os.getloadavg()[0]:.1f}"
    encoder = create_encoder(args.encoder, runtime=args.runtime, precision=args.precision)
    size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        (tmp / "photos").mkdir()
        items = make_photos(tmp / "photos", args.n, size)
        t0 = time.perf_counter()
        uint8 = np.stack([encoder.transform.to_uint8(load_image(p)) for _, p, _, _ in items])
        decode_ms = (time.perf_counter() - t0) / len(items) * 1000
        t0 = time.perf_counter()
        for _, p, _, _ in items:
            encoder.transform.to_uint8(load_image(p, draft_size=encoder.transform.resize))
        draft_ms = (time.perf_counter() - t0) / len(items) * 1000
        pixels = encoder.transform.normalize(uint8)
        encoder.encode_pixels(pixels[: args.batch_size])  # warm-up
        runs: dict = {"forward": []}
        for _ in range(args.repeats):  # alternate, so each pipeline run has a forward-only run beside it
            fwd_run = time_forward(encoder, pixels, args.batch_size) + (1.0,)
            runs["forward"].append(fwd_run)
            for w in args.workers:
                v = time_pipeline(encoder, items, tmp / "store", args.batch_size, w)
                runs.setdefault(w, []).append(v + (v[0] / fwd_run[0],))
        med = lambda xs: float(np.median(xs))  # noqa: E731
        fwd, fwd_cpu = med([r[0] for r in runs["forward"]]), med([r[1] for r in runs["forward"]])
        rows = [[f"forward pass only ({encoder.runtime} runtime)", args.batch_size,
                 round(fwd, 2), "100%", round(fwd_cpu, 1), "100%", "100%"]]
        for w in args.workers:
            r = runs[w]
            cpu = med([x[1] for x in r])
            rows.append([f"embed pipeline, {w} decoding workers" + (" (default)" if w == default_workers(encoder) else ""),
                         args.batch_size, round(med([x[0] for x in r]), 2), f"{100 * med([x[3] for x in r]):.1f}%",
                         round(cpu, 1), f"{100 * fwd_cpu / cpu:.0f}%", f"{100 * med([x[2] for x in r]):.0f}%"])
        notes = (f"{args.n} synthetic {size[0]}x{size[1]} JPEGs, encoder {args.encoder} on the {encoder.runtime} runtime "
                 f"({getattr(encoder, 'precision', 'fp32')}; torch has {torch.get_num_threads()} threads), medians of "
                 f"{args.repeats} alternating runs; "
                 "'of forward' is the median of (pipeline / the forward-only run just before it). "
                 f"Decode + resize + crop alone: {decode_ms:.1f} ms/image in one process; {draft_ms:.1f} ms/image with "
                 "JPEG draft-mode decoding (data.decode, load_image(draft_size=)), which the pipeline's decoding "
                 "workers use (store.decode.DraftLoader at the encoder's resize). "
                 "Pipeline time includes worker start-up, float16 writes and the per-batch fsync'd journal. "
                 "CPU ms/image counts this process and its decoding workers; 'forward CPU / CPU' is the share "
                 "of the pipeline's CPU spent in the forward pass, the throughput ratio a dedicated machine can reach "
                 "when decoding fully overlaps the forward pass; 'time in forward' is the share of the pipeline's "
                 "wall time the model was busy (100% = the model never waits for images). "
                 f"Load average before / after: {load0} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
        label = Path(args.encoder).name if os.path.isdir(args.encoder) else args.encoder
        name = "embed" if size == (640, 480) else f"embed_{size[0]}x{size[1]}"
        if label != "efficientnet-lite0":
            name += "_" + "".join(c if c.isalnum() else "-" for c in label)
        write_result(name, f"Embedding throughput: {label} ({encoder.runtime}, "
                     f"{getattr(encoder, 'precision', 'fp32')}), {size[0]}x{size[1]} photos, "
                     "pipeline vs forward pass",
                     ["what", "batch", "images/s", "of forward", "CPU ms/image", "forward CPU / CPU", "time in forward"],
                     rows, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Embedding on Ray against one process, and the per-image costs behind docs/SCALE.md.

Synthetic 640x480 JPEGs (``bench_embed.make_photos``) are embedded with efficientnet-lite0 into a
fresh store by ``embed_dataset`` in one process (its defaults: decoding in-process, torch on every core)
and by ``embed_dataset_ray`` on a local Ray instance with 1 and with 2 actors. Each configuration runs
twice, on N1 and on N2 images; what the N2 - N1 extra images cost is the per-image cost of a long job,
with every fixed cost (Ray and actor start-up, model load) cancelled out:

- incremental images/s = (N2 - N1) / (wall(N2) - wall(N1));
- incremental CPU ms per image = the same difference of the CPU time of every process involved (this
  one and all its descendants: Ray's raylet, workers and actors), sampled with psutil while it runs.

The CPU figure is the robust one on a shared machine: other jobs slow the wall clock, not our CPU
seconds. On a machine whose cores are all busy with the job, throughput is cores / CPU per image, so
"overhead" is Ray's CPU per image over one process's, minus 1. End-to-end numbers (start-up included)
are shown as well: they are what a short job waits for. One Ray instance is started per run, like
``geoscope embed --ray`` does.

The per-image costs are measured in this process: JPEG read + decode (also of a 2048x1536 photo, and
with Pillow's JPEG draft mode), resize + crop, normalisation, the forward pass, a store commit, and
``finish_store`` -- each as CPU time, and as wall time where it differs.

    python3 benchmarks/bench_ray.py [--n1 64] [--n2 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from bench_embed import make_photos  # noqa: E402


class TreeCPU:
    """CPU seconds used by this process and all its descendants from ``start()`` to ``stop()``."""

    def __init__(self, every: float = 0.25):
        import psutil

        self.psutil, self.every = psutil, every
        self.seen: dict[tuple[int, float], float] = {}
        self.base: dict[tuple[int, float], float] = {}
        self.done = threading.Event()

    def _sample(self) -> dict[tuple[int, float], float]:
        me = self.psutil.Process()
        out = {}
        for p in [me] + me.children(recursive=True):
            try:
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
            except self.psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self.seen.update(self._sample())

    def start(self) -> "TreeCPU":
        self.base = self._sample()
        self.seen = dict(self.base)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> float:
        self.seen.update(self._sample())
        self.done.set()
        self.thread.join()
        return sum(v - self.base.get(k, 0.0) for k, v in self.seen.items())


def _run(kind: str, folder: Path, encoder, out: Path, batch_size: int, workers: int) -> tuple[float, float]:
    """(wall s, CPU s) of one job, Ray start and shutdown included for Ray."""
    from geoscope.store import embed_dataset
    from geoscope.store.ray_embed import embed_dataset_ray

    shutil.rmtree(out, ignore_errors=True)
    cpu = TreeCPU().start()
    start = time.perf_counter()
    if kind == "single":
        embed_dataset(str(folder), encoder, out, batch_size=batch_size, progress=False)
    else:
        embed_dataset_ray(str(folder), encoder, out, batch_size=batch_size, workers=workers, progress=False)
    wall = time.perf_counter() - start
    return wall, cpu.stop()


def _timed(fn, n: int) -> tuple[float, float]:
    """(wall ms, CPU ms of this process) per item of ``fn()`` doing ``n`` items."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w) / n * 1000, (time.process_time() - c) / n * 1000


def _per_image_costs(paths: list[str], encoder, batch_size: int, tmp: Path) -> list[list]:
    import torch
    from PIL import Image

    from geoscope.atomic import write_json
    from geoscope.data.images import load_image
    from geoscope.store.layout import manifest
    from geoscope.store.shard import ShardWriter, finish_store, sample_record

    rows = []
    images: list = []
    rows.append(["read + decode a 640x480 JPEG (load_image)",
                 *_timed(lambda: images.extend(load_image(p) for p in paths), len(paths))])
    big = tmp / "big.jpg"
    rng = np.random.default_rng(1)
    base = np.clip(rng.normal(120, 40, (1536 // 8, 2048 // 8, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(base).resize((2048, 1536), Image.Resampling.BICUBIC).save(big, quality=90)
    rows.append(["read + decode a 2048x1536 JPEG (load_image)", *_timed(lambda: [load_image(big) for _ in range(10)], 10)])

    def drafted():
        for _ in range(10):
            im = Image.open(big)
            im.draft("RGB", (448, 448))  # the decoder's DCT scaling: at least 2x the 224 crop is kept
            encoder.transform.to_uint8(im.convert("RGB"))

    rows.append(["same 2048x1536, Pillow draft mode + resize/crop (not used by geoscope today)", *_timed(drafted, 10)])
    crops: list = []
    rows.append(["resize + centre crop 640x480 to 224 (to_uint8)",
                 *_timed(lambda: crops.extend(encoder.transform.to_uint8(im) for im in images), len(images))])
    batch = np.stack(crops[:batch_size])
    out: list = []
    rows.append(["normalise to float32 (per image of a batch)",
                 *_timed(lambda: out.append(encoder.transform.normalize(batch)), len(batch))])
    pixels = out[0]
    before = torch.get_num_threads()
    for threads in sorted({1, before}):
        torch.set_num_threads(threads)
        encoder.encode_pixels(pixels)  # warm-up
        rows.append([f"efficientnet-lite0 forward, batch {len(pixels)}, {threads} torch thread(s)",
                     *_timed(lambda: [encoder.encode_pixels(pixels) for _ in range(3)], 3 * len(pixels))])
    torch.set_num_threads(before)
    store = tmp / "costs_store"
    dim, n_rows, size = 1280, 20_000, 256
    store.mkdir()
    write_json(store / "store.json", manifest("bench", dim, complete=False))
    emb = np.random.default_rng(0).normal(size=(size, dim)).astype(np.float16)

    def commit():
        for s in range(4):  # four writers' shards
            w = ShardWriter(store, f"shards/{s}", "bench", dim)
            for b in range(0, n_rows // 4, size):
                first = s * n_rows // 4 + b
                w.commit([sample_record(p, f"img{p:08d}", 1.0, 2.0, f"/data/img{p:08d}.jpg") for p in range(first, first + size)],
                         [None] * size, emb)
            w.close()

    rows.append([f"store commit: {size}-row batches of 1280-d float16 + journal lines, fsync'd", *_timed(commit, n_rows)])
    rows.append([f"finish_store: {n_rows:,} journal rows in 4 shards -> Parquet + manifest (the driver)",
                 *_timed(lambda: finish_store(store, "bench", dim), n_rows)])
    import pandas as pd

    from geoscope.data.dataset import Dataset
    from geoscope.store.ray_embed import _todo_table

    n_table = 200_000
    table = pd.DataFrame({"id": [f"img{i:09d}" for i in range(n_table)],
                          "source": [f"/data/mp16/{i % 1000:03d}/img{i:09d}.jpg" for i in range(n_table)],
                          "lat": np.linspace(-60, 70, n_table), "lon": np.linspace(-180, 180, n_table)})
    dataset = Dataset(table, "manifest", "synthetic")
    rows.append([f"driver: list the samples still to do ({n_table:,}-row manifest, _todo_table)",
                 *_timed(lambda: _todo_table(dataset, {}, store), n_table)])
    return [[name, f"{c:.3g}", f"{w:.3g}"] for name, w, c in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=64)
    ap.add_argument("--n2", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--costs-only", action="store_true", help="only the per-image costs")
    args = ap.parse_args()

    import torch

    from geoscope.encoders import create_encoder

    load0 = os.getloadavg()
    encoder = create_encoder("efficientnet-lite0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        items = make_photos(tmp, args.n2)  # photo_00000.jpg ...
        for n in (args.n1, args.n2):
            (tmp / f"p{n}").mkdir()
            for _, p, _, _ in items[:n]:
                os.link(p, tmp / f"p{n}" / Path(p).name)
        encoder.encode_pixels(encoder.transform.normalize(np.zeros((2, 224, 224, 3), np.uint8)))  # warm-up
        if not args.costs_only:
            configs = [("single process", "single", 0), ("local Ray, 1 worker", "ray", 1),
                       ("local Ray, 2 workers", "ray", 2)]
            runs: dict = {}
            for name, kind, w in configs:
                for n in (args.n1, args.n2):
                    runs[name, n] = _run(kind, tmp / f"p{n}", encoder, tmp / "store", args.batch_size, w)
                    print(f"{name}, {n} images: wall {runs[name, n][0]:.1f} s, CPU {runs[name, n][1]:.1f} s", flush=True)
            extra = args.n2 - args.n1
            base_cpu = (runs["single process", args.n2][1] - runs["single process", args.n1][1]) / extra
            base_rate = extra / (runs["single process", args.n2][0] - runs["single process", args.n1][0])
            rows = []
            for name, _, _ in configs:
                (w1, c1), (w2, c2) = runs[name, args.n1], runs[name, args.n2]
                rate, cpu = extra / (w2 - w1), (c2 - c1) / extra
                rows.append([name, round(args.n2 / w2, 2), round(w1, 1), round(w2, 1), round(rate, 2),
                             round(1000 * cpu, 1), "-" if name.startswith("single") else f"{100 * (cpu / base_cpu - 1):+.0f}%",
                             "-" if name.startswith("single") else f"{100 * (1 - rate / base_rate):+.0f}%"])
            load1 = os.getloadavg()
            notes = (f"{args.n1} and {args.n2} synthetic 640x480 JPEGs, efficientnet-lite0 float32 on CPU, batch "
                     f"{args.batch_size}; one run per cell, configurations in the order listed. 'end to end' is "
                     f"{args.n2} images over the whole {args.n2}-image job (Ray and actor start-up included); "
                     "'incremental' divides the difference between the two jobs, which cancels every fixed cost. "
                     "CPU counts this process and every descendant (Ray's raylet, GCS, workers, actors), sampled "
                     "with psutil. 'CPU overhead' = Ray CPU per image / one process's - 1: on a machine whose cores "
                     "the job fills, throughput is cores / CPU per image. 'wall overhead' = 1 - incremental images/s "
                     "/ one process's; it favours Ray when actor start-up is long, because the decoding tasks "
                     "work ahead while the actors load. Local Ray announces workers + the cores left (at least one) "
                     "for decoding as CPUs; each actor runs torch on cores / workers threads; one process runs "
                     f"{torch.get_num_threads()} torch threads and decodes in-process. Load average (1/5/15 min) "
                     f"before: {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, after: {load1[0]:.1f}/{load1[1]:.1f}/"
                     f"{load1[2]:.1f} on {os.cpu_count()} cores shared with other jobs: wall-clock figures are "
                     "low and noisy; compare within the run, and trust the CPU column most.")
            write_result("ray", "Embedding on Ray: one process vs a local Ray instance (efficientnet-lite0, CPU)",
                         ["what", "images/s end to end", f"wall s, {args.n1} images", f"wall s, {args.n2} images",
                          "images/s incremental", "CPU ms/image incremental", "CPU overhead", "wall overhead"],
                         rows, notes)
        costs = _per_image_costs([p for _, p, _, _ in items[:64]], encoder, args.batch_size, tmp)
        write_result("ray_costs", "Per-image costs of embedding, in one process (the numbers behind docs/SCALE.md)",
                     ["step", "CPU ms per image", "wall ms per image"], costs,
                     "Measured in one process on this machine; CPU ms is this process's CPU time (all its threads), "
                     "the figure to multiply by an image count to size a cluster; wall ms is inflated by other jobs "
                     f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, shared). Synthetic photos "
                     "with noise compress worse than real ones, so decoding them is, if anything, slower. The store "
                     "rows write to a local disk.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

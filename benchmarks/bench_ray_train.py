"""Training on Ray against one process, and the memory of streaming training against a float32 copy.

A synthetic store (N rows of D-d float16 embeddings that are a smooth function of the location, as
``tests/test_heads_units.location_features`` makes them) trains a classifier head for E epochs:

- **throughput**: ``train_from_store`` in one process (torch on every core), and with ``ray=`` on a local
  Ray instance with 1 worker (every core's threads) and 2 workers (one thread each). Samples/s is the
  training loop's own figure (rows per second of the epochs' training steps, validation excluded),
  the median over the epochs after the first; end to end is the whole call (Ray start-up, the
  workers' set-up, validation, saving); CPU counts this process and every descendant (Ray's raylet,
  workers). The held-out median error of each model shows they learnt the same.
- **memory**: in a fresh process, after the same training on 1,000 rows (so lazy imports and torch's
  one-time set-up are in the baseline), the peak anonymous memory (RssAnon, sampled every millisecond)
  above that baseline while training on the store: streaming (``train_from_store``: batches read from
  the memory map) against today's-copy-equivalent (the store read into one float32 array, the training
  and validation rows taken from it as tensors, as ``train_from_store`` did before it streamed).

    python3 benchmarks/bench_ray_train.py [--n 40000] [--dim 768] [--epochs 3] [--hidden 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import write_result  # noqa: E402
from bench_ray import TreeCPU  # noqa: E402


def make_store(root: Path, n: int, dim: int, seed: int = 0):
    from test_heads_units import location_features

    from geoscope.geo.cells import CellHierarchy, save_cells
    from geoscope.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.9, n)))
    lon = rng.uniform(-180, 180, n)
    emb = np.empty((n, dim), np.float16)
    for s in range(0, n, 8192):
        emb[s: s + 8192] = location_features(lat[s: s + 8192], lon[s: s + 8192], dim=dim, seed=seed)
    EmbeddingStore.from_arrays(root / "store", range(n), emb, lat, lon, encoder="synthetic")
    save_cells(CellHierarchy.adaptive(lat, lon, 5, [n // 40, n // 200]), root / "cells.json")


def _train(root: Path, epochs: int, hidden: int, batch_size: int, workers: int | None, threads: int):
    """(wall s, CPU s, samples/s, training-step CPU ms per sample, held-out median km) of one training run."""
    import torch

    from geoscope.train import TrainConfig, train_from_store
    from geoscope.train_ray import RayTrainOptions

    out = root / f"model-{workers or 0}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".train"), ignore_errors=True)
    torch.set_num_threads(threads)
    ray = RayTrainOptions(workers=workers, threads=threads) if workers else None
    cpu = TreeCPU().start()
    start = time.perf_counter()
    _, result = train_from_store(root / "store", "classifier", out, cells=root / "cells.json",
                                 config=TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs),
                                 head_options={"hidden": hidden}, progress=False, calibrate=False, ray=ray)
    wall = time.perf_counter() - start
    later = result.history[1:] or result.history
    rate = float(np.median([r["samples_per_s"] for r in later]))
    # rank 0's CPU seconds in the training steps, times the workers (each does the same share)
    step_ms = float(np.median([r["cpu_seconds"] * (workers or 1) / result.report["n_train"] * 1000 for r in later]))
    return wall, cpu.stop(), rate, step_ms, result.report["validation"]["median_km"]


_MEMORY = r'''
import json, sys, threading, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
from geoscope.geo.cells import load_cells
from geoscope.store import EmbeddingStore
from geoscope.train import (TrainConfig, fit_head, location_groups, make_targets, split_indices, store_coords,
                            train_from_store)
from geoscope.heads import create_head

root, mode, hidden, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store, cells = EmbeddingStore.open(root + "/store"), load_cells(root + "/cells.json")
cfg = TrainConfig(epochs=1, batch_size=batch)

def stream(store, out):
    train_from_store(store, "classifier", out, cells=cells, head_options={"hidden": hidden}, config=cfg,
                     progress=False, calibrate=False, resume=False)

def copy(store, out):  # what train_from_store did before it streamed
    emb = torch.from_numpy(np.asarray(store.embeddings, dtype=np.float32))
    lat, lon = store_coords(store)
    targets = make_targets(lat, lon, cells)
    tr, va = split_indices(len(emb), cfg.val_fraction, cfg.seed, groups=location_groups(lat, lon))
    tr, va = torch.from_numpy(tr), torch.from_numpy(va)
    torch.manual_seed(0)
    head = create_head("classifier", emb.shape[1], cells, hidden=hidden)
    fit_head(head, emb[tr], targets.take(tr), emb[va], targets.take(va), cfg, progress=False)

run = stream if mode == "stream" else copy
tiny = EmbeddingStore.from_arrays(root + "/tiny-" + mode, store.ids[:1000], store.embeddings[:1000], store.lat[:1000],
                                  store.lon[:1000], encoder=store.encoder)
run(tiny, root + "/tiny-model-" + mode)

def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key + ":")).split()[1])

base, peak, done = kb("RssAnon"), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], kb("RssAnon"))
        time.sleep(0.001)
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
run(store, root + "/model-mem-" + mode)
wall = time.perf_counter() - t
done.set()
peak[0] = max(peak[0], kb("RssAnon"))
print(json.dumps({"peak_mb": (peak[0] - base) / 1024, "hwm_mb": kb("VmHWM") / 1024, "wall": wall}))
'''


def _memory(root: Path, mode: str, hidden: int, batch_size: int, threads: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}  # freed big blocks go back to the system
    proc = subprocess.run([sys.executable, "-c", _MEMORY, str(root), mode, str(hidden), str(batch_size), str(threads)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4096)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-train-"))
    try:
        make_store(tmp, args.n, args.dim)
        float32_mb = args.n * args.dim * 4 / 2**20
        load0 = os.getloadavg()
        runs = []
        for label, workers, threads in (("one process", None, cores), ("one process, 1 thread", None, 1),
                                        ("local Ray, 1 worker", 1, cores),
                                        ("local Ray, 2 workers", 2, max(1, cores // 2))):
            wall, cpu, rate, step_ms, median = _train(tmp, args.epochs, args.hidden, args.batch_size, workers, threads)
            runs.append((label, threads, wall, cpu, rate, step_ms, median))
            print(f"{label}: {rate:,.0f} samples/s, {step_ms:.3f} CPU ms per sample in the steps, {wall:.1f} s end "
                  f"to end, {cpu:.1f} CPU s, median {median:,.0f} km", file=sys.stderr)
        load1 = os.getloadavg()
        base_rate, base_ms = runs[0][4], runs[0][5]
        rows = [[label, threads, rate, f"{rate / base_rate:.2f}x", step_ms, f"{step_ms / base_ms - 1:+.0%}", wall, cpu,
                 median] for label, threads, wall, cpu, rate, step_ms, median in runs]
        write_result(
            "ray_train", "Training on Ray: one process vs a local Ray instance (classifier head, CPU)",
            ["run", "torch threads per process", "samples/s (training steps)", "vs one process",
             "CPU ms per sample (training steps)", "CPU vs one process", "end to end s", "CPU s end to end",
             "held-out median km"],
            rows,
            notes=f"{args.n:,} synthetic {args.dim}-d float16 embeddings (location features), a classifier head "
                  f"(hidden {args.hidden}, two cell levels), {args.epochs} epochs of batches of {args.batch_size}, "
                  "10% validation; one run each, in the order listed. Samples/s is the training loop's own rate "
                  "(median over the epochs after the first; validation excluded); CPU ms per sample is the CPU time "
                  "of the training steps (rank 0's, times the workers) per training row; end to end includes Ray's "
                  "start-up, the workers' set-up, validation each epoch and saving. CPU counts this process and "
                  "every descendant (Ray's raylet, GCS, workers). Ray workers sum their gradients in one gloo "
                  "all-reduce per step; each reads its half of every batch from the store's memory map. "
                  f"Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load0)}, after: "
                  f"{'/'.join(f'{x:.1f}' for x in load1)} on {cores} cores shared with other jobs: compare the "
                  "runs as ratios within this run, and trust the CPU column over the wall-clock ones (on a "
                  "contended machine Ray's several processes get a larger share of the cores than one process).",
        )
        half = tmp / "half"
        half.mkdir()
        make_store(half, args.n // 2, args.dim)
        shutil.copy(tmp / "cells.json", half / "cells.json")  # the same cells: only the rows differ
        mem = {(mode, n): _memory(root, mode, args.hidden, args.batch_size, cores)
               for mode in ("stream", "copy") for n, root in ((args.n // 2, half), (args.n, tmp))}
        rows = []
        for mode, label in (("stream", "streaming (train_from_store today)"),
                            ("copy", "float32 copy of the store (train_from_store before)")):
            small, big = mem[(mode, args.n // 2)], mem[(mode, args.n)]
            slope = (big["peak_mb"] - small["peak_mb"]) / (args.n - args.n // 2)  # MB per row
            for n, m in ((args.n // 2, small), (args.n, big)):
                rows.append([label, f"{n:,}", m["peak_mb"], m["peak_mb"] / (n * args.dim * 4 / 2**20), m["hwm_mb"],
                             m["wall"]])
            rows.append([label, "growth per 1,000 rows", f"{slope * 1000:.2f} MB", "", "", ""])
        write_result(
            "ray_train_memory", "Peak memory of training: streaming from the store vs a float32 copy",
            ["training", "rows", "peak anonymous memory above baseline MB", "x the float32 size of the store",
             "peak resident MB (VmHWM, incl. mapped store pages)", "wall s"],
            rows,
            notes=f"Stores of {args.n // 2:,} and {args.n:,} rows x {args.dim} float16 ({float32_mb:,.0f} MB as "
                  f"float32 at {args.n:,} rows; a float32 row is {args.dim * 4 / 1000:.2f} KB), the same cells, one "
                  "epoch, each in a fresh process whose baseline is taken "
                  "after the same training on 1,000 rows (imports, torch's one-time set-up). Anonymous memory "
                  "(RssAnon) is sampled every millisecond; big freed blocks are returned to the system "
                  "(MALLOC_MMAP_THRESHOLD_=1 MiB) so the figure is what training holds. Streaming's peak is "
                  "its chunks (16 MB of float32), a batch, the head's per-row targets (O(N), without the "
                  "embedding width) and the model; the copy's is the store in float32 plus the training "
                  "and validation rows taken from it. VmHWM also counts the store's pages read through the "
                  "memory map (page cache, given back under pressure). The growth per 1,000 rows is what a "
                  "bigger store adds: streaming's is its per-row targets, the copy's is the float32 rows "
                  "(twice: the store and the training rows taken from it). "
                  f"Load average {os.getloadavg()[0]:.1f} on {cores} cores.",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

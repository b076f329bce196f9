"""Geocells speed: building adaptive cells for 1 M and 5 M training points, and point -> cell
throughput for grid and adaptive cells (goal: >= 1 M points/s).

Training points are synthetic and clustered like photo collections: 70 % around 200 "cities"
(Gaussian, sigma 0.3 deg), 30 % spread uniformly over latitudes -60..75.

    python3 benchmarks/bench_cells.py [--sizes 1000000,5000000] [--min 50] [--max 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from geoscope.geo.cells import CellHierarchy, Geocells  # noqa: E402


def clustered_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.stack([rng.uniform(-45, 65, 200), rng.uniform(-180, 180, 200)], axis=1)
    k = int(0.7 * n)
    c = centres[rng.integers(0, len(centres), k)]
    lat = np.concatenate([c[:, 0] + rng.normal(0, 0.3, k), rng.uniform(-60, 75, n - k)])
    lon = np.concatenate([c[:, 1] + rng.normal(0, 0.3, k), rng.uniform(-180, 180, n - k)])
    return np.clip(lat, -90, 90), (lon + 180.0) % 360.0 - 180.0


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--min", type=int, default=50, dest="min_points")
    ap.add_argument("--max", type=int, default=1000, dest="max_points")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    for n in sizes:
        lat, lon = clustered_points(n)
        holder = {}
        t = best_of(lambda: holder.update(c=Geocells.adaptive(lat, lon, args.min_points, args.max_points)), 1)
        cells = holder["c"]
        s = cells.summary()
        rows.append([f"build adaptive {args.min_points}-{args.max_points}", f"{n:,}", t, n / t / 1e6,
                     f"{len(cells):,} cells, {s['below_min']} below min, {s['above_max']} above max"])
        t = best_of(lambda: CellHierarchy.adaptive(lat, lon, args.min_points, [5000, 2000, 1000]), 1)
        rows.append([f"build hierarchy {args.min_points}-5000/2000/1000", f"{n:,}", t, n / t / 1e6, "3 levels"])
        t = best_of(lambda: cells.assign(lat, lon))
        rows.append(["assign, adaptive", f"{n:,}", t, n / t / 1e6, f"{len(cells):,} cells"])
        grid = Geocells.grid((-90, -180, 90, 180), 180, 360)
        t = best_of(lambda: grid.assign(lat, lon))
        rows.append(["assign, grid 180x360", f"{n:,}", t, n / t / 1e6, f"{len(grid):,} cells"])
        print(rows[-4:], file=sys.stderr)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    write_result(
        "cells", "Geocells: building adaptive cells and point -> cell lookup",
        ["operation", "points", "seconds", "M points/s", "notes"], rows,
        notes="Synthetic clustered points (70% around 200 cities, 30% uniform). Lookup includes coordinate "
              "validation; best of 3 runs. Goal: point -> cell >= 1 M points/s. "
              f"Load average at the end of the run: {load} (other work on the machine slows these numbers).",
    )


if __name__ == "__main__":
    main()

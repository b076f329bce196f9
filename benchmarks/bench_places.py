"""Offline reverse geocoding throughput (points/s): country, first-level region, nearest town and
whole Place objects, plus the one-off costs (loading the data, building the lookup grids).

Goals: >= 100 k points/s for country, >= 200 k points/s for the nearest town. Two kinds of points:
"anywhere" (uniform on the sphere, 71 % sea) and "photo-like" (GeoNames towns moved by ~5 km, so
nearly all on land and many near borders and coasts, where the exact polygon test runs).

    python3 benchmarks/bench_places.py [--n 1000000] [--n-places 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from geoscope.geo import borders, places  # noqa: E402


def anywhere(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def photo_like(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    towns = places._towns()
    k = rng.integers(0, len(towns), n)
    lat = np.clip(towns.lat[k] + rng.normal(0, 0.05, n), -90, 90)
    lon = towns.lon[k] + rng.normal(0, 0.05, n)
    return lat, (lon + 180.0) % 360.0 - 180.0


def seconds(fn, repeat: int) -> float:
    """Fastest of ``repeat`` runs."""
    out = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="points for the vectorised lookups")
    ap.add_argument("--n-places", type=int, default=200_000, help="points for reverse_geocode (Place objects)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    rows = []
    # one-off costs: read the derived files, build the grids from scratch (as on first use) ...
    t0 = time.perf_counter()
    cs, rs = borders.countries(), borders.admin1()
    towns = places._towns()
    t_load = time.perf_counter() - t0
    rows.append(["load countries + admin-1 + towns (first call in a process)", "-", f"{t_load:.2f} s", "-"])
    with tempfile.TemporaryDirectory() as tmp:
        for bs in (cs, rs):
            fresh = borders.BorderSet(bs.kind, bs.codes, bs.names, bs.parent_codes, bs.geometries,
                                      grid_cache=Path(tmp) / f"{bs.kind}.npz")
            t = seconds(lambda: fresh.grid, 1)
            rows.append([f"build {bs.kind} lookup grid (once, then cached on disk)", "-", f"{t:.2f} s",
                         f"{(fresh.grid == -2).mean():.1%} border cells"])
    t = seconds(lambda: towns.tree, 1)
    rows.append(["build towns k-d tree (once per process)", f"{len(towns):,} towns", f"{t:.2f} s", "-"])

    for kind, gen in (("anywhere", anywhere), ("photo-like", photo_like)):
        lat, lon = gen(args.n, rng)
        land = float((places.country_codes(lat, lon) != "").mean())
        for label, fn in (("country_codes", places.country_codes), ("region_codes", places.region_codes),
                          ("nearest_towns", places.nearest_towns)):
            t = seconds(lambda: fn(lat, lon), args.repeat)
            rows.append([f"{label} ({kind})", f"{args.n:,}", f"{args.n / t:,.0f} points/s", f"{land:.0%} on land"])
        m = min(args.n_places, args.n)
        t = seconds(lambda: places.reverse_geocode(lat[:m], lon[:m]), 1)
        rows.append([f"reverse_geocode -> Place ({kind})", f"{m:,}", f"{m / t:,.0f} points/s", "-"])

    write_result(
        "places", "Offline reverse geocoding (geo.places)", ["what", "points", "speed", "notes"], rows,
        notes="Country: Natural Earth 1:10m admin-0, region: Natural Earth admin-1 (simplified 0.0025 deg); "
              "0.1-degree lookup grid with exact polygon tests in border cells. Towns: GeoNames cities1000 "
              "(CC-BY 4.0), cKDTree over unit vectors, all cores.",
    )


if __name__ == "__main__":
    main()

"""Gallery search: exact (one matrix product) against the HNSW index of ``heads.ann`` on a large gallery.

The gallery is N unit vectors of D dimensions, **clustered** (the default): random unit centres, each
entry a centre plus Gaussian noise, about 100 entries per cluster, as embeddings of places or tiles
bunch by region; queries are new noisy members of random clusters. ``--data sphere`` makes a GPS-like
gallery instead (random places through random Fourier features). Not uniformly random vectors: those
have no neighbourhoods, which no real gallery lacks and no graph index handles well. Recall@k is the
share of the exact top-k found by the index. Times are per query, single
queries (what ``locate`` does), median over the queries; the index is built once and kept in the cache
folder (its build time is reported).

    python3 benchmarks/bench_ann.py [--n 1000000] [--dim 512] [--queries 200]
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


def sphere_points(n: int, rng) -> np.ndarray:
    """n random points on the unit sphere, as (n, 3) unit vectors."""
    p = rng.standard_normal((n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def location_features(points: np.ndarray, dim: int, seed: int = 1) -> np.ndarray:
    """Unit (n, dim) embeddings of sphere points by random Fourier features at three scales: a stand-in
    for a location encoder's gallery embeddings (GeoCLIP's is Fourier features + an MLP)."""
    rng = np.random.default_rng(seed)
    scales = np.repeat([2.0, 8.0, 32.0], [dim // 3, dim // 3, dim - 2 * (dim // 3)])
    w = (rng.standard_normal((3, dim)) * scales).astype(np.float32)
    b = rng.uniform(0, 2 * np.pi, dim).astype(np.float32)
    out = np.empty((len(points), dim), np.float32)
    step = 100_000
    for s in range(0, len(points), step):
        x = np.cos(points[s : s + step].astype(np.float32) @ w + b)
        out[s : s + step] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered(n: int, dim: int, centres: int, rng, noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors in ``centres`` clusters (a random unit centre plus Gaussian noise of norm ~``noise``,
    normalised; about n / centres members each), and the centres."""
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = c[rng.integers(0, centres, m)] + rng.standard_normal((m, dim)).astype(np.float32) * (noise / np.sqrt(dim))
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--data", choices=["clustered", "sphere"], default="clustered")
    ap.add_argument("--clusters", type=int, default=10_000)
    args = ap.parse_args()

    import faiss

    from geoscope import settings
    from geoscope.heads.ann import EF_CONSTRUCTION, EF_SEARCH, HNSW_M, AnnIndex, cached_index, exact_search, index_file_name

    load0 = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    if args.data == "sphere":
        gallery = location_features(sphere_points(args.n, rng), args.dim)
        q = location_features(sphere_points(args.queries, rng), args.dim)  # places not in the gallery
        data = ("random places on the sphere through random Fourier features (a GPS-gallery stand-in), queries "
                "other places")
    else:
        gallery, centres = clustered(args.n, args.dim, args.clusters, rng)
        q = centres[rng.integers(0, len(centres), args.queries)]
        q = q + rng.standard_normal(q.shape).astype(np.float32) * (0.8 / np.sqrt(args.dim))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        data = (f"clustered: {args.clusters:,} random unit centres, each entry a centre plus Gaussian noise (norm 0.8), "
                f"normalised (~{args.n // args.clusters} per cluster); queries are new noisy members of random clusters")
    path = settings.cache_dir() / "bench" / index_file_name(f"ann-{args.data}-{args.n}-{args.dim}")
    t0 = time.perf_counter()
    index = cached_index(gallery, path, what="benchmark gallery")
    build_s = time.perf_counter() - t0

    exact_t, truth = [], []
    for i in range(args.queries):
        t = time.perf_counter()
        _, idx = exact_search(gallery, q[i : i + 1], args.k)
        exact_t.append(time.perf_counter() - t)
        truth.append(idx[0])
    rows = [["exact (numpy matrix product)", "", 1.0, 1000 * float(np.median(exact_t)), 1.0]]
    for ef in args.ef:
        ix = AnnIndex(index.index, ef_search=ef)
        times, found = [], []
        for i in range(args.queries):
            t = time.perf_counter()
            _, idx = ix.search(q[i : i + 1], args.k)
            times.append(time.perf_counter() - t)
            found.append(len(set(idx[0].tolist()) & set(truth[i].tolist())) / args.k)
        ms = 1000 * float(np.median(times))
        rows.append([f"HNSW (M={HNSW_M}, efConstruction={EF_CONSTRUCTION}, efSearch={ef}"
                     f"{', default' if ef == EF_SEARCH else ''})", ef,
                     float(np.mean(found)), ms, float(np.median(exact_t)) * 1000 / ms])
    notes = (f"{args.n:,} unit vectors of {args.dim} dimensions, {data}; {args.queries} single queries, "
             f"k={args.k}; recall@{args.k} against exact search. Index ready in "
             f"{build_s:.0f} s (built once, then read from the cache file {path.name}; the build of this index "
             "took tens of minutes on the shared machine). The graph is repaired after its build "
             "(heads.ann.repair: every entry the graph cannot find when searched for itself at efSearch 64 is "
             "linked to its nearest entries). "
             f"faiss {faiss.__version__}, "
             f"{faiss.omp_get_max_threads()} OpenMP threads. Load average {load0:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores (shared machine: times are noisy).")
    write_result("ann", f"Gallery search: exact vs HNSW, {args.n:,} x {args.dim}",
                 ["search", "efSearch", f"recall@{args.k}", "ms / query (median)", "speed-up"], rows, notes)


if __name__ == "__main__":
    main()

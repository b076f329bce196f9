"""Explain and verify: how well and how fast.

1. Attributions on a score that depends on one region only (a 16 x 16 patch of a 64 x 64 image):
   share of |attribution| inside the region, evaluations and seconds per method.
2. Verify on a model trained on a tiny synthetic store (tiny random CLIP encoder, classifier head,
   five clusters on five continents): thresholds calibrated on a held-out store, then verdicts on
   more held-out photos whose EXIF GPS is true and on the same photos with GPS forged to another continent.
3. Map rendering time (grid of 1200 cells; adaptive cells from 100k points).

Run: python3 benchmarks/bench_explain_verify.py [--n-check 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import write_result  # noqa: E402


def attribution_rows() -> list[list]:
    from geoscope.explain import explain_image

    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    img[8:24, 40:56] = ((((yy // 2) + (xx // 2)) % 2) * 255).astype(np.uint8)[8:24, 40:56, None]

    def f(images):
        return images[:, 8:24, 40:56].astype(np.float64).std(axis=(1, 2, 3)) / 128.0

    inside = np.zeros((64, 64), dtype=bool)
    inside[8:24, 40:56] = True
    rows = []
    explain_image(f, img, method="partition", max_evals=50, progress=False)  # shap's numba compile, once
    for method, evals in (("occlusion", None), ("partition", 300), ("partition", 1000), ("permutation", 300)):
        t = time.perf_counter()
        a = explain_image(f, img, method=method, max_evals=evals or 0, grid=8, progress=False)
        dt = time.perf_counter() - t
        share = np.abs(a.values[inside]).sum() / np.abs(a.values).sum()
        rows.append([f"attribution {method}" + (f" max_evals={evals}" if evals else " 8x8 grid"),
                     f"{100 * share:.1f}% of |attribution| in the region", a.n_evals, f"{dt:.2f} s"])
    return rows


def verify_rows(n_check: int) -> list[list]:
    from _imagefixtures import make_geotagged_folder, synthetic_image

    from geoscope.data.datasets import open_dataset
    from geoscope.data.exif import ExifFindings
    from geoscope.encoders import create_encoder
    from geoscope.encoders.testing import save_tiny_clip
    from geoscope.geo.cells import CellHierarchy, Geocells
    from geoscope.geo.sphere import haversine_km
    from geoscope.store import embed_dataset
    from geoscope.train import TrainConfig, train_from_store
    from geoscope.verify import calibrate_thresholds, verify_prediction

    cities = [(60.2, 24.9), (40.7, -74.0), (-33.9, 151.2), (-23.5, -46.6), (-1.3, 36.8)]
    size = (48, 32)

    def points(n, seed):
        r = np.random.default_rng(seed)
        p = np.array(cities)[r.integers(0, len(cities), n)] + r.normal(0, 1.5, (n, 2))
        return [(float(a), float(b)) for a, b in p]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        enc = create_encoder(str(save_tiny_clip(root / "clip")))
        train = make_geotagged_folder(root / "train", points(300, 1), size=size)
        store = embed_dataset(open_dataset(root / "train"), enc, root / "st", workers=0, progress=False)
        lat = np.array([t[1] for t in train])
        lon = np.array([t[2] for t in train])
        cells = CellHierarchy([Geocells.grid((-60, -180, 80, 180), 14, 36).fit_centroids(lat, lon)])
        geo, _ = train_from_store(store, "classifier", root / "model", cells=cells,
                                  config=TrainConfig(epochs=40, patience=40, lr=1e-2), progress=False)
        val = points(150, 2)
        preds = geo.locate([synthetic_image(a, b, size) for a, b in val], top_k=5)
        thr = calibrate_thresholds(preds, [v[0] for v in val], [v[1] for v in val])
        check = points(n_check, 3)
        imgs = [synthetic_image(a, b, size) for a, b in check]
        located = geo.locate(imgs, top_k=5)
        verdicts = {"true GPS": [], "GPS forged to another continent": []}
        for p, (a, b) in zip(located, check):
            far = max(cities, key=lambda c: haversine_km(a, b, *c))
            p.exif = ExifFindings(lat=a, lon=b)
            verdicts["true GPS"].append(verify_prediction(p, thresholds=thr).verdict)
            p.exif = ExifFindings(lat=far[0], lon=far[1])
            verdicts["GPS forged to another continent"].append(verify_prediction(p, thresholds=thr).verdict)
    rows = []
    for name, v in verdicts.items():
        rows.append([f"verify, {name} (n={len(v)})",
                     ", ".join(f"{k} {v.count(k)}" for k in ("consistent", "inconclusive", "inconsistent")),
                     "", thr.describe()])
    return rows


def map_rows() -> list[list]:
    from geoscope.geo.cells import Geocells
    from geoscope.prediction import Candidate, Prediction
    from geoscope.report.maps import plot_prediction

    rng = np.random.default_rng(0)
    rows = []
    grid = Geocells.grid((59.5, 20.0, 70.1, 31.6), 30, 40)
    lat = np.clip(rng.normal(45, 20, 100_000), -80, 80)
    adaptive = Geocells.adaptive(lat, rng.uniform(-180, 180, 100_000), 20, 200)
    with tempfile.TemporaryDirectory() as tmp:
        for name, cells in (("grid 30x40 (Finland)", grid), (f"adaptive ({len(adaptive)} cells, world)", adaptive)):
            p = rng.dirichlet(np.full(len(cells), 0.3))
            i = int(np.argmax(p))
            pred = Prediction("x", [Candidate(*cells.centroids[i], float(p[i]))], p, cells)
            plot_prediction(pred, Path(tmp) / "warm.png")  # border data loaded once
            t = time.perf_counter()
            plot_prediction(pred, Path(tmp) / "m.png")
            rows.append([f"map PNG, {name}", "", "", f"{time.perf_counter() - t:.2f} s"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-check", type=int, default=60)
    args = ap.parse_args()
    rows = attribution_rows() + verify_rows(args.n_check) + map_rows()
    write_result(
        "explain_verify", "Explain and verify", ["what", "result", "evaluations", "time / thresholds"], rows,
        notes="Attributions: score = detail (std) in one 16x16 patch of a 64x64 image; hidden regions are "
        "blurred. Verify: tiny random-CLIP encoder + classifier head trained on 300 synthetic photos around "
        "five cities; thresholds calibrated on 150 other photos (true vs. GPS moved >= 3000 km).",
    )


if __name__ == "__main__":
    main()

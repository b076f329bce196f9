"""The demo's overhead model on more held-out land tiles than the demo's own 500.

500 test tiles estimate a 2 % miss rate to about +-0.6 points; the goal (issue 11: >= 98 % within
750 km) needs a finer estimate. This reads the extra held-out tiles ``bench_calibration.py --extra N``
cut and embedded for the same demo folder (positions drawn like the demo's test positions, never the
training lattice; the demo's full perturbations; other seeds) and scores the demo's saved overhead
model on their land tiles, beside the demo's own 500.

    python3 benchmarks/bench_calibration.py --out DEMO --extra 4200   # cuts and embeds the extra tiles
    python3 benchmarks/bench_demo_extra.py --out DEMO --extra 4200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from bench_calibration import _demo_test_embeddings, demo_config, extra_tiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="the demo folder (geoscope demo -o DIR; bench_demo.py's default)")
    ap.add_argument("--extra", type=int, default=4200, help="as given to bench_calibration.py --extra")
    args = ap.parse_args()

    from geoscope.demo import OVERHEAD_METHOD, test_positions
    from geoscope.encoders.overhead import OverheadEncoder
    from geoscope.geo.sphere import haversine_km
    from geoscope.geolocator import Geolocator

    cfg, report = demo_config(args.out)
    out = Path(args.out)
    model = out / "model-overhead"
    geo = Geolocator.from_pretrained(model, encoder=OverheadEncoder.load(model / "encoder"))

    def errors(emb, lat, lon):
        best = np.array([[p.best.lat, p.best.lon] for p in geo.locate_embeddings(emb, 5)])
        return haversine_km(best[:, 0], best[:, 1], lat, lon)

    store, own_emb = _demo_test_embeddings(cfg, report)
    t_lat, t_lon, t_land = test_positions(cfg.n_test_land, cfg.n_test_sea, cfg.seed)
    pos = np.array([int(i[1:]) for i in store.ids])  # the store's rows -> test positions
    own = errors(own_emb[t_land[pos]], t_lat[pos][t_land[pos]], t_lon[pos][t_land[pos]])
    lat, lon, land, emb, _ = extra_tiles(cfg, report, args.extra, progress=False)
    extra = errors(emb["overhead"][land], lat[land], lon[land])
    rows = []

    def row(what, err):
        err = np.asarray(err)
        rows.append([what, len(err), int((err > 750).sum()), f"{100 * np.mean(err <= 200):.1f}%",
                     f"{100 * np.mean(err <= 750):.2f}%", round(float(np.median(err)), 1)])

    row("the demo's own held-out land tiles", own)
    row("extra held-out land tiles", extra)
    row("both together", np.concatenate([own, extra]))
    print("\n".join(" | ".join(str(v) for v in r) for r in rows))
    write_result("demo_extra", f"Offline demo: {OVERHEAD_METHOD} on more held-out land tiles",
                 ["tiles", "n", "beyond 750 km", "within 200 km", "within 750 km", "median km"], rows,
                 f"Demo folder {out} (the model as the demo saved it); extra tiles from `bench_calibration.py --out "
                 f"{out} --extra {args.extra}` (their land share; positions and perturbations drawn like the demo's "
                 "test tiles with other seeds). Goal (issue 11): >= 98 % within 750 km.")


if __name__ == "__main__":
    main()

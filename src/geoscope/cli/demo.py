"""geoscope demo: the offline planet-scale demo (Blue Marble tiles -> geolocator -> evaluation)."""

from __future__ import annotations

import argparse

from geoscope.cli._common import add_json_flag, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: train and evaluate a geolocator on NASA Blue Marble tiles",
        description="Cut tiles from a global image (NASA Blue Marble by default), embed them with "
        "efficientnet-lite0, build adaptive geocells, train the hybrid head and evaluate it on held-out, "
        "perturbed tiles against three baselines. Stages are cached under --out.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--raster", default="bmng",
                   help="training imagery: bmng, shadedrelief, etopo, or a GeoTIFF / image path (default: bmng)")
    p.add_argument("--query-raster", default=None,
                   help="cut the held-out tiles from this raster instead (cross-source generalisation)")
    p.add_argument("--size-km", type=float, default=800.0, help="tile size on the ground (default: 800)")
    p.add_argument("--train", type=positive_int, default=None, help="training positions on land (default: 3000)")
    p.add_argument("--views", type=positive_int, default=None, help="tiles per training position (default: 2)")
    p.add_argument("--test", type=positive_int, default=None, help="held-out land positions (default: 500)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few hundred tiles, about a minute: proves the pipeline")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geoscope.demo import DemoConfig, run_demo

    kw = {"out": args.out, "raster": args.raster, "query_raster": args.query_raster, "size_km": args.size_km,
          "seed": args.seed}
    for name, value in (("n_train", args.train), ("views", args.views), ("n_test_land", args.test),
                        ("epochs", args.epochs)):
        if value is not None:
            kw[name] = value
    cfg = DemoConfig.quick(**kw) if args.quick else DemoConfig(**kw)
    report = run_demo(cfg)
    if args.json:
        from geoscope.cli._common import print_json

        print_json({k: v for k, v in report.items() if k != "text"})
    else:
        print(report["text"])
    return 0

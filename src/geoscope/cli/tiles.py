"""geoscope tiles: cut overhead tiles centred on points, with a manifest that geoscope embed reads."""

from __future__ import annotations

import argparse

from geoscope.cli.options import (
    add_bbox,
    add_json,
    add_no_progress,
    add_output,
    add_points,
    bounds_to_bbox,
    deprecate,
    positive_float,
    unit_fraction,
    positive_int,
)


def register(sub) -> None:
    p = sub.add_parser(
        "tiles",
        help="cut square overhead tiles centred on points out of a raster",
        description="Cut one square tile per point of a CSV (id,lat,lon) out of a GeoTIFF or a global "
        "plate-carree image (bmng, shadedrelief, etopo), resampled into a local projection (UTM or "
        "azimuthal) at the given ground size. Writes OUT/tiles/*.jpg, OUT/manifest.csv (id,lat,lon,path, "
        "usable by geoscope embed) and OUT/skipped.csv. Re-running keeps tiles already written.",
    )
    p.add_argument("raster", metavar="RASTER", help="GeoTIFF, an image with --bbox, or bmng / shadedrelief / etopo")
    add_points(p, help="CSV with id,lat,lon columns: one tile per point")
    add_output(p, metavar="OUT", help="output folder")
    p.add_argument("--size-km", type=positive_float, required=True, metavar="KM", help="tile size on the ground")
    p.add_argument("--pixels", type=positive_int, default=224, metavar="N", help="tile width and height in pixels")
    p.add_argument("--projection", choices=("auto", "utm", "aeqd"), default="auto",
                   help="local projection of each tile: utm, aeqd (azimuthal equidistant), or auto (UTM for tiles up to "
                   "500 km away from the poles, else aeqd)")
    add_bbox(p, antimeridian=False,
             help="the area a plain (non-GeoTIFF) image covers, in degrees, lat-first (default: the whole "
             "globe for an image twice as wide as high)")
    p.add_argument("--bands", default=None, metavar="R,G,B",
                   help="1-based band numbers for R,G,B, e.g. 4,3,2 (default: the bands tagged red, green, blue, "
                   "else the first three)")
    p.add_argument("--min-valid", type=unit_fraction, default=0.5, metavar="FRACTION",
                   help="least fraction of a tile with data")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)
    deprecate(p, "--out", "--output")
    deprecate(p, "--bounds", "--bbox", convert=bounds_to_bbox, hint="--bbox SOUTH,WEST,NORTH,EAST (lat-first)")


def run(args: argparse.Namespace) -> int:
    import csv

    from geoscope.cli._common import float_list, print_json
    from geoscope.data.overhead import build_tiles, open_raster
    from geoscope.geo.table import read_points

    bands = [int(b) for b in float_list(args.bands, None, "--bands")] if args.bands else None
    raster = open_raster(args.raster, bounds=args.bbox, bands=bands)
    pts = read_points(args.points)
    manifest = build_tiles(raster, zip(pts["id"].astype(str), pts["lat"], pts["lon"]), args.output, args.size_km,
                           args.pixels, args.projection, args.min_valid, progress=not args.no_progress)
    with open(manifest, newline="") as fh:
        written = sum(1 for _ in csv.reader(fh)) - 1
    result = {"manifest": str(manifest), "tiles": written, "skipped": len(pts) - written}
    if args.json:
        print_json(result)
    else:
        print(f"{written} tiles written, {result['skipped']} skipped (see skipped.csv); manifest: {manifest}")
    return 0

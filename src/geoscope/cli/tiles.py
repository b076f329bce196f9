"""geoscope tiles: cut overhead tiles centred on points, with a manifest that `geoscope embed` reads."""

from __future__ import annotations

import argparse

from geoscope.cli._common import add_json_flag, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "tiles",
        help="cut square overhead tiles centred on points out of a raster",
        description="Cut one square tile per point of a CSV (id,lat,lon) out of a GeoTIFF or a global "
        "plate-carree image (bmng, shadedrelief, etopo), resampled into a local projection (UTM or "
        "azimuthal) at the given ground size. Writes OUT/tiles/*.jpg, OUT/manifest.csv (id,lat,lon,path, "
        "usable by `geoscope embed`) and OUT/skipped.csv. Re-running keeps tiles already written.",
    )
    p.add_argument("raster", help="GeoTIFF, image with --bounds, or bmng / shadedrelief / etopo")
    p.add_argument("--points", required=True, help="CSV with id,lat,lon columns")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--size-km", type=float, required=True, help="tile size on the ground, km")
    p.add_argument("--pixels", type=positive_int, default=224, help="tile width and height in pixels (default 224)")
    p.add_argument("--projection", choices=("auto", "utm", "aeqd"), default="auto")
    p.add_argument("--bounds", default=None, help="WEST,SOUTH,EAST,NORTH of a plain (non-GeoTIFF) image")
    p.add_argument("--bands", default=None, help="1-based band numbers for R,G,B, e.g. 4,3,2")
    p.add_argument("--min-valid", type=float, default=0.5, help="least fraction of a tile with data (default 0.5)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import csv

    from geoscope.cli._common import float_list, print_json
    from geoscope.data.overhead import build_tiles, open_raster
    from geoscope.geo.table import read_points

    bounds = float_list(args.bounds, 4, "--bounds") if args.bounds else None
    bands = [int(b) for b in float_list(args.bands, None, "--bands")] if args.bands else None
    raster = open_raster(args.raster, bounds=bounds, bands=bands)
    pts = read_points(args.points)
    manifest = build_tiles(raster, zip(pts["id"].astype(str), pts["lat"], pts["lon"]), args.out, args.size_km,
                           args.pixels, args.projection, args.min_valid)
    with open(manifest, newline="") as fh:
        written = sum(1 for _ in csv.reader(fh)) - 1
    result = {"manifest": str(manifest), "tiles": written, "skipped": len(pts) - written}
    if args.json:
        print_json(result)
    else:
        print(f"{written} tiles written, {result['skipped']} skipped (see skipped.csv); manifest: {manifest}")
    return 0

"""geoscope crossview: cross-view data (pairs of photos and overhead tiles)."""

from __future__ import annotations

import argparse

from geoscope.cli.options import add_json, add_no_progress, add_output, positive_float, positive_int, unit_fraction


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

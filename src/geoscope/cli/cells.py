"""``geoscope cells``: build geocells (grid, adaptive, admin) and describe a cells file."""

from __future__ import annotations

import argparse

from geoscope.cli._common import add_json_flag, emit, float_list, format_table, positive_int


def _bbox(text: str) -> list[float]:
    values = float_list(text, 4, "--bbox MIN_LAT,MIN_LON,MAX_LAT,MAX_LON")
    min_lat, min_lon, max_lat, max_lon = values
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise argparse.ArgumentTypeError(f"latitudes must be within [-90, 90], got {min_lat} and {max_lat}")
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise argparse.ArgumentTypeError(f"longitudes must be within [-180, 180], got {min_lon} and {max_lon}")
    if min_lat >= max_lat:
        raise argparse.ArgumentTypeError(f"MIN_LAT {min_lat} must be below MAX_LAT {max_lat}")
    if min_lon >= max_lon:
        raise argparse.ArgumentTypeError(f"MIN_LON {min_lon} must be below MAX_LON {max_lon}")
    return values


def _int_list(text: str) -> list[int]:
    return [positive_int(t.strip()) for t in text.split(",")]


def _add_points_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--points", required=required, metavar="FILE",
                   help="training points, CSV or Parquet with latitude and longitude columns")
    p.add_argument("--lat-col", default="lat", help="latitude column (default: lat)")
    p.add_argument("--lon-col", default="lon", help="longitude column (default: lon)")


def _add_build_args(p: argparse.ArgumentParser, max_type, max_metavar: str, handler) -> None:
    _add_points_args(p, required=True)
    p.add_argument("--min", type=positive_int, required=True, dest="min_points", metavar="N")
    p.add_argument("--max", type=max_type, required=True, dest="max_points", metavar=max_metavar)
    p.add_argument("-o", "--output", required=True, help="cells file to write (JSON)")
    add_json_flag(p)
    p.set_defaults(func=handler, parser=p)


def register(subparsers) -> None:
    parser = subparsers.add_parser("cells", help="build geocells (grid, adaptive, admin) or describe a cells file",
                                   description=__doc__.split("\n")[0].strip("`"))
    sub = parser.add_subparsers(dest="cells_command", metavar="KIND", required=True)

    g = sub.add_parser("grid", help="rows x cols cells over a bounding box")
    g.add_argument("--bbox", type=_bbox, required=True, metavar="MIN_LAT,MIN_LON,MAX_LAT,MAX_LON")
    g.add_argument("--rows", type=positive_int, required=True)
    g.add_argument("--cols", type=positive_int, required=True)
    _add_points_args(g, required=False)
    g.add_argument("-o", "--output", required=True, help="cells file to write (JSON)")
    add_json_flag(g)
    g.set_defaults(func=_grid)

    a = sub.add_parser("adaptive", help="quadtree cells holding MIN..MAX training points each",
                       description="Split an equal-area quadtree until no cell holds more than MAX training "
                       "points, then merge cells with fewer than MIN into their nearest neighbour with room. "
                       "Several MAX values (--max 5000,2000,1000) build a hierarchy, coarse to fine.")
    _add_build_args(a, _int_list, "M[,M2,...]", _adaptive)

    m = sub.add_parser("admin", help="cells following country and admin-1 borders (Natural Earth)",
                       description="Admin-1 regions holding training points; regions with fewer than MIN "
                       "points merged within their country, regions with more than MAX split by the quadtree.")
    _add_build_args(m, positive_int, "M", _admin)

    i = sub.add_parser("info", help="count, sizes and coverage of a cells file")
    i.add_argument("cells", help="cells file (JSON)")
    add_json_flag(i)
    i.set_defaults(func=_info)


def _check_min_max(args, maxes: list[int]) -> None:
    for m in maxes:
        if m < args.min_points:
            args.parser.error(f"argument --max: {m} is below --min {args.min_points}")


def _read_training(args):
    from geoscope.geo.table import read_points

    df = read_points(args.points, id_col=None, lat_col=args.lat_col, lon_col=args.lon_col)
    return df["lat"].to_numpy(), df["lon"].to_numpy()


def _grid(args) -> int:
    from geoscope.geo.cells import Geocells, save_cells

    cells = Geocells.grid(args.bbox, args.rows, args.cols)
    if args.points:
        cells = cells.fit_centroids(*_read_training(args))
    save_cells(cells, args.output)
    return _report([cells], args)


def _adaptive(args) -> int:
    from geoscope.geo.cells import CellHierarchy

    lat, lon = _read_training(args)
    _check_min_max(args, args.max_points)
    hierarchy = CellHierarchy.adaptive(lat, lon, args.min_points, args.max_points)
    hierarchy.save(args.output)
    return _report(hierarchy.levels, args)


def _admin(args) -> int:
    from geoscope.geo.cells import Geocells, save_cells

    _check_min_max(args, [args.max_points])
    lat, lon = _read_training(args)
    cells = Geocells.admin(lat, lon, args.min_points, args.max_points)
    save_cells(cells, args.output)
    return _report([cells], args)


def _info(args) -> int:
    from geoscope.geo.cells import load_cells

    hierarchy = load_cells(args.cells)
    args.output = args.cells
    return _report(hierarchy.levels, args)


def _report(levels, args) -> int:
    result = {"file": str(args.output), "levels": [lv.summary() for lv in levels]}
    emit(result, args.json, _render)
    return 0


def _render(result: dict) -> str:
    headers = ["level", "kind", "cells", "points", "min/median/max per cell", "median area km2", "coverage"]
    rows = []
    for i, s in enumerate(result["levels"]):
        ppc = s["points_per_cell"] or {}
        per = f"{ppc.get('min', 0)}/{ppc.get('median', 0):g}/{ppc.get('max', 0)}" if ppc else "-"
        area = f"{s['area_km2']['median']:,.0f}" if s["area_km2"] else "-"
        rows.append([i, s["kind"], s["cells"], s["training_points"], per, area, f"{100 * s['coverage_of_earth']:.2f}% of Earth"])
    notes = []
    for i, s in enumerate(result["levels"]):
        if s.get("below_min") or s.get("above_max"):
            notes.append(f"level {i}: {s['below_min']} cells below min {s['min_points']}, "
                         f"{s['above_max']} above max {s['max_points']}")
    return "\n".join([result["file"], format_table(headers, rows)] + notes)

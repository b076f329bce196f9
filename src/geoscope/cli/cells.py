"""geoscope cells: build geocells (grid, adaptive, admin) and describe a cells file."""

from __future__ import annotations

import argparse

from geoscope.cli._common import emit, format_table
from geoscope.cli.options import (
    add_bbox,
    add_json,
    add_output,
    add_points,
    int_list,
    positive_int,
)


def _add_points_args(p: argparse.ArgumentParser, required: bool) -> None:
    add_points(p, required=required,
               help="training points: CSV or Parquet with latitude and longitude columns"
               + ("" if required else " (cell centroids move to the points' spherical mean)"))
    p.add_argument("--lat-col", default="lat", metavar="NAME", help="latitude column of --points")
    p.add_argument("--lon-col", default="lon", metavar="NAME", help="longitude column of --points")


def _add_build_args(p: argparse.ArgumentParser, max_help: str, handler) -> None:
    _add_points_args(p, required=True)
    p.add_argument("--min", type=positive_int, required=True, dest="min_points", metavar="N",
                   help="least training points a cell may hold")
    p.add_argument("--max", type=int_list, required=True, dest="max_points", metavar="M[,M2,...]", help=max_help)
    add_output(p, help="cells file to write (JSON)")
    add_json(p)
    p.set_defaults(func=handler, parser=p)


def register(subparsers) -> None:
    parser = subparsers.add_parser("cells", help="build geocells (grid, adaptive, admin) or describe a cells file",
                                   description="Build geocells (grid, adaptive, admin) and describe a cells file.")
    sub = parser.add_subparsers(dest="cells_command", metavar="KIND", required=True, title="kinds")

    g = sub.add_parser("grid", help="rows x cols cells over a bounding box",
                       description="ROWS x COLS cells of equal latitude and longitude steps over --bbox.")
    add_bbox(g, required=True, antimeridian=False,
             help="the box to cover, in degrees, lat-first (write --bbox=-34,150,-33,152 or --bbox -34,150,-33,152)")
    g.add_argument("--rows", type=positive_int, required=True, metavar="N", help="cells from south to north")
    g.add_argument("--cols", type=positive_int, required=True, metavar="N", help="cells from west to east")
    _add_points_args(g, required=False)
    add_output(g, help="cells file to write (JSON)")
    add_json(g)
    g.set_defaults(func=_grid)

    a = sub.add_parser("adaptive", help="quadtree cells holding MIN..MAX training points each",
                       description="Split an equal-area quadtree until no cell holds more than MAX training "
                       "points, then merge cells with fewer than MIN into their nearest neighbour with room. "
                       "Several MAX values (--max 5000,2000,1000) build a hierarchy, coarse to fine.")
    _add_build_args(a, "most training points a cell may hold; several values build a hierarchy, coarse to fine",
                    _adaptive)

    m = sub.add_parser("admin", help="cells following country and admin-1 borders (Natural Earth)",
                       description="Admin-1 regions holding training points; regions with fewer than MIN "
                       "points merged within their country, regions with more than MAX split by the quadtree.")
    _add_build_args(m, "most training points a cell may hold (one value)", _admin)

    i = sub.add_parser("info", help="count, sizes and coverage of a cells file",
                       description="Count, sizes and coverage of each level of a cells file.")
    i.add_argument("cells", metavar="CELLS", help="cells file (JSON)")
    add_json(i)
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

    if len(args.max_points) != 1:
        args.parser.error(f"argument --max: admin cells take one value, got {len(args.max_points)}")
    _check_min_max(args, args.max_points)
    lat, lon = _read_training(args)
    cells = Geocells.admin(lat, lon, args.min_points, args.max_points[0])
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

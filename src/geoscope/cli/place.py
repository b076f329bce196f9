"""geoscope place LAT LON: what is at a point (country, region, nearest town, or at sea), offline."""

from __future__ import annotations

import argparse
from typing import Any

from geoscope.cli._common import emit, format_table
from geoscope.cli.options import add_json


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in degrees, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "place", help="reverse geocode a point offline: country, region, nearest town, or at sea",
        description="Reverse geocode one point offline with Natural Earth borders and GeoNames places "
        "(contains data from GeoNames, CC-BY 4.0). Negative numbers are fine: geoscope place -33.86 151.21",
    )
    p.add_argument("lat", type=_number, metavar="LAT", help="latitude in degrees, -90..90")
    p.add_argument("lon", type=_number, metavar="LON", help="longitude in degrees")
    add_json(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import math

    from geoscope.errors import InputError
    from geoscope.geo.places import place_at

    if not (math.isfinite(args.lat) and -90.0 <= args.lat <= 90.0):
        raise InputError(f"LAT {args.lat} is outside [-90, 90]")
    if not math.isfinite(args.lon):
        raise InputError(f"LON {args.lon} is not a finite number")
    place = place_at(args.lat, args.lon)
    result = {"lat": args.lat, "lon": args.lon, **place.to_dict(), "label": place.label()}
    emit(result, args.json, _render)
    return 0


def _render(r: dict) -> str:
    town = f"{r['town']} ({r['town_km']:.1f} km)" if r.get("town") else None
    country = f"{r['country']} ({r['country_code']})" if r.get("country") else ("at sea" if r["at_sea"] else None)
    region = f"{r['region']} ({r['region_code']})" if r.get("region") else None
    rows: list[list[Any]] = [["point", f"{r['lat']:.5f}, {r['lon']:.5f}"], ["country", country], ["region", region],
            ["nearest town", town]]
    return f"{r['label']}\n" + format_table(["", ""], rows).split("\n", 2)[2]

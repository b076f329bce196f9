"""geoscope locate IMAGE_OR_FOLDER... -m MODEL: where were these pictures taken?"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from geoscope.cli._common import format_table, print_json
from geoscope.cli._models import load_geolocator
from geoscope.cli.options import (
    add_batch_size,
    add_json,
    add_model,
    add_no_progress,
    add_top_k,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "locate", help="geolocate images: top candidates with places and probabilities",
        description="Geolocate images with a pretrained model or a trained model directory. Arguments are image "
        "files, folders (searched recursively) or glob patterns. An unreadable image is reported and the others go on.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, folders or glob patterns")
    add_model(p, default="geoclip")
    add_top_k(p)
    add_batch_size(p, default=16)
    p.add_argument("--no-exif", action="store_true", help="do not read EXIF GPS")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given, folders searched recursively for images, globs expanded; order kept, duplicates dropped.

    A name that matches nothing is kept, so it is reported as an error for that image.
    """
    from geoscope.data.images import is_image_path

    out: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out += sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_path(p))
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            out += [m for m in matches if Path(m).is_file()] or [item]
        else:
            out.append(str(path))
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def render(pred) -> str:
    from geoscope.geo.sphere import haversine_km

    head = f"== {pred.source}"
    if pred.error:
        return f"{head}: FAILED: {pred.error}"
    exif = pred.exif if pred.exif is not None and pred.exif.has_gps else None
    rows = []
    for rank, c in enumerate(pred.candidates, 1):
        km = "" if exif is None else f"{float(haversine_km(c.lat, c.lon, exif.lat, exif.lon)):,.0f}"
        rows.append([rank, f"{c.lat:.4f}", f"{c.lon:.4f}", c.place.label() if c.place else "",
                     f"{c.probability:.3f}", km])
    lines = [head, format_table(["rank", "lat", "lon", "place", "probability", "km to EXIF GPS"], rows)]
    if pred.confidence:
        lines.append("confidence: " + ", ".join(f"{v:.0%} within {k} km" for k, v in sorted(pred.confidence.items())))
    if exif is not None:
        lines.append(f"EXIF GPS: {exif.lat:.5f}, {exif.lon:.5f} ({pred.exif_distance_km:,.0f} km from the best candidate)")
    return "\n".join(lines)


def run(args) -> int:
    paths = expand_inputs(args.images)
    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    preds = geo.locate(paths, top_k=args.top_k, batch_size=args.batch_size,
                       progress=not args.no_progress and len(paths) > 1, exif=not args.no_exif)
    if args.json:
        print_json([p.to_dict(top_cells=10) for p in preds])
    else:
        print("\n\n".join(render(p) for p in preds))
    failed = sum(p.error is not None for p in preds)
    return 1 if failed == len(preds) else 0

"""geoscope locate IMAGE_OR_FOLDER... -m MODEL: where were these pictures taken?"""

from __future__ import annotations

import glob
import logging
import os
import sys
from pathlib import Path

from geoscope import settings
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
    p.add_argument("--min-localizability", type=_fraction, default=None, metavar="SCORE",
                   help="skip images whose localizability (0..1: how much location signal the model finds in them) "
                        "is below SCORE: they are listed as skipped, without candidates")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)


def _fraction(text: str) -> float:
    """A number from 0 to 1."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def skip_reason(pred, min_localizability: float | None) -> str | None:
    """Why ``pred`` is skipped under ``--min-localizability`` (None: it is kept)."""
    if min_localizability is None or pred.error or pred.localizability is None:
        return None
    if pred.localizability < min_localizability:
        return f"localizability {pred.localizability:.2f} is below --min-localizability {min_localizability:g}"
    return None


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
    return list(dict.fromkeys(out))  # without repeats, in first-seen order


def render(pred, skipped: str | None = None) -> str:
    from geoscope.geo.sphere import haversine_km

    head = f"== {pred.source}"
    if pred.error:
        return f"{head}: FAILED: {pred.error}"
    if skipped:
        return f"{head}: skipped: {skipped}"
    exif = pred.exif if pred.exif is not None and pred.exif.has_gps else None
    rows = []
    for rank, c in enumerate(pred.candidates, 1):
        km = "" if exif is None else f"{float(haversine_km(c.lat, c.lon, exif.lat, exif.lon)):,.0f}"
        loc = "" if rank > 1 or pred.localizability is None else f"{pred.localizability:.2f}"
        rows.append([rank, f"{c.lat:.4f}", f"{c.lon:.4f}", c.place.label() if c.place else "",
                     f"{c.probability:.3f}", loc, km])
    headers = ["rank", "lat", "lon", "place", f"probability ({_neighbourhood(pred)})", "localizability",
               "km to EXIF GPS"]
    lines = [head, format_table(headers, rows)]
    if pred.confidence:
        state = "" if pred.calibrated else " (uncalibrated model)"
        lines.append(f"confidence{state}: "
                     + ", ".join(f"{v:.0%} within {k} km" for k, v in sorted(pred.confidence.items())))
    if exif is not None:
        lines.append(f"EXIF GPS: {exif.lat:.5f}, {exif.lon:.5f} ({pred.exif_distance_km:,.0f} km from the best candidate)")
    return "\n".join(lines)


def _neighbourhood(pred) -> str:
    """What a candidate's probability is the mass of, in a few words for the table header."""
    nb = pred.neighbourhood or {}
    kind = nb.get("kind")
    if kind == "disc" and nb.get("radius_km"):
        return f"within {nb['radius_km']:g} km"
    return f"of its {kind}" if kind else "score"


def _start_early(geo, first_batch: int) -> None:
    """Let the backbone compile (OpenVINO) while the images are read, and the place names load while
    the backbone runs: for one photo, most of a cold start is these waits one after another. (A named
    model's backbone is already compiling, from ``load_geolocator(warm=)``; warming again starts nothing.)"""
    from geoscope.geo.places import preload

    warm = getattr(geo.encoder, "warm", None)
    if warm is not None:
        warm(first_batch)
    if geo.places:
        preload()


def _prepare_backbone(args, first_batch: int) -> None:
    """A named model's backbone is built, and starts compiling (OpenVINO), before the Geolocator and its
    head are imported and loaded: those imports then overlap the compile instead of preceding it."""
    from geoscope.pretrained.loading import prepare_backbone
    from geoscope.pretrained.specs import is_model_name

    if is_model_name(args.model) and not Path(args.model).expanduser().is_dir():
        prepare_backbone(args.model, args.weights, args.precision, warm=first_batch)


def run(args) -> int:
    paths = expand_inputs(args.images)
    first_batch = min(len(paths), args.batch_size)
    _prepare_backbone(args, first_batch)
    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress, warm=first_batch)
    _start_early(geo, first_batch)
    preds = geo.locate(paths, top_k=args.top_k, batch_size=args.batch_size,
                       progress=not args.no_progress and len(paths) > 1, exif=not args.no_exif)
    skipped = [skip_reason(p, args.min_localizability) for p in preds]
    if args.min_localizability is not None and any(p.ok and p.localizability is None for p in preds):
        print("geoscope: warning: this model gives no localizability score, so --min-localizability skips nothing",
              file=sys.stderr)
    if args.json:
        out = []
        for p, why in zip(preds, skipped):
            d = p.to_dict(top_cells=10)
            if why:
                d.update(candidates=[], top_cells=[], confidence={}, skipped=why)
            out.append(d)
        print_json(out)
    else:
        print("\n\n".join(render(p, why) for p, why in zip(preds, skipped)))
    failed = sum(p.error is not None for p in preds)
    return _finish(1 if failed == len(preds) else 0)


def _finish(rc: int) -> int:
    """Flush the answer, and, when this process is the ``geoscope`` command itself (``python -m geoscope``
    or the console script, not ``cli.main`` called from other code), end it here with ``os._exit``:
    the model is not freed piece by piece (a compiled ViT-L/14 takes 0.1-0.2 s to free) nor the
    interpreter torn down, the operating system reclaims it all at once (clang's ``-disable-free`` does
    the same). Everything locate writes is complete by now (caches are written atomically before they
    are used); ``GEOSCOPE_DEBUG=1`` keeps the ordinary exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _is_the_geoscope_process() and not settings.flag("GEOSCOPE_DEBUG"):
        logging.shutdown()
        os._exit(rc)
    return rc


def _is_the_geoscope_process() -> bool:
    """True when the program this process runs is the ``geoscope`` command (its ``__main__`` calls ``cli.main``)."""
    from geoscope.cli import main

    return getattr(sys.modules.get("__main__"), "main", None) is main

"""geoscope explain IMAGE -m MODEL -o DIR: a report an analyst can act on.

Writes to DIR: map.png (cell probabilities on a map), attribution.png (which image regions pushed
the prediction towards or away from the target), prediction.json, prediction.geojson,
prediction.kml, attribution.json and report.html (self-contained, opens offline).
"""

from __future__ import annotations

from geoscope.cli._common import emit
from geoscope.cli._models import load_geolocator
from geoscope.cli.options import (
    add_batch_size,
    add_json,
    add_model,
    add_no_progress,
    add_output,
    add_top_k,
    deprecate,
    latlon,
    positive_int,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="locate one image and write a map, image attributions, exports and an HTML report",
        description="Locate IMAGE with MODEL and write to the output folder: map.png, attribution.png, "
        "prediction.json, prediction.geojson, prediction.kml, attribution.json and a self-contained report.html. "
        "Attributions are SHAP values (partition: over a hierarchy of rectangles; permutation: over a grid of "
        "regions) or occlusion (cheap: one model call per region), for the top cell, a chosen cell or a country.",
    )
    p.add_argument("image", metavar="IMAGE", help="the image to explain")
    add_model(p, required=True)
    add_output(p, metavar="DIR", help="folder for the report and its files")
    p.add_argument("--method", choices=("partition", "permutation", "occlusion"), default="partition",
                   help="attribution method")
    p.add_argument("--target", default="top", metavar="TARGET",
                   help="what to explain: top (the most probable cell), cell:N or country:CC")
    p.add_argument("--max-evals", type=positive_int, default=500, metavar="N",
                   help="model evaluations the SHAP methods may spend; permutation needs at least 2 x regions + 1")
    p.add_argument("--grid", type=positive_int, default=8, metavar="N", help="regions per side for permutation and occlusion")
    p.add_argument("--size", type=positive_int, default=224, metavar="PIXELS",
                   help="longest side of the image copy that is explained")
    add_batch_size(p, default=16, help="images per model call while explaining")
    add_top_k(p)
    p.add_argument("--truth", type=latlon, metavar="LAT,LON",
                   help="the true location, when known, to mark on the map")
    p.add_argument("--thresholds-file", metavar="FILE",
                   help="verification thresholds JSON, see geoscope verify (default: verify_thresholds.json in "
                   "the model directory, else built-in thresholds)")
    p.add_argument("--no-attribution", action="store_true", help="skip the (slow) attributions")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=_run)
    deprecate(p, "--out", "--output")
    deprecate(p, "--thresholds", "--thresholds-file")


def _run(args) -> int:
    import io
    import sys
    from pathlib import Path

    import numpy as np

    from geoscope.atomic import write_json, write_text
    from geoscope.cli.verify import locate_file, model_thresholds
    from geoscope.explain import explain_image, save_overlay, score_function
    from geoscope.report.exports import write_geojson, write_kml
    from geoscope.report.html import write_report
    from geoscope.report.maps import plot_prediction
    from geoscope.verify import verify_prediction

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    image, pred = locate_file(geo, args.image, args.top_k)
    truth = tuple(args.truth) if args.truth else None
    written = {}
    thr = model_thresholds(args.model, args.thresholds_file)
    verification = verify_prediction(pred, thresholds=thr)

    small = photo = None
    if image is not None:  # None when the image could not be read: the report says why
        small = image.copy()
        small.thumbnail((args.size, args.size))
        photo = io.BytesIO()
        small.save(photo, format="PNG")

    attribution = None
    if pred.ok and not args.no_attribution and pred.cell_probs is None:
        note = f"model {pred.model!r} gives no cell distribution, so there are no per-cell attributions"
        pred.extra["attribution_skipped"] = note
        print(f"geoscope: note: {note}", file=sys.stderr)
    if pred.ok and not args.no_attribution and pred.cell_probs is not None and small is not None:  # ok: image read
        f, target = score_function(geo, args.target, image=small)
        attribution = explain_image(f, np.asarray(small), method=args.method, max_evals=args.max_evals,
                                    grid=args.grid, batch_size=args.batch_size, target=target,
                                    progress=not args.no_progress)
        written["attribution"] = save_overlay(small, attribution, out / "attribution.png")
        write_json(out / "attribution.json", {**attribution.to_dict(), "image_size": list(small.size)})
        written["attribution_json"] = out / "attribution.json"
        pred.extra["attribution"] = {k: v for k, v in attribution.to_dict().items() if k != "block_sums_4x4"}
    pred.extra["verification"] = verification.to_dict()

    if pred.ok:
        written["map"] = plot_prediction(pred, out / "map.png", truth=truth)
    write_text(out / "prediction.json", pred.to_json() + "\n")
    written["prediction"] = out / "prediction.json"
    written["geojson"] = write_geojson(pred, out / "prediction.geojson")
    written["kml"] = write_kml(pred, out / "prediction.kml")
    images = {"image": photo.getvalue()} if photo is not None else {}
    images.update({k: written[k] for k in ("map", "attribution") if k in written})
    downloads = {"prediction.json": "prediction.json", "GeoJSON": "prediction.geojson", "KML (Google Earth)":
                 "prediction.kml"}
    written["report"] = write_report(out / "report.html", pred, images=images, verification=verification,
                                     attribution=attribution, downloads=downloads)
    result = {"source": pred.source, "error": pred.error, "verdict": verification.verdict,
              "files": {k: str(v) for k, v in written.items()}}
    emit(result, args.json, lambda r: "\n".join(f"{k:18s} {v}" for k, v in r["files"].items()))
    return 0 if pred.ok else 1

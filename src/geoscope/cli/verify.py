"""geoscope verify IMAGE... -m MODEL: does the EXIF GPS agree with what the pixels say?

geoscope verify -m MODEL --calibrate STORE picks the verdict thresholds on a held-out embedding
store (true GPS vs. GPS moved to another continent) and saves them next to the model.
"""

from __future__ import annotations

from geoscope.cli._common import emit, format_table
from geoscope.cli._models import load_geolocator
from geoscope.cli.options import (
    add_json,
    add_model,
    add_no_progress,
    add_output,
    add_top_k,
    deprecate,
    latlon,
    positive_float,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="compare an image's EXIF GPS position with where its pixels place it",
        description="For each IMAGE: the distance from the claimed (EXIF) position to the best candidate, the "
        "probability the model puts within R km of it against the prior, the rank of the claimed cell, and a "
        "verdict (consistent / inconsistent / inconclusive) naming the thresholds used. With --calibrate, "
        "pick the thresholds on a held-out embedding store and save them as verify_thresholds.json in the "
        "model directory (or the --output file).",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files to verify")
    add_model(p, required=True)
    p.add_argument("--claim", type=latlon, metavar="LAT,LON",
                   help="verify this position instead of the EXIF GPS (default: the EXIF GPS)")
    p.add_argument("--thresholds-file", metavar="FILE",
                   help="thresholds JSON (default: verify_thresholds.json in the model directory, else built-in "
                   "thresholds)")
    p.add_argument("--radius-km", type=positive_float, metavar="KM",
                   help="override the thresholds' radius (default: the thresholds' own)")
    add_top_k(p, help="candidates to compute per image")
    p.add_argument("--calibrate", metavar="STORE", help="held-out embedding store with true GPS to calibrate on")
    add_output(p, required=False,
               help="where --calibrate writes the thresholds (default: verify_thresholds.json in the model directory)")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=_run)
    deprecate(p, "--out", "--output")
    deprecate(p, "--thresholds", "--thresholds-file")


def locate_file(geolocator, path: str, top_k: int = 5):
    """Locate one image file (the Geolocator reads its pixels and EXIF); returns (PIL image or None
    when the file could not be read, Prediction)."""
    from geoscope.data.images import load_image

    pred = geolocator.locate([path], top_k=top_k)[0]
    pred.source = str(path)
    return (load_image(path) if pred.ok else None), pred


def model_thresholds(model: str, thresholds_file: str | None = None, radius_km: float | None = None):
    """The thresholds to judge with: a given file, the model directory's calibration, or the defaults."""
    from pathlib import Path

    from geoscope.errors import InputError
    from geoscope.verify import load_thresholds

    thr = load_thresholds(thresholds_file if thresholds_file else (model if Path(model).is_dir() else None))
    if radius_km is not None:
        if not radius_km > 0:
            raise InputError(f"--radius-km must be positive, got {radius_km}")
        from dataclasses import replace

        thr = replace(thr, radius_km=float(radius_km), source=f"{thr.source}; radius set to {radius_km:g} km by hand")
    return thr


def _calibrate(args) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm.auto import tqdm

    from geoscope.errors import InputError
    from geoscope.store import EmbeddingStore
    from geoscope.verify import THRESHOLDS_FILE, calibrate_thresholds, save_thresholds

    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    store = EmbeddingStore.open(args.calibrate)
    preds = []
    for start in tqdm(range(0, len(store), 512), desc="locating validation set", unit="batch",
                      disable=args.no_progress):
        emb = np.asarray(store.embeddings[start: start + 512], dtype=np.float32)
        preds.extend(geo.locate_embeddings(emb, top_k=args.top_k))
    lat, lon = np.asarray(store.lat, dtype=np.float64), np.asarray(store.lon, dtype=np.float64)
    known = np.isfinite(lat) & np.isfinite(lon)  # rows without a true position cannot calibrate anything
    if not known.any():
        raise InputError(f"{args.calibrate}: no row of this store has a true GPS position to calibrate on")
    thr = calibrate_thresholds([p for p, k in zip(preds, known) if k], lat[known], lon[known])
    if args.output:
        out = Path(args.output)
    elif Path(args.model).is_dir():
        out = Path(args.model) / THRESHOLDS_FILE
    else:
        raise InputError(f"model {args.model!r} is not a directory; pass -o/--output FILE for the thresholds")
    save_thresholds(thr, out)
    result = {"thresholds": thr.to_dict(), "written": str(out)}
    emit(result, args.json, lambda r: f"{thr.describe()}\nrates on the validation set: "
         + ", ".join(f"{k}={v:.3f}" for k, v in thr.calibration.items() if k.startswith(("genuine", "forged")))
         + f"\nwritten to {out}")
    return 0


def _run(args) -> int:
    from geoscope.errors import InputError
    from geoscope.prediction import Prediction
    from geoscope.verify import verify_prediction

    if args.calibrate:
        return _calibrate(args)
    if not args.images:
        raise InputError("give at least one IMAGE to verify (or --calibrate STORE)")
    thr = model_thresholds(args.model, args.thresholds_file, args.radius_km)
    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    results = []
    for path in args.images:
        try:
            _, pred = locate_file(geo, path, args.top_k)
        except InputError as exc:  # one bad file is reported, the others are still verified
            pred = Prediction.failed(path, str(exc))
        results.append(verify_prediction(pred, claim=tuple(args.claim) if args.claim else None, thresholds=thr))
    emit([r.to_dict() for r in results], args.json, _render)
    return 0


def _render(results: list[dict]) -> str:
    rows = []
    for r in results:
        claim = "-" if r["claimed_lat"] is None else f"{r['claimed_lat']:.4f}, {r['claimed_lon']:.4f}"
        dist = "-" if r["distance_to_best_km"] is None else f"{r['distance_to_best_km']:.0f}"
        mass = "-" if r["mass_within_km"] is None else f"{100 * r['mass_within_km']:.1f}%"
        lift = "-" if r["lift"] is None else f"{r['lift']:.2f}"
        rank = "-" if r["claimed_cell_rank"] is None else f"{r['claimed_cell_rank']}/{r['n_cells']}"
        rows.append([r["source"], claim, dist, mass, lift, rank, r["verdict"].upper()])
    head = ["image", "claimed", "km to best", "mass within R", "lift", "cell rank", "verdict"]
    reasons = "\n".join(f"{r['source']}: {r['reason']}" for r in results)
    return format_table(head, rows) + "\n\n" + reasons

"""``geoscope dataset``: check a collection of geotagged images and split it for training."""

from __future__ import annotations

import argparse

from geoscope.cli._common import add_json_flag, emit, float_list, format_table, positive_int


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET",
                   help="a folder of images, a CSV / Parquet manifest, or WebDataset .tar shard(s) (path, glob or {000..009})")
    p.add_argument("--preset", choices=["im2gps3k", "yfcc4k", "mp16", "osv5m"],
                   help="column layout of a public benchmark's manifest")
    p.add_argument("--images", metavar="DIR", help="image folder for a manifest (default: the manifest's folder)")
    p.add_argument("--split-name", dest="split_name", metavar="NAME",
                   help="split the manifest describes, for layouts with images/<split>/ (default: the manifest's name)")
    p.add_argument("--id-col", help="manifest column with the sample id")
    p.add_argument("--lat-col", help="manifest column (or shard JSON key) with the latitude")
    p.add_argument("--lon-col", help="manifest column (or shard JSON key) with the longitude")
    p.add_argument("--path-col", help="manifest column with the image path")
    p.add_argument("--coords", choices=["auto", "exif", "sidecar", "none"], default="auto",
                   help="where a folder's coordinates come from (default: the sidecar if given, else EXIF GPS)")
    p.add_argument("--sidecar", metavar="CSV", help="CSV of file name / path, lat, lon for a folder")


def _open(args):
    from geoscope.data.datasets import open_dataset

    return open_dataset(
        args.dataset, preset=args.preset, images=args.images, split=args.split_name, id_col=args.id_col,
        lat_col=args.lat_col, lon_col=args.lon_col, path_col=args.path_col, coords=args.coords,
        sidecar=args.sidecar,
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected zero or a positive number, got {text}")
    return value


def _validate(args) -> int:
    from geoscope.data.datasets import validate_dataset

    ds = _open(args)
    report = validate_dataset(ds, decode=not args.headers_only, workers=args.workers,
                              max_pixels=args.max_pixels, max_bytes=args.max_bytes)
    emit(report, args.json, lambda r: r.format(limit=args.show))
    return 0 if report.ok else 1


def _split(args) -> int:
    from pathlib import Path

    from geoscope.atomic import write_json
    from geoscope.data.datasets import split_dataset

    ds = _open(args)
    fractions = args.fractions
    splits = split_dataset(ds, fractions=fractions, method=args.method, seed=args.seed, cell_km=args.cell_km,
                           buffer_km=args.buffer_km)
    out = Path(args.out)
    suffix = ".parquet" if args.format == "parquet" else ".csv"
    files = {}
    for name, part in list(splits.items()) + [("dropped", splits.dropped), ("unlocated", splits.unlocated)]:
        if name in ("dropped", "unlocated") and len(part) == 0:
            continue
        files[name] = str(part.to_manifest(out / f"{name}{suffix}"))
    summary = {"dataset": ds.name, "method": args.method, "seed": args.seed,
               "cell_km": args.cell_km if args.method == "spatial" else None, "buffer_km": args.buffer_km,
               **splits.summary(), "files": files}
    write_json(out / "split.json", summary)

    def render(s):
        rows = [[k, v, files.get(k, "")] for k, v in s["splits"].items()]
        rows += [[k, s[key], files.get(k, "")] for k, key in (("dropped", "dropped_by_buffer"), ("unlocated", "unlocated"))
                 if s[key]]
        text = format_table(["split", "samples", "manifest"], rows)
        if s["min_train_heldout_km"] is not None:
            text += f"\nclosest training sample to a held-out one: {s['min_train_heldout_km']} km"
        return text

    emit(summary, args.json, render)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="validate and split collections of geotagged images",
                                   description="Check a collection of geotagged images and split it for training.")
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    v = sub.add_parser("validate", help="read every image and report missing, unreadable, ungeotagged and duplicate ones",
                       description="Read every image of a dataset and report each problem with its reason; "
                                   "exit status 1 when any sample is unusable.")
    _add_source_args(v)
    v.add_argument("--headers-only", action="store_true", help="check headers only (faster; misses truncated files)")
    v.add_argument("--workers", type=lambda t: int(_non_negative(t)), default=0,
                   help="worker processes (default: 0, in this process)")
    v.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help="refuse images with more pixels (default: 100,000,000)")
    v.add_argument("--max-bytes", type=positive_int, default=None, metavar="N",
                   help="refuse files larger than this (default: 200 MiB)")
    v.add_argument("--show", type=int, default=20, help="problems listed in the text output (default 20)")
    add_json_flag(v)
    v.set_defaults(func=_validate_with_defaults)

    s = sub.add_parser("split", help="deterministic random or spatially separated train / val / test manifests",
                       description="Split a dataset into manifests (train / val / test) that open_dataset reads back. "
                                   "A spatial split keeps whole grid cells together and drops training photos "
                                   "within --buffer-km of any held-out photo.")
    _add_source_args(s)
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the split manifests and split.json")
    s.add_argument("--method", choices=["random", "spatial"], default="random")
    s.add_argument("--fractions", type=lambda t: float_list(t, None, "--fractions"), default=[0.8, 0.1, 0.1],
                   help="train,val,test (or train,test) fractions (default 0.8,0.1,0.1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cell-km", type=_non_negative, default=25.0, help="spatial cell size in km (default 25)")
    s.add_argument("--buffer-km", type=_non_negative, default=0.0,
                   help="drop training samples closer than this to a held-out one (default 0)")
    s.add_argument("--format", choices=["csv", "parquet"], default="csv")
    add_json_flag(s)
    s.set_defaults(func=_split)


def _validate_with_defaults(args) -> int:
    from geoscope.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    args.max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    args.max_bytes = args.max_bytes or DEFAULT_MAX_BYTES
    return _validate(args)

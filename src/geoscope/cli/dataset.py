"""geoscope dataset: check a collection of geotagged images and split it for training."""

from __future__ import annotations

from geoscope.cli._common import emit, format_table
from geoscope.cli.options import (
    add_dataset_source,
    add_json,
    add_no_progress,
    add_output,
    add_seed,
    add_workers,
    dataset_source_kwargs,
    deprecate,
    fractions,
    non_negative_float,
    non_negative_int,
    positive_int,
)


def _open(args):
    from geoscope.data.datasets import open_dataset

    return open_dataset(args.dataset, progress=not args.no_progress, **dataset_source_kwargs(args))


def _validate(args) -> int:
    from geoscope.data.datasets import validate_dataset

    ds = _open(args)
    report = validate_dataset(ds, decode=not args.headers_only, workers=args.workers,
                              max_pixels=args.max_pixels, max_bytes=args.max_bytes, progress=not args.no_progress)
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
    out = Path(args.output)
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
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True, title="actions")

    v = sub.add_parser("validate", help="read every image and report missing, unreadable, ungeotagged and duplicate ones",
                       description="Read every image of a dataset and report each problem with its reason; "
                                   "exit status 1 when any sample is unusable.")
    add_dataset_source(v)
    v.add_argument("--headers-only", action="store_true", help="check headers only (faster; misses truncated files)")
    add_workers(v, default=0, help="worker processes; 0 reads in this process")
    v.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help="refuse images with more pixels (default: 100,000,000)")
    v.add_argument("--max-bytes", type=positive_int, default=None, metavar="N",
                   help="refuse files larger than this (default: 200 MiB)")
    v.add_argument("--show", type=non_negative_int, default=20, metavar="N", help="problems listed in the text output")
    add_no_progress(v)
    add_json(v)
    v.set_defaults(func=_validate_with_defaults)

    s = sub.add_parser("split", help="deterministic random or spatially separated train / val / test manifests",
                       description="Split a dataset into manifests (train / val / test) that open_dataset reads back. "
                                   "A spatial split keeps whole grid cells together and drops training photos "
                                   "within --buffer-km of any held-out photo.")
    add_dataset_source(s)
    add_output(s, metavar="DIR", help="folder for the split manifests and split.json")
    s.add_argument("--method", choices=["random", "spatial"], default="random", help="how samples are assigned")
    s.add_argument("--fractions", type=fractions, default=[0.8, 0.1, 0.1], metavar="F,F[,F]",
                   help="train,val,test (or train,test) fractions")
    add_seed(s)
    s.add_argument("--cell-km", type=non_negative_float, default=25.0, metavar="KM",
                   help="spatial split: grid cell size in km")
    s.add_argument("--buffer-km", type=non_negative_float, default=0.0, metavar="KM",
                   help="drop training samples closer than this to a held-out one")
    s.add_argument("--format", choices=["csv", "parquet"], default="csv", help="manifest file format")
    add_no_progress(s)
    add_json(s)
    s.set_defaults(func=_split)
    deprecate(s, "--out", "--output")


def _validate_with_defaults(args) -> int:
    from geoscope.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    args.max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    args.max_bytes = args.max_bytes or DEFAULT_MAX_BYTES
    return _validate(args)

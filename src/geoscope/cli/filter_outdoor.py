"""geoscope filter-outdoor: keep the outdoor photos of a collection (cross-view matching needs them)."""

from __future__ import annotations

import argparse

from geoscope.cli.options import add_batch_size, add_json, add_model, add_no_progress, add_output


def register(sub) -> None:
    p = sub.add_parser(
        "filter-outdoor",
        help="keep the outdoor photos of a folder or manifest, drop the indoor ones",
        description="Score every photo's outdoor-ness and keep those at or above --threshold: zero-shot CLIP "
        "(indoor vs outdoor prompts) when CLIP weights are on this machine, else offline from EfficientNet-Lite0's "
        "ImageNet classifier (outdoor scenes, buildings and vehicles against rooms, furniture, appliances and "
        "food). Writes the kept photos as a manifest (-o, with an outdoor_score column) and dropped.csv beside it "
        "with the scores; says which method ran.",
    )
    p.add_argument("photos", help="a folder of photos or a manifest (CSV / Parquet)")
    add_output(p, metavar="CSV", help="CSV manifest of the kept photos")
    p.add_argument("--method", choices=("auto", "clip", "imagenet"), default="auto",
                   help="auto: CLIP when its weights are here, else imagenet")
    add_model(p, help="CLIP model for the zero-shot method: a registered name (clip-vit-b32, ...), hf-hub:ORG/NAME "
              "or a local directory (default: the first CLIP whose weights are on this machine); int8 is not offered")
    p.add_argument("--threshold", type=float, default=0.5, metavar="SCORE", help="least outdoor score kept")
    add_batch_size(p, default=16)
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geoscope.cli._common import print_json
    from geoscope.errors import InputError
    from geoscope.outdoor import filter_outdoor

    if args.precision == "int8":
        raise InputError("--precision int8 is not available for the outdoor filter: use auto, fp32 or bf16")
    dtype = {None: None, "auto": None, "fp32": "float32", "bf16": "bfloat16"}[args.precision]
    model = args.weights or args.model
    result = filter_outdoor(args.photos, args.output, method=args.method, clip=model, threshold=args.threshold,
                            batch_size=args.batch_size, progress=not args.no_progress, dtype=dtype)
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"method: {result.description}")
        print(f"kept {result.kept}, dropped {result.dropped} ({result.unreadable} unreadable) -> {result.output}; "
              f"dropped photos and their scores: {result.dropped_csv}")
        for pid in result.dropped_ids[:20]:
            print(f"  dropped: {pid}")
        if len(result.dropped_ids) > 20:
            print(f"  ... and {len(result.dropped_ids) - 20} more")
    return 0

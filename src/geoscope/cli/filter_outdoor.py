"""geoscope filter-outdoor: keep the outdoor photos of a collection (cross-view matching needs them)."""

from __future__ import annotations

import argparse

from geoscope.cli._common import add_json_flag, positive_int


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
    p.add_argument("-o", "--output", required=True, help="CSV manifest of the kept photos")
    p.add_argument("--method", choices=("auto", "clip", "imagenet"), default="auto",
                   help="auto (default): CLIP when its weights are here, else imagenet")
    p.add_argument("-m", "--model", default=None,
                   help="CLIP model for the zero-shot method: a registered name (clip-vit-b32, ...), hf:ORG/NAME or a "
                   "local directory (default: the first CLIP whose weights are on this machine)")
    p.add_argument("--weights", metavar="DIR", default=None, help="local directory with the CLIP model's weights")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                   help="model precision (auto = fp32; int8 is not offered here)")
    p.add_argument("--threshold", type=float, default=0.5, help="least outdoor score kept (default 0.5)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geoscope.cli._common import print_json
    from geoscope.errors import InputError
    from geoscope.outdoor import filter_outdoor

    if args.precision == "int8":
        raise InputError("--precision int8 is not available for the outdoor filter: use auto, fp32 or bf16")
    dtype = {"auto": None, "fp32": "float32", "bf16": "bfloat16"}[args.precision]
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

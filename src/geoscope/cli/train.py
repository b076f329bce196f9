"""geoscope train --store STORE --head KIND --cells CELLS -o MODEL: train a head over an embedding store."""

from __future__ import annotations

import json

from geoscope.cli._common import emit
from geoscope.cli.options import (
    add_batch_size,
    add_json,
    add_no_progress,
    add_output,
    add_seed,
    add_workers,
    positive_int,
)
from geoscope.heads import head_class, list_heads


class TrainableHeads:
    """``--head`` choices, asked of the head registry only when ``train`` is parsed or its help shown
    (the registry imports the heads, hence torch): a head registered anywhere is a choice."""

    def __contains__(self, name: object) -> bool:
        return name in list_heads(trainable=True)

    def __iter__(self):
        return iter(list_heads(trainable=True))


def _option(text: str) -> tuple[str, object]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option needs KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a geolocation head over an embedding store",
        description="Train a head (any registered head; see --head) on the embeddings and coordinates "
        "of STORE and save a model directory MODEL (config.json, model.safetensors, cells.json, calibration.json, "
        "metrics.jsonl, report.json). The calibration (what makes its probabilities mean what they say) is fitted "
        "after training on held-out data: the validation split, or --calibration-store. A checkpoint is written "
        "every epoch to MODEL.train/ beside it (not part of the model); the "
        "same command resumes an interrupted run.",
    )
    p.add_argument("--store", required=True, metavar="STORE",
                   help="embedding store with coordinates (made by geoscope embed)")
    p.add_argument("--head", required=True, choices=TrainableHeads(), metavar="HEAD",
                   help="head to train: %(choices)s")
    p.add_argument("--cells", metavar="CELLS", help="geocells file (from geoscope cells); required for classifier and hybrid")
    add_output(p, metavar="MODEL", help="model directory to write")
    p.add_argument("--epochs", type=positive_int, default=30, metavar="N", help="maximum epochs")
    add_batch_size(p, default=4096, help="samples per step")
    p.add_argument("--lr", type=float, default=None, metavar="RATE", help="peak learning rate (default: per head)")
    p.add_argument("--weight-decay", type=float, default=1e-4, metavar="W", help="AdamW weight decay")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F", help="validation share")
    p.add_argument("--patience", type=int, default=5, metavar="N",
                   help="epochs without a better median error before stopping")
    add_seed(p)
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="head constructor option, e.g. hidden=512, tau_km=75, mode=latlon, queue_size=1024 (repeatable)")
    p.add_argument("--gallery", default="train", metavar="SOURCE",
                   help="retrieval gallery: train (training coordinates), geoclip (GeoCLIP's 100K), grid:STEP_DEG, "
                   "or a CSV / Parquet file of points")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch CPU threads (with --ray: per worker, default 1; else default: torch's choice)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--calibration-store", metavar="STORE", default=None,
                   help="held-out embedding store (never trained on, drawn like the images the model will locate) "
                        "to fit the model's calibration on (default: the validation split)")
    p.add_argument("--no-calibration", action="store_true",
                   help="do not fit a calibration: the model states its head's raw probabilities")
    r = p.add_argument_group("scale-out on Ray (pip install 'geoscope[ray]'; see docs/SCALE.md)")
    r.add_argument("--ray", action="store_true", help="train data-parallel on Ray Train (gloo on CPU), each worker "
                   "reading its share of every batch from STORE; the same model folder and checkpoint as a local "
                   "run. Without --ray-address a local Ray instance is started")
    r.add_argument("--ray-address", metavar="ADDR", help="join the running Ray cluster at ADDR (HOST:PORT, "
                   "ray://HOST:PORT or auto); implies --ray. Every node must see STORE and MODEL at the same paths")
    add_workers(r, default=None, help="with --ray: training workers (default 2)")
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=run)


def _gallery(spec: str):
    from geoscope.errors import InputError

    if spec == "train":
        return None
    from geoscope.heads.retrieval import geoclip_gallery, grid_gallery

    if spec == "geoclip":
        return geoclip_gallery()
    if spec.startswith("grid:"):
        try:
            step = float(spec[5:])
        except ValueError:
            raise InputError(f"--gallery grid:STEP needs a step in degrees, got {spec!r}") from None
        return grid_gallery(step_deg=step)
    from geoscope.geo.table import read_points

    df = read_points(spec)
    return df[["lat", "lon"]].to_numpy()


def _render(r: dict) -> str:
    from geoscope.geo.metrics import format_report

    lines = [
        f"trained a {r['head']} head on {r['n_train']} samples ({r['n_val']} for validation); "
        f"best epoch {r['best_epoch']} of {r['epochs_run']}" + (" (stopped early)" if r["stopped_early"] else ""),
        format_report({r["head"]: r["validation"], "training mean": r["baseline_training_mean"]}),
    ]
    cal = r.get("calibration") or {}
    if cal.get("after"):
        lines.append(f"calibration {cal['status']} (n={cal['n']}): expected calibration error within "
                     + ", ".join(f"{k} km {v['ece']:.3f}" for k, v in cal["after"].items())
                     + " (on the data it was fitted on; geoscope eval measures on other data)")
    elif cal:
        lines.append(f"calibration: {cal['status']}")
    lines.append(f"model written to {r['output']}")
    return "\n".join(lines)


def run(args) -> int:
    from geoscope.errors import InputError
    from geoscope.optional import require

    ray_options = None
    if args.ray or args.ray_address:
        require("ray", "geoscope train --ray")  # before anything slow: one sentence naming the extra
        from geoscope.train_ray import RayTrainOptions

        if args.workers == 0:
            raise InputError("--workers must be at least 1 with --ray (it counts the training workers)")
        ray_options = RayTrainOptions(workers=args.workers or 2, address=args.ray_address, threads=args.threads)
        if args.ray_address:
            from geoscope.store.ray_embed import check_reachable

            check_reachable(args.ray_address)  # fails within seconds, before the store is read
    elif args.workers is not None:
        raise InputError("--workers counts Ray training workers: it needs --ray")
    import torch

    from geoscope.train import TrainConfig, train_from_store

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      val_fraction=args.val_fraction, patience=args.patience, seed=args.seed)
    gallery = _gallery(args.gallery) if head_class(args.head).uses_gallery else None
    _, result = train_from_store(
        args.store, args.head, args.output, cells=args.cells, config=cfg, head_options=dict(args.option),
        gallery=gallery, progress=not args.no_progress, resume=not args.no_resume,
        calibrate=not args.no_calibration, calibration_store=args.calibration_store, ray=ray_options,
    )
    report = {**result.report, "output": str(args.output)}
    emit(report, args.json, _render)
    return 0

"""geoscope embed DATASET -e ENCODER -o STORE: turn a dataset into an embedding store (resumable)."""

from __future__ import annotations

import time

from geoscope.cli._common import emit
from geoscope.cli.options import (
    add_batch_size,
    add_dataset_source,
    add_encoder,
    add_json,
    add_no_progress,
    add_output,
    add_workers,
    dataset_source_kwargs,
    deprecate,
)
from geoscope.errors import InputError
from geoscope.optional import require

# the old --dtype values in the one precision vocabulary
_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def _dtype_to_precision(value: str) -> str:
    if value not in _DTYPES:
        raise ValueError(f"{value!r} is not offered: use --precision {{auto,fp32,bf16,int8}}")
    return _DTYPES[value]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed every image of a dataset into an embedding store (resumable: re-run to continue)",
        description="Embed every image of DATASET (a folder, a CSV / Parquet manifest, or WebDataset shards) "
        "with a pretrained encoder into the store the output folder holds. Killed or interrupted, the same "
        "command continues where it stopped. Unreadable images are skipped and listed in STORE/errors.csv.",
    )
    add_dataset_source(p, dataset_help="folder of images, CSV / Parquet manifest, or .tar shards")
    add_encoder(p)
    add_output(p, metavar="STORE", help="store folder to write (or to continue)")
    add_batch_size(p, default=32)
    add_workers(p, default=None, help="image decoding processes; 0 decodes in a thread of the main process "
                "(default on CPU: 0 up to 2 cores, else 1 per 4 cores). With --ray: embedding actors, one model each "
                "(default: one per GPU share with --gpus-per-worker, else half the cores)")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing an existing store")
    add_no_progress(p)
    add_json(p)
    r = p.add_argument_group("scale-out on Ray (pip install 'geoscope[ray]'; see docs/SCALE.md)")
    r.add_argument("--ray", action="store_true", help="decode in Ray tasks and embed in a pool of Ray actors, one "
                   "shard of the store per actor; without --ray-address a local Ray instance is started")
    r.add_argument("--ray-address", metavar="ADDR", help="join the running Ray cluster at ADDR (HOST:PORT, "
                   "ray://HOST:PORT or auto); implies --ray. Every node must see DATASET and the store at the same paths")
    r.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each Ray actor uses "
                   "(e.g. 1, or 0.5 to put two models on a GPU; 0 = CPU)")
    p.set_defaults(func=run)
    deprecate(p, "--dtype", "--precision", convert=_dtype_to_precision, hint="--precision fp32|bf16|int8|auto")
    deprecate(p, "--split", "--split-name")


def _render(r: dict) -> str:
    lines = [
        f"embedded {r['n_ok']} images with {r['encoder']} ({r['dim']}-d) into {r['store']}"
        + (f" in {r['seconds']:.1f} s" if r["seconds"] is not None else ""),
    ]
    if r["n_error"]:
        lines.append(f"skipped {r['n_error']} unreadable images: see {r['errors_file']}")
    return "\n".join(lines)


def run(args) -> int:
    from geoscope.cli._models import load_encoder
    from geoscope.data.datasets import open_dataset
    from geoscope.store import embed_dataset

    use_ray = bool(args.ray or args.ray_address)
    if use_ray:
        require("ray", "geoscope embed --ray")  # before anything slow: one sentence naming the extra
        if args.workers == 0:
            raise InputError("--workers must be at least 1 with --ray (it counts the embedding actors)")
    elif args.gpus_per_worker:
        raise InputError("--gpus-per-worker needs --ray")
    options = {k: v for k, v in dataset_source_kwargs(args).items() if v is not None}
    dataset = open_dataset(args.dataset, progress=not args.no_progress, **options)
    encoder = load_encoder(args.encoder, args.weights, args.precision)
    start = time.perf_counter()
    if use_ray:
        from geoscope.store.ray_embed import embed_dataset_ray

        store = embed_dataset_ray(dataset, encoder, args.output, batch_size=args.batch_size, workers=args.workers,
                                  address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                                  progress=not args.no_progress, overwrite=args.overwrite)
    else:
        store = embed_dataset(dataset, encoder, args.output, batch_size=args.batch_size, workers=args.workers,
                              progress=not args.no_progress, overwrite=args.overwrite)
    result = {
        "store": str(store.path), "encoder": store.encoder, "dim": store.dim, "n_ok": len(store),
        "n_error": len(store.errors), "errors_file": str(store.path / "errors.csv"), "shards": len(store.shards),
        "seconds": round(time.perf_counter() - start, 3),
    }
    emit(result, args.json, _render)
    return 0

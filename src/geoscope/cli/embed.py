"""``geoscope embed DATASET --encoder NAME -o STORE``: turn a dataset into an embedding store (resumable)."""

from __future__ import annotations

import time

from geoscope.cli._common import add_json_flag, emit


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed every image of a dataset into an embedding store (resumable: re-run to continue)",
        description="Embed every image of DATASET (a folder, a CSV / Parquet manifest, or WebDataset shards) "
        "with a pretrained encoder into the store STORE. Killed or interrupted, the same command continues "
        "where it stopped. Unreadable images are skipped and listed in STORE/errors.csv.",
    )
    p.add_argument("dataset", help="folder of images, CSV / Parquet manifest, or .tar shards")
    p.add_argument("--encoder", "-e", default="efficientnet-lite0", help="encoder name (see `geoscope encoders`), hf:ORG/NAME or a local model directory (default: %(default)s)")
    p.add_argument("--output", "-o", required=True, help="store directory to write (or to continue)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes; 0 decodes in the main process "
                   "(default on CPU: 0 up to 2 cores, else 1 per 4 cores). With --ray: embedding actors, one model each "
                   "(default: one per GPU share with --gpus-per-worker, else half the cores)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="model precision (default: float32)")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing an existing store")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = p.add_argument_group("scale-out on Ray (pip install 'geoscope[ray]'; see docs/SCALE.md)")
    r.add_argument("--ray", action="store_true", help="decode in Ray tasks and embed in a pool of Ray actors, one "
                   "shard of the store per actor; without --ray-address a local Ray instance is started")
    r.add_argument("--ray-address", metavar="ADDR", help="join the running Ray cluster at ADDR (HOST:PORT, "
                   "ray://HOST:PORT or auto); implies --ray. Every node must see DATASET and the store at the same paths")
    r.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each Ray actor uses "
                   "(e.g. 1, or 0.5 to put two models on a GPU; default: %(default)s, CPU)")
    g = p.add_argument_group("dataset options (see open_dataset)")
    g.add_argument("--preset", help="manifest preset: im2gps3k, yfcc4k, mp16, osv5m")
    g.add_argument("--images", help="image folder of a manifest (default: the manifest's folder)")
    for col in ("id", "lat", "lon", "path"):
        g.add_argument(f"--{col}-col", help=f"{col} column of the manifest")
    g.add_argument("--split", help="split name for presets")
    g.add_argument("--coords", choices=["auto", "exif", "sidecar", "none"], default="auto", help="where a folder's coordinates come from")
    g.add_argument("--sidecar", help="CSV of filename, lat, lon for a folder")
    add_json_flag(p)
    p.set_defaults(func=run)


def _render(r: dict) -> str:
    lines = [
        f"embedded {r['n_ok']} images with {r['encoder']} ({r['dim']}-d) into {r['store']}"
        + (f" in {r['seconds']:.1f} s" if r["seconds"] is not None else ""),
    ]
    if r["n_error"]:
        lines.append(f"skipped {r['n_error']} unreadable images: see {r['errors_file']}")
    return "\n".join(lines)


def run(args) -> int:
    from geoscope.data.datasets import open_dataset
    from geoscope.encoders import create_encoder
    from geoscope.errors import InputError
    from geoscope.store import embed_dataset

    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise InputError("--batch-size must be at least 1 and --workers at least 0")
    use_ray = bool(args.ray or args.ray_address)
    if use_ray:
        from geoscope.optional import require

        require("ray", "geoscope embed --ray")  # before anything slow: one sentence naming the extra
        if args.workers == 0:
            raise InputError("--workers must be at least 1 with --ray (it counts the embedding actors)")
    elif args.gpus_per_worker:
        raise InputError("--gpus-per-worker needs --ray")
    options = {k: getattr(args, k) for k in ("preset", "images", "id_col", "lat_col", "lon_col", "path_col", "split", "sidecar")
               if getattr(args, k) is not None}
    dataset = open_dataset(args.dataset, coords=args.coords, progress=not args.no_progress, **options)
    encoder = create_encoder(args.encoder, **({"dtype": args.dtype} if args.dtype else {}))
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

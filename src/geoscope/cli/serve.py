"""``geoscope serve -m MODEL``: the HTTP API and the web page (drop a photo, see on a map where it was taken)."""

from __future__ import annotations


from geoscope.cli.options import add_model, add_no_progress, positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over HTTP: a JSON API and a web page with an offline map",
        description="Load MODEL once and serve it: the page at http://HOST:PORT/ (drag photos onto it), the API under "
        "/api/ (POST /api/locate, /api/verify, /api/explain; GET /api/models), /healthz, and the OpenAPI docs at "
        "/docs. Binds to 127.0.0.1 by default; any other address needs an API token ($GEOSCOPE_API_TOKEN or "
        "--token-file), which clients send as 'Authorization: Bearer TOKEN'. Uploads stay in memory.",
    )
    add_model(p, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="inference threads, each running whole batches (default: %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="images per forward pass at most (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for images still being decoded (default: %(default)s)")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="images admitted at once; more are refused with 429 + Retry-After (default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                   help="time limit of a locate / verify request in seconds (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, metavar="MB",
                   help="largest upload in MiB (default: %(default)s)")
    p.add_argument("--max-megapixels", type=positive_float, default=50.0, metavar="MP",
                   help="largest image in megapixels, checked from its header before decoding (default: %(default)s)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the API token (else $GEOSCOPE_API_TOKEN)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN call the API (repeatable; default: CORS off)")
    p.add_argument("--tiles", metavar="URL", help="an online tile layer for the page, e.g. "
                   "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: only the offline basemap)")
    p.add_argument("--tiles-attribution", metavar="TEXT", help="credit line for --tiles")
    p.add_argument("--keep-uploads", metavar="DIR", help="keep each upload in DIR, named by its SHA-256 (default: keep nothing)")
    p.add_argument("--thresholds-file", metavar="FILE",
                   help="verification thresholds JSON (default: the model directory's)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="server log level")
    add_no_progress(p)
    p.set_defaults(func=run)


def build_config(args):
    """A checked ``ServeConfig`` from the parsed arguments (errors are one sentence)."""
    from geoscope.cli.verify import model_thresholds
    from geoscope.serve.config import ServeConfig, load_token

    token, source = load_token(args.token_file)
    config = ServeConfig(
        host=args.host, port=args.port, token=token, token_source=source, cors_origins=tuple(args.cors_origin),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_megapixels * 1_000_000),
        queue_size=args.queue_size, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, workers=args.workers,
        request_timeout_s=args.timeout, tile_url=args.tiles, tile_attribution=args.tiles_attribution,
        keep_uploads=args.keep_uploads, thresholds=model_thresholds(args.model, args.thresholds_file),
    )
    return config.check()


def run(args) -> int:
    import logging
    import sys

    from geoscope.errors import GeoscopeError

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise GeoscopeError(f"geoscope serve needs the serve extra ({exc.name} is missing): pip install "
                            "'geoscope[serve]'") from None
    config = build_config(args)  # refuse an unsafe configuration before loading anything
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from geoscope.cli._models import load_geolocator
    from geoscope.serve.app import create_app
    from geoscope.serve.memory import steady_memory

    steady_memory()  # before the model's first buffers: batches of every size must not fragment the heap

    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    app = create_app(geo, config)
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    auth = f"; API token from {config.token_source}" if config.token else ""
    print(f"geoscope: serving {geo.name!r} at {where} (API docs at {where}docs{auth}); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5,
                limit_concurrency=max(256, 4 * config.queue_size), server_header=False)
    return 0

"""The FastAPI application: the HTTP API and the page, over one loaded ``Geolocator``.

Routes (every ``/api/`` route needs ``Authorization: Bearer TOKEN`` when a token is configured):

- ``POST /api/locate``: multipart ``image`` (+ ``top_k``, ``format`` = json | geojson | kml, ``include`` =
  any of geojson, kml, verification) -> the ``Prediction`` JSON that ``geoscope locate --json`` prints;
- ``POST /api/verify``: ``image`` (+ ``claim`` = "LAT,LON"; default: the file's EXIF GPS) -> the verdict;
- ``POST /api/explain``: ``image`` (+ ``method``, ``grid``, ``max_evals``, ``target``) -> map PNG,
  attribution (PNG and per-block values), GeoJSON, KML;
- ``GET /api/models``, ``GET /api/config``, ``GET /api/basemap/countries.geojson``;
- ``GET /healthz`` (no token: it says nothing about the model's answers), ``GET /`` the page,
  ``/static/...`` its files, ``/docs`` and ``/openapi.json``.

Every refusal is a JSON ``{"error": sentence, "status": code}`` with a 4xx (5xx for the server's own
faults); no handler reads or writes a path that a client names.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

# this module is the server itself (imported only by `geoscope serve` and create_app), so FastAPI is imported here
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from geoscope.errors import GeoscopeError
from geoscope.serve.config import ServeConfig
from geoscope.serve.pool import InferencePool
from geoscope.serve.problems import RequestError
from geoscope.serve.uploads import Decoded, Form, read_form

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("geoscope.serve") / "static"))
FORMATS = ("json", "geojson", "kml")
INCLUDES = ("geojson", "kml", "verification")
EXPLAIN_METHODS = ("occlusion", "partition", "permutation")
EXPLAIN_MAX_EVALS = 2000
#: the longest side of the copy of an image that is explained (as ``geoscope explain --size``)
EXPLAIN_SIZE = 224
TOP_CELLS = 10  # cells in the Prediction JSON, as ``geoscope locate --json`` prints

_IMAGE_FIELDS: dict[str, dict] = {
    "image": {"type": "string", "format": "binary", "description": "the photo (JPEG, PNG, WebP, TIFF, BMP, GIF or "
              "HEIC; the type is read from the bytes)"},
    "top_k": {"type": "integer", "minimum": 1, "default": 5, "description": "candidates to return"},
}


def _form_schema(**extra: dict) -> dict:
    """The OpenAPI requestBody of an image form (the body is parsed by ``read_form``, not by FastAPI)."""
    props = dict(_IMAGE_FIELDS, **extra)
    body = {"type": "object", "required": ["image"], "properties": props}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


# ------------------------------------------------------------------------------------------ form fields
def _int_field(form: Form, name: str, default: int, lo: int, hi: int) -> int:
    raw = form.fields.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise RequestError(400, f"{name} must be a whole number from {lo} to {hi}, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise RequestError(400, f"{name} must be a whole number from {lo} to {hi}, got {value}")
    return value


def _choice_field(form: Form, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (form.fields.get(name) or default).strip().lower()
    if value not in choices:
        raise RequestError(400, f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def _includes(form: Form) -> set[str]:
    raw = form.fields.get("include") or ""
    items = {x.strip().lower() for x in raw.split(",") if x.strip()}
    bad = sorted(items - set(INCLUDES))
    if bad:
        raise RequestError(400, f"include may list {', '.join(INCLUDES)}; unknown: {', '.join(bad)[:80]}")
    return items


def _claim_field(form: Form) -> tuple[float, float] | None:
    raw = (form.fields.get("claim") or "").strip()
    if not raw:
        return None
    try:
        lat, lon = (float(v) for v in raw.split(","))
    except ValueError:
        raise RequestError(400, f"claim must be 'LAT,LON' in degrees, got {raw[:40]!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise RequestError(400, f"claim {lat:g},{lon:g} is outside latitude -90..90 / longitude -180..180")
    return lat, lon


def _one_image(form: Form) -> tuple[str, bytes]:
    files = form.file("image")
    if not files:
        other = ", ".join(sorted({f.field for f in form.files})) or "none"
        raise RequestError(400, f"the form has no file field named 'image' (file fields sent: {other})")
    return files[0].filename, files[0].data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------------ the app
class _SecurityHeaders:
    """ASGI middleware: security headers on every response, a strict CSP on the page."""

    def __init__(self, app: Any, csp: str):
        self.app = app
        self.csp = csp.encode("latin-1")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope.get("path") in ("/", "/index.html")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", self.csp), (b"x-frame-options", b"DENY")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _csp(config: ServeConfig) -> str:
    tiles = ""
    if config.tile_url:
        from urllib.parse import urlsplit

        parts = urlsplit(config.tile_url.replace("{s}", "a"))
        host = parts.netloc.replace("a.", "*.", 1) if "{s}" in config.tile_url else parts.netloc
        tiles = f" {parts.scheme}://{host}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:" + tiles
            + "; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def model_info(geolocator: Any) -> dict:
    """What the loaded model is and what it can give (the page shows only what is there)."""
    head = geolocator.head
    n_cells = int(getattr(head, "n_cells", 0) or 0)
    meta = getattr(geolocator, "meta", {}) or {}
    return {
        "name": geolocator.name,
        "kind": getattr(head, "kind", None),
        "encoder": geolocator.encoder_name,
        "n_cells": n_cells,
        "pretrained": meta.get("kind") if meta.get("kind") in ("geoclip", "zeroshot") else None,
        "licence": meta.get("licence"),
        "provides": {
            "cell_heatmap": n_cells > 0,
            "attribution": n_cells > 0,
            "confidence": True,
            "places": bool(getattr(geolocator, "places", False)),
        },
    }


def create_app(geolocator: Any, config: ServeConfig | None = None, *, pool: InferencePool | None = None):
    """The FastAPI application serving ``geolocator`` under ``config`` (checked here: an unsafe
    configuration, e.g. a non-loopback host without a token, raises ``InputError``)."""
    config = (config or ServeConfig()).check()
    pool = pool or InferencePool(geolocator, config)
    info = model_info(geolocator)
    thresholds = config.thresholds

    @asynccontextmanager
    async def lifespan(app: Any):
        await asyncio.get_running_loop().run_in_executor(None, pool.start)

        def build_basemap() -> None:
            from geoscope.serve.basemap import countries_geojson

            try:
                countries_geojson()
            except GeoscopeError as exc:  # the page says so; the API works without it
                log.warning("offline basemap unavailable: %s", exc)

        threading.Thread(target=build_basemap, name="geoscope-basemap", daemon=True).start()
        yield
        pool.close()

    app = FastAPI(
        title="geoscope",
        summary="Where on Earth was this picture taken? From its pixels.",
        description="Upload a photo; get candidate places with probabilities, a cell heatmap, explanations and a "
                    "metadata check. The same Prediction as `geoscope locate --json`.",
        version=__import__("geoscope").__version__,
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.config = config
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.add_middleware(_SecurityHeaders, csp=_csp(config))

    bearer = HTTPBearer(auto_error=False, description="the server's API token (only when one is configured)")
    expected = config.token.encode("utf-8") if config.token else None

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        given = (credentials.credentials if credentials is not None else "").encode("utf-8")
        if not hmac.compare_digest(given, expected):
            raise RequestError(401, "this server needs its API token: send the header 'Authorization: Bearer TOKEN'",
                               {"WWW-Authenticate": "Bearer"})

    api = [Depends(require_token)]

    # --- errors ------------------------------------------------------------------------------------
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(GeoscopeError)
    async def _geoscope_error(request: Request, exc: GeoscopeError):
        return JSONResponse({"error": str(exc), "status": 400}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}", "status": 400},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"nothing at {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": message.get(exc.status_code, str(exc.detail)), "status": exc.status_code},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server keeps running", "status": 500},
                            status_code=500)

    # --- helpers -----------------------------------------------------------------------------------
    async def form_of(request: Request) -> Form:
        return await read_form(request, config.max_upload_bytes, config.max_files, config.read_timeout_s)

    async def keep(data: bytes, decoded: Decoded) -> None:
        if config.keep_uploads is None:
            return
        import hashlib

        from geoscope.atomic import write_bytes

        ext = decoded.info["content_type"].split("/")[-1].replace("jpeg", "jpg")
        path = config.keep_uploads / f"{hashlib.sha256(data).hexdigest()}.{ext}"
        if not path.exists():
            await asyncio.get_running_loop().run_in_executor(None, write_bytes, path, data)

    async def locate_form(form: Form, keep_image: bool = False):
        name, data = _one_image(form)
        top_k = _int_field(form, "top_k", 5, 1, config.max_top_k)
        pred, decoded = await pool.locate(data, name, top_k, keep_image=keep_image)
        await keep(data, decoded)
        return pred, decoded

    def verification_of(pred: Any, claim: tuple[float, float] | None = None) -> dict:
        from geoscope.verify import verify_prediction

        return verify_prediction(pred, claim=claim, thresholds=thresholds).to_dict()

    # --- the page ----------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", tags=["server"], summary="Is the server up, and how busy is it?")
    async def healthz():
        return {"status": "ok", "model": info["name"], **pool.health()}

    # --- the API -----------------------------------------------------------------------------------
    @app.get("/api/config", dependencies=api, tags=["server"], summary="What the page needs: model, limits, map")
    async def get_config():
        return {
            "model": info,
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                       "max_top_k": config.max_top_k, "queue_size": config.queue_size},
            "map": {"tile_url": config.tile_url, "tile_attribution": config.tile_attribution,
                    "basemap": "/api/basemap/countries.geojson"},
            "auth": expected is not None,
        }

    @app.get("/api/models", dependencies=api, tags=["models"], summary="The loaded model and the named pretrained ones")
    async def get_models():
        from geoscope.pretrained import list_models

        pretrained = await asyncio.get_running_loop().run_in_executor(None, list_models)
        return {"loaded": info, "pretrained": [m.to_dict() for m in pretrained]}

    @app.get("/api/basemap/countries.geojson", dependencies=api, tags=["map"],
             summary="Country borders for the offline basemap (Natural Earth, simplified)")
    async def basemap():
        from geoscope.serve.basemap import countries_geojson

        try:
            body = await asyncio.get_running_loop().run_in_executor(None, countries_geojson)
        except GeoscopeError as exc:
            raise RequestError(503, f"the offline basemap is unavailable: {exc}") from None
        return Response(body, media_type="application/geo+json", headers={"Cache-Control": "private, max-age=86400"})

    @app.post("/api/locate", dependencies=api, tags=["locate"], summary="Where was this photo taken?",
              openapi_extra=_form_schema(
                  format={"type": "string", "enum": list(FORMATS), "default": "json",
                          "description": "json: the Prediction; geojson / kml: that document alone"},
                  include={"type": "string", "description": "comma-separated extras added to the JSON: "
                           + ", ".join(INCLUDES)}))
    async def locate(request: Request):
        form = await form_of(request)
        fmt = _choice_field(form, "format", "json", FORMATS)
        extras = _includes(form)
        pred, _ = await locate_form(form)
        if fmt == "geojson":
            from geoscope.report.exports import prediction_geojson

            return JSONResponse(prediction_geojson(pred), media_type="application/geo+json")
        if fmt == "kml":
            from geoscope.report.exports import prediction_kml

            return Response(prediction_kml(pred), media_type="application/vnd.google-earth.kml+xml",
                            headers={"Content-Disposition": 'attachment; filename="prediction.kml"'})
        body = pred.to_dict(top_cells=TOP_CELLS)
        if "geojson" in extras:
            from geoscope.report.exports import prediction_geojson

            body["geojson"] = prediction_geojson(pred)
        if "kml" in extras:
            from geoscope.report.exports import prediction_kml

            body["kml"] = prediction_kml(pred)
        if "verification" in extras:
            body["verification"] = verification_of(pred)
        return body

    @app.post("/api/verify", dependencies=api, tags=["verify"],
              summary="Does the claimed place (EXIF GPS or 'claim') agree with the pixels?",
              openapi_extra=_form_schema(claim={"type": "string", "description": "LAT,LON to check instead of the "
                                                "file's EXIF GPS"}))
    async def verify(request: Request):
        form = await form_of(request)
        claim = _claim_field(form)
        pred, _ = await locate_form(form)
        return {"verification": verification_of(pred, claim), "prediction": pred.to_dict(top_cells=TOP_CELLS)}

    @app.post("/api/explain", dependencies=api, tags=["explain"],
              summary="Map, image attributions, GeoJSON and KML for one photo",
              openapi_extra=_form_schema(
                  method={"type": "string", "enum": list(EXPLAIN_METHODS), "default": "occlusion"},
                  grid={"type": "integer", "minimum": 2, "maximum": 16, "default": 6},
                  max_evals={"type": "integer", "minimum": 10, "maximum": EXPLAIN_MAX_EVALS, "default": 300},
                  target={"type": "string", "default": "top", "description": "top, cell:N or country:CC"}))
    async def explain(request: Request):
        form = await form_of(request)
        method = _choice_field(form, "method", "occlusion", EXPLAIN_METHODS)
        grid = _int_field(form, "grid", 6, 2, 16)
        max_evals = _int_field(form, "max_evals", 300, 10, EXPLAIN_MAX_EVALS)
        target = (form.fields.get("target") or "top").strip()[:40]
        pred, decoded = await locate_form(form, keep_image=True)
        result = await pool.run_slow(_explain, geolocator, pred, decoded, method, grid, max_evals, target)
        result["prediction"] = pred.to_dict(top_cells=TOP_CELLS)
        result["verification"] = verification_of(pred)
        return result

    return app


def _explain(geolocator: Any, pred: Any, decoded: Decoded, method: str, grid: int, max_evals: int,
             target: str) -> dict:
    """The slow part of /api/explain (runs on the explanation thread): everything in memory."""
    import numpy as np

    from geoscope.explain import explain_image, save_overlay, score_function
    from geoscope.report.exports import prediction_geojson, prediction_kml
    from geoscope.report.maps import plot_prediction

    small = decoded.image.copy()
    small.thumbnail((EXPLAIN_SIZE, EXPLAIN_SIZE))
    photo = io.BytesIO()
    small.save(photo, format="PNG")
    out: dict[str, Any] = {"photo_png": _b64(photo.getvalue()), "photo_size": list(small.size),
                           "attribution": None, "attribution_png": None, "attribution_note": None, "map_png": None}
    if pred.cell_probs is None:
        out["attribution_note"] = (f"model {pred.model!r} gives no cell distribution, so there are no per-cell "
                                   "attributions")
    else:
        f, description = score_function(geolocator, target, image=small)
        attribution = explain_image(f, np.asarray(small), method=method, max_evals=max_evals, grid=grid,
                                    batch_size=16, target=description, progress=False)
        rows = cols = grid if method != "partition" else 8
        summary = {k: v for k, v in attribution.to_dict().items() if k != "block_sums_4x4"}
        summary.update(rows=rows, cols=cols, blocks=attribution.block_sums(rows, cols).round(8).tolist())
        out["attribution"] = summary
        buf = io.BytesIO()
        save_overlay(small, attribution, buf)
        out["attribution_png"] = _b64(buf.getvalue())
    if pred.ok:
        buf = io.BytesIO()
        plot_prediction(pred, buf)
        out["map_png"] = _b64(buf.getvalue())
    out["geojson"] = prediction_geojson(pred)
    out["kml"] = prediction_kml(pred)
    return out

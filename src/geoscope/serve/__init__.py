"""The HTTP API and the web page: ``geoscope serve -m MODEL``.

- ``config.ServeConfig``: limits, security and batching settings (one place, with defaults).
- ``uploads``: a multipart body read into memory under a size and time limit; the image type sniffed
  from the bytes; decoding through the same safe loader as the CLI (``data.images.load_image``).
- ``pool.InferencePool``: the model loaded once, a bounded queue (full: ``Overloaded`` -> 429 with
  Retry-After), micro-batching (requests collected for a few ms, decoded in parallel threads,
  embedded as one batch).
- ``basemap``: the offline basemap (Natural Earth countries, simplified GeoJSON, cached).
- ``app.create_app(geolocator, config)``: the FastAPI application (routes, auth, errors, the page).

FastAPI, uvicorn and python-multipart are the ``serve`` extra (``pip install geoscope[serve]``);
importing ``geoscope.serve`` does not import them.
"""

from __future__ import annotations

from geoscope.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(geolocator, config: ServeConfig | None = None, **kwargs):
    """The FastAPI app serving ``geolocator`` (see ``geoscope.serve.app.create_app``)."""
    from geoscope.serve.app import create_app as _create

    return _create(geolocator, config, **kwargs)

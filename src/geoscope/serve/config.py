"""Settings of the HTTP server: limits, batching, security. One dataclass, checked once.

Security defaults: the server binds to loopback (127.0.0.1); any other address needs an API token
(``GEOSCOPE_API_TOKEN``, or a file named by ``--token-file`` / ``GEOSCOPE_API_TOKEN_FILE``), which every
``/api/`` request must then carry as ``Authorization: Bearer TOKEN`` (compared in constant time). CORS is
off unless origins are listed. Uploads stay in memory; nothing is written unless ``keep_uploads`` names a
folder, and then under a name the server makes (the content hash), never one the client gives.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from geoscope import settings
from geoscope.errors import InputError

TOKEN_ENV = "GEOSCOPE_API_TOKEN"
TOKEN_FILE_ENV = "GEOSCOPE_API_TOKEN_FILE"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True when ``host`` only ever means this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {str(info[4][0]) for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def load_token(token_file: str | os.PathLike | None = None,
               env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(token, where it came from): ``token_file``, else ``$GEOSCOPE_API_TOKEN_FILE``, else ``$GEOSCOPE_API_TOKEN``."""
    if env is None:
        env = {name: settings.get(name) or "" for name in (TOKEN_ENV, TOKEN_FILE_ENV)}
    path = token_file or env.get(TOKEN_FILE_ENV)
    if path:
        p = Path(path).expanduser()
        try:
            token = p.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise InputError(f"token file {p} not found: write the API token into it, or set {TOKEN_ENV}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the token file {p} ({exc})") from None
        where = f"file {p}"
    else:
        token, where = (env.get(TOKEN_ENV) or "").strip(), f"${TOKEN_ENV}"
        if not token:
            return None, None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InputError(
            f"the API token from {where} must be at least {MIN_TOKEN_CHARS} characters with no spaces "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token, where


@dataclass
class ServeConfig:
    """Everything the server needs besides the model. Defaults suit one analyst on a laptop."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: the API token (None: no token; only allowed on loopback) and where it came from
    token: str | None = None
    token_source: str | None = None
    #: origins allowed to call the API from other pages (CORS); empty: CORS off
    cors_origins: tuple[str, ...] = ()
    #: uploads: size refused from the Content-Length header (and while reading), pixels from the image header
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_files: int = 1
    max_top_k: int = 100
    #: images admitted at once (waiting, decoding or on the model); more gets 429 with Retry-After
    queue_size: int = 64
    #: micro-batching: at most ``max_batch`` images per forward pass, collected for up to ``batch_wait_ms``
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    #: inference threads (each runs whole batches) and decoding threads (None: up to 4, one per core)
    workers: int = 1
    decode_workers: int | None = None
    #: time limits (s): the whole request body must arrive within ``read_timeout_s``; a located answer within
    #: ``request_timeout_s``; an explanation within ``explain_timeout_s``
    read_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    explain_timeout_s: float = 300.0
    #: explanations are slow: at most this many waiting or running, more gets 429
    explain_queue: int = 2
    #: an online tile layer for the page (off unless given), e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png
    tile_url: str | None = None
    tile_attribution: str | None = None
    #: a folder where uploads are kept (named by their SHA-256); None keeps nothing
    keep_uploads: Path | None = None
    #: verify thresholds (``verify.VerifyThresholds``); None: the defaults
    thresholds: Any = None
    #: run one image through the model at start-up, so the first request does not pay for it
    warmup: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> "ServeConfig":
        """Refuse unsafe or impossible settings with one sentence each."""
        if not is_loopback(self.host) and not self.token:
            raise InputError(
                f"binding to {self.host} exposes the server to other machines, so it needs an API token: set "
                f"{TOKEN_ENV} or pass --token-file FILE (or bind to 127.0.0.1)"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise InputError(f"the API token must be at least {MIN_TOKEN_CHARS} characters")
        for name in ("max_upload_bytes", "max_pixels", "max_files", "max_top_k", "queue_size", "max_batch", "workers",
                     "explain_queue"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("read_timeout_s", "request_timeout_s", "explain_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise InputError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.tile_url is not None and not (self.tile_url.startswith(("https://", "http://"))
                                              and "{z}" in self.tile_url and "{x}" in self.tile_url
                                              and "{y}" in self.tile_url):
            raise InputError(f"the tile URL must be http(s) with {{z}}, {{x}} and {{y}} in it, got {self.tile_url!r}")
        if self.keep_uploads is not None:
            self.keep_uploads = Path(self.keep_uploads).expanduser()
            self.keep_uploads.mkdir(parents=True, exist_ok=True)
        return self

    def n_decode_workers(self) -> int:
        if self.decode_workers:
            return int(self.decode_workers)
        return max(1, min(4, os.cpu_count() or 1))

"""Uploads: read into memory under a size and a time limit, typed by their bytes, decoded safely.

``read_form(request, config)`` reads a ``multipart/form-data`` body with python-multipart's streaming
parser straight into memory (no spooled temporary files): the Content-Length header is checked before
anything is read, the running total while reading, and the whole body must arrive within
``config.read_timeout_s`` (a slow client gets 408 and holds nothing else up).

``sniff_image_type(data)`` names the format from the first bytes; the client's file name and claimed
content type are never trusted. ``decode_upload(data, name, ...)`` refuses what is empty (400), too large
in bytes or pixels (413, from the header, before decoding), not an image (415) or undecodable (422), then
decodes through the CLI's own safe loader (``geoscope.data.images.load_image``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from geoscope.data.images import ImageError, load_image, open_header
from geoscope.serve.problems import RequestError

#: bytes allowed in a body beyond its files (field values, part headers, boundaries)
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 4096
MAX_PARTS = 16

_MIME = {
    "JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff",
    "WEBP": "image/webp", "HEIF": "image/heif",
}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of the image format ``data`` starts with, or None (only formats geoscope reads)."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return _MIME["JPEG"]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _MIME["PNG"]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _MIME["GIF"]
    if head.startswith(b"BM") and len(head) >= 26:
        return _MIME["BMP"]
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _MIME["TIFF"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _MIME["WEBP"]
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _MIME["HEIF"]
    return None


def safe_name(filename: str | None) -> str:
    """A label for an upload: the base name the client sent, without paths or control characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:120]
    return name or "upload"


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str | None  # what the client claimed: kept for the record, never trusted
    data: bytes


@dataclass
class Form:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def file(self, name: str = "image") -> list[UploadedFile]:
        return [f for f in self.files if f.field == name]


class _FormCollector:
    """python-multipart callbacks that keep every part in memory, within limits."""

    def __init__(self, max_file_bytes: int, max_files: int):
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.form = Form()
        self._headers: dict[bytes, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._chunks: list[bytes] = []
        self._size = 0
        self._parts = 0
        self._name: str | None = None
        self._filename: str | None = None

    def on_part_begin(self) -> None:
        self._headers, self._chunks, self._size = {}, [], 0
        self._name = self._filename = None
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise RequestError(400, f"the form has more than {MAX_PARTS} parts")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hvalue.strip()
        self._hname, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name, filename = options.get(b"name"), options.get(b"filename")
        self._name = None if name is None else name.decode("utf-8", "replace")
        self._filename = None if filename is None else filename.decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        limit = self.max_file_bytes if self._filename is not None else MAX_FIELD_BYTES
        if self._size > limit:
            what = "the file" if self._filename is not None else "a form field"
            raise RequestError(413, f"{what} is larger than this server's limit of {limit:,} bytes")
        self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        name, filename = self._name, self._filename
        if name is None:
            raise RequestError(400, "a form part has no name (Content-Disposition: form-data; name=...)")
        data = b"".join(self._chunks)
        self._chunks = []
        if filename is not None:
            if len(self.form.files) >= self.max_files:
                raise RequestError(400, f"send at most {self.max_files} image(s) per request")
            ctype = self._headers.get(b"content-type")
            self.form.files.append(UploadedFile(name, safe_name(filename), None if ctype is None else
                                                ctype.decode("latin-1"), data))
        else:
            self.form.fields[name] = data.decode("utf-8", "replace")


async def read_form(request: Any, max_file_bytes: int, max_files: int, read_timeout_s: float) -> Form:
    """The multipart form of ``request`` (a Starlette request), in memory, within the limits."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise RequestError(415, "send the image as multipart/form-data, as a file field named 'image' "
                                "(e.g. curl -F image=@photo.jpg)")
    max_body = max_file_bytes * max_files + FORM_OVERHEAD_BYTES
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise RequestError(400, f"the Content-Length header is not a number: {length!r}") from None
        if n > max_body:
            raise RequestError(413, f"the upload is {n:,} bytes, more than this server's limit of "
                                    f"{max_file_bytes:,} bytes per image")
    collector = _FormCollector(max_file_bytes, max_files)
    callbacks: Any = {k: getattr(collector, k) for k in ("on_part_begin", "on_part_data", "on_part_end", "on_header_field",
                                                     "on_header_value", "on_header_end", "on_headers_finished")}
    parser = MultipartParser(params[b"boundary"], callbacks)

    async def consume() -> None:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise RequestError(413, f"the upload is more than this server's limit of {max_file_bytes:,} bytes "
                                        "per image")
            parser.write(chunk)
        parser.finalize()

    try:
        await asyncio.wait_for(consume(), timeout=read_timeout_s)
    except TimeoutError:
        raise RequestError(408, f"the upload did not arrive within {read_timeout_s:g} s; send it again on a faster "
                                "connection") from None
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart's errors: the body is not a valid form
        from python_multipart.exceptions import FormParserError

        if isinstance(exc, (FormParserError, ValueError)):
            raise RequestError(400, f"the request body is not a valid multipart form ({exc})") from None
        raise
    return collector.form


@dataclass
class Decoded:
    """One upload, decoded: the RGB image, the encoder's input crop (when prepared), EXIF, and facts."""

    name: str
    image: Any  # PIL.Image, RGB
    pixels: Any = None  # (h, w, 3) uint8 in the encoder's input size, or None
    exif: Any = None  # ExifFindings
    info: dict = field(default_factory=dict)


def check_upload(data: bytes, name: str, max_bytes: int, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Refuse an upload from its bytes and header alone; returns (MIME type, (width, height))."""
    if not data:
        raise RequestError(400, f"{name}: the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise RequestError(413, f"{name}: the file is {len(data):,} bytes, more than this server's limit of "
                                f"{max_bytes:,}")
    mime = sniff_image_type(data)
    if mime is None:
        raise RequestError(415, f"{name}: not a supported image (its bytes are not JPEG, PNG, WebP, TIFF, BMP, GIF or "
                                "HEIC, whatever its name or declared type says)")
    try:
        header = open_header(data, name, max_pixels=None)
    except ImageError as exc:
        status = 413 if "decompression bomb" in str(exc) else 422
        raise RequestError(status, str(exc)) from None
    w, h = header.size
    if w * h > max_pixels:
        raise RequestError(413, f"{name}: the image is {w:,} x {h:,} = {w * h:,} pixels, more than this server's "
                                f"limit of {max_pixels:,} pixels")
    return mime, (w, h)


def decode_upload(data: bytes, name: str, max_bytes: int, max_pixels: int, transform: Any = None,
                  exif: bool = True) -> Decoded:
    """Check, decode and (with ``transform``, an encoder's ``ImageTransform``) resize and crop one upload."""
    from geoscope.data.exif import read_exif

    mime, (w, h) = check_upload(data, name, max_bytes, max_pixels)
    try:
        image = load_image(data, max_pixels=max_pixels, max_bytes=max_bytes, name=name)
    except ImageError as exc:
        raise RequestError(422, str(exc)) from None
    findings = read_exif(data) if exif else None
    pixels = transform.to_uint8(image) if transform is not None else None
    info = {"content_type": mime, "width": w, "height": h, "bytes": len(data)}
    return Decoded(name, image, pixels, findings, info)

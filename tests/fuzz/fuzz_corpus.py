"""A deterministic corpus of hostile image files, made by mutating valid ones (issue 14).

``corpus(n, seed)`` yields ``n`` :class:`FuzzInput` (bytes, the file suffix to give them, the kind
of mutation and what exactly was done). The same ``(n, seed)`` always gives the same bytes, so a
finding is reproduced from its index alone, and nothing but this generator is committed.

Seeds: small valid files of every format geoscope reads (JPEG baseline / progressive / grey / CMYK /
EXIF / ICC / XMP / MPO, PNG 8- and 16-bit / palette / alpha / APNG / text chunks, WebP lossy /
lossless / alpha / animated / metadata, TIFF raw / LZW / deflate / JPEG / PackBits / CMYK / 16-bit /
float / multi-page / big-endian / 1-bit, GIF static / animated / transparent, BMP 1 / 8 / 24 / 32-bit
/ RLE8, HEIC RGB / alpha / EXIF). Kinds of input, interleaved so that any prefix of the corpus holds
every kind:

- ``valid``: the seeds themselves (these must load);
- ``truncate``: each seed cut at every structure boundary (JPEG markers, PNG chunks, TIFF IFDs and
  strips, RIFF chunks, GIF blocks, BMP headers, ISOBMFF boxes) and one byte either side;
- ``lying-header``: size, count, offset and dimension fields set to 0, 1, the type's maximum and
  off-by-one values (with the PNG CRC recomputed, so the lie is believed);
- ``bomb``: small files that claim or expand to huge images (PNG / GIF / JPEG / TIFF / WebP / BMP RLE /
  HEIC), compressed-text and ICC bombs, progressive JPEGs with thousands of scans;
- ``metadata``: gigantic and malformed EXIF (IFD loops, huge counts, bad types, zero denominators,
  thousands of tags), ICC (split wrongly, huge, garbage) and XMP (huge, entity bombs) in JPEG, PNG,
  WebP and HEIC;
- ``frames``: thousands of frames or pages (GIF, APNG, animated WebP, multi-page TIFF, MPO);
- ``modes``: CMYK, YCbCr, LAB, 16-bit, 32-bit int and float (NaN / inf), palette, alpha, 1-bit;
- ``non-image``: zero-byte, text, HTML, SVG, PDF, ZIP, ELF, random bytes, other image formats
  (ICO, PSD, EPS, JPEG 2000, JPEG XL, AVIF, PPM, TGA), bare signatures -- all with image suffixes;
- ``bitflip``, ``byteset``, ``splice``, ``chunk-edit``, ``cut``: random mutations (seeded per input)
  of a random seed: flipped bits, interesting values written at random or at field offsets, two
  files spliced, structures deleted / duplicated / swapped / stuffed, cuts at random places.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache, cache
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

SEED = 14  # the issue number
MAX_SEED_BYTES = 4 << 20


@dataclass(frozen=True)
class FuzzInput:
    index: int
    kind: str
    base: str  # the seed it was made from ("" for none)
    detail: str
    suffix: str
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.index:05d}-{self.kind}-{self.base or 'none'}{self.suffix}"


# ----------------------------------------------------------------------------------------------- seeds
def _picture(w: int, h: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h - 2, 1))]
    arr = np.stack(base[:3] + [np.full_like(x, 200)] * (channels - 3), -1)[..., :channels].astype(np.int64)
    arr = arr + rng.integers(-20, 21, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _rgb(w=64, h=48, seed=0) -> Image.Image:
    return Image.fromarray(_picture(w, h, seed), "RGB")


def _img16(a: np.ndarray) -> Image.Image:
    return Image.frombytes("I;16", (a.shape[1], a.shape[0]), a.astype("<u2").tobytes())


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _register_heif() -> bool:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        return True
    except ImportError:  # pragma: no cover - pillow-heif is a dependency
        return False


def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _xmp(extra: str = "", orientation: str = "1") -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>{extra}</rdf:RDF>'
        '</x:xmpmeta><?xpacket end="w"?>'
    ).encode()


# --- a small TIFF / EXIF writer that also writes what no camera should --------------------------------
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


def _pack(typ: int, value, e: str) -> bytes:
    if typ == 2:
        return value if isinstance(value, bytes) else value.encode() + b"\0"
    if typ in (1, 6, 7) or typ not in _TYPE_SIZE:  # bytes, and the bytes of invalid types
        return bytes(value)
    fmt = {3: "H", 4: "I", 8: "h", 9: "i", 11: "f", 12: "d"}.get(typ)
    if fmt:
        return b"".join(struct.pack(e + fmt, v) for v in value)
    fmt = "II" if typ == 5 else "ii"
    return b"".join(struct.pack(e + fmt, n, d) for n, d in value)


def exif_block(ifd0: list, sub: dict[int, list] | None = None, endian: str = "<",
               next_ifd: int | None = None, count_override: dict | None = None) -> bytes:
    """TIFF-structured EXIF (no ``Exif\\0\\0`` prefix): IFD0 ``[(tag, type, value)]`` and sub-IFDs
    ``{pointer_tag: entries}`` (0x8769 Exif, 0x8825 GPS) laid out after it. ``count_override``
    {tag: count} writes a count that lies about the value; ``next_ifd`` the IFD0 next pointer."""
    e = endian
    sub = sub or {}
    count_override = count_override or {}
    out = bytearray(b"II*\0" if e == "<" else b"MM\0*")
    out += struct.pack(e + "I", 8)

    def ifd(entries, start, pointers):  # pointers: {tag: offset}
        items = [(t, ty, _pack(ty, v, e)) for t, ty, v in entries]
        items += [(t, 4, struct.pack(e + "I", off)) for t, off in pointers.items()]
        items.sort(key=lambda it: it[0])
        head = 2 + 12 * len(items) + 4
        body, data = struct.pack(e + "H", len(items)), b""
        for tag, typ, payload in items:
            count = count_override.get(tag, len(payload) // _TYPE_SIZE.get(typ, 1))
            if len(payload) <= 4:
                body += struct.pack(e + "HHI", tag, typ & 0xFFFF, count & 0xFFFFFFFF) + payload.ljust(4, b"\0")
            else:
                body += struct.pack(e + "HHII", tag, typ & 0xFFFF, count & 0xFFFFFFFF, start + head + len(data))
                data += payload + (b"\0" if len(payload) % 2 else b"")
        return body + struct.pack(e + "I", 0), data

    # lay out: IFD0 then each sub-IFD (sizes first, with placeholder pointers)
    probe_body, probe_data = ifd(ifd0, 8, {t: 0 for t in sub})
    offsets, pos = {}, 8 + len(probe_body) + len(probe_data)
    blobs = []
    for tag, entries in sub.items():
        offsets[tag] = pos
        b, d = ifd(entries, pos, {})
        blobs.append(b + d)
        pos += len(b) + len(d)
    body, data = ifd(ifd0, 8, offsets)
    if next_ifd is not None:
        body = body[:-4] + struct.pack(e + "I", next_ifd & 0xFFFFFFFF)
    out += body + data
    for b in blobs:
        out += b
    return bytes(out)


def _gps(lat=(48, 51, 24), lon=(2, 21, 0), lat_ref=b"N\0", lon_ref=b"E\0") -> list:
    return [(1, 2, lat_ref), (2, 5, [(v, 1) for v in lat]), (3, 2, lon_ref), (4, 5, [(v, 1) for v in lon])]


def good_exif(orientation: int = 1) -> bytes:
    return exif_block(
        [(0x010F, 2, "FuzzCam"), (0x0110, 2, "Model 14"), (0x0112, 3, [orientation]),
         (0x0132, 2, "2024:05:06 07:08:09")],
        {0x8769: [(0x9003, 2, "2024:05:06 07:08:09")], 0x8825: _gps()},
    )


# --- containers -------------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes,
            extra: list[bytes] = (), interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra)
            + png_chunk(b"IDAT", zlib.compress(raw_rows, 9)) + png_chunk(b"IEND", b""))


def jpeg_insert(jpeg: bytes, segments: list[bytes]) -> bytes:
    """Insert raw marker segments right after SOI."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", min(len(payload) + 2, 0xFFFF)) + payload[:0xFFFD]


def riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def webp_with_chunks(webp: bytes, chunks: list[bytes], flags: int) -> bytes:
    """A VP8X WebP made from a simple (VP8 / VP8L) one plus extra chunks (ICCP before, EXIF/XMP after)."""
    image_chunk = webp[12:]
    w, h = Image.open(io.BytesIO(webp)).size
    vp8x = riff_chunk(b"VP8X", struct.pack("<I", flags)[:4] + struct.pack("<I", w - 1)[:3] + struct.pack("<I", h - 1)[:3])
    pre = [c for c in chunks if c[:4] == b"ICCP"]
    post = [c for c in chunks if c[:4] != b"ICCP"]
    body = b"WEBP" + vp8x + b"".join(pre) + image_chunk + b"".join(post)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _bmp_rle8(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rows = b""
    for _ in range(h):
        x = 0
        while x < w:
            run = int(min(w - x, rng.integers(1, 16)))
            rows += bytes([run, int(rng.integers(0, 16))])
            x += run
        rows += b"\0\0"
    rows += b"\0\1"
    palette = b"".join(bytes([i * 16, 255 - i * 16, (i * 40) % 256, 0]) for i in range(16))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rows), 2835, 2835, 16, 0)
    off = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) + info + palette + rows


@lru_cache(maxsize=1)
def seeds() -> dict[str, tuple[bytes, str]]:
    """The valid files every mutation starts from: {name: (bytes, suffix)}."""
    heif = _register_heif()
    icc = _icc()
    out: dict[str, tuple[bytes, str]] = {}
    rgb = _rgb(64, 48, 1)
    exif = Image.Exif()
    exif.load(b"Exif\0\0" + good_exif(6))
    exif3 = Image.Exif()
    exif3.load(b"Exif\0\0" + good_exif(3))
    out["jpeg-baseline"] = (_save(rgb, "JPEG", quality=90), ".jpg")
    out["jpeg-progressive"] = (_save(_rgb(80, 56, 2), "JPEG", quality=85, progressive=True, optimize=True), ".jpg")
    out["jpeg-grey"] = (_save(rgb.convert("L"), "JPEG"), ".jpeg")
    out["jpeg-cmyk"] = (_save(rgb.convert("CMYK"), "JPEG"), ".jpg")
    out["jpeg-exif"] = (_save(rgb, "JPEG", exif=exif), ".jpg")
    out["jpeg-icc-xmp"] = (_save(rgb, "JPEG", icc_profile=icc, xmp=_xmp(orientation="6"), exif=exif3), ".jpg")
    out["jpeg-restart-444"] = (_save(rgb, "JPEG", quality=100, subsampling=0, restart_marker_blocks=2), ".jpg")
    out["mpo"] = (_save(rgb, "MPO", save_all=True, append_images=[_rgb(64, 48, 3)]), ".jpg")
    out["png-rgb"] = (_save(rgb, "PNG"), ".png")
    out["png-rgba"] = (_save(Image.fromarray(_picture(40, 30, 4, 4), "RGBA"), "PNG"), ".png")
    pal = rgb.quantize(16)
    out["png-palette"] = (_save(pal, "PNG", transparency=3), ".png")
    out["png-grey16"] = (_save(_img16(_picture(40, 30, 5)[..., 0].astype(np.uint16) * 257), "PNG"), ".png")
    rows16 = b"".join(b"\0" + _picture(24, 16, 6).astype(">u2").tobytes()[i * 24 * 6:(i + 1) * 24 * 6] for i in range(16))
    out["png-rgb16"] = (png_raw(24, 16, 16, 2, rows16), ".png")
    out["png-la"] = (_save(Image.frombytes("LA", (40, 30), _picture(40, 30, 7, 4)[..., :2].tobytes()), "PNG"), ".png")
    out["png-1bit"] = (_save(rgb.convert("1"), "PNG"), ".png")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "fuzz seed")
    info.add_text("Software", "x" * 2000, zip=True)
    info.add_itxt("XML:com.adobe.xmp", _xmp().decode(), zip=False)
    out["png-meta"] = (_save(rgb, "PNG", pnginfo=info, exif=exif, icc_profile=icc), ".png")
    frames = [_rgb(32, 24, 10 + i) for i in range(6)]
    out["apng"] = (_save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50), ".png")
    out["webp-lossy"] = (_save(rgb, "WEBP", quality=80), ".webp")
    out["webp-lossless"] = (_save(rgb, "WEBP", lossless=True), ".webp")
    out["webp-alpha"] = (_save(Image.fromarray(_picture(40, 30, 8, 4), "RGBA"), "WEBP"), ".webp")
    out["webp-anim"] = (_save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50), ".webp")
    out["webp-meta"] = (_save(rgb, "WEBP", exif=exif, icc_profile=icc, xmp=_xmp()), ".webp")
    out["tiff-raw"] = (_save(rgb, "TIFF"), ".tif")
    out["tiff-lzw"] = (_save(rgb, "TIFF", compression="tiff_lzw"), ".tiff")
    out["tiff-deflate"] = (_save(rgb, "TIFF", compression="tiff_adobe_deflate"), ".tif")
    out["tiff-jpeg"] = (_save(rgb, "TIFF", compression="jpeg"), ".tif")
    out["tiff-packbits"] = (_save(rgb, "TIFF", compression="packbits"), ".tif")
    out["tiff-cmyk"] = (_save(rgb.convert("CMYK"), "TIFF"), ".tif")
    out["tiff-grey16"] = (_save(_img16(_picture(40, 30, 9)[..., 0].astype(np.uint16) * 200), "TIFF"), ".tif")
    grey16be = (_picture(40, 30, 9)[..., 1].astype(">u2") * 200).tobytes()
    out["tiff-grey16be"] = (_save(Image.frombytes("I;16B", (40, 30), grey16be), "TIFF"), ".tif")
    fl = _picture(40, 30, 11)[..., 0].astype(np.float32) / 255.0
    fl[0, :5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    out["tiff-float"] = (_save(Image.fromarray(fl), "TIFF"), ".tif")
    out["tiff-int32"] = (_save(Image.fromarray(_picture(40, 30, 12)[..., 0].astype(np.int32) * 1000), "TIFF"), ".tif")
    out["tiff-multipage"] = (_save(frames[0], "TIFF", save_all=True, append_images=frames[1:4]), ".tif")
    out["tiff-exif"] = (_save(rgb, "TIFF", exif=exif), ".tif")
    out["tiff-1bit-g4"] = (_save(rgb.convert("1"), "TIFF", compression="group4"), ".tif")
    out["tiff-rgba"] = (_save(Image.fromarray(_picture(40, 30, 13, 4), "RGBA"), "TIFF", compression="tiff_lzw"), ".tif")
    out["tiff-lab"] = (_save(rgb.convert("LAB"), "TIFF"), ".tif")
    out["gif-static"] = (_save(rgb, "GIF"), ".gif")
    out["gif-anim"] = (_save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0), ".gif")
    out["gif-transparent"] = (_save(pal, "GIF", transparency=2, interlace=True), ".gif")
    out["bmp-24"] = (_save(rgb, "BMP"), ".bmp")
    out["bmp-8"] = (_save(pal, "BMP"), ".bmp")
    out["bmp-1"] = (_save(rgb.convert("1"), "BMP"), ".bmp")
    out["bmp-32"] = (_save(Image.fromarray(_picture(40, 30, 14, 4), "RGBA"), "BMP"), ".bmp")
    out["bmp-rle8"] = (_bmp_rle8(40, 30, 15), ".bmp")
    if heif:
        out["heic-rgb"] = (_save(rgb, "HEIF", quality=80), ".heic")
        out["heic-exif"] = (_save(rgb, "HEIF", quality=80, exif=exif), ".heic")
        out["heic-alpha"] = (_save(Image.fromarray(_picture(40, 30, 16, 4), "RGBA"), "HEIF", quality=80), ".heif")
    return out


# ------------------------------------------------------------------------------- structure parsing
def jpeg_segments(d: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment and each stretch of entropy-coded data (marker 0)."""
    out, i = [], 2 if d[:2] == b"\xff\xd8" else 0
    if i:
        out.append((0xD8, 0, 2))
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            j = i  # entropy-coded data up to the next real marker
            while j + 1 < len(d) and not (d[j] == 0xFF and d[j + 1] not in (0x00, 0xFF) and not 0xD0 <= d[j + 1] <= 0xD7):
                j += 1
            out.append((0, i, j))
            i = j
            continue
        m = d[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m in (0xD8, 0xD9, 0x01) or 0xD0 <= m <= 0xD7:
            out.append((m, i, i + 2))
            i += 2
            continue
        length = struct.unpack(">H", d[i + 2:i + 4])[0]
        out.append((m, i, min(i + 2 + length, len(d))))
        i += 2 + length
    return out


def png_chunks(d: bytes) -> list[tuple[bytes, int, int]]:
    out, i = [], 8
    while i + 12 <= len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        out.append((d[i + 4:i + 8], i, min(i + 12 + n, len(d))))
        i += 12 + n
    return out


def riff_chunks(d: bytes) -> list[tuple[bytes, int, int]]:
    out, i = [], 12
    while i + 8 <= len(d):
        n = struct.unpack("<I", d[i + 4:i + 8])[0]
        out.append((d[i:i + 4], i, min(i + 8 + n + (n & 1), len(d))))
        i += 8 + n + (n & 1)
    return out


def tiff_structure(
    d: bytes, limit: int = 64
) -> tuple[str, list[tuple[int, int, int, int, int]], list[int], list[tuple[int, int]]]:
    """(endian, entries (offset of the entry, tag, type, count, value/offset), IFD offsets, data spans)."""
    if d[:2] not in (b"II", b"MM"):
        return "<", [], [], []
    e = "<" if d[:2] == b"II" else ">"
    entries, ifds, spans = [], [], []
    todo, seen = [struct.unpack(e + "I", d[4:8])[0]], set()
    while todo and len(ifds) < limit:
        off = todo.pop(0)
        if off in seen or off + 2 > len(d) or off == 0:
            continue
        seen.add(off)
        ifds.append(off)
        n = struct.unpack(e + "H", d[off:off + 2])[0]
        strips, counts = [], []
        for k in range(min(n, 500)):
            p = off + 2 + 12 * k
            if p + 12 > len(d):
                break
            tag, typ, count, value = struct.unpack(e + "HHII", d[p:p + 12])
            entries.append((p, tag, typ, count, value))
            size = _TYPE_SIZE.get(typ, 1) * count
            vals = []
            if typ in (3, 4) and count >= 1:
                fmt = "H" if typ == 3 else "I"
                where = p + 8 if size <= 4 else value
                if 0 <= where and where + size <= len(d) and count <= 4096:
                    vals = list(struct.unpack(e + fmt * count, d[where:where + size]))
            if tag in (0x8769, 0x8825, 0xA005, 0x014A) and vals:
                todo += vals
            if tag in (273, 324):
                strips = vals
            if tag in (279, 325):
                counts = vals
            if size > 4 and value < len(d):
                spans.append((value, min(value + size, len(d))))
        p = off + 2 + 12 * n
        if p + 4 <= len(d):
            todo.append(struct.unpack(e + "I", d[p:p + 4])[0])
        spans += [(s, min(s + c, len(d))) for s, c in zip(strips, counts) if s < len(d)]
    return e, entries, ifds, spans


def gif_blocks(d: bytes) -> list[tuple[str, int, int]]:
    out = [("header", 0, 13)]
    if len(d) < 13:
        return out
    i = 13
    flags = d[10]
    if flags & 0x80:
        n = 3 << ((flags & 7) + 1)
        out.append(("global-palette", 13, 13 + n))
        i += n
    while i < len(d):
        b = d[i]
        if b == 0x3B:
            out.append(("trailer", i, i + 1))
            break
        start = i
        if b == 0x21:
            i += 2
            kind = f"ext-{d[i - 1]:02x}" if i - 1 < len(d) else "ext"
        elif b == 0x2C:
            if i + 10 > len(d):
                break
            lflags = d[i + 9]
            i += 10
            if lflags & 0x80:
                i += 3 << ((lflags & 7) + 1)
            i += 1  # LZW minimum code size
            kind = "image"
        else:
            break
        while i < len(d) and d[i]:  # sub-blocks
            out.append((kind + "-sub", i, min(i + 1 + d[i], len(d))))
            i += 1 + d[i]
        i += 1
        out.append((kind, start, min(i, len(d))))
    return out


def bmp_fields(d: bytes) -> list[tuple[str, int, str]]:
    """(name, offset, struct format) of the BMP header fields."""
    return [("bfSize", 2, "<I"), ("bfOffBits", 10, "<I"), ("biSize", 14, "<I"), ("biWidth", 18, "<i"),
            ("biHeight", 22, "<i"), ("biPlanes", 26, "<H"), ("biBitCount", 28, "<H"),
            ("biCompression", 30, "<I"), ("biSizeImage", 34, "<I"), ("biClrUsed", 46, "<I")]


_CONTAINER_BOXES = {b"meta": 4, b"iprp": 0, b"ipco": 0, b"dinf": 0, b"moov": 0, b"trak": 0, b"mdia": 0,
                    b"minf": 0, b"stbl": 0, b"iref": 4}


def isobmff_boxes(d: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[bytes, int, int]]:
    out = []
    i, end = start, len(d) if end is None else end
    while i + 8 <= end and depth < 6:
        size, typ = struct.unpack(">I", d[i:i + 4])[0], d[i + 4:i + 8]
        head = 8
        if size == 1 and i + 16 <= end:
            size, head = struct.unpack(">Q", d[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head:
            break
        out.append((typ, i, min(i + size, end)))
        if typ in _CONTAINER_BOXES:
            out += isobmff_boxes(d, i + head + _CONTAINER_BOXES[typ], min(i + size, end), depth + 1)
        i += size
    return out


def boundaries(d: bytes, fmt: str) -> list[int]:
    """Offsets where one structure ends and another begins (and where payloads begin)."""
    cuts: set[int] = set()
    if fmt == "jpeg":
        for _m, s, e in jpeg_segments(d):
            cuts.update((s, min(s + 4, e), e))
    elif fmt == "png":
        cuts.add(8)
        for _, s, e in png_chunks(d):
            cuts.update((s, s + 4, s + 8, e - 4, e))
    elif fmt == "riff":
        cuts.update((4, 8, 12))
        for _, s, e in riff_chunks(d):
            cuts.update((s, s + 8, e))
    elif fmt == "tiff":
        _, entries, ifds, spans = tiff_structure(d)
        cuts.update((4, 8))
        for off in ifds:
            cuts.update((off, off + 2))
        for p, *_ in entries:
            cuts.update((p, p + 12))
        for s, e in spans:
            cuts.update((s, e))
    elif fmt == "gif":
        cuts.update((6, 13))
        blocks = gif_blocks(d)
        subs = [b for b in blocks if b[0].endswith("-sub")]
        for name, s, e in blocks:
            if not name.endswith("-sub"):
                cuts.update((s, e))
        for _, s, e in subs[:40]:  # the first sub-blocks of each kind; big frames have hundreds
            cuts.update((s, e))
    elif fmt == "bmp":
        d_size = struct.unpack("<I", d[14:18])[0] if len(d) >= 18 else 0
        off = struct.unpack("<I", d[10:14])[0] if len(d) >= 14 else 0
        cuts.update((2, 14, 18, 14 + d_size, off, off + 1, (off + len(d)) // 2))
    elif fmt == "heif":
        for _, s, e in isobmff_boxes(d):
            cuts.update((s, s + 8, e))
    return sorted(c for c in cuts if 0 < c < len(d))


def format_of(name: str) -> str:
    if name.startswith(("jpeg", "mpo")):
        return "jpeg"
    if name.startswith(("png", "apng")):
        return "png"
    if name.startswith("webp"):
        return "riff"
    return name.split("-")[0].replace("heic", "heif")


# ------------------------------------------------------------------------------------ lying headers
def _put(d: bytes, off: int, fmt: str, value: int) -> bytes:
    size = struct.calcsize(fmt)
    if off < 0 or off + size > len(d):
        return d
    lo, hi = _range(fmt)
    return d[:off] + struct.pack(fmt, max(lo, min(hi, value))) + d[off + size:]


def _range(fmt: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize(fmt)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt[-1].islower() else (0, (1 << bits) - 1)


def _lies(current: int, fmt: str) -> list[int]:
    lo, hi = _range(fmt)
    vals = {0, 1, hi, hi - 1, current + 1, current - 1, current * 2, current // 2, hi // 2 + 1}
    if lo < 0:
        vals |= {-1, lo}
    return sorted(v for v in vals if lo <= v <= hi and v != current)


def _png_fix_crc(d: bytes) -> bytes:
    out, i = bytearray(d[:8]), 8
    while i + 12 <= len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        if i + 12 + n > len(d):
            out += d[i:]
            return bytes(out)
        body = d[i + 4:i + 8 + n]
        out += d[i:i + 8 + n] + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        i += 12 + n
    out += d[i:]
    return bytes(out)


def lying_variants(name: str, d: bytes) -> Iterator[tuple[str, Callable[[], bytes]]]:
    fmt = format_of(name)
    if fmt == "jpeg":
        for m, s, e in jpeg_segments(d):
            if m and e - s >= 4 and m not in (0xD8, 0xD9) and not 0xD0 <= m <= 0xD7:
                cur = struct.unpack(">H", d[s + 2:s + 4])[0]
                for v in _lies(cur, ">H"):
                    yield f"{m:02X} segment length {cur}->{v}", lambda s=s, v=v: _put(d, s + 2, ">H", v)
            if m in (0xC0, 0xC1, 0xC2) and e - s >= 10:
                for fld, off in (("height", 5), ("width", 7)):
                    cur = struct.unpack(">H", d[s + off:s + off + 2])[0]
                    for v in _lies(cur, ">H"):
                        yield f"SOF {fld} {cur}->{v}", lambda s=s, off=off, v=v: _put(d, s + off, ">H", v)
                for v in (0, 2, 4, 255):
                    yield f"SOF components ->{v}", lambda s=s, v=v: _put(d, s + 9, ">B", v)
                for v in (0, 12, 16, 255):
                    yield f"SOF precision ->{v}", lambda s=s, v=v: _put(d, s + 4, ">B", v)
            if m == 0xDA and e - s >= 5:
                for v in (0, 4, 255):
                    yield f"SOS components ->{v}", lambda s=s, v=v: _put(d, s + 4, ">B", v)
            if m == 0xC4 and e - s >= 21:
                for v in (0, 255):
                    yield f"DHT code count ->{v}", lambda s=s, v=v: _put(d, s + 5, ">B", v)
            if m == 0xDB and e - s >= 5:
                for v in (0x10, 0x0F, 0xFF):
                    yield f"DQT precision/id ->{v:#x}", lambda s=s, v=v: _put(d, s + 4, ">B", v)
    elif fmt == "png":
        for kind, s, _e in png_chunks(d):
            cur = struct.unpack(">I", d[s:s + 4])[0]
            for v in _lies(cur, ">I"):
                yield f"{kind.decode('latin1')} length {cur}->{v}", lambda s=s, v=v: _put(d, s, ">I", v)
            if kind == b"IHDR":
                for fld, off, f in (("width", 8, ">I"), ("height", 12, ">I"), ("bit depth", 16, ">B"),
                                    ("colour type", 17, ">B"), ("compression", 18, ">B"), ("filter", 19, ">B"),
                                    ("interlace", 20, ">B")):
                    cur = struct.unpack(f, d[s + off:s + off + struct.calcsize(f)])[0]
                    vals = _lies(cur, f) if f == ">I" else sorted({0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255} - {cur})
                    for v in vals:
                        yield (
                            f"IHDR {fld} {cur}->{v} (CRC fixed)",
                            lambda s=s, off=off, f=f, v=v: _png_fix_crc(_put(d, s + off, f, v)),
                        )
            if kind == b"acTL":
                for v in (0, 0xFFFFFFFF, 100000):
                    yield f"acTL num_frames ->{v} (CRC fixed)", lambda s=s, v=v: _png_fix_crc(_put(d, s + 8, ">I", v))
            if kind == b"fcTL":
                for fld, off in (("width", 12), ("height", 16), ("x", 20), ("y", 24)):
                    for v in (0, 0xFFFFFFFF, 100000):
                        yield f"fcTL {fld} ->{v} (CRC fixed)", lambda s=s, off=off, v=v: _png_fix_crc(_put(d, s + off, ">I", v))
    elif fmt == "riff":
        cur = struct.unpack("<I", d[4:8])[0]
        for v in _lies(cur, "<I"):
            yield f"RIFF size {cur}->{v}", lambda v=v: _put(d, 4, "<I", v)
        for kind, s, e in riff_chunks(d):
            cur = struct.unpack("<I", d[s + 4:s + 8])[0]
            for v in _lies(cur, "<I"):
                yield f"{kind.decode('latin1')} size {cur}->{v}", lambda s=s, v=v: _put(d, s + 4, "<I", v)
            if kind == b"VP8X":
                for off, fld in ((12, "canvas width"), (15, "canvas height")):
                    for v in (0, 0xFFFFFF, 16383, 65535):
                        yield (
                            f"VP8X {fld} ->{v}",
                            lambda s=s, off=off, v=v: d[: s + off] + struct.pack("<I", v)[:3] + d[s + off + 3 :],
                        )
                for v in (0xFF, 0x00, 0x10, 0x02):
                    yield f"VP8X flags ->{v:#x}", lambda s=s, v=v: _put(d, s + 8, "<B", v)
            if kind == b"VP8 " and e - s >= 20:
                for off, fld in ((14, "width"), (16, "height")):
                    for v in (0, 0x3FFF, 0xFFFF):
                        yield f"VP8 frame {fld} ->{v}", lambda s=s, off=off, v=v: _put(d, s + off, "<H", v)
            if kind == b"VP8L" and e - s >= 13:
                for v in (0, 0xFFFFFFFF, 0x0FFFFFFF):
                    yield f"VP8L dimensions ->{v:#x}", lambda s=s, v=v: _put(d, s + 9, "<I", v)
            if kind == b"ANMF" and e - s >= 24:
                for off, fld in ((8 + 6, "frame width"), (8 + 9, "frame height"), (8, "frame x")):
                    for v in (0, 0xFFFFFF):
                        yield (
                            f"ANMF {fld} ->{v}",
                            lambda s=s, off=off, v=v: d[: s + off] + struct.pack("<I", v)[:3] + d[s + off + 3 :],
                        )
    elif fmt == "tiff":
        e, entries, ifds, _ = tiff_structure(d)
        for off in ifds:
            cur = struct.unpack(e + "H", d[off:off + 2])[0]
            for v in _lies(cur, e + "H"):
                yield f"IFD@{off} entry count {cur}->{v}", lambda off=off, v=v: _put(d, off, e + "H", v)
            nxt = off + 2 + 12 * cur
            for v in (off, 8, 0xFFFFFFFF, len(d) - 2, nxt):
                yield f"IFD@{off} next -> {v}", lambda nxt=nxt, v=v: _put(d, nxt, e + "I", v)
        for p, tag, typ, count, value in entries:
            for v in _lies(count, e + "I")[:6]:
                yield f"tag {tag} count {count}->{v}", lambda p=p, v=v: _put(d, p + 4, e + "I", v)
            for v in (0, 13, 0xFFFF):
                yield f"tag {tag} type {typ}->{v}", lambda p=p, v=v: _put(d, p + 2, e + "H", v)
            fmtv = e + ("H" if typ == 3 else "I")
            vals = _lies(value & 0xFFFF if typ == 3 else value, fmtv)
            if tag in (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 0x8769, 0x8825):
                for v in (
                    vals + ([5, 6, 7, 8, 32773, 34712, 99] if tag == 259 else []) + (list(range(0, 12)) if tag == 262 else [])
                ):
                    yield f"tag {tag} value {value}->{v}", lambda p=p, fmtv=fmtv, v=v: _put(d, p + 8, fmtv, v)
    elif fmt == "gif":
        for fld, off in (("screen width", 6), ("screen height", 8)):
            for v in (0, 1, 0xFFFF):
                yield f"GIF {fld} ->{v}", lambda off=off, v=v: _put(d, off, "<H", v)
        for v in (0x00, 0xFF, 0x87):
            yield f"GIF screen flags ->{v:#x}", lambda v=v: _put(d, 10, "<B", v)
        for name_, s, _e in gif_blocks(d)[:60]:
            if name_ == "image":
                for fld, off in (("left", 1), ("top", 3), ("width", 5), ("height", 7)):
                    for v in (0, 0xFFFF, 0x8000):
                        yield f"image {fld} ->{v}", lambda s=s, off=off, v=v: _put(d, s + off, "<H", v)
                for v in (0xFF, 0x80, 0x47):
                    yield f"image flags ->{v:#x}", lambda s=s, v=v: _put(d, s + 9, "<B", v)
            if name_.endswith("-sub"):
                for v in (0, 1, 255):
                    yield f"{name_}@{s} size ->{v}", lambda s=s, v=v: _put(d, s, "<B", v)
    elif fmt == "bmp":
        for fld, off, f in bmp_fields(d):
            cur = struct.unpack(f, d[off:off + struct.calcsize(f)])[0] if off + struct.calcsize(f) <= len(d) else 0
            vals = _lies(cur, f)
            if fld == "biBitCount":
                vals = sorted(set(vals) | {1, 2, 4, 8, 15, 16, 24, 32, 64})
            if fld == "biCompression":
                vals = sorted(set(vals) | {0, 1, 2, 3, 4, 5, 6, 99})
            for v in vals:
                yield f"BMP {fld} {cur}->{v}", lambda off=off, f=f, v=v: _put(d, off, f, v)
    elif fmt == "heif":
        for typ, s, _e in isobmff_boxes(d):
            cur = struct.unpack(">I", d[s:s + 4])[0]
            for v in (0, 1, 7, 8, 0xFFFFFFFF, cur + 1, cur - 1):
                yield f"box {typ.decode('latin1')} size {cur}->{v}", lambda s=s, v=v: _put(d, s, ">I", v)
            if typ == b"ispe":
                for off, fld in ((12, "width"), (16, "height")):
                    for v in (0, 0xFFFFFFFF, 100000, 1):
                        yield f"ispe {fld} ->{v}", lambda s=s, off=off, v=v: _put(d, s + off, ">I", v)
            if typ in (b"iloc", b"pitm", b"iinf", b"ipma"):
                for v in (0xFF, 0x02):
                    yield f"box {typ.decode('latin1')} version ->{v}", lambda s=s, v=v: _put(d, s + 8, ">B", v)


# --------------------------------------------------------------------------------------------- bombs
def bombs() -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    """(detail, suffix, make) of small files that claim or expand to huge images."""
    def png_zeros(w, h, depth=1, ctype=0, rows=None):
        bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype] * depth
        row = b"\0" * (1 + (w * bpp + 7) // 8)
        n = h if rows is None else rows
        comp = zlib.compressobj(9)
        parts = [comp.compress(row * min(256, n - k)) for k in range(0, n, 256)] + [comp.flush()]
        ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")

    yield "PNG 30000x30000 1-bit, all zeros (900 MP)", ".png", lambda: png_zeros(30000, 30000)
    yield "PNG 65535x65535 header only", ".png", lambda: png_zeros(65535, 65535, rows=1)
    yield "PNG 2^31-1 x 1", ".png", lambda: png_zeros(0x7FFFFFFF, 1, rows=0)
    yield "PNG 1 x 2^31-1", ".png", lambda: png_zeros(1, 0x7FFFFFFF, rows=1)
    yield (
        "PNG 10000x10000 RGBA zeros (100 MP, at the limit), data for 16 rows",
        ".png",
        lambda: png_zeros(10000, 10000, 8, 6, rows=16),
    )
    yield "PNG 10000x10000 RGBA zeros (100 MP, at the limit), full data", ".png", lambda: png_zeros(10000, 10000, 8, 6)
    yield (
        "PNG 7000x7000 RGB zeros (49 MP, under the limit; data for 16 rows)",
        ".png",
        lambda: png_zeros(7000, 7000, 8, 2, rows=16),
    )
    yield "PNG 4000x4000 RGBA 16-bit zeros, full data (16 MP)", ".png", lambda: png_zeros(4000, 4000, 16, 6)
    yield "PNG 12000x8000 grey 8-bit, full data (96 MP)", ".png", lambda: png_zeros(12000, 8000, 8, 0)

    def ztxt(kind, key, size):
        payload = key + b"\0\0" + zlib.compress(b"A" * size, 9)
        if kind == b"iTXt":
            payload = key + b"\0\1\0\0\0" + zlib.compress(b"A" * size, 9)
        if kind == b"iCCP":
            payload = key + b"\0\0" + zlib.compress(b"\0" * size, 9)
        base = seeds()["png-rgb"][0]
        return base[:33] + png_chunk(kind, payload) + base[33:]

    for kind, key in ((b"zTXt", b"Comment"), (b"iTXt", b"XML:com.adobe.xmp"), (b"iCCP", b"icc"),
                      (b"zTXt", b"Raw profile type exif")):
        for size in (2 << 20, 64 << 20):
            yield (
                f"PNG {kind.decode()} {key.decode()} expanding to {size >> 20} MiB",
                ".png",
                lambda k=kind, y=key, s=size: ztxt(k, y, s),
            )
    yield "PNG 20000 IDAT chunks of 1 byte", ".png", lambda: _many_idat(20000)

    def gif_screen(w, h):
        d = seeds()["gif-static"][0]
        return d[:6] + struct.pack("<HH", w, h) + d[10:]

    yield "GIF logical screen 65535x65535, 64x48 image", ".gif", lambda: gif_screen(65535, 65535)
    yield "GIF logical screen 20000x5000 (100 MP), 64x48 image", ".gif", lambda: gif_screen(20000, 5000)

    def gif_image(w, h):
        d = seeds()["gif-static"][0]
        s = next(s for n, s, _ in gif_blocks(d) if n == "image")
        return d[:6] + struct.pack("<HH", w, h) + d[10:s + 5] + struct.pack("<HH", w, h) + d[s + 9:]

    yield "GIF image 9000x9000 with data for 64x48", ".gif", lambda: gif_image(9000, 9000)
    yield "GIF image 65535x65535", ".gif", lambda: gif_image(65535, 65535)

    def jpeg_dims(name, w, h):
        d = seeds()[name][0]
        for m, s, _ in jpeg_segments(d):
            if m in (0xC0, 0xC1, 0xC2):
                return d[:s + 5] + struct.pack(">HH", h, w) + d[s + 9:]
        return d

    for name in ("jpeg-baseline", "jpeg-progressive"):
        yield f"{name} claiming 65500x65500", ".jpg", lambda n=name: jpeg_dims(n, 65500, 65500)
        yield f"{name} claiming 12000x8000 (96 MP) with data for 64x48", ".jpg", lambda n=name: jpeg_dims(n, 12000, 8000)
    for n_scans in (2000, 20000):
        yield f"progressive JPEG with {n_scans} extra scans", ".jpg", lambda n=n_scans: _many_scans(n)
    yield "progressive JPEG 1024x1024 with 5000 extra scans", ".jpg", lambda: _many_scans(5000, big=True)
    yield "JPEG with 10000 DHT segments", ".jpg", lambda: _many_segments(0xC4, 10000)
    yield "JPEG with 30000 COM segments", ".jpg", lambda: _many_segments(0xFE, 30000)

    def tiff_huge(w, h, comp):
        row = b"\0" * w
        strip = zlib.compress(row * min(h, 64), 9) if comp == 8 else row * min(h, 4)
        ifd = [(256, 4, [w]), (257, 4, [h]), (258, 3, [8]), (259, 3, [comp]), (262, 3, [1]),
               (277, 3, [1]), (278, 4, [h]), (279, 4, [len(strip)])]
        return _tiff_with_strip(ifd, strip)

    yield "TIFF 100000x100000 deflate", ".tif", lambda: tiff_huge(100000, 100000, 8)
    yield "TIFF 9000x9000 deflate, one strip of 64 rows", ".tif", lambda: tiff_huge(9000, 9000, 8)
    yield "TIFF 10000x10000 raw, 4 rows of data", ".tif", lambda: tiff_huge(10000, 10000, 1)
    yield "TIFF 8000x8000 deflate, full strip (64 MP)", ".tif", lambda: _tiff_full(8000, 8000)
    yield "TIFF 2000x2000 with 2000 strips of one row", ".tif", lambda: _tiff_many_strips(2000, 2000)

    def webp_canvas(w, h):
        return (
            webp_with_chunks(seeds()["webp-lossy"][0], [], 0)[:24]
            + struct.pack("<I", w - 1)[:3]
            + struct.pack("<I", h - 1)[:3]
            + webp_with_chunks(seeds()["webp-lossy"][0], [], 0)[30:]
        )

    yield "WebP VP8X canvas 16384x16384 over a 64x48 frame", ".webp", lambda: webp_canvas(16384, 16384)
    yield "WebP VP8X canvas 16777216x16777216", ".webp", lambda: webp_canvas(1 << 24, 1 << 24)

    def bmp_rle_bomb(w, h):
        rows = (b"\xff\x00" * (w // 255) + b"\0\0") * 4 + b"\0\1"
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rows), 0, 0, 2, 0)
        pal = b"\0\0\0\0\xff\xff\xff\0"
        off = 14 + 40 + len(pal)
        return b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) + info + pal + rows

    yield "BMP RLE8 claiming 30000x30000", ".bmp", lambda: bmp_rle_bomb(30000, 30000)
    yield "BMP RLE8 claiming 9000x9000", ".bmp", lambda: bmp_rle_bomb(9000, 9000)
    yield "BMP RLE8 with a delta jump far outside", ".bmp", lambda: _bmp_rle_delta()
    yield "BMP RLE8 10000x10000, one pixel and an end-of-line per row", ".bmp", lambda: _bmp_rle_rows(10000, 10000)
    yield "BMP RLE4 4000x4000 in runs of 255 pixels", ".bmp", lambda: _bmp_rle4_runs(4000, 4000)

    def bmp_dims(w, h):
        d = seeds()["bmp-24"][0]
        return d[:18] + struct.pack("<ii", w, h) + d[26:]

    for w, h in ((30000, 30000), (-100, 100), (100, -0x7FFFFFFF), (0x7FFFFFFF, 1), (10000, 10000)):
        yield f"BMP 24-bit claiming {w}x{h}", ".bmp", lambda w=w, h=h: bmp_dims(w, h)
    if "heic-rgb" in seeds():
        d = seeds()["heic-rgb"][0]
        for w, h in ((100000, 100000), (0xFFFFFFFF, 0xFFFFFFFF), (12000, 8000)):
            yield f"HEIC ispe claiming {w}x{h}", ".heic", lambda w=w, h=h, d=d: _heic_ispe(d, w, h)


def _many_idat(n: int) -> bytes:
    rows = b"".join(b"\0" + bytes(_picture(64, 48, 1)[r].tobytes()) for r in range(48))
    comp = zlib.compress(rows, 9)
    step = max(1, len(comp) // n)
    parts = [png_chunk(b"IDAT", comp[i:i + step]) for i in range(0, len(comp), step)]
    parts += [png_chunk(b"IDAT", b"")] * max(0, n - len(parts))
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(parts) + png_chunk(b"IEND", b"")


def _many_scans(n: int, big: bool = False) -> bytes:
    d = _save(_rgb(1024, 1024, 30), "JPEG", quality=70, progressive=True) if big else seeds()["jpeg-progressive"][0]
    segs = jpeg_segments(d)
    sos = [i for i, (m, _, _) in enumerate(segs) if m == 0xDA]
    # repeat the last scan (its header and data) n times: a decoder runs every one
    k = sos[-1]
    block = d[segs[k][1]:segs[k + 1][2] if k + 1 < len(segs) and segs[k + 1][0] == 0 else segs[k][2]]
    end = segs[-1][1]
    return d[:end] + block * n + d[end:]


def _many_segments(marker: int, n: int) -> bytes:
    d = seeds()["jpeg-baseline"][0]
    seg = next((d[s:e] for m, s, e in jpeg_segments(d) if m == marker), jpeg_segment(marker, b"fuzz"))
    return d[:2] + seg * n + d[2:]


def _tiff_with_strip(ifd: list, strip: bytes, endian: str = "<") -> bytes:
    head = exif_block(ifd + [(273, 4, [0])], endian=endian)
    off = len(head)
    head = exif_block(ifd + [(273, 4, [off])], endian=endian)
    return head + strip


def _tiff_full(w: int, h: int) -> bytes:
    strip = zlib.compress(b"\0" * (w * h), 9)
    ifd = [(256, 4, [w]), (257, 4, [h]), (258, 3, [8]), (259, 3, [8]), (262, 3, [1]), (277, 3, [1]),
           (278, 4, [h]), (279, 4, [len(strip)])]
    return _tiff_with_strip(ifd, strip)


def _tiff_many_strips(w: int, h: int) -> bytes:
    row = b"\x80" * w
    ifd = [(256, 4, [w]), (257, 4, [h]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]), (277, 3, [1]),
           (278, 4, [1]), (279, 4, [w] * h)]
    head = exif_block(ifd + [(273, 4, [0] * h)])
    offs = [len(head) + i * w for i in range(h)]
    return exif_block(ifd + [(273, 4, offs)]) + row * h


def _bmp_rle_delta() -> bytes:
    rows = b"\x00\x02\xff\xff" * 200 + b"\x05\x01\0\1"
    info = struct.pack("<IiiHHIIiiII", 40, 64, 48, 1, 8, 1, len(rows), 0, 0, 2, 0)
    pal = b"\0\0\0\0\xff\xff\xff\0"
    off = 14 + 40 + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) + info + pal + rows


def _bmp(w: int, h: int, bits: int, compression: int, pixels: bytes) -> bytes:
    colours = 1 << bits
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bits, compression, len(pixels), 0, 0, colours, 0)
    pal = b"".join(bytes([i * 255 // (colours - 1)] * 3 + [0]) for i in range(colours))
    off = 14 + 40 + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(pixels), 0, 0, off) + info + pal + pixels


def _bmp_rle_rows(w: int, h: int) -> bytes:
    """RLE8: every row one pixel, then end-of-line (Pillow fills the rest of the row byte by byte)."""
    return _bmp(w, h, 8, 1, b"\x01\x01\x00\x00" * h + b"\x00\x01")


def _bmp_rle4_runs(w: int, h: int) -> bytes:
    """RLE4: every row in runs of 255 pixels (Pillow expands RLE4 runs one pixel at a time)."""
    row = b"".join(bytes([min(255, w - x), 0x12]) for x in range(0, w, 255)) + b"\x00\x00"
    return _bmp(w, h, 4, 2, row * h + b"\x00\x01")


def _heic_ispe(d: bytes, w: int, h: int) -> bytes:
    for typ, s, _ in isobmff_boxes(d):
        if typ == b"ispe":
            d = d[:s + 12] + struct.pack(">II", w, h) + d[s + 20:]
    return d


# --------------------------------------------------------------------------------------- metadata
def bad_exif_blocks() -> Iterator[tuple[str, bytes]]:
    """(detail, TIFF-structured EXIF bytes without the Exif\\0\\0 prefix)."""
    gps = _gps()
    base0 = [(0x010F, 2, "FuzzCam"), (0x0112, 3, [6])]
    yield "valid EXIF with GPS", good_exif()
    yield "big-endian EXIF with GPS", exif_block(base0, {0x8825: gps}, endian=">")
    yield "IFD0 next pointer to itself", exif_block(base0, {0x8825: gps}, next_ifd=8)
    yield "IFD0 entry count 65535", exif_block(base0, {0x8825: gps})[:8] + b"\xff\xff" + exif_block(base0, {0x8825: gps})[10:]
    blk = exif_block(base0, {0x8825: gps, 0x8769: [(0x9003, 2, "2024:01:01 00:00:00")]})
    yield "GPS IFD pointer to IFD0 (loop)", _patch_tag(blk, 0x8825, 8)
    yield "Exif IFD pointer to itself", _patch_tag(blk, 0x8769, _tag_value(blk, 0x8769))
    yield "GPS IFD pointer past the end", _patch_tag(blk, 0x8825, 0xFFFFFFF0)
    yield "GPS IFD pointer into the header", _patch_tag(blk, 0x8825, 3)
    yield "GPS latitude count 0x3FFFFFFF", exif_block(base0, {0x8825: gps}, count_override={2: 0x3FFFFFFF})
    yield "GPS latitude count 0", exif_block(base0, {0x8825: gps}, count_override={2: 0})
    yield "Make count 0xFFFFFFFF", exif_block(base0, {0x8825: gps}, count_override={0x010F: 0xFFFFFFFF})
    yield "GPS with zero denominators", exif_block(base0, {0x8825: [(1, 2, b"N\0"), (2, 5, [(48, 0), (0, 0), (5, 0)]),
                                                                     (3, 2, b"E\0"), (4, 5, [(0, 0), (0, 0), (0, 0)])]})
    yield "GPS as SRATIONAL negatives", exif_block(base0, {0x8825: [(1, 2, b"S\0"), (2, 10, [(-48, 1), (-5, 1), (0, 1)]),
                                                                     (3, 2, b"W\0"), (4, 10, [(-2, 1), (1, -1), (0, 1)])]})
    yield "GPS out of range", exif_block(base0, {0x8825: _gps((400, 90, 90), (999, 0, 0), b"X\0", b"\xff\0")})
    yield (
        "GPS as DOUBLE and FLOAT",
        exif_block(base0, {0x8825: [(2, 12, [48.5, 1e308, float("nan")]), (4, 11, [2.0, float("inf"), 0.0])]}),
    )
    yield (
        "GPS refs as numbers",
        exif_block(base0, {0x8825: [(1, 3, [78]), (2, 5, [(1, 1)] * 3), (3, 4, [69]), (4, 5, [(1, 1)] * 3)]}),
    )
    yield "GPS with 3000 coordinate values", exif_block(base0, {0x8825: [(2, 5, [(1, 1)] * 3000), (4, 5, [(1, 1)] * 3000)]})
    yield (
        "invalid tag types 0, 13, 99, 0xFFFF",
        exif_block([(0x010F, 0, b"abcd"), (0x0110, 13, b"abcd"), (0x0112, 99, b"\0\6\0\0"), (0x0132, 0xFFFF, b"x")]),
    )
    yield "Orientation 9", exif_block([(0x0112, 3, [9])])
    yield "Orientation 0", exif_block([(0x0112, 3, [0])])
    yield "Orientation 65535", exif_block([(0x0112, 3, [65535])])
    yield "Orientation as ASCII", exif_block([(0x0112, 2, "6")])
    yield "Orientation as RATIONAL 6/0", exif_block([(0x0112, 5, [(6, 0)])])
    yield "Orientation with 1000 values", exif_block([(0x0112, 3, [6] * 1000)])
    yield "3000 tags in IFD0", exif_block([(0x8000 + i, 3, [i]) for i in range(3000)])
    yield "3000 duplicate Make tags", exif_block([(0x010F, 2, f"cam{i}") for i in range(3000)])
    yield "60 KB Make string without NUL", exif_block([(0x010F, 2, b"M" * 60000)])
    yield (
        "DateTime garbage",
        exif_block([(0x0132, 2, "9999:99:99 99:99:99")], {0x8769: [(0x9003, 2, "\xff\xfe"), (0x9011, 2, "+99:99")]}),
    )
    yield (
        "MakerNote overlapping the IFD",
        exif_block(base0, {0x8769: [(0x927C, 7, b"\0" * 8)]}, count_override={0x927C: 0x7FFFFFFF}),
    )
    yield "chain of 1000 IFDs", _ifd_chain(1000)
    yield "chain of 1000 nested Exif IFD pointers", _nested_ifds(1000)
    yield "bad magic II+", b"II+\0" + good_exif()[4:]
    yield "bad magic XX", b"XX*\0" + good_exif()[4:]
    yield "header only", b"II*\0\x08\0\0\0"
    yield "4 bytes", b"II*\0"
    yield "random 4 KB", np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    yield "Interop / SubIFDs pointers to garbage", exif_block([(0x014A, 4, [0xFFFFFF, 4, 8]), (0xA005, 4, [6])])


def _tag_value(blk: bytes, tag: int) -> int:
    e = "<" if blk[:2] == b"II" else ">"
    n = struct.unpack(e + "H", blk[8:10])[0]
    for k in range(n):
        p = 10 + 12 * k
        t, _, _, v = struct.unpack(e + "HHII", blk[p:p + 12])
        if t == tag:
            return v
    return 0


def _patch_tag(blk: bytes, tag: int, value: int) -> bytes:
    e = "<" if blk[:2] == b"II" else ">"
    n = struct.unpack(e + "H", blk[8:10])[0]
    for k in range(n):
        p = 10 + 12 * k
        if struct.unpack(e + "H", blk[p:p + 2])[0] == tag:
            return blk[:p + 8] + struct.pack(e + "I", value & 0xFFFFFFFF) + blk[p + 12:]
    return blk


def _ifd_chain(n: int) -> bytes:
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for i in range(n):
        here = len(out)
        out += (
            struct.pack("<H", 1)
            + struct.pack("<HHII", 0x010F, 2, 4, 0x00434241)
            + struct.pack("<I", here + 18 if i < n - 1 else 0)
        )
    return bytes(out)


def _nested_ifds(n: int) -> bytes:
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for i in range(n):
        here = len(out)
        out += struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, here + 18 if i < n - 1 else 8) + struct.pack("<I", 0)
    return bytes(out)


def metadata_inputs() -> Iterator[tuple[str, str, str, Callable[[], bytes]]]:
    """(base, detail, suffix, make)."""
    jpeg = seeds()["jpeg-baseline"][0]
    png = seeds()["png-rgb"][0]
    webp = seeds()["webp-lossy"][0]
    heif = "heic-rgb" in seeds()
    for detail, blk in bad_exif_blocks():
        yield (
            "jpeg-baseline",
            f"APP1 Exif: {detail}",
            ".jpg",
            lambda b=blk: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"Exif\0\0" + b)]),
        )
        yield "png-rgb", f"eXIf: {detail}", ".png", lambda b=blk: png[:33] + png_chunk(b"eXIf", b) + png[33:]
        yield "webp-lossy", f"EXIF chunk: {detail}", ".webp", lambda b=blk: webp_with_chunks(webp, [riff_chunk(b"EXIF", b)], 0x08)
        if heif:
            yield "heic-rgb", f"HEIC exif: {detail}", ".heic", lambda b=blk: _heif_with_exif(b)
    yield (
        "png-rgb",
        "Raw profile type exif with garbage hex",
        ".png",
        lambda: png[:33] + png_chunk(b"tEXt", b"Raw profile type exif\0\nexif\n  20\nZZZZnothex") + png[33:],
    )
    yield (
        "png-rgb",
        "Raw profile type exif with a huge length",
        ".png",
        lambda: (
            png[:33] + png_chunk(b"tEXt", b"Raw profile type exif\0\nexif\n 99999999\n" + good_exif().hex().encode()) + png[33:]
        ),
    )
    yield (
        "jpeg-baseline",
        "APP1 Exif of 65533 bytes of 0xFF",
        ".jpg",
        lambda: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"Exif\0\0" + b"\xff" * 65527)]),
    )
    yield (
        "jpeg-baseline",
        "50 APP1 Exif segments",
        ".jpg",
        lambda: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"Exif\0\0" + good_exif())] * 50),
    )
    yield "jpeg-baseline", "APP1 Exif header only", ".jpg", lambda: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"Exif\0\0")])
    yield "jpeg-baseline", "APP1 Exif, 1 byte", ".jpg", lambda: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"E")])
    # ICC
    icc = _icc()

    def icc_chunks(profile: bytes, seqs: list[tuple[int, int]], size: int = 65519) -> bytes:
        segs = []
        for k, (seq, count) in enumerate(seqs):
            part = profile[k * size:(k + 1) * size] or profile[:size]
            segs.append(jpeg_segment(0xE2, b"ICC_PROFILE\0" + bytes([seq & 255, count & 255]) + part))
        return jpeg_insert(jpeg, segs)

    big = (icc * (4 << 20 // max(len(icc), 1)))[: 200 * 65519]
    yield "jpeg-baseline", "ICC in 200 APP2 chunks (13 MB)", ".jpg", lambda: icc_chunks(big, [(i + 1, 200) for i in range(200)])
    yield "jpeg-baseline", "ICC chunks numbered 0", ".jpg", lambda: icc_chunks(icc, [(0, 1)])
    yield "jpeg-baseline", "ICC chunk 3 of 2", ".jpg", lambda: icc_chunks(icc, [(3, 2)])
    yield "jpeg-baseline", "ICC chunks with two counts", ".jpg", lambda: icc_chunks(icc * 3, [(1, 2), (2, 5)], size=len(icc))
    yield "jpeg-baseline", "ICC chunk 1 of 1, twice", ".jpg", lambda: icc_chunks(icc * 2, [(1, 1), (1, 1)], size=len(icc))
    yield "jpeg-baseline", "ICC chunk 1 of 255 only", ".jpg", lambda: icc_chunks(icc, [(1, 255)])
    yield "jpeg-baseline", "ICC garbage profile", ".jpg", lambda: icc_chunks(b"\xff" * 500, [(1, 1)])
    yield "jpeg-baseline", "ICC header only", ".jpg", lambda: jpeg_insert(jpeg, [jpeg_segment(0xE2, b"ICC_PROFILE\0")])
    yield (
        "png-rgb",
        "iCCP garbage profile",
        ".png",
        lambda: png[:33] + png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\xff" * 500)) + png[33:],
    )
    yield "png-rgb", "iCCP not zlib", ".png", lambda: png[:33] + png_chunk(b"iCCP", b"icc\0\0not zlib at all") + png[33:]
    yield (
        "png-rgb",
        "iCCP compression method 7",
        ".png",
        lambda: png[:33] + png_chunk(b"iCCP", b"icc\0\7" + zlib.compress(icc)) + png[33:],
    )
    yield "webp-lossy", "ICCP garbage", ".webp", lambda: webp_with_chunks(webp, [riff_chunk(b"ICCP", b"\xff" * 500)], 0x20)
    yield "webp-lossy", "ICCP flag without chunk", ".webp", lambda: webp_with_chunks(webp, [], 0x20)
    yield "webp-lossy", "all flags, no chunks", ".webp", lambda: webp_with_chunks(webp, [], 0x3E)
    # XMP
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">'
        + "".join(
            f'<!ENTITY lol{i + 1} "{("&lol" + str(i) + ";") * 10}">'
            if i
            else '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            for i in range(9)
        )
        + ']><x:xmpmeta xmlns:x="adobe:ns:meta/">&lol9;</x:xmpmeta>'
    ).encode()
    xmps = {
        "XMP of 60 KB": _xmp("<x>" + "y" * 60000 + "</x>"),
        "XMP billion laughs": laughs,
        "XMP Orientation 6": _xmp(orientation="6"),
        "XMP Orientation 999": _xmp(orientation="999"),
        "XMP Orientation abc": _xmp(orientation="abc"),
        "XMP not XML": b"\xff\xfe<<<<>>>>&&&&;;;",
        "XMP 10000 nested elements": ("<a>" * 10000 + "</a>" * 10000).encode(),
        "XMP unterminated": _xmp()[:-40],
    }
    for detail, x in xmps.items():
        yield (
            "jpeg-baseline",
            f"APP1 {detail}",
            ".jpg",
            lambda x=x: jpeg_insert(jpeg, [jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + x)]),
        )
        yield (
            "jpeg-exif",
            f"APP1 {detail} + EXIF orientation 6",
            ".jpg",
            lambda x=x: jpeg_insert(seeds()["jpeg-exif"][0], [jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + x)]),
        )
        yield (
            "png-rgb",
            f"iTXt {detail}",
            ".png",
            lambda x=x: png[:33] + png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + x) + png[33:],
        )
        yield "webp-lossy", f"XMP chunk {detail}", ".webp", lambda x=x: webp_with_chunks(webp, [riff_chunk(b"XMP ", x)], 0x04)
    yield "jpeg-baseline", "Extended XMP chunks out of order", ".jpg", lambda: jpeg_insert(jpeg, [
        jpeg_segment(0xE1, b"http://ns.adobe.com/xmp/extension/\0" + b"0" * 32 + struct.pack(">II", 100000, 90000) + b"x" * 100),
        jpeg_segment(0xE1, b"http://ns.adobe.com/xmp/extension/\0" + b"0" * 32 + struct.pack(">II", 5, 0xFFFFFFF0) + b"y")])
    yield (
        "jpeg-baseline",
        "APP14 Adobe with transform 99",
        ".jpg",
        lambda: jpeg_insert(jpeg, [jpeg_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x63")]),
    )
    yield (
        "jpeg-cmyk",
        "APP14 Adobe removed from CMYK",
        ".jpg",
        lambda: b"".join(seeds()["jpeg-cmyk"][0][s:e] for m, s, e in jpeg_segments(seeds()["jpeg-cmyk"][0]) if m != 0xEE),
    )
    yield (
        "jpeg-baseline",
        "JFIF with huge thumbnail dims",
        ".jpg",
        lambda: jpeg_insert(
            jpeg[:2] + b"".join(jpeg[s:e] for m, s, e in jpeg_segments(jpeg)[1:] if m != 0xE0),
            [jpeg_segment(0xE0, b"JFIF\0\1\2\0\0\1\0\1\xff\xff")],
        ),
    )
    yield (
        "jpeg-baseline",
        "MPF APP2 with garbage offsets",
        ".jpg",
        lambda: jpeg_insert(
            jpeg, [jpeg_segment(0xE2, b"MPF\0" + exif_block([(0xB000, 7, b"0100"), (0xB001, 4, [5]), (0xB002, 7, b"\xff" * 80)]))]
        ),
    )


@cache
def _heif_with_exif(blk: bytes) -> bytes:
    try:
        return _save(_rgb(64, 48, 1), "HEIF", quality=60, exif=b"Exif\0\0" + blk)
    except Exception:  # noqa: BLE001 - the writer refused these bytes: fall back to the plain seed
        return seeds()["heic-rgb"][0]


# ----------------------------------------------------------------------------------------- frames
def frame_inputs() -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    def frames(n, size=(4, 4)):
        rng = np.random.default_rng(n)
        return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB") for _ in range(n)]

    yield (
        "GIF with 3000 frames",
        ".gif",
        lambda: _save(frames(1)[0], "GIF", save_all=True, append_images=frames(3000), duration=10),
    )
    yield (
        "GIF with 5000 frames, first 64x48",
        ".gif",
        lambda: _save(
            _rgb(64, 48, 1), "GIF", save_all=True, append_images=frames(5000, (64, 48))[:1] + frames(4999), duration=10
        ),
    )
    yield (
        "APNG with 2000 frames",
        ".png",
        lambda: _save(frames(1)[0], "PNG", save_all=True, append_images=frames(2000), duration=10),
    )
    yield (
        "animated WebP with 1000 frames",
        ".webp",
        lambda: _save(frames(1, (16, 16))[0], "WEBP", save_all=True, append_images=frames(1000, (16, 16)), duration=10),
    )
    yield "TIFF with 2000 pages", ".tif", lambda: _save(frames(1)[0], "TIFF", save_all=True, append_images=frames(2000))
    yield "MPO with 50 images", ".jpg", lambda: _save(_rgb(32, 24, 1), "MPO", save_all=True, append_images=frames(50, (32, 24)))
    yield (
        "GIF with 3000 frames truncated in the middle",
        ".gif",
        lambda: (lambda d: d[: len(d) // 2])(_save(frames(1)[0], "GIF", save_all=True, append_images=frames(3000), duration=10)),
    )
    yield "GIF with 20000 graphic control extensions", ".gif", lambda: _gif_many_gce(20000)


def _gif_many_gce(n: int) -> bytes:
    d = seeds()["gif-static"][0]
    s = next(s for name, s, _ in gif_blocks(d) if name == "image")
    return d[:s] + b"\x21\xf9\x04\x00\x00\x00\x00\x00" * n + d[s:]


# ------------------------------------------------------------------------------------------ modes
def mode_inputs() -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    rgb = _rgb(48, 32, 20)
    arr = _picture(48, 32, 21)
    for mode in (
        "1",
        "L",
        "P",
        "RGB",
        "RGBA",
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
        "I",
        "F",
        "I;16",
        "I;16B",
        "LA",
        "PA",
        "RGBX",
        "RGBa",
        "La",
    ):
        try:
            if mode in ("I", "F"):
                im = Image.fromarray(
                    (arr[..., 0].astype(np.int32) * 3) if mode == "I" else (arr[..., 0].astype(np.float32) / 255)
                )
            elif mode.startswith("I;16"):
                im = Image.frombytes(mode, (48, 32), (arr[..., 0].astype(">u2" if mode.endswith("B") else "<u2") * 257).tobytes())
            else:
                im = rgb.convert(mode)
        except (ValueError, OSError):
            continue
        for fmt, suffix in (("TIFF", ".tif"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("GIF", ".gif"),
                            ("JPEG", ".jpg"), ("HEIF", ".heic")):
            data = _save_or_empty(im, fmt)
            if data:  # only the modes this writer takes
                yield f"{mode} as {fmt}", suffix, lambda data=data: data
    # 16-bit PNG in every colour type, with and without tRNS / sBIT
    for ctype, ch in ((0, 1), (2, 3), (4, 2), (6, 4)):
        rows = b"".join(b"\0" + np.resize(arr[r].astype(">u2") * 257, (48, ch)).tobytes() for r in range(32))
        yield f"PNG 16-bit colour type {ctype}", ".png", lambda rows=rows, ctype=ctype: png_raw(48, 32, 16, ctype, rows)
        if ctype in (0, 2):
            trns = struct.pack(">H", 257) if ctype == 0 else struct.pack(">HHH", 257, 514, 771)
            yield (
                f"PNG 16-bit colour type {ctype} with tRNS",
                ".png",
                lambda rows=rows, ctype=ctype, t=trns: png_raw(48, 32, 16, ctype, rows, [png_chunk(b"tRNS", t)]),
            )
    w = 48
    for depth in (1, 2, 4):
        rowbytes = (w * depth + 7) // 8
        rows = b"".join(b"\0" + bytes((r * 7 + c) % 256 for c in range(rowbytes)) for r in range(32))
        yield f"PNG grey {depth}-bit", ".png", lambda rows=rows, d=depth: png_raw(48, 32, d, 0, rows)
        pal = png_chunk(b"PLTE", bytes(range(3 * (1 << depth))))
        yield f"PNG palette {depth}-bit", ".png", lambda rows=rows, d=depth, p=pal: png_raw(48, 32, d, 3, rows, [p])
        yield (
            f"PNG palette {depth}-bit with a short PLTE",
            ".png",
            lambda rows=rows, d=depth: png_raw(48, 32, d, 3, rows, [png_chunk(b"PLTE", b"\0\0\0")]),
        )
    yield "PNG palette without PLTE", ".png", lambda: png_raw(48, 32, 8, 3, b"".join(b"\0" + bytes(48) for _ in range(32)))
    yield "PNG Adam7 interlaced RGB", ".png", lambda: _png_interlaced()
    # float and int TIFF extremes
    for label, values in (
        ("all NaN", np.full((16, 16), np.nan, np.float32)),
        ("all inf", np.full((16, 16), np.inf, np.float32)),
        ("constant 5", np.full((16, 16), 5, np.float32)),
        ("huge range", np.linspace(-3e38, 3e38, 256, dtype=np.float32).reshape(16, 16)),
    ):
        yield f"TIFF float {label}", ".tif", lambda v=values: _save(Image.fromarray(v), "TIFF")
    for label, values in (("negative", np.full((16, 16), -5, np.int32)), ("int32 max", np.full((16, 16), 2**31 - 1, np.int32))):
        yield f"TIFF int32 {label}", ".tif", lambda v=values: _save(Image.fromarray(v), "TIFF")
    yield "TIFF 16-bit RGB (raw samples)", ".tif", lambda: _tiff_rgb16()
    yield (
        "TIFF 2-bit grey",
        ".tif",
        lambda: _tiff_with_strip(
            [
                (256, 4, [16]),
                (257, 4, [16]),
                (258, 3, [2]),
                (259, 3, [1]),
                (262, 3, [1]),
                (277, 3, [1]),
                (278, 4, [16]),
                (279, 4, [64]),
            ],
            bytes(range(64)),
        ),
    )
    yield (
        "TIFF 12-bit grey",
        ".tif",
        lambda: _tiff_with_strip(
            [
                (256, 4, [16]),
                (257, 4, [16]),
                (258, 3, [12]),
                (259, 3, [1]),
                (262, 3, [1]),
                (277, 3, [1]),
                (278, 4, [16]),
                (279, 4, [384]),
            ],
            bytes(384),
        ),
    )
    yield (
        "TIFF 5 samples per pixel",
        ".tif",
        lambda: _tiff_with_strip(
            [
                (256, 4, [16]),
                (257, 4, [16]),
                (258, 3, [8] * 5),
                (259, 3, [1]),
                (262, 3, [2]),
                (277, 3, [5]),
                (278, 4, [16]),
                (279, 4, [1280]),
            ],
            bytes(1280),
        ),
    )
    yield (
        "TIFF 64-bit float",
        ".tif",
        lambda: _tiff_with_strip(
            [
                (256, 4, [8]),
                (257, 4, [8]),
                (258, 3, [64]),
                (259, 3, [1]),
                (262, 3, [1]),
                (277, 3, [1]),
                (278, 4, [8]),
                (279, 4, [512]),
                (339, 3, [3]),
            ],
            np.linspace(0, 1, 64).tobytes(),
        ),
    )
    yield (
        "TIFF palette without ColorMap",
        ".tif",
        lambda: _tiff_with_strip(
            [
                (256, 4, [16]),
                (257, 4, [16]),
                (258, 3, [8]),
                (259, 3, [1]),
                (262, 3, [3]),
                (277, 3, [1]),
                (278, 4, [16]),
                (279, 4, [256]),
            ],
            bytes(256),
        ),
    )


def _save_or_empty(im: Image.Image, fmt: str) -> bytes:
    try:
        if fmt == "HEIF":
            _register_heif()
        return _save(im, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return b""  # this writer does not take this mode: the input becomes a zero-byte file


def _png_interlaced() -> bytes:
    w, h = 17, 13
    arr = _picture(w, h, 22)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    return png_raw(w, h, 8, 2, raw, interlace=1)


def _tiff_rgb16() -> bytes:
    data = (_picture(16, 16, 23).astype("<u2") * 257).tobytes()
    return _tiff_with_strip([(256, 4, [16]), (257, 4, [16]), (258, 3, [16, 16, 16]), (259, 3, [1]), (262, 3, [2]),
                             (277, 3, [3]), (278, 4, [16]), (279, 4, [len(data)])], data)


# --------------------------------------------------------------------------------------- non-images
def non_image_inputs() -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    rng = np.random.default_rng(99)
    items = {
        "zero bytes": b"",
        "one byte": b"\xff",
        "text": b"this is not a picture\n" * 20,
        "HTML": b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        "SVG": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10"/></svg>',
        "PDF": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "ZIP": b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18),
        "gzip": zlib.compress(b"x" * 1000)[:0] + b"\x1f\x8b\x08\0\0\0\0\0\0\3" + bytes(20),
        "ELF": b"\x7fELF\x02\x01\x01" + bytes(57),
        "JSON": b'{"lat": 48.8, "lon": 2.3}',
        "random 1 KB": rng.integers(0, 256, 1024, dtype=np.uint8).tobytes(),
        "random 1 MB": rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes(),
        "all 0xFF 64 KB": b"\xff" * 65536,
        "all zero 64 KB": bytes(65536),
        "PNG signature only": b"\x89PNG\r\n\x1a\n",
        "JPEG SOI only": b"\xff\xd8",
        "JPEG SOI EOI": b"\xff\xd8\xff\xd9",
        "JPEG SOI + 0xFF run": b"\xff\xd8" + b"\xff" * 10000,
        "GIF89a only": b"GIF89a",
        "GIF header, no blocks": b"GIF89a\x10\0\x10\0\0\0\0",
        "RIFF WEBP only": b"RIFF\x04\0\0\0WEBP",
        "RIFF WAVE": b"RIFF\x24\0\0\0WAVEfmt " + bytes(24),
        "TIFF header only": b"II*\0\x08\0\0\0",
        "BigTIFF header": b"II+\0\x08\0\0\0\x10\0\0\0\0\0\0\0",
        "BMP header only": b"BM" + bytes(12),
        "ftyp heic only": struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic",
        "ftyp avif": struct.pack(">I", 24) + b"ftypavif" + bytes(4) + b"mif1avif",
        "ICO": b"\0\0\1\0\1\0\x10\x10\0\0\1\0\x20\0" + struct.pack("<II", 40, 22) + bytes(40),
        "PSD": b"8BPS\0\1" + bytes(6) + b"\0\3\0\0\0\x10\0\0\0\x10\0\x08\0\3" + bytes(20),
        "EPS (would run Ghostscript)": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "JPEG 2000": b"\0\0\0\x0cjP  \r\n\x87\n" + bytes(40),
        "JPEG XL": b"\xff\x0a" + bytes(30),
        "PPM": b"P6\n4 4\n255\n" + bytes(48),
        "PPM claiming 100000x100000": b"P6\n100000 100000\n255\n" + bytes(48),
        "TGA": bytes([0, 0, 2]) + bytes(9) + struct.pack("<HH", 4, 4) + b"\x18\0" + bytes(48),
        "PCX": b"\x0a\x05\x01\x08" + bytes(124),
        "XBM": b"#define x_width 8\n#define x_height 1\nstatic char x_bits[] = {0x00};\n",
        "DDS": b"DDS " + struct.pack("<I", 124) + bytes(120),
        "UTF-16 text": "not an image".encode("utf-16"),
        "shell script": b"#!/bin/sh\nrm -rf /\n",
    }
    suffixes = (".jpg", ".png", ".webp", ".tif", ".gif", ".bmp", ".heic")
    for k, (label, data) in enumerate(items.items()):
        yield label, suffixes[k % len(suffixes)], lambda data=data: data
    for name, (data, _) in seeds().items():  # a real image under the wrong suffix
        wrong = ".png" if not name.startswith(("png", "apng")) else ".jpg"
        yield f"{name} with suffix {wrong}", wrong, lambda data=data: data


# ------------------------------------------------------------------------------------ random mutations
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _structures(name: str, d: bytes) -> list[tuple[int, int]]:
    fmt = format_of(name)
    if fmt == "jpeg":
        return [(s, e) for _, s, e in jpeg_segments(d)]
    if fmt == "png":
        return [(s, e) for _, s, e in png_chunks(d)]
    if fmt == "riff":
        return [(s, e) for _, s, e in riff_chunks(d)]
    if fmt == "gif":
        return [(s, e) for n, s, e in gif_blocks(d) if not n.endswith("-sub")]
    if fmt == "heif":
        return [(s, e) for _, s, e in isobmff_boxes(d)]
    if fmt == "tiff":
        return tiff_structure(d)[3] or [(8, len(d))]
    return [(0, 14), (14, 54), (54, len(d))]


def random_mutation(kind: str, rng: np.random.Generator) -> tuple[str, str, bytes]:
    """(base, detail, bytes) of one random mutation of a random seed."""
    names = sorted(seeds())
    name = names[int(rng.integers(len(names)))]
    d = seeds()[name][0]
    if kind == "bitflip":
        n = int(rng.choice([1, 1, 2, 4, 8, 32]))
        b = bytearray(d)
        pos = rng.integers(0, len(b), n)
        # half of the time aim at the first 2 KB, where the headers are
        pos = np.where(rng.random(n) < 0.5, pos % min(len(b), 2048), pos)
        for p in pos:
            b[int(p)] ^= 1 << int(rng.integers(8))
        return name, f"{n} bit flips at {sorted(int(p) for p in pos)[:8]}", bytes(b)
    if kind == "byteset":
        b = bytearray(d)
        n = int(rng.integers(1, 5))
        spots = []
        cuts = boundaries(d, format_of(name)) or [0]
        for _ in range(n):
            width = int(rng.choice([1, 2, 4]))
            v = int(rng.choice(INTERESTING)) & ((1 << (8 * width)) - 1)
            # near a structure boundary (where length and size fields are) or anywhere
            p = int(rng.choice(cuts)) + int(rng.integers(0, 24)) if rng.random() < 0.7 else int(rng.integers(len(b)))
            p = min(max(p, 0), max(len(b) - width, 0))
            b[p:p + width] = v.to_bytes(width, "big" if rng.random() < 0.5 else "little")
            spots.append((p, v))
        return name, f"bytes set {spots}", bytes(b)
    if kind == "splice":
        other = names[int(rng.integers(len(names)))]
        o = seeds()[other][0]
        a, b = int(rng.integers(1, len(d))), int(rng.integers(0, len(o)))
        return name, f"{name}[:{a}] + {other}[{b}:]", d[:a] + o[b:]
    if kind == "chunk-edit":
        parts = _structures(name, d)
        if not parts:
            return name, "no structures", d
        s, e = parts[int(rng.integers(len(parts)))]
        op = ["delete", "duplicate", "swap", "stuff", "zero"][int(rng.integers(5))]
        if op == "delete":
            return name, f"deleted [{s}:{e}]", d[:s] + d[e:]
        if op == "duplicate":
            times = int(rng.choice([2, 10, 1000]))
            return name, f"[{s}:{e}] x{times}", d[:e] + d[s:e] * (times - 1) + d[e:]
        if op == "swap":
            s2, e2 = parts[int(rng.integers(len(parts)))]
            if (s2, e2) == (s, e) or not (e <= s2 or e2 <= s):
                return name, f"deleted [{s}:{e}]", d[:s] + d[e:]
            (s, e), (s2, e2) = sorted([(s, e), (s2, e2)])
            return name, f"swapped [{s}:{e}] and [{s2}:{e2}]", d[:s] + d[s2:e2] + d[e:s2] + d[s:e] + d[e2:]
        if op == "stuff":
            junk = rng.integers(0, 256, int(rng.choice([1, 7, 300, 70000])), dtype=np.uint8).tobytes()
            return name, f"{len(junk)} random bytes inserted at {s}", d[:s] + junk + d[s:]
        return name, f"zeroed [{s}:{e}]", d[:s] + bytes(e - s) + d[e:]
    # "cut": truncation at a random place, or the tail only
    p = int(rng.integers(1, len(d)))
    if rng.random() < 0.2:
        return name, f"tail from {p}", d[p:]
    return name, f"cut at {p} of {len(d)}", d[:p]


# ------------------------------------------------------------------------------------------- corpus
RANDOM_KINDS = ("bitflip", "byteset", "splice", "chunk-edit", "cut")


def _systematic() -> dict[str, list[tuple[str, str, str, Callable[[], bytes]]]]:
    """Every systematic input, by kind: (base, detail, suffix, make)."""
    out: dict[str, list] = {k: [] for k in ("valid", "truncate", "lying-header", "bomb", "metadata", "frames",
                                            "modes", "non-image")}
    for name, (d, suffix) in seeds().items():
        out["valid"].append((name, "unchanged", suffix, lambda d=d: d))
        for c in boundaries(d, format_of(name)):
            for cut in (c - 1, c, c + 1):
                if 0 < cut < len(d):
                    out["truncate"].append((name, f"cut at {cut} of {len(d)} (boundary {c})", suffix,
                                            lambda d=d, cut=cut: d[:cut]))
        for detail, make in lying_variants(name, d):
            out["lying-header"].append((name, detail, suffix, make))
    # drop repeated truncations (neighbouring boundaries give the same cut)
    seen: set[tuple[str, str]] = set()
    uniq = []
    for item in out["truncate"]:
        key = (item[0], item[1].split(" (")[0])
        if key not in seen:
            seen.add(key)
            uniq.append(item)
    out["truncate"] = uniq
    out["bomb"] = [("", detail, suffix, make) for detail, suffix, make in bombs()]
    out["metadata"] = list(metadata_inputs())
    out["frames"] = [("", detail, suffix, make) for detail, suffix, make in frame_inputs()]
    out["modes"] = [("", detail, suffix, make) for detail, suffix, make in mode_inputs()]
    out["non-image"] = [("", detail, suffix, make) for detail, suffix, make in non_image_inputs()]
    return out


@lru_cache(maxsize=4)
def plan(n: int, seed: int = SEED) -> tuple[tuple[str, int], ...]:
    """The order of the corpus: (kind, index within kind) for each of ``n`` inputs.

    Systematic inputs (round-robin over their kinds) and random mutations (round-robin over theirs)
    alternate two to one until the systematic ones run out (at ``FULL_SIZE``), then random ones
    follow without end. So any prefix has every kind, and input ``i`` is the same whatever ``n`` is.
    """
    sys_kinds = _systematic_cached()
    systematic: list[tuple[str, int]] = []
    longest = max(len(v) for v in sys_kinds.values())
    for k in range(longest):
        systematic += [(kind, k) for kind, items in sys_kinds.items() if k < len(items)]
    order: list[tuple[str, int]] = []
    taken = dict.fromkeys(RANDOM_KINDS, 0)
    s = r = 0
    while len(order) < n:
        if s < len(systematic) and len(order) % 3 != 2:
            order.append(systematic[s])
            s += 1
        else:
            kind = RANDOM_KINDS[r % len(RANDOM_KINDS)]
            order.append((kind, taken[kind]))
            taken[kind] += 1
            r += 1
    return tuple(order)


def make(index: int, kind: str, k: int, seed: int = SEED) -> FuzzInput:
    """Input number ``index`` (the ``k``-th of its kind)."""
    if kind in RANDOM_KINDS:
        rng = np.random.default_rng([seed, RANDOM_KINDS.index(kind), k])
        base, detail, data = random_mutation(kind, rng)
        suffix = seeds()[base][1]
    else:
        base, detail, suffix, maker = _systematic_cached()[kind][k]
        data = maker()
    return FuzzInput(index, kind, base, detail, suffix, bytes(data[:MAX_SEED_BYTES * 64]))


@lru_cache(maxsize=1)
def _systematic_cached():
    return _systematic()


#: inputs that take seconds to make or to decode (the legitimate 100-megapixel images, thousands of
#: frames or scans, 64 MiB text bombs): the full run has them, the test suite's short run leaves them out
HEAVY = ("full data", "full strip", "2000 pages", "3000 frames", "5000 frames", "1000 frames", "2000 frames",
         "expanding to 64 MiB", "1024x1024 with", "20000 extra scans", "30000x30000 1-bit")


def is_heavy(kind: str, k: int) -> bool:
    if kind in RANDOM_KINDS:
        return False
    detail = _systematic_cached()[kind][k][1]
    return any(h in detail for h in HEAVY)


def corpus(n: int, seed: int = SEED, start: int = 0, light: bool = False) -> Iterator[FuzzInput]:
    """Inputs ``start`` .. ``n - 1`` of the corpus of size ``n`` (deterministic for a given seed);
    ``light`` leaves out the ``HEAVY`` ones."""
    for i, (kind, k) in enumerate(plan(n, seed)):
        if i >= start and not (light and is_heavy(kind, k)):
            yield make(i, kind, k, seed)


def systematic_counts() -> dict[str, int]:
    return {k: len(v) for k, v in _systematic_cached().items()}


def full_size() -> int:
    """The smallest corpus holding every systematic input (and half as many random ones again)."""
    return 3 * sum(systematic_counts().values()) // 2

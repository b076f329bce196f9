"""What an image file's metadata claims: GPS position, capture time, camera."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

from geoscope.data.images import ImageError, open_header, read_limited, source_name


@dataclass
class ExifFindings:
    """What the file's metadata claims. Any field may be None."""

    lat: float | None = None
    lon: float | None = None
    altitude_m: float | None = None
    time: str | None = None  # ISO 8601 as written by the camera
    make: str | None = None
    model: str | None = None

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lon is not None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ExifFindings | None":
        return None if d is None else cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


# --- reading ------------------------------------------------------------------------------------
# Every helper below returns None for anything malformed (wrong type, zero denominator, out of
# range) instead of raising: a camera's or an editor's broken tag costs that field only.

_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME = 0x010F, 0x0110, 0x0132
_TAG_DATETIME_ORIGINAL, _TAG_DATETIME_DIGITIZED = 0x9003, 0x9004
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_GPS_ALT_REF, _GPS_ALT, _GPS_STATUS = 5, 6, 9


def _number(value, zero_over_zero: float | None = None) -> float | None:
    """A finite float from an EXIF number (int, float, IFDRational), else None.

    A zero denominator gives None, except 0/0, which gives ``zero_over_zero`` (some cameras write
    0/0 for an unused minutes or seconds field).
    """
    if isinstance(value, (bool, str, bytes, tuple, list, dict)) or value is None:
        return None
    try:
        if getattr(value, "denominator", 1) == 0:  # IFDRational with a zero denominator
            return zero_over_zero if getattr(value, "numerator", 1) == 0 else None
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value or None


def _degrees(value, limit: float) -> float | None:
    """(deg, min, sec) in any mix of EXIF number types -> unsigned decimal degrees, else None."""
    if isinstance(value, (tuple, list)):
        parts = [_number(v, zero_over_zero=0.0 if i else None) for i, v in enumerate(value)]
    else:
        parts = [_number(value)]
    numbers = [p for p in parts if p is not None]
    if not 1 <= len(parts) <= 3 or len(numbers) < len(parts) or any(p < 0 for p in numbers):
        return None
    if any(p > 60 for p in numbers[1:]):  # 60 itself happens through cameras' rounding
        return None
    deg = sum(p / 60**i for i, p in enumerate(numbers))
    return deg if deg <= limit else None


def _signed(value, ref, positive: str, negative: str, limit: float) -> float | None:
    deg = _degrees(value, limit)
    if deg is None:
        return None
    ref_text = _text(ref)
    if ref_text is None:
        return deg if ref is None else None  # absent ref: assume N / E; garbage ref: unknown
    ref_text = ref_text.upper()[:1]
    if ref_text == positive:
        return deg
    if ref_text == negative:
        return -deg
    return None


def _iso_time(value, offset=None) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        stamp = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    iso = stamp.isoformat()
    off = _text(offset)
    if off and len(off) == 6 and off[0] in "+-" and off[3] == ":" and (off[1:3] + off[4:]).isdigit():
        iso += off
    return iso


def _gps_position(gps: dict) -> tuple[float | None, float | None, float | None]:
    status = _text(gps.get(_GPS_STATUS))
    if status is not None and status.upper().startswith("V"):  # "measurement void"
        return None, None, None
    lat = _signed(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "N", "S", 90.0)
    lon = _signed(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "E", "W", 180.0)
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):  # 0,0: cameras' "no fix" placeholder
        lat = lon = None
    else:  # 1e-7 degree is about 1 cm: drop the float noise of the degree/minute/second sum
        lat, lon = round(lat, 7), round(lon, 7)
    alt = _number(gps.get(_GPS_ALT))
    if alt is not None:
        ref = gps.get(_GPS_ALT_REF)
        below = ref in (1, b"\x01") or (isinstance(ref, bytes) and ref[:1] == b"\x01")
        alt = -alt if below else alt
        if not -12_000 <= alt <= 100_000:
            alt = None
    return lat, lon, alt


def findings_from_exif(exif) -> ExifFindings:
    """``ExifFindings`` from a ``PIL.Image.Exif``; malformed fields become None."""

    def ifd(tag) -> dict:
        try:
            return dict(exif.get_ifd(tag))
        except Exception:  # noqa: BLE001 - a broken sub-IFD pointer
            return {}

    gps, sub = ifd(_GPS_IFD), ifd(_EXIF_IFD)
    base = {}
    try:
        base = dict(exif)
    except Exception:  # noqa: BLE001
        pass
    try:
        lat, lon, alt = _gps_position(gps)
    except Exception:  # noqa: BLE001 - belt and braces: never raise on tags
        lat = lon = alt = None
    time = (
        _iso_time(sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_TIME_ORIGINAL))
        or _iso_time(sub.get(_TAG_DATETIME_DIGITIZED))
        or _iso_time(base.get(_TAG_DATETIME))
    )
    return ExifFindings(lat=lat, lon=lon, altitude_m=alt, time=time,
                        make=_text(base.get(_TAG_MAKE)), model=_text(base.get(_TAG_MODEL)))


def read_exif(src) -> ExifFindings:
    """What the metadata of ``src`` (a path, bytes, binary file or ``PIL.Image``) claims.

    Never raises on malformed or missing tags (those fields are None), nor on a file that is not
    an image (all fields None); a file that cannot be read at all raises ``ImageError``.
    """
    if isinstance(src, Image.Image):
        try:
            return findings_from_exif(src.getexif())
        except Exception:  # noqa: BLE001
            return ExifFindings()
    name = source_name(src)
    data = read_limited(src, name=name)  # missing / unreadable files raise ImageError
    try:
        im = open_header(data, name, max_pixels=None)
        return findings_from_exif(im.getexif())
    except ImageError:
        return ExifFindings()
    except Exception:  # noqa: BLE001 - malformed EXIF blocks must not stop a batch
        return ExifFindings()

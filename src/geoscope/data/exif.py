"""What an image file's metadata claims: GPS position, capture time, camera."""

from __future__ import annotations

from dataclasses import dataclass


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

"""Offline reverse geocoding: country, first-level region, nearest populated place, or at sea."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Place:
    """What is at a point. Fields are None where unknown; ``at_sea`` where no country contains it."""

    country_code: str | None = None  # ISO 3166-1 alpha-2
    country: str | None = None
    region: str | None = None  # first-level administrative region
    region_code: str | None = None  # ISO 3166-2 where known
    town: str | None = None  # nearest populated place (GeoNames, >= 1000 people)
    town_km: float | None = None  # distance to that place
    at_sea: bool = False

    def label(self) -> str:
        """A short human-readable name, e.g. 'near Tampere, Pirkanmaa, Finland' or 'at sea'."""
        parts = []
        if self.town:
            parts.append(f"near {self.town}" if (self.town_km or 0) > 5 else self.town)
        if self.region:
            parts.append(self.region)
        if self.country:
            parts.append(self.country)
        if self.at_sea and not self.country:
            return "at sea" + (f" (nearest place {self.town}, {self.town_km:.0f} km)" if self.town else "")
        return ", ".join(parts) if parts else "unknown"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Place | None":
        return None if d is None else cls(**{k: d.get(k) for k in cls.__dataclass_fields__})

"""A problem with one item of a collection, met while opening or validating it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Issue:
    """A problem with one item: ``kind`` (not_image, missing, unreadable, bad_coordinates,
    no_coordinates, duplicate_id, duplicate_image, bad_metadata), where, and why (one sentence)."""

    kind: str
    source: str
    reason: str
    id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

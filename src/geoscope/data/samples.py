"""One geotagged image of a collection, and how worker processes read it.

A ``GeoSample`` is small and picklable and carries everything needed to read its bytes
(``read_sample_bytes``, ``load_sample_image``): a file path, or a tar shard path plus the member's
byte offset and size. Both readers are module-level functions, so worker processes (fork or spawn)
need only the sample, never the ``Dataset`` it came from.
"""

from __future__ import annotations

import tarfile
from dataclasses import asdict, dataclass, field

from PIL import Image

from geoscope.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image, read_limited

TAR_SEP = "::"  # source of a shard member: "<shard.tar>::<member name>"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")

#: the columns every sample table has (a ``Dataset``'s table); other columns are ``GeoSample.extra``.
SAMPLE_COLUMNS = ["id", "source", "lat", "lon", "offset", "size"]


@dataclass
class GeoSample:
    """One geotagged (or not yet geotagged) image.

    ``source`` is a file path, or ``"<shard.tar>::<member>"`` for a WebDataset member, in which case
    ``offset`` / ``size`` give the member's bytes inside the (uncompressed) shard.
    ``lat`` / ``lon`` are None when unknown. ``extra`` holds the other manifest / metadata fields.
    """

    id: str
    source: str
    lat: float | None = None
    lon: float | None = None
    extra: dict = field(default_factory=dict)
    offset: int | None = None
    size: int | None = None

    @property
    def has_coords(self) -> bool:
        return self.lat is not None and self.lon is not None

    def to_dict(self) -> dict:
        return asdict(self)


def split_source(source: str) -> tuple[str, str | None]:
    """(container, member) for ``"shard.tar::member"``; (path, None) for a plain file."""
    if TAR_SEP in source:
        container, member = source.split(TAR_SEP, 1)
        if container.lower().endswith(TAR_SUFFIXES):
            return container, member
    return source, None


def read_sample_bytes(sample: GeoSample, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The encoded image bytes of ``sample``; raises ``ImageError`` naming the source."""
    container, member = split_source(sample.source)
    if member is None:
        return read_limited(container, max_bytes, sample.source)
    if max_bytes is not None and sample.size is not None and sample.size > max_bytes:
        raise ImageError(f"{sample.source}: member is {sample.size:,} bytes, more than the limit of {max_bytes:,} bytes")
    try:
        if sample.offset is not None and sample.size is not None:
            with open(container, "rb") as f:
                f.seek(sample.offset)
                data = f.read(sample.size)
            if len(data) != sample.size:
                raise ImageError(f"{sample.source}: shard is shorter than its index says (truncated shard?)")
            return read_limited(data, max_bytes, sample.source)
        with tarfile.open(container, "r:*") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise ImageError(f"{sample.source}: not a regular file inside the shard")
            return read_limited(handle, max_bytes, sample.source)
    except FileNotFoundError as exc:
        raise ImageError(f"{sample.source}: shard {container} not found") from exc
    except KeyError as exc:
        raise ImageError(f"{sample.source}: no member {member!r} in the shard") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"{sample.source}: cannot read the shard ({exc})") from exc


def load_sample_image(sample: GeoSample, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      max_bytes: int | None = DEFAULT_MAX_BYTES, draft_size: int | None = None) -> Image.Image:
    """The decoded RGB image of ``sample`` (``data.images.load_image`` rules); picklable, worker-safe.
    ``draft_size``: the shortest side a model resizes it to (a large JPEG decodes at a reduced scale)."""
    container, member = split_source(sample.source)
    if member is None:
        return load_image(container, max_pixels=max_pixels, max_bytes=max_bytes, name=sample.source,
                          draft_size=draft_size)
    return load_image(read_sample_bytes(sample, max_bytes), max_pixels=max_pixels, max_bytes=max_bytes,
                      name=sample.source, draft_size=draft_size)

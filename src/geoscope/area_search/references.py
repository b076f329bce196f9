"""Reference tiles over an area, embedded once into an embedding store (cached, resumable).

Every node of an :class:`~geoscope.data.area_grid.AreaGrid` gets one overhead tile (or one per
heading, for matchers that compare photos with turned tiles) from a *tile source* (a raster or an
OpenStreetMap extract), embedded with ``matcher.embed_references`` into an embedding store. The
store's rows are positions ``(row * cols + col) * n_headings + k``; a tile with too little data is
recorded as an error of the store (``errors.csv``) and scores nothing. The store is keyed by what
determines its embeddings (source, area, stride, tile size and pixels, headings, projection, the
matcher), so a second search over the same area reads it back, and a killed job resumes where it
stopped (the store's journal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from geoscope import settings
from geoscope.area_search.matcher import matcher_key, unit_rows
from geoscope.atomic import write_json
from geoscope.data.area_grid import AreaGrid
from geoscope.data.tile_grid import tile_grid
from geoscope.errors import InputError
from geoscope.store.embed import prepare_store
from geoscope.store.layout import read_manifest
from geoscope.store.lock import StoreLock
from geoscope.store.reader import EmbeddingStore
from geoscope.store.shard import ShardWriter, done_positions, finish_store, sample_record

logger = logging.getLogger(__name__)

AREA_FILE = "area.json"
#: bumped when what a reference store holds changes meaning
REFERENCE_FORMAT = 1


@dataclass
class ReferenceSpec:
    """What determines a set of reference embeddings."""

    source: str  # a description of the tile source that changes when its data changes
    grid: AreaGrid
    size_m: float
    px: int
    headings: tuple[float, ...] = (0.0,)
    projection: str = "auto"
    min_valid: float = 0.5
    matcher: str = ""

    def to_dict(self) -> dict:
        return {"format": REFERENCE_FORMAT, "source": self.source, "grid": self.grid.to_dict(), "size_m": self.size_m,
                "px": self.px, "headings": list(self.headings), "projection": self.projection,
                "min_valid": self.min_valid, "matcher": self.matcher}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class ReferenceSet:
    """The embedded reference tiles of an area: ``store`` rows with their grid node and heading."""

    spec: ReferenceSpec
    store: EmbeddingStore
    path: Path
    node: np.ndarray  # (rows,) int64: row * cols + col of each store row
    heading_index: np.ndarray  # (rows,) int64: index into spec.headings
    embedded_now: int = 0  # tiles embedded by this call (0 when read from the cache)
    seconds: float = 0.0  # time spent embedding them
    skipped: int = 0  # tiles with too little data
    extra: dict = field(default_factory=dict)

    @property
    def grid(self) -> AreaGrid:
        return self.spec.grid

    def __len__(self) -> int:
        return len(self.store)

    def valid_nodes(self) -> np.ndarray:
        """(rows, cols) bool: nodes with at least one embedded tile."""
        mask = np.zeros(len(self.grid), bool)
        mask[self.node] = True
        return mask.reshape(self.grid.rows, self.grid.cols)


def source_identity(source: Any) -> str:
    """A description of a tile source that changes when its file does: kind, path, size, modification time."""
    path = getattr(getattr(source, "source", None), "path", None) or getattr(source, "path", None)
    kind = type(source).__name__
    if path is not None and Path(path).is_file():
        st = Path(path).stat()
        bounds = ",".join(f"{v:.7f}" for v in getattr(source, "bounds_latlon", ()))
        return f"{kind}:{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}:{bounds}"
    if getattr(source, "in_memory", False) and getattr(source, "_data", None) is not None:
        digest = hashlib.sha256(np.ascontiguousarray(source._data).tobytes()).hexdigest()[:16]
        return f"{kind}:memory:{digest}"
    return f"{kind}:{getattr(source, 'name', repr(source))}"


def default_cache_root() -> Path:
    return settings.cache_dir() / "area-search"


class _StoreName:
    """The name and dim ``prepare_store`` checks a store against."""

    def __init__(self, name: str, dim: int):
        self.name, self.dim = name, dim


def embed_references(source: Any, spec: ReferenceSpec, matcher: Any, cache: str | os.PathLike | None = None,
                     batch_size: int = 32, progress: bool = True, overwrite: bool = False) -> ReferenceSet:
    """Embed every reference tile of ``spec`` (or read them from the cache) and return them.

    ``cache``: the folder holding reference stores (default ``$GEOSCOPE_CACHE/area-search``); the
    store is ``cache/<key>/``. Resumable: a killed run continues from the tiles already embedded.
    """
    spec.matcher = spec.matcher or matcher_key(matcher)
    root = Path(cache) if cache is not None else default_cache_root()
    out = root / spec.key()
    out.mkdir(parents=True, exist_ok=True)
    n_head = len(spec.headings)
    total = len(spec.grid) * n_head
    name = f"area-search:{spec.matcher}"
    embedded = 0
    start = time.perf_counter()
    with StoreLock(out):
        write_json(out / AREA_FILE, spec.to_dict())
        done_store = prepare_store(out, _StoreName(name, int(matcher.dim)), overwrite, total=total)
        if done_store is None:
            done = done_positions(out, name, int(matcher.dim))
            if done:
                logger.info("resuming reference tiles in %s: %d of %d done", out, len(done), total)
            writer = ShardWriter(out, ".", name, int(matcher.dim), capacity=max(1, total))
            try:
                embedded = _fill(source, spec, matcher, writer, done, total, batch_size, progress)
            finally:
                writer.close()
            finish_store(out, name, int(matcher.dim), preprocessing={"area_search": spec.to_dict()})
    seconds = time.perf_counter() - start
    store = EmbeddingStore.open(out)
    pos = store.meta["pos"].to_numpy(np.int64)
    state = read_manifest(out) or {}
    return ReferenceSet(spec, store, out, node=pos // n_head, heading_index=pos % n_head, embedded_now=embedded,
                        seconds=seconds if embedded else 0.0, skipped=int(state.get("n_error", 0)))


def _fill(source: Any, spec: ReferenceSpec, matcher: Any, writer: ShardWriter, done: dict[int, str], total: int,
          batch_size: int, progress: bool) -> int:
    grid = spec.grid
    lat, lon = grid.centres()
    n_head = len(spec.headings)
    bar = tqdm(total=total, initial=len(done), unit="tile", desc="reference tiles", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
    batch: list[tuple[dict, np.ndarray | None, str | None]] = []
    count = 0

    def flush() -> None:
        nonlocal count
        images = [arr for _, arr, _ in batch if arr is not None]
        emb = unit_rows(matcher.embed_references(images)).astype(np.float16) if images else None
        writer.commit([rec for rec, _, _ in batch], [reason for _, _, reason in batch], emb)
        count += len(images)
        bar.update(len(batch))
        batch.clear()

    try:
        for r in range(grid.rows):
            for c in range(grid.cols):
                for k, h in enumerate(spec.headings):
                    pos = (r * grid.cols + c) * n_head + k
                    if pos in done:
                        continue
                    la, lo = float(lat[r, c]), float(lon[r, c])
                    tg = tile_grid(la, lo, spec.size_m / 1000.0, spec.px, spec.projection, float(h))
                    tile = source.read_tile(tg)
                    rec = sample_record(pos, f"r{r}c{c}h{h:g}", la, lo, f"{r},{c},{h:g}",
                                        {"heading_deg": float(h)})
                    if tile.valid_fraction < spec.min_valid:
                        batch.append((rec, None, f"only {tile.valid_fraction:.0%} of the tile has data "
                                                  f"(less than {spec.min_valid:.0%})"))
                    else:
                        batch.append((rec, tile.array, None))
                    if len(batch) >= batch_size:
                        flush()
        if batch:
            flush()
    finally:
        bar.close()
    return count


#: reference sets up to this many float32 bytes are held in memory after the first search
IN_MEMORY_BYTES = 512 * 2**20


def reference_matrix(refs: ReferenceSet, chunk: int = 65536):
    """Yield (start, float32 unit rows) chunks of the reference embeddings: the whole set held in memory
    once read when it fits :data:`IN_MEMORY_BYTES`, else read in chunks of ``chunk`` rows from the store."""
    cached = refs.extra.get("float32")
    if cached is not None:
        yield 0, cached
        return
    emb = refs.store.embeddings
    if len(refs) * refs.store.dim * 4 <= IN_MEMORY_BYTES:
        whole = np.asarray(emb, dtype=np.float32)
        refs.extra["float32"] = whole
        yield 0, whole
        return
    for a in range(0, len(refs), chunk):
        yield a, np.asarray(emb[a:a + chunk], dtype=np.float32)


def check_tile_count(n_nodes: int, n_headings: int, limit: int, stride_m: float) -> None:
    """An InputError when nodes x headings exceeds ``limit`` reference tiles."""
    n = n_nodes * n_headings
    if n > limit:
        raise InputError(f"this search would embed {n:,} reference tiles ({n_nodes:,} positions x {n_headings} "
                         f"headings), more than the limit of {limit:,}; use a larger stride than {stride_m:g} m, "
                         "fewer headings or a smaller area")


def headings_for(steps: int) -> tuple[float, ...]:
    """``steps`` compass headings evenly spaced from north."""
    if steps < 1:
        raise InputError(f"the number of headings to try must be at least 1, got {steps}")
    return tuple(float(i * 360.0 / steps) for i in range(steps))


def nearest_heading_index(headings: Sequence[float], h: float) -> int:
    d = [abs((float(x) - float(h) + 180.0) % 360.0 - 180.0) for x in headings]
    return int(np.argmin(d))

"""Reading a finished store: the union of its shards, memory-mapped, in the manifest's order.

``EmbeddingStore.open(path)`` maps every shard's ``embeddings.npy`` read-only (nothing is copied);
``store.embeddings`` is that memory map for a one-shard store and a ``ShardedArray`` (the same
indexing over all shards) otherwise. ``store.iter_batches(...)`` streams rows as float32 batches with
their coordinates, so training never holds the whole store as float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from geoscope.atomic import write_json
from geoscope.errors import InputError
from geoscope.store.layout import (
    EMBEDDINGS,
    ERRORS,
    MEMORY,
    META,
    RESERVED,
    ROOT,
    SHARD_STATE,
    STATE,
    is_legacy,
    manifest,
    read_json,
    shard_dir,
    shard_state,
    writer_info,
)
from geoscope.store.shard import shard_states, write_embeddings, write_errors, write_meta


class ShardedArray:
    """A read-only (N, dim) array made of row blocks (memory maps), indexed like one numpy array.

    ``a[i]``, ``a[i:j]``, ``a[index_array]``, ``a[bool_mask]`` and ``a[rows, cols]`` return numpy
    arrays read from the blocks they touch; ``np.asarray(a)`` reads everything.
    """

    def __init__(self, blocks: list[np.ndarray], dim: int, dtype=np.float16):
        self.blocks = blocks
        self.starts = np.cumsum([0] + [len(b) for b in blocks])
        self.shape = (int(self.starts[-1]), int(dim))
        self.dtype = np.dtype(dtype)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        if not len(idx):
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"row index out of range for {len(self)} rows")
        block = np.searchsorted(self.starts, idx, side="right") - 1
        for b in np.unique(block):
            where = np.nonzero(block == b)[0]
            out[where] = self.blocks[b][idx[where] - self.starts[b]]
        return out

    def __getitem__(self, key):
        cols = slice(None)
        if isinstance(key, tuple):
            key, cols = key[0], (key[1] if len(key) > 1 else slice(None))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            return self._rows(np.array([i]))[0][cols]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                parts = []
                for b, block in enumerate(self.blocks):
                    lo, hi = max(start, self.starts[b]), min(stop, self.starts[b + 1])
                    if lo < hi:
                        parts.append(block[lo - self.starts[b]: hi - self.starts[b]])
                rows = np.concatenate(parts) if parts else np.empty((0, self.shape[1]), self.dtype)
                return rows[:, cols]
            return self._rows(np.arange(start, stop, step))[:, cols]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} rows")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64).ravel()
        idx = np.where(idx < 0, idx + len(self), idx)
        return self._rows(idx)[:, cols]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype, copy=False) if dtype is not None else out

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self, dtype=dtype)

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, blocks={len(self.blocks)})"


@dataclass
class Shard:
    """One shard of an open store: ``name`` ("." for the root), its rows ``start:stop`` in the union."""

    name: str
    path: Path
    start: int
    stop: int


@dataclass
class Batch:
    """Rows of a store: ``embeddings`` (B, dim) float32, ``lat``/``lon`` (B,) degrees, ``rows`` their indices."""

    embeddings: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


class EmbeddingStore:
    """A finished store: ``embeddings`` (N, dim) float16, aligned ``meta`` / ``ids`` / ``lat`` / ``lon``.

    Rows are the union of the shards in the manifest's order (stable from one opening to the next);
    ``meta["pos"]`` is each row's position in the dataset it was embedded from.
    """

    def __init__(self, path: Path, state: dict, shards: list[Shard], blocks: list[np.ndarray], errors: pd.DataFrame):
        self.path = path
        self.state = state
        self.shards = shards
        self.embeddings = blocks[0] if len(blocks) == 1 else ShardedArray(blocks, int(state["dim"]))
        self.errors = errors
        self._meta: pd.DataFrame | None = None
        self._coords: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingStore":
        path = Path(path)
        if not (path / STATE).is_file():
            raise InputError(f"{path} is not an embedding store (no {STATE}); make one with `geoscope embed`")
        state = read_json(path / STATE, "the store is damaged; embed it again") or {}
        if not state.get("complete"):
            raise InputError(
                f"embedding store {path} is incomplete: run the same `geoscope embed` command again to finish it"
            )
        dim = int(state["dim"])
        if is_legacy(state):
            names = [ROOT]
        else:
            names = [s["name"] for s in state.get("shards", [])]
            on_disk = dict(shard_states(path, state["encoder"], dim))  # refuses shards of another encoder
            missing = [n for n in names if n not in on_disk]
            if missing:
                raise InputError(f"embedding store {path} lists shard {missing[0]!r}, which is not there; embed it again")
        shards, blocks, start = [], [], 0
        for name in names:
            d = shard_dir(path, name)
            emb = np.load(d / EMBEDDINGS, mmap_mode="r")
            n_meta = pq.ParquetFile(d / META).metadata.num_rows
            if emb.ndim != 2 or emb.shape != (n_meta, dim):
                raise InputError(
                    f"embedding store {path} is inconsistent: {d / EMBEDDINGS} has shape {emb.shape} but {d / META} "
                    f"has {n_meta} rows of dim {dim}"
                )
            blocks.append(emb)
            shards.append(Shard(name, d, start, start + len(emb)))
            start += len(emb)
        if not blocks:
            blocks = [np.zeros((0, dim), np.float16)]
        errors_file = path / ERRORS
        errors = (
            pd.read_csv(errors_file, dtype=str, keep_default_na=False)
            if errors_file.is_file() and errors_file.stat().st_size
            else pd.DataFrame(columns=["id", "source", "reason"])
        )
        return cls(path, state, shards, blocks, errors)

    @classmethod
    def from_arrays(
        cls,
        out_dir: str | os.PathLike,
        ids: Iterable,
        embeddings: np.ndarray,
        lat: Iterable[float] | None = None,
        lon: Iterable[float] | None = None,
        encoder: str = "unknown",
        source: Iterable[str] | None = None,
        extra: dict[str, Iterable] | None = None,
    ) -> "EmbeddingStore":
        """Write a complete one-shard store from in-memory arrays (for tests, and embeddings made elsewhere).

        ``extra``: more meta columns, e.g. ``{"scene": [...]}``, one value per row.
        """
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise InputError(f"embeddings must be a 2-D array (N, dim), got shape {emb.shape}")
        n = len(emb)
        ids = [str(i) for i in ids]
        lat = np.full(n, np.nan) if lat is None else np.asarray(lat, dtype=np.float64)
        lon = np.full(n, np.nan) if lon is None else np.asarray(lon, dtype=np.float64)
        source = [MEMORY] * n if source is None else [str(s) for s in source]
        for what, arr in (("ids", ids), ("lat", lat), ("lon", lon), ("source", source)):
            if len(arr) != n:
                raise InputError(f"{what} has {len(arr)} entries but embeddings has {n} rows")
        _check_unique(ids)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = pd.DataFrame({"id": ids, "lat": lat, "lon": lon, "source": source, "status": "ok",
                             "pos": np.arange(n, dtype=np.int64)})
        for k, values in (extra or {}).items():
            values = list(values)
            if len(values) != n or k in RESERVED:
                raise InputError(f"extra column {k!r} needs {n} values and a name other than {sorted(RESERVED)}")
            meta[k] = values
        dim = emb.shape[1]
        write_embeddings(out / EMBEDDINGS, emb)
        write_meta(out / META, meta)
        write_errors(out / ERRORS, pd.DataFrame(columns=["id", "source", "reason"]))
        write_json(out / SHARD_STATE, shard_state(encoder, dim, complete=True, n_ok=n, writer=writer_info()))
        write_json(out / STATE, manifest(encoder, dim, complete=True, n_ok=n, n_error=0, total=n,
                                         shards=[{"name": ROOT, "rows": n}]))
        return cls.open(out)

    # ----------------------------------------------------------------------- what it holds

    @property
    def encoder(self) -> str:
        return self.state["encoder"]

    @property
    def dim(self) -> int:
        return int(self.state["dim"])

    @property
    def meta(self) -> pd.DataFrame:
        """One row per embedding: id, lat, lon, source, status, pos and any extra columns (read on first use)."""
        if self._meta is None:
            frames = [pd.read_parquet(s.path / META) for s in self.shards]
            self._meta = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (
                frames[0] if frames else pd.DataFrame(columns=["id", "lat", "lon", "source", "status", "pos"]))
        return self._meta

    def _latlon(self) -> tuple[np.ndarray, np.ndarray]:
        if self._coords is None:
            if self._meta is not None or not self.shards:
                meta = self.meta
            else:  # only the two columns, not the whole table
                meta = pd.concat([pd.read_parquet(s.path / META, columns=["lat", "lon"]) for s in self.shards],
                                 ignore_index=True)
            self._coords = (meta["lat"].to_numpy(dtype=np.float64), meta["lon"].to_numpy(dtype=np.float64))
        return self._coords

    @property
    def ids(self) -> np.ndarray:
        return self.meta["id"].to_numpy(dtype=object)

    @property
    def lat(self) -> np.ndarray:
        return self._latlon()[0]

    @property
    def lon(self) -> np.ndarray:
        return self._latlon()[1]

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) lat, lon degrees."""
        return np.stack([self.lat, self.lon], axis=1)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.path)!r}, encoder={self.encoder!r}, n={len(self)}, dim={self.dim}, "
                f"shards={len(self.shards)}, errors={len(self.errors)})")

    # ----------------------------------------------------------------------- streaming

    def read_rows(self, rows) -> np.ndarray:
        """The embeddings of ``rows`` (indices into the store) as float32, read in ascending order."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.dim), np.float32)
        out[order] = np.asarray(self.embeddings[rows[order]], dtype=np.float32)
        return out

    def iter_batches(self, batch_size: int, rows=None, shuffle_seed: int | None = None,
                     drop_last: bool = False) -> Iterator[Batch]:
        """Stream the store in ``Batch``es of ``batch_size`` rows read from the memory-mapped shards.

        ``rows``: which rows (indices, e.g. a training split; default all). ``shuffle_seed``: visit them in
        the order of a permutation drawn with that seed (use a new seed per epoch); None keeps their order.
        Only one batch is in float32 at a time, so memory stays at O(batch_size * dim) however large the
        store; within a batch rows are read in file order, which keeps the memory-mapped reads local.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        order = np.arange(len(self), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if len(order) and (order.min() < 0 or order.max() >= len(self)):
            raise InputError(f"rows must be indices between 0 and {len(self) - 1}")
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(order)
        lat, lon = self.lat, self.lon
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            idx = order[start: start + batch_size]
            yield Batch(self.read_rows(idx), lat[idx], lon[idx], idx)


def _check_unique(ids: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in seen:
            raise InputError(f"sample id {sid!r} appears twice (samples {seen[sid]} and {i}); ids must be unique")
        seen[sid] = i


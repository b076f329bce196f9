"""The embedding store: a dataset turned into embeddings once; training and evaluation read it.

Layout of a store directory::

    store.json        encoder, dim, counts, "complete" (written first as incomplete, last as complete)
    embeddings.npy    (N, dim) float16, row i <-> row i of meta.parquet; read as one memory map
    meta.parquet      id, lat, lon, source, status ("ok") for every embedded sample, in row order
    errors.csv        id, source, reason for every sample that could not be read
    progress.jsonl    while running: one line per finished sample (removed once complete)

``embed_dataset`` is resumable: rows are written into ``embeddings.npy`` in place and synced
before their lines are appended to ``progress.jsonl``, so after a kill (even SIGKILL) a re-run
reads the journal, drops a torn last line, and carries on with the samples it does not list;
no sample is lost or written twice. Images are decoded and resized in worker processes, ahead
of the model, so decoding overlaps the forward pass.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import multiprocessing
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from geoscope.atomic import atomic_path, write_json
from geoscope.data.dataset import open_dataset
from geoscope.data.images import load_image
from geoscope.data.samples import load_sample_image
from geoscope.encoders import create_encoder
from geoscope.errors import GeoscopeError, InputError

logger = logging.getLogger(__name__)

STORE_VERSION = 1
STATE = "store.json"
EMBEDDINGS = "embeddings.npy"
META = "meta.parquet"
ERRORS = "errors.csv"
JOURNAL = "progress.jsonl"
_FILES = (STATE, EMBEDDINGS, META, ERRORS, JOURNAL)
_HEADER_BYTES = 128  # fixed .npy header length, so the shape can be rewritten in place
_MEMORY = "<memory>"
_RESERVED = {"id", "lat", "lon", "source", "status", "row", "pos", "reason"}  # meta columns of the store


# --------------------------------------------------------------------------- reading


class EmbeddingStore:
    """A finished store: ``embeddings`` (N, dim) float16 memory map, aligned ``meta`` / ``ids`` / ``lat`` / ``lon``."""

    def __init__(self, path: Path, state: dict, embeddings: np.ndarray, meta, errors):
        self.path = path
        self.state = state
        self.embeddings = embeddings
        self.meta = meta
        self.errors = errors

    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingStore":
        path = Path(path)
        state_file = path / STATE
        if not state_file.is_file():
            raise InputError(f"{path} is not an embedding store (no {STATE}); make one with `geoscope embed`")
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{state_file} is not readable JSON: {exc}") from None
        if not state.get("complete"):
            raise InputError(
                f"embedding store {path} is incomplete: run the same `geoscope embed` command again to finish it"
            )
        emb = np.load(path / EMBEDDINGS, mmap_mode="r")
        meta = pd.read_parquet(path / META)
        if emb.shape != (len(meta), state["dim"]):
            raise InputError(
                f"embedding store {path} is inconsistent: {EMBEDDINGS} has shape {emb.shape} but {META} has "
                f"{len(meta)} rows of dim {state['dim']}"
            )
        errors_file = path / ERRORS
        errors = (
            pd.read_csv(errors_file, dtype=str, keep_default_na=False)
            if errors_file.is_file() and errors_file.stat().st_size
            else pd.DataFrame(columns=["id", "source", "reason"])
        )
        return cls(path, state, emb, meta, errors)

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
        """Write a complete store from in-memory arrays (for tests, and embeddings made elsewhere).

        ``extra``: more meta columns, e.g. ``{"scene": [...]}``, one value per row.
        """
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise InputError(f"embeddings must be a 2-D array (N, dim), got shape {emb.shape}")
        n = len(emb)
        ids = [str(i) for i in ids]
        lat = np.full(n, np.nan) if lat is None else np.asarray(lat, dtype=np.float64)
        lon = np.full(n, np.nan) if lon is None else np.asarray(lon, dtype=np.float64)
        source = [_MEMORY] * n if source is None else [str(s) for s in source]
        for what, arr in (("ids", ids), ("lat", lat), ("lon", lon), ("source", source)):
            if len(arr) != n:
                raise InputError(f"{what} has {len(arr)} entries but embeddings has {n} rows")
        _check_unique(ids)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = pd.DataFrame({"id": ids, "lat": lat, "lon": lon, "source": source, "status": "ok"})
        for k, values in (extra or {}).items():
            values = list(values)
            if len(values) != n or k in _RESERVED:
                raise InputError(f"extra column {k!r} needs {n} values and a name other than {sorted(_RESERVED)}")
            meta[k] = values
        with atomic_path(out / EMBEDDINGS) as tmp:
            with open(tmp, "wb") as f:
                f.write(_npy_header(n, emb.shape[1]))
                f.write(np.ascontiguousarray(emb, dtype="<f2").tobytes())
        _write_outputs(out, meta, pd.DataFrame(columns=["id", "source", "reason"]))
        write_json(out / STATE, _state(encoder, emb.shape[1], complete=True, n_ok=n, n_error=0))
        return cls.open(out)

    @property
    def encoder(self) -> str:
        return self.state["encoder"]

    @property
    def dim(self) -> int:
        return int(self.state["dim"])

    @property
    def ids(self) -> np.ndarray:
        return self.meta["id"].to_numpy(dtype=object)

    @property
    def lat(self) -> np.ndarray:
        return self.meta["lat"].to_numpy(dtype=np.float64)

    @property
    def lon(self) -> np.ndarray:
        return self.meta["lon"].to_numpy(dtype=np.float64)

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) lat, lon degrees."""
        return np.stack([self.lat, self.lon], axis=1)

    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, encoder={self.encoder!r}, n={len(self)}, dim={self.dim}, errors={len(self.errors)})"


# --------------------------------------------------------------------------- input samples


@dataclass
class _Item:
    pos: int
    id: str
    lat: float
    lon: float
    source: str
    payload: Any  # what the loader turns into a PIL image
    extra: dict | None = None  # scalar GeoSample.extra fields, kept as meta columns (e.g. "scene")


def _coord(v) -> float:
    return math.nan if v is None else float(v)


def _scalar_extra(extra) -> dict | None:
    if not isinstance(extra, dict):
        return None
    keep = {str(k): v for k, v in extra.items()
            if str(k) not in _RESERVED and (v is None or isinstance(v, (str, int, float, bool)))}
    return keep or None


def _source_name(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return _MEMORY


def _load_payload(payload):
    """Default loader: a PIL image as is; a GeoSample, path, bytes or bytes-loader through the data layer."""
    if isinstance(payload, Image.Image):
        return payload
    if hasattr(payload, "source") and hasattr(payload, "id"):
        return load_sample_image(payload)
    if callable(payload):  # a bytes-loader
        payload = payload()
    return load_image(payload)


def _samples(data) -> tuple[Iterator[_Item], int | None, Callable]:
    """Normalise the inputs ``embed_dataset`` accepts into items, a total (or None) and a loader."""
    if isinstance(data, (str, os.PathLike)):
        data = open_dataset(data)
    total = len(data) if hasattr(data, "__len__") else None
    loader = getattr(data, "load_image", None)

    def items() -> Iterator[_Item]:
        for pos, s in enumerate(data):
            if isinstance(s, (tuple, list)):
                if len(s) != 4:
                    raise InputError(f"input sample {pos}: expected (id, image, lat, lon), got {len(s)} values")
                sid, src, lat, lon = s
                yield _Item(pos, str(sid), _coord(lat), _coord(lon), _source_name(src), src)
            elif hasattr(s, "id") and hasattr(s, "source"):
                yield _Item(pos, str(s.id), _coord(getattr(s, "lat", None)), _coord(getattr(s, "lon", None)),
                            _source_name(s.source), s, _scalar_extra(getattr(s, "extra", None)))
            else:
                raise InputError(
                    f"input sample {pos}: expected a GeoSample or an (id, image, lat, lon) tuple, got {type(s).__name__}"
                )

    return items(), total, (loader if loader is not None else _load_payload)


# --------------------------------------------------------------------------- decoding workers

_WORKER: dict = {}


def _init_worker(loader, transform) -> None:
    _WORKER["loader"], _WORKER["transform"] = loader, transform  # workers never run torch


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, GeoscopeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _prepare(task: list[tuple[int, Any]]) -> list[tuple[int, np.ndarray | None, str | None]]:
    """Worker: decode + resize + crop each image; (pos, uint8 array, None) or (pos, None, reason)."""
    loader, transform = _WORKER["loader"], _WORKER["transform"]
    out: list[tuple[int, np.ndarray | None, str | None]] = []
    for pos, payload in task:
        try:
            out.append((pos, transform.to_uint8(loader(payload)), None))
        except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, never fatal
            out.append((pos, None, _reason(exc)))
    return out


def _chunks(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    chunk: list[_Item] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepared(items: Iterator[_Item], loader, transform, workers: int, chunk: int, ahead: int):
    """Yield (item, uint8 array or None, reason) in input order, decoding up to ``ahead`` chunks ahead."""
    if workers <= 0:
        _WORKER.update(loader=loader, transform=transform)
        for c in _chunks(items, chunk):
            for it, (_, arr, reason) in zip(c, _prepare([(it.pos, it.payload) for it in c])):
                yield it, arr, reason
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(loader, transform)) as pool:
        pending: collections.deque = collections.deque()
        source = _chunks(items, chunk)
        exhausted = False
        while True:
            while not exhausted and len(pending) < ahead:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                pending.append((nxt, pool.apply_async(_prepare, ([(it.pos, it.payload) for it in nxt],))))
            if not pending:
                return
            c, res = pending.popleft()
            for it, (_, arr, reason) in zip(c, res.get()):
                yield it, arr, reason


# --------------------------------------------------------------------------- writing


def _npy_header(rows: int, dim: int) -> bytes:
    """A .npy v1.0 header of fixed length for a (rows, dim) little-endian float16 array."""
    text = "{'descr': '<f2', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _state(encoder: str, dim: int, complete: bool, **counts) -> dict:
    return {"format": "geoscope-embeddings", "version": STORE_VERSION, "encoder": encoder, "dim": int(dim),
            "dtype": "float16", "complete": complete, **counts}


def _check_unique(ids: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in seen:
            raise InputError(f"sample id {sid!r} appears twice (samples {seen[sid]} and {i}); ids must be unique")
        seen[sid] = i


def _write_outputs(out: Path, meta, errors) -> None:
    with atomic_path(out / META) as tmp:
        meta.to_parquet(tmp, index=False)
    with atomic_path(out / ERRORS) as tmp:
        errors.to_csv(tmp, index=False)


class _EmbeddingFile:
    """``embeddings.npy`` written in place with ``pwrite``; capacity grows, the header is rewritten."""

    def __init__(self, path: Path, dim: int, capacity: int):
        self.path, self.dim, self.row_bytes = path, dim, dim * 2
        if path.is_file():
            with open(path, "rb") as f:
                np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                if f.tell() != _HEADER_BYTES or dtype != np.dtype("<f2") or shape[1:] != (dim,):
                    raise InputError(f"{path} is not an embeddings file of this store (shape {shape}, {dtype})")
            self.capacity = shape[0]
            self.fd = os.open(path, os.O_RDWR)
        else:
            self.capacity = 0
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self._resize(max(capacity, 1))

    def _resize(self, rows: int) -> None:
        if rows > self.capacity:  # grow the file first, then the header: a crash in between is harmless
            os.ftruncate(self.fd, _HEADER_BYTES + rows * self.row_bytes)
            os.pwrite(self.fd, _npy_header(rows, self.dim), 0)
        else:  # shrink the header first, then the file
            os.pwrite(self.fd, _npy_header(rows, self.dim), 0)
            os.ftruncate(self.fd, _HEADER_BYTES + rows * self.row_bytes)
        self.capacity = rows

    def write(self, row: int, emb: np.ndarray) -> None:
        if row + len(emb) > self.capacity:
            self._resize(max(2 * self.capacity, row + len(emb)))
        os.pwrite(self.fd, np.ascontiguousarray(emb, dtype="<f2").tobytes(), _HEADER_BYTES + row * self.row_bytes)
        os.fdatasync(self.fd)

    def finish(self, rows: int) -> None:
        self._resize(rows)
        os.fsync(self.fd)
        os.close(self.fd)


class _Journal:
    """``progress.jsonl``: one JSON line per finished sample, appended after its embedding is synced."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        if path.is_file():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a torn last line from a kill: drop it
                with open(path, "r+b") as f:
                    f.truncate(end)
            for i, line in enumerate(data[:end].splitlines()):
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise InputError(f"{path} line {i + 1} is corrupt; delete the store directory and embed again") from None
        rows = [r["row"] for r in self.records if r["status"] == "ok"]
        if rows != list(range(len(rows))):
            raise InputError(f"{path} does not list embedding rows in order; delete the store directory and embed again")
        self.n_rows = len(rows)
        self.done = {r["pos"]: r["id"] for r in self.records}
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, records: list[dict]) -> None:
        os.write(self.fd, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        os.fdatasync(self.fd)
        self.records.extend(records)
        self.n_rows += sum(r["status"] == "ok" for r in records)

    def close(self) -> None:
        os.close(self.fd)


def _read_state(out: Path) -> dict | None:
    try:
        return json.loads((out / STATE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{out / STATE} is not readable JSON: {exc}; pass --overwrite to start again") from None


def remove_store(out: str | os.PathLike) -> None:
    """Delete a store's own files (and nothing else) from ``out``."""
    for name in _FILES:
        (Path(out) / name).unlink(missing_ok=True)


def default_workers(encoder=None) -> int:
    """Decoding processes. With the model on a GPU: all cores but one (at most 8). On CPU the model's
    threads already use every core, so a decoding process only preempts them: in two runs of
    benchmarks/bench_embed.py on a quiet 2-core machine, decoding in-process reached 87 % and 86 % of the
    forward pass alone, one worker 71 % and 87 %; so up to 2 cores decode in-process (steadier, no
    process start-up), beyond that a quarter of the cores."""
    cores = os.cpu_count() or 1
    device = getattr(encoder, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else max(1, cores // 4)


def embed_dataset(
    dataset,
    encoder,
    out_dir: str | os.PathLike,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Embed every image of ``dataset`` with ``encoder`` into the store ``out_dir``; resumable.

    ``dataset``: a ``geoscope.data.dataset.Dataset`` (or a path / spec for ``open_dataset``), an
    iterable of ``GeoSample`` (anything with ``id``, ``source``, ``lat``, ``lon``), or of
    ``(id, image, lat, lon)`` tuples where image is a PIL image, a path or bytes. ``encoder``: an
    ``Encoder`` or a name for ``create_encoder``. ``workers``: decoding processes (0: decode in this
    process; None: ``default_workers``). Unreadable images are skipped and listed in ``errors.csv``.
    Re-running on an incomplete store continues it; on a complete one returns it.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(encoder, (str, os.PathLike)):
        encoder = create_encoder(str(encoder))
    if workers is None:
        workers = default_workers(encoder)
    out = Path(out_dir)
    if overwrite:
        remove_store(out)
    state = _read_state(out)
    if state is not None:
        if state.get("encoder") != encoder.name or int(state.get("dim", -1)) != encoder.dim:
            raise InputError(
                f"{out} already holds embeddings from encoder {state.get('encoder')!r}, not {encoder.name!r}: "
                "choose another output directory or pass --overwrite"
            )
        if state.get("complete"):
            logger.info("%s is already a complete store (%s embeddings); nothing to do", out, state.get("n_ok"))
            return EmbeddingStore.open(out)
    items, total, loader = _samples(dataset)
    out.mkdir(parents=True, exist_ok=True)
    if state is None:
        write_json(out / STATE, _state(encoder.name, encoder.dim, complete=False, total=total))
    journal = _Journal(out / JOURNAL)
    if journal.done:
        logger.info("resuming %s: %d samples already done", out, len(journal.done))
    emb_file = _EmbeddingFile(out / EMBEDDINGS, encoder.dim, capacity=total or 4096)
    try:
        _run(items, total, loader, encoder, journal, emb_file, batch_size, workers, progress)
    except BaseException:
        journal.close()
        os.close(emb_file.fd)
        raise
    return _finish(out, encoder, journal, emb_file, total)


def _run(items, total, loader, encoder, journal: _Journal, emb_file: _EmbeddingFile,
         batch_size: int, workers: int, progress: bool) -> None:
    seen: dict[str, int] = {}
    count = 0

    def todo() -> Iterator[_Item]:
        nonlocal count
        for it in items:
            count += 1
            if it.id in seen:
                raise InputError(f"sample id {it.id!r} appears twice (samples {seen[it.id]} and {it.pos}); ids must be unique")
            seen[it.id] = it.pos
            logged = journal.done.get(it.pos)
            if logged is None:
                yield it
            elif logged != it.id:
                raise InputError(
                    f"{journal.path.parent} was started on different data (sample {it.pos} is {it.id!r} here, "
                    f"{logged!r} in the store): use another output directory or pass --overwrite"
                )

    def flush(batch: list) -> None:
        ok = [(it, arr) for it, arr, _ in batch if arr is not None]
        if ok:
            pixels = encoder.transform.normalize(np.stack([arr for _, arr in ok]))
            emb_file.write(journal.n_rows, encoder.encode_pixels(pixels))
        row = journal.n_rows
        records = []
        for it, arr, reason in batch:
            rec = {"pos": it.pos, "id": it.id, "lat": None if math.isnan(it.lat) else it.lat,
                   "lon": None if math.isnan(it.lon) else it.lon, "source": it.source}
            if it.extra:
                rec["extra"] = it.extra
            if arr is None:
                rec.update(status="error", reason=reason)
            else:
                rec.update(status="ok", row=row)
                row += 1
            records.append(rec)
        journal.append(records)
        bar.update(len(batch))

    chunk = max(1, min(8, batch_size // max(workers, 1)))
    ahead = max(2 * max(workers, 1), -(-2 * batch_size // chunk))
    bar = tqdm(total=total, initial=len(journal.done), unit="img", desc=f"embed {encoder.name}",
               disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
    try:
        batch: list = []
        for entry in _prepared(todo(), loader, encoder.transform, workers, chunk, ahead):
            batch.append(entry)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        bar.close()
    stale = [p for p in journal.done if p >= count]
    if stale:
        raise InputError(
            f"{journal.path.parent} was started on a larger dataset (it lists sample {max(stale)}, this one has "
            f"{count}): use another output directory or pass --overwrite"
        )


def _finish(out: Path, encoder, journal: _Journal, emb_file: _EmbeddingFile, total: int | None) -> EmbeddingStore:
    journal.close()
    emb_file.finish(journal.n_rows)
    recs = journal.records
    ok = sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["row"])
    bad = sorted((r for r in recs if r["status"] != "ok"), key=lambda r: r["pos"])
    meta = pd.DataFrame({
        "id": pd.Series([r["id"] for r in ok], dtype=object),
        "lat": pd.Series([r["lat"] for r in ok], dtype="float64"),
        "lon": pd.Series([r["lon"] for r in ok], dtype="float64"),
        "source": pd.Series([r["source"] for r in ok], dtype=object),
        "status": "ok",
    })
    extra_cols = sorted({k for r in ok for k in (r.get("extra") or {})})
    for k in extra_cols:
        meta[k] = [(r.get("extra") or {}).get(k) for r in ok]
    errors = pd.DataFrame({k: [r[k] for r in bad] for k in ("id", "source", "reason")}, columns=["id", "source", "reason"])
    _write_outputs(out, meta, errors)
    write_json(out / STATE, _state(encoder.name, encoder.dim, complete=True, n_ok=len(ok), n_error=len(bad),
                                   total=len(recs), preprocessing=encoder.transform.to_dict()))
    (out / JOURNAL).unlink(missing_ok=True)
    return EmbeddingStore.open(out)

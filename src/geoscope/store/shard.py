"""Writing shards, and finishing a store: one writer per shard, every batch committed before it counts.

A writer appends a batch in two steps: its embedding rows are written in place into
``embeddings.npy`` and synced, then one line per sample is appended to ``progress.jsonl`` and synced.
A kill at any moment (SIGKILL included) leaves a shard whose journal lists exactly the rows that are
safely on disk; a torn last line is ignored. Such a shard is resumable: the next job reads its
journal and counts those samples as done.

``finish_store`` turns the shards on disk into a complete store. It reads every shard, keeps each
sample once (a sample a retried task embedded twice is dropped from the later shard, so "retried work
is de-duplicated"), writes each shard's ``meta.parquet``, the store's ``errors.csv`` and finally the
manifest ``store.json`` listing the shards. A shard becomes complete at one atomic step (its
``shard.json``), so a finish that is itself killed is simply done again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from geoscope.atomic import atomic_path, write_all, write_json, writing
from geoscope.errors import InputError
from geoscope.store.layout import (
    EMBEDDINGS,
    ERRORS,
    HEADER_BYTES,
    JOURNAL,
    META,
    ROOT,
    SHARD_STATE,
    STATE,
    list_shards,
    manifest,
    npy_header,
    read_json,
    remove_shard,
    shard_dir,
    shard_state,
    writer_info,
)

logger = logging.getLogger(__name__)
_NEW = EMBEDDINGS + ".new"  # a compacted embeddings file, renamed into place once its shard is complete
_META_COLUMNS = ["id", "lat", "lon", "source", "status", "pos"]


# --------------------------------------------------------------------------- files


class EmbeddingFile:
    """``embeddings.npy`` written in place with ``pwrite``; capacity grows, the header is rewritten.
    A write the disk refuses is a ``StorageError`` naming the file."""

    def __init__(self, path: Path, dim: int, capacity: int):
        self.path, self.dim, self.row_bytes = path, dim, dim * 2
        self.fd = -1
        if path.is_file():
            with open(path, "rb") as f:
                np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                if f.tell() != HEADER_BYTES or dtype != np.dtype("<f2") or shape[1:] != (dim,):
                    raise InputError(f"{path} is not an embeddings file of this store (shape {shape}, {dtype})")
            self.capacity = shape[0]
            self.fd = os.open(path, os.O_RDWR)
        else:  # made whole (header, then size) under a temporary name, then renamed: a full disk or a kill
            # in between leaves no embeddings.npy without its header (a sparse ftruncate needs no space)
            self.capacity = max(capacity, 1)
            with atomic_path(path) as tmp:
                fd = os.open(tmp, os.O_RDWR)
                try:
                    write_all(fd, npy_header(self.capacity, dim), 0)
                    os.ftruncate(fd, HEADER_BYTES + self.capacity * self.row_bytes)
                finally:
                    os.close(fd)
            self.fd = os.open(path, os.O_RDWR)

    def _resize(self, rows: int) -> None:
        with writing(self.path):
            if rows > self.capacity:  # grow the file first, then the header: a crash in between is harmless
                os.ftruncate(self.fd, HEADER_BYTES + rows * self.row_bytes)
                write_all(self.fd, npy_header(rows, self.dim), 0)
            else:  # shrink the header first, then the file
                write_all(self.fd, npy_header(rows, self.dim), 0)
                os.ftruncate(self.fd, HEADER_BYTES + rows * self.row_bytes)
        self.capacity = rows

    def write(self, row: int, emb: np.ndarray) -> None:
        if row + len(emb) > self.capacity:
            self._resize(max(2 * self.capacity, row + len(emb)))
        with writing(self.path):  # every byte, or an error: a short write would leave rows half written
            write_all(self.fd, np.ascontiguousarray(emb, dtype="<f2").tobytes(), HEADER_BYTES + row * self.row_bytes)
            os.fdatasync(self.fd)

    def finish(self, rows: int) -> None:
        """Trim the file to ``rows`` rows, sync it and close it."""
        self._resize(rows)
        with writing(self.path):
            os.fsync(self.fd)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_embeddings(path: Path, emb: np.ndarray) -> None:
    """A complete embeddings file in the store's format (fixed-length header, float16), synced."""
    emb = np.asarray(emb)
    with writing(path), open(path, "wb") as f:
        f.write(npy_header(len(emb), emb.shape[1]))
        f.write(np.ascontiguousarray(emb, dtype="<f2").tobytes())
        f.flush()
        os.fsync(f.fileno())


def read_journal(path: Path) -> list[dict]:
    """The records of a journal; a torn last line (from a kill mid-write) is left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1
    records = []
    for i, line in enumerate(data[:end].splitlines()):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(f"{path} line {i + 1} is corrupt; delete the store directory and embed again") from None
    return records


class Journal:
    """``progress.jsonl``: one JSON line per finished sample, appended after its embedding is synced.

    Only the row count is kept in memory (a writer may append millions of lines); ``read_journal``
    reads the records back.
    """

    def __init__(self, path: Path):
        self.path = path
        records = read_journal(path)
        if path.is_file() and path.stat().st_size:
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # drop the torn last line before appending after it
                with writing(path), open(path, "r+b") as f:
                    f.truncate(end)
        rows = [r["row"] for r in records if r["status"] == "ok"]
        if rows != list(range(len(rows))):
            raise InputError(f"{path} does not list embedding rows in order; delete the store directory and embed again")
        self.n_rows = len(rows)
        with writing(path):
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, records: list[dict]) -> None:
        """Append the lines and sync them. A failed write (a full disk) is undone (the journal is cut
        back to where it was, so no torn line stays in the middle) and raised as a ``StorageError``."""
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with writing(self.path):
            start = os.fstat(self.fd).st_size
            try:
                write_all(self.fd, data)
                os.fdatasync(self.fd)
            except OSError:
                with contextlib.suppress(OSError):  # shrinking needs no space; a kill here leaves a torn last line
                    os.ftruncate(self.fd, start)
                raise
        self.n_rows += sum(r["status"] == "ok" for r in records)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------- writing one shard


def sample_record(pos: int, sid: str, lat: float, lon: float, source: str, extra: dict | None = None) -> dict:
    """The journal fields of one sample (without its outcome)."""
    rec = {"pos": int(pos), "id": sid, "lat": None if math.isnan(lat) else float(lat),
           "lon": None if math.isnan(lon) else float(lon), "source": source}
    if extra:
        rec["extra"] = extra
    return rec


class ShardWriter:
    """The one writer of shard ``name`` of the store ``out`` (created, or continued when incomplete)."""

    def __init__(self, out: Path, name: str, encoder: str, dim: int, capacity: int = 4096):
        self.out, self.name = Path(out), name
        self.dir = shard_dir(self.out, name)
        self.dir.mkdir(parents=True, exist_ok=True)
        state = read_json(self.dir / SHARD_STATE, "delete the shard folder and embed again")
        if state is not None:
            _check_same_encoder(self.dir, state, encoder, dim)
            if state.get("complete"):
                raise InputError(f"shard {self.dir} is complete; it cannot be written again")
        write_json(self.dir / SHARD_STATE, shard_state(encoder, dim, complete=False, writer=writer_info()))
        self.journal = Journal(self.dir / JOURNAL)
        self.emb = EmbeddingFile(self.dir / EMBEDDINGS, dim, capacity)
        self.pid = os.getpid()

    def commit(self, samples: list[dict], reasons: list[str | None], embeddings: np.ndarray | None) -> None:
        """Write one batch: ``samples`` (``sample_record`` dicts), ``reasons`` (None where the sample was
        embedded) and the embeddings of the embedded ones, in order."""
        n_ok = sum(r is None for r in reasons)
        if n_ok:
            if embeddings is None or len(embeddings) != n_ok:
                raise ValueError(f"{n_ok} samples were embedded but {0 if embeddings is None else len(embeddings)} rows given")
            self.emb.write(self.journal.n_rows, embeddings)
        row = self.journal.n_rows
        records = []
        for rec, reason in zip(samples, reasons):
            rec = dict(rec)
            if reason is None:
                rec.update(status="ok", row=row)
                row += 1
            else:
                rec.update(status="error", reason=reason)
            records.append(rec)
        self.journal.append(records)

    def close(self) -> None:
        """Close the files, leaving the shard resumable (``finish_store`` completes it)."""
        self.journal.close()
        self.emb.close()


# --------------------------------------------------------------------------- reading shards back


def _check_same_encoder(where: Path, state: dict, encoder: str, dim: int) -> None:
    if state.get("encoder") != encoder or int(state.get("dim", -1)) != int(dim):
        raise InputError(
            f"{where} holds embeddings from encoder {state.get('encoder')!r} ({state.get('dim')}-d), not "
            f"{encoder!r} ({dim}-d): a store cannot mix encoders across shards; use another output directory "
            "or pass --overwrite"
        )


def shard_states(out: Path, encoder: str, dim: int) -> list[tuple[str, dict]]:
    """(name, shard.json) of every shard on disk, in order, after finishing interrupted renames;
    a shard of another encoder is refused."""
    result = []
    for name in list_shards(out):
        d = shard_dir(out, name)
        state = read_json(d / SHARD_STATE, "delete that shard folder or the store and embed again") or {}
        _check_same_encoder(d, state, encoder, dim)
        if state.get("complete") and (d / _NEW).is_file():  # a finish killed between its commit and the rename
            os.replace(d / _NEW, d / EMBEDDINGS)
        result.append((name, state))
    return result


def done_positions(out: Path, encoder: str, dim: int) -> dict[int, str]:
    """pos -> id of every sample some shard has finished (embedded or failed)."""
    done: dict[int, str] = {}
    for name, state in shard_states(out, encoder, dim):
        d = shard_dir(out, name)
        if state.get("complete"):
            meta = pd.read_parquet(d / META, columns=["pos", "id"])
            done.update(zip(meta["pos"].astype(int).tolist(), meta["id"].astype(str).tolist()))
        else:
            done.update((r["pos"], r["id"]) for r in read_journal(d / JOURNAL))
    return done


def _meta_frame(records: list[dict]) -> pd.DataFrame:
    meta = pd.DataFrame({
        "id": pd.Series([r["id"] for r in records], dtype=object),
        "lat": pd.Series([r["lat"] for r in records], dtype="float64"),
        "lon": pd.Series([r["lon"] for r in records], dtype="float64"),
        "source": pd.Series([r["source"] for r in records], dtype=object),
        "status": "ok",
        "pos": pd.Series([r["pos"] for r in records], dtype="int64"),
    })
    for k in sorted({k for r in records for k in (r.get("extra") or {})}):
        meta[k] = [(r.get("extra") or {}).get(k) for r in records]
    return meta


def write_meta(path: Path, meta: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        meta.to_parquet(tmp, index=False)


def write_errors(path: Path, errors: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        errors.to_csv(tmp, index=False)


class _Claims:
    """A growable bitmap over sample positions (a bit per sample: 19 MB for 150 million)."""

    def __init__(self) -> None:
        self.bits = np.zeros(1024, bool)

    def _fit(self, pos: np.ndarray) -> None:
        if len(pos) and pos.max() >= len(self.bits):
            grown = np.zeros(max(2 * len(self.bits), int(pos.max()) + 1), bool)
            grown[: len(self.bits)] = self.bits
            self.bits = grown

    def test(self, pos: np.ndarray) -> np.ndarray:
        self._fit(pos)
        return self.bits[pos]

    def set(self, pos: np.ndarray) -> None:
        self._fit(pos)
        self.bits[pos] = True


def _first_and_unclaimed(pos: np.ndarray, claims: _Claims) -> np.ndarray:
    """Mask of the entries of ``pos`` to keep: the first of each position, and none already claimed."""
    first = np.zeros(len(pos), bool)
    first[np.unique(pos, return_index=True)[1]] = True
    return first & ~claims.test(pos)


def _journal_split(path: Path) -> tuple[list[dict], list[dict]]:
    """(embedded records in row order, failed records) of a journal."""
    recs = read_journal(path)
    return sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["row"]), [r for r in recs if r["status"] != "ok"]


def finish_store(out: Path, encoder: str, dim: int, preprocessing: dict | None = None) -> None:
    """Complete every shard of ``out`` and write its manifest; each sample is kept once.

    Complete shards keep all their rows; the samples of unfinished shards (journals) are claimed in
    the store's order, and a sample already claimed is dropped (a retried batch written twice).
    A sample that failed somewhere but was embedded elsewhere counts as embedded. Memory: a bit per
    sample plus one shard's journal at a time (journals are read twice: to claim, then to write).
    """
    states = shard_states(out, encoder, dim)
    claims = _Claims()
    rows: dict[str, int] = {}
    pending: list[tuple[str, dict, np.ndarray]] = []
    failed_records: list[list[dict]] = []
    for name, state in states:
        d = shard_dir(out, name)
        if state.get("complete"):
            pos = pd.read_parquet(d / META, columns=["pos"])["pos"].to_numpy(np.int64)
            claims.set(pos)
            rows[name] = len(pos)
    for name, state in states:
        if not state.get("complete"):
            ok, bad = _journal_split(shard_dir(out, name) / JOURNAL)
            pos = np.array([r["pos"] for r in ok], np.int64)
            keep = _first_and_unclaimed(pos, claims)
            claims.set(pos[keep])
            pending.append((name, state, keep))
            failed_records.append(bad)
    errors: list[dict] = []
    failed = _Claims()
    for bad in failed_records:
        pos = np.array([r["pos"] for r in bad], np.int64)
        keep = _first_and_unclaimed(pos, claims) & ~failed.test(pos)
        failed.set(pos[keep])
        errors.extend(r for r, k in zip(bad, keep) if k)
    for name, state, keep in pending:
        ok, _ = _journal_split(shard_dir(out, name) / JOURNAL)
        n = _finish_shard(out, name, state, ok, keep, encoder, dim)
        if n < len(ok):
            logger.info("shard %s: dropped %d samples another shard had already embedded", name, len(ok) - n)
        if n or name == ROOT:
            rows[name] = n
        else:
            remove_shard(out, name)
    if not rows:  # nothing embedded at all: an empty root shard keeps the layout uniform
        d = shard_dir(out, ROOT)
        write_embeddings(d / EMBEDDINGS, np.zeros((0, dim), np.float16))
        write_meta(d / META, _meta_frame([]))
        write_json(d / SHARD_STATE, shard_state(encoder, dim, complete=True, n_ok=0, writer=writer_info()))
        rows[ROOT] = 0
    order = [name for name in list_shards(out) if name in rows]
    errors.sort(key=lambda r: r["pos"])
    write_errors(out / ERRORS, pd.DataFrame({k: [r[k] for r in errors] for k in ("id", "source", "reason")},
                                            columns=["id", "source", "reason"]))
    n_ok = sum(rows.values())
    fields = {"n_ok": n_ok, "n_error": len(errors), "total": n_ok + len(errors),
              "shards": [{"name": name, "rows": rows[name]} for name in order]}
    if preprocessing is not None:
        fields["preprocessing"] = preprocessing
    write_json(out / STATE, manifest(encoder, dim, complete=True, **fields))


def _finish_shard(out: Path, name: str, state: dict, ok: list[dict], keep: np.ndarray, encoder: str, dim: int) -> int:
    """Complete one unfinished shard with the rows of ``ok`` (row order) that ``keep`` marks; returns how many."""
    d = shard_dir(out, name)
    kept = [r for r, k in zip(ok, keep) if k]
    compact = len(kept) < len(ok)
    if compact:  # some rows were duplicates: write the kept ones to a new file, renamed in after the commit
        src = np.load(d / EMBEDDINGS, mmap_mode="r")
        write_embeddings(d / _NEW, src[[r["row"] for r in kept]])
        del src
    elif (d / EMBEDDINGS).is_file():
        EmbeddingFile(d / EMBEDDINGS, dim, 0).finish(len(kept))  # trim spare capacity (rows stay as they are)
    else:
        write_embeddings(d / EMBEDDINGS, np.zeros((0, dim), np.float16))
    write_meta(d / META, _meta_frame(kept))
    write_json(d / SHARD_STATE, shard_state(encoder, dim, complete=True, n_ok=len(kept),
                                            writer=state.get("writer")))  # the commit point
    if compact:
        os.replace(d / _NEW, d / EMBEDDINGS)
    (d / JOURNAL).unlink(missing_ok=True)
    return len(kept)

"""The files of an embedding store, and the manifest that lists its shards.

A store is a directory::

    store.json        the manifest: encoder, dim, counts, "complete", and (once complete) the shards in order
    errors.csv        id, source, reason of every sample that could not be read (all shards together)
    store.lock        while a job writes: its pid, host and start time (see ``lock.py``)
    shard.json  \\
    embeddings.npy |  the root shard "." (written by a single process; today's one-shard layout)
    meta.parquet   |
    progress.jsonl/
    shards/NAME/      more shards (one per Ray actor): shard.json, embeddings.npy, meta.parquet, progress.jsonl

A shard is one writer's output: ``embeddings.npy`` (rows, dim) float16 and ``meta.parquet`` (id, lat,
lon, source, status, pos, extra columns; row i <-> embeddings row i), plus ``progress.jsonl`` (its
journal) until the store is finished. Readers see the union of the manifest's shards in its order.

Stores written before shards existed (version 1: ``store.json``, ``embeddings.npy``, ``meta.parquet``,
``errors.csv`` at the root, no ``shard.json``) are one-shard stores whose shard is the root.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import struct
import uuid
from pathlib import Path

from geoscope.errors import InputError

STORE_VERSION = 2
FORMAT = "geoscope-embeddings"
SHARD_FORMAT = "geoscope-embedding-shard"
STATE = "store.json"
SHARD_STATE = "shard.json"
EMBEDDINGS = "embeddings.npy"
META = "meta.parquet"
ERRORS = "errors.csv"
JOURNAL = "progress.jsonl"
LOCK = "store.lock"
SHARDS = "shards"
ROOT = "."
_SHARD_FILES = (SHARD_STATE, EMBEDDINGS, META, JOURNAL)
_FILES = (STATE, ERRORS) + _SHARD_FILES  # the store's own files at its root (the lock is the lock's)
HEADER_BYTES = 128  # fixed .npy header length, so the shape can be rewritten in place
MEMORY = "<memory>"
RESERVED = {"id", "lat", "lon", "source", "status", "row", "pos", "reason"}  # meta columns of the store


def npy_header(rows: int, dim: int) -> bytes:
    """A .npy v1.0 header of fixed length for a (rows, dim) little-endian float16 array."""
    text = f"{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def manifest(encoder: str, dim: int, complete: bool, **fields) -> dict:
    """The content of ``store.json``."""
    return {"format": FORMAT, "version": STORE_VERSION, "encoder": encoder, "dim": int(dim), "dtype": "float16",
            "complete": complete, **fields}


def shard_state(encoder: str, dim: int, complete: bool, **fields) -> dict:
    """The content of a shard's ``shard.json``."""
    return {"format": SHARD_FORMAT, "version": STORE_VERSION, "encoder": encoder, "dim": int(dim),
            "dtype": "float16", "complete": complete, **fields}


def read_json(path: Path, what: str) -> dict | None:
    """A JSON file's dict, None when absent; unreadable JSON is an ``InputError`` naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}): {what}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object: {what}")
    return data


def read_manifest(out: Path) -> dict | None:
    return read_json(out / STATE, "pass --overwrite to start the store again")


def is_legacy(state: dict) -> bool:
    """A store written before shards: its root holds the only shard and has no ``shard.json``."""
    return int(state.get("version", 1)) < 2


def shard_dir(out: Path, name: str) -> Path:
    return out if name == ROOT else out / name


def list_shards(out: Path) -> list[str]:
    """Every shard present on disk, in the store's stable order: the root shard, then ``shards/`` by name."""
    names = [ROOT] if (out / SHARD_STATE).is_file() else []
    folder = out / SHARDS
    if folder.is_dir():
        names += sorted(f"{SHARDS}/{p.name}" for p in folder.iterdir() if p.is_dir() and (p / SHARD_STATE).is_file())
    return names


def host() -> str:
    return socket.gethostname() or "localhost"


def writer_info() -> dict:
    """Who writes a shard or holds a lock: host, pid and UTC start time."""
    return {"host": host(), "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def new_shard_name() -> str:
    """A fresh, unique shard name under ``shards/``, sortable by creation time."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    safe_host = re.sub(r"[^A-Za-z0-9.-]+", "-", host())[:40]
    return f"{SHARDS}/{stamp}-{safe_host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def remove_store(out: str | os.PathLike) -> None:
    """Delete a store's own files (and nothing else) from ``out``; the lock stays with its holder."""
    out = Path(out)
    for name in _FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / SHARDS, ignore_errors=True)


def remove_shard(out: Path, name: str) -> None:
    """Delete one shard's files (for the root shard: only its files, never the store's)."""
    path = shard_dir(out, name)
    if name == ROOT:
        for f in _SHARD_FILES:
            (path / f).unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)

"""``embed_dataset``: a dataset turned into an embedding store by one process (the one-shard case).

It writes the root shard of the store (``embeddings.npy``, ``progress.jsonl`` at the store's root, the
layout stores have always had) and is resumable: rows are written in place and synced before their
journal lines, so after a kill (even SIGKILL) a re-run reads the journal and carries on with the
samples no shard lists; no sample is lost or written twice. It also finishes a store a Ray job left
unfinished (``store/ray_embed.py``): samples any shard holds count as done.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from geoscope.atomic import write_json
from geoscope.encoders import create_encoder
from geoscope.errors import InputError
from geoscope.store.decode import _Item, _prepared, _samples
from geoscope.store.layout import (
    ROOT,
    SHARD_STATE,
    STATE,
    is_legacy,
    manifest,
    new_shard_name,
    read_json,
    read_manifest,
    remove_store,
)
from geoscope.store.lock import StoreLock
from geoscope.store.reader import EmbeddingStore
from geoscope.store.shard import ShardWriter, done_positions, finish_store, sample_record

logger = logging.getLogger(__name__)


def default_workers(encoder=None) -> int:
    """Decoding processes. With the model on a GPU: all cores but one (at most 8). On CPU the model's
    threads already use every core, so a decoding process only preempts them: on a quiet 2-core machine
    (benchmarks/bench_embed.py, ViT-L/14 on 3000 x 2000 photos, 7 runs) decoding in-process reached 87.9 %
    of the forward pass alone, one worker 81 %; so up to 2 cores decode in-process (steadier, no process
    start-up, and the consumer decodes too while the model waits), beyond that a quarter of the cores."""
    cores = os.cpu_count() or 1
    device = getattr(encoder, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else max(1, cores // 4)


def prepare_store(out: Path, encoder, overwrite: bool, total: int | None = None) -> EmbeddingStore | None:
    """Check ``out`` against ``encoder`` (the caller holds its lock); the complete store, or None after
    writing an incomplete manifest to fill. Shared by the local and the Ray executors."""
    if overwrite:
        remove_store(out)
    state = read_manifest(out)
    if state is not None:
        if state.get("encoder") != encoder.name or int(state.get("dim", -1)) != encoder.dim:
            raise InputError(
                f"{out} already holds embeddings from encoder {state.get('encoder')!r}, not {encoder.name!r}: "
                "choose another output directory or pass --overwrite"
            )
        if state.get("complete"):
            logger.info("%s is already a complete store (%s embeddings); nothing to do", out, state.get("n_ok"))
            return EmbeddingStore.open(out)
        if is_legacy(state):
            raise InputError(
                f"{out} is an unfinished store from an older geoscope (before shards): finish it with that "
                "version, or pass --overwrite to start again"
            )
    out.mkdir(parents=True, exist_ok=True)
    if state is None:
        write_json(out / STATE, manifest(encoder.name, encoder.dim, complete=False, total=total))
    return None


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
    Re-running on an incomplete store continues it; on a complete one returns it. A store another job
    is writing is refused (``store.lock``).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(encoder, (str, os.PathLike)):
        encoder = create_encoder(str(encoder))
    if workers is None:
        workers = default_workers(encoder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StoreLock(out):
        done = prepare_store(out, encoder, overwrite)
        if done is not None:
            return done
        items, total, loader = _samples(dataset)
        if total is not None:
            state = read_manifest(out) or {}
            if state.get("total") != total:
                write_json(out / STATE, {**state, "total": total})
        finished = done_positions(out, encoder.name, encoder.dim)
        if finished:
            logger.info("resuming %s: %d samples already done", out, len(finished))
        writer = _LazyWriter(out, encoder, capacity=total or 4096)
        try:
            _run(items, total, loader, encoder, finished, writer, batch_size, workers, progress)
        finally:
            writer.close()
        finish_store(out, encoder.name, encoder.dim, preprocessing=encoder.transform.to_dict())
    return EmbeddingStore.open(out)


class _LazyWriter:
    """The shard this process writes, opened at the first batch: the root shard, continued if a killed
    run left it unfinished, or a new one under ``shards/`` when the root is already complete."""

    def __init__(self, out: Path, encoder, capacity: int):
        self.out, self.encoder, self.capacity = out, encoder, capacity
        self.writer: ShardWriter | None = None

    def get(self) -> ShardWriter:
        if self.writer is None:
            root_state = read_json(self.out / SHARD_STATE, "delete the store and embed again")
            name = new_shard_name() if root_state and root_state.get("complete") else ROOT
            self.writer = ShardWriter(self.out, name, self.encoder.name, self.encoder.dim, self.capacity)
        return self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _run(items, total, loader, encoder, done: dict[int, str], writer: _LazyWriter,
         batch_size: int, workers: int, progress: bool) -> None:
    seen: dict[str, int] = {}
    count = 0
    where = writer.out

    def todo() -> Iterator[_Item]:
        nonlocal count
        for it in items:
            count += 1
            if it.id in seen:
                raise InputError(f"sample id {it.id!r} appears twice (samples {seen[it.id]} and {it.pos}); ids must be unique")
            seen[it.id] = it.pos
            logged = done.get(it.pos)
            if logged is None:
                yield it
            elif logged != it.id:
                raise InputError(
                    f"{where} was started on different data (sample {it.pos} is {it.id!r} here, "
                    f"{logged!r} in the store): use another output directory or pass --overwrite"
                )

    def flush(batch: list) -> None:
        ok = [arr for _, arr, _ in batch if arr is not None]
        emb = encoder.encode_pixels(encoder.transform.normalize(np.stack(ok))) if ok else None
        writer.get().commit([sample_record(it.pos, it.id, it.lat, it.lon, it.source, it.extra) for it, _, _ in batch],
                            [None if arr is not None else reason for _, arr, reason in batch], emb)
        bar.update(len(batch))

    chunk = max(1, min(8, batch_size // max(workers, 1)))
    ahead = max(2 * max(workers, 1), -(-2 * batch_size // chunk))
    bar = tqdm(total=total, initial=len(done), unit="img", desc=f"embed {encoder.name}",
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
    stale = [p for p in done if p >= count]
    if stale:
        raise InputError(
            f"{where} was started on a larger dataset (it lists sample {max(stale)}, this one has "
            f"{count}): use another output directory or pass --overwrite"
        )

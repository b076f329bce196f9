"""What ``embed_dataset`` reads: input samples normalised to items, decoded and resized ahead of the model.

Images are decoded and resized (``ImageTransform.to_uint8``) a few chunks ahead of the forward pass, so
decoding overlaps the model: in worker processes (which never import torch), or with no workers in one
background thread of this process.
"""

from __future__ import annotations

import collections
import inspect
import math
import multiprocessing
import os
import threading
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from geoscope.data.dataset import open_dataset
from geoscope.data.images import load_image
from geoscope.data.samples import load_sample_image
from geoscope.errors import GeoscopeError, InputError
from geoscope.store.layout import MEMORY, RESERVED


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


def scalar_extra(extra) -> dict | None:
    if not isinstance(extra, dict):
        return None
    keep = {str(k): v for k, v in extra.items()
            if str(k) not in RESERVED and (v is None or isinstance(v, (str, int, float, bool)))}
    return keep or None


def _source_name(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return MEMORY


def _load_payload(payload, draft_size: int | None = None):
    """Default loader: a PIL image as is; a GeoSample, path, bytes or bytes-loader through the data layer."""
    if isinstance(payload, Image.Image):
        return payload
    if hasattr(payload, "source") and hasattr(payload, "id"):
        return load_sample_image(payload, draft_size=draft_size)
    if callable(payload):  # a bytes-loader
        payload = payload()
    return load_image(payload, draft_size=draft_size)


class DraftLoader:
    """A loader that asks for JPEG draft-mode decoding at the encoder's resize (``data.decode``): a large
    photo decodes at 1/2, 1/4 or 1/8 scale when the model sees it small. Loaders without a ``draft_size``
    keyword (a user's own) are called as they are. Picklable, for the decoding workers."""

    def __init__(self, loader: Callable, draft_size: int | None):
        self.loader = loader
        try:
            takes = "draft_size" in inspect.signature(loader).parameters
        except (TypeError, ValueError):
            takes = False
        self.draft_size = int(draft_size) if (takes and draft_size) else None

    def __call__(self, payload):
        if self.draft_size is None:
            return self.loader(payload)
        return self.loader(payload, draft_size=self.draft_size)


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
                            _source_name(s.source), s, scalar_extra(getattr(s, "extra", None)))
            else:
                raise InputError(
                    f"input sample {pos}: expected a GeoSample or an (id, image, lat, lon) tuple, got {type(s).__name__}"
                )

    return items(), total, (loader if loader is not None else _load_payload)


# --------------------------------------------------------------------------- decoding workers

_WORKER: dict = {}


def _init_worker(loader, transform) -> None:
    _WORKER["loader"], _WORKER["transform"] = loader, transform  # workers never run torch


def reason_text(exc: BaseException) -> str:
    """One line saying why a sample could not be read."""
    text = str(exc) if isinstance(exc, GeoscopeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _prepare(task: list[tuple[int, Any]]) -> list[tuple[int, np.ndarray | None, str | None]]:
    """Worker: decode + resize + crop each image; (pos, uint8 array, None) or (pos, None, reason)."""
    return _decode_chunk(_WORKER["loader"], _WORKER["transform"], task)


def _decode_chunk(loader, transform, task: list[tuple[int, Any]]) -> list[tuple[int, np.ndarray | None, str | None]]:
    out: list[tuple[int, np.ndarray | None, str | None]] = []
    for pos, payload in task:
        try:
            out.append((pos, transform.to_uint8(loader(payload)), None))
        except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, never fatal
            out.append((pos, None, reason_text(exc)))
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


_DONE = object()


class _Handoff:
    """Decoded chunks passed from the decoding thread to the consumer, at most ``ahead`` waiting.

    The images of the chunk being decoded wait in ``todo``; the decoding thread takes them one at a
    time, and so does the consumer while it has nothing else to do (the model is idle: its first batch,
    or a model faster than decoding), so then every image decodes on two cores. While the model runs
    only the decoding thread decodes, which leaves the model the other cores."""

    def __init__(self, loader, transform, ahead: int):
        self.loader, self.transform, self.ahead = loader, transform, max(1, ahead)
        self.cond = threading.Condition()
        self.ready: collections.deque = collections.deque()
        self.todo: collections.deque = collections.deque()  # (index in chunk, (pos, payload))
        self.done: list = []
        self.left = 0  # images of the current chunk not decoded yet (queued or in a thread's hands)
        self.stopped = False

    def _decode_one(self) -> bool:
        """Decode one waiting image of the current chunk, if there is one (called holding the lock)."""
        if not self.todo:
            return False
        k, task = self.todo.popleft()
        self.cond.release()
        try:
            result = _decode_chunk(self.loader, self.transform, [task])[0]
        finally:
            self.cond.acquire()
        self.done[k] = result
        self.left -= 1
        if not self.left:
            self.cond.notify_all()
        return True

    def decode(self, task: list) -> list | None:
        """Decoding thread: the chunk's (pos, uint8 array or None, reason), in order; None once stopped."""
        with self.cond:
            self.todo.extend(enumerate(task))
            self.done, self.left = [None] * len(task), len(task)
            while self._decode_one():
                pass
            while self.left and not self.stopped:  # the consumer is finishing one
                self.cond.wait()
            return None if self.stopped else self.done

    def put(self, entry) -> bool:
        with self.cond:
            while len(self.ready) >= self.ahead and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return False
            self.ready.append(entry)
            self.cond.notify_all()
            return True

    def get(self):
        """Consumer: the next entry, decoding images of the current chunk while none is ready."""
        with self.cond:
            while not self.ready:
                if not self._decode_one():
                    self.cond.wait()
            entry = self.ready.popleft()
            self.cond.notify_all()
            return entry

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.todo.clear()
            self.cond.notify_all()


def _prepared_in_thread(items: Iterator[_Item], loader, transform, chunk: int, ahead: int):
    """Decode in one background thread of this process, up to ``ahead`` chunks ahead of the consumer.

    Pillow's decoders and resampling and the runtimes' forward passes all release the GIL, so decoding
    the next images overlaps the model without a worker process (no start-up, no pickling of pixels);
    while the consumer waits for images it decodes too (``_Handoff``). Items are read from ``items`` in
    the thread; an exception there (a duplicate id, a bad sample) is raised here, in order, after the
    chunks before it. Closing the generator stops the thread."""
    handoff = _Handoff(loader, transform, ahead)

    def work() -> None:
        try:
            for c in _chunks(items, chunk):
                decoded = handoff.decode([(it.pos, it.payload) for it in c])
                if decoded is None or not handoff.put([(it, arr, reason) for it, (_, arr, reason) in zip(c, decoded)]):
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            handoff.put(exc)

    thread = threading.Thread(target=work, name="geoscope-decode", daemon=True)
    thread.start()
    try:
        while True:
            entry = handoff.get()
            if entry is _DONE:
                return
            if isinstance(entry, BaseException):
                raise entry
            yield from entry
    finally:
        handoff.stop()
        thread.join()


def _prepared(items: Iterator[_Item], loader, transform, workers: int, chunk: int, ahead: int):
    """Yield (item, uint8 array or None, reason) in input order, decoding up to ``ahead`` chunks ahead."""
    loader = DraftLoader(loader, getattr(transform, "resize", None))
    if workers <= 0:
        yield from _prepared_in_thread(items, loader, transform, chunk, ahead)
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

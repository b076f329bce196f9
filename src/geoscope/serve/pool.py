"""The model behind the API: loaded once, fed in micro-batches through a bounded queue.

A located request goes: admission (the queue holds at most ``config.queue_size`` images: one more is
refused at once with ``Overloaded``, i.e. 429 + Retry-After) -> a decoding thread (safe loader, EXIF,
and the encoder's own resize and crop, in parallel across requests) -> the batch queue -> an inference
thread that takes what is queued (up to ``max_batch``; it waits up to ``batch_wait_ms`` for more only
while other admitted images are still decoding), embeds the whole batch in one forward pass and runs
the head once per distinct ``top_k``. A request that outlives ``request_timeout_s`` gets 504; its image
is dropped if the model has not started on it. An image counts against the queue until its work is
really over, so abandoned requests cannot pile up behind the limit.

Explanations (many model calls each) run one at a time on their own thread, with their own small
bound (``explain_queue``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import numpy as np

from geoscope.errors import GeoscopeError
from geoscope.serve.config import ServeConfig
from geoscope.serve.problems import Overloaded, RequestError
from geoscope.serve.uploads import Decoded, decode_upload

log = logging.getLogger(__name__)


@dataclass
class _Job:
    data: bytes | None
    name: str
    top_k: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    decoded: Decoded | None = None
    keep_image: bool = False  # keep the full decoded image after the encoder's crop is made (explanations)
    abandoned: bool = False  # the client stopped waiting (time limit): skip it if not started


class InferencePool:
    """Micro-batched, bounded inference over one ``Geolocator``; see the module doc."""

    def __init__(self, geolocator: Any, config: ServeConfig):
        self.geo = geolocator
        self.config = config
        encoder = geolocator.encoder  # a model without an image encoder cannot serve images: raise now
        self.encoder = encoder
        transform = getattr(encoder, "transform", None)
        # the fast path: decoding threads resize and crop, the batch is normalised and embedded at once
        self._transform = transform if hasattr(encoder, "encode_pixels") and hasattr(transform, "to_uint8") else None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._decoder = concurrent.futures.ThreadPoolExecutor(config.n_decode_workers(),
                                                               thread_name_prefix="geoscope-decode")
        self._explainer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="geoscope-explain")
        self._lock = threading.Lock()
        self._admitted = 0  # images admitted and not finished (decoding, queued or on the model)
        self._running = 0  # images inside a forward pass now
        self._explaining = 0
        self._threads: list[threading.Thread] = []
        self._rate = 0.0  # images per second, smoothed, for Retry-After
        self.stats = {"batches": 0, "images": 0, "failed": 0, "rejected": 0, "timed_out": 0, "largest_batch": 0}

    # --- life cycle ---------------------------------------------------------------------------------
    def start(self) -> "InferencePool":
        if self._threads:
            return self
        if self.config.warmup:
            self._warmup()
        for i in range(self.config.workers):
            t = threading.Thread(target=self._work, name=f"geoscope-infer-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []
        self._decoder.shutdown(wait=False, cancel_futures=True)
        self._explainer.shutdown(wait=False, cancel_futures=True)

    def _warmup(self) -> None:
        from PIL import Image

        image = Image.new("RGB", (64, 48), (120, 130, 140))
        t0 = time.perf_counter()
        if self._transform is not None:
            emb = self.encoder.encode_pixels(self._transform.normalize(np.stack([self._transform.to_uint8(image)])))
        else:
            emb = self.encoder.encode_images([image], batch_size=1)
        self.geo.locate_embeddings(emb, top_k=1)
        log.info("model warmed up in %.2f s", time.perf_counter() - t0)

    # --- state ---------------------------------------------------------------------------------------
    @property
    def admitted(self) -> int:
        return self._admitted

    def health(self) -> dict:
        return {"queued": self._admitted, "capacity": self.config.queue_size, "running": self._running,
                "explaining": self._explaining, "workers": len(self._threads),
                "images_per_second": round(self._rate, 2), **self.stats}

    def retry_after_s(self, backlog: int) -> int:
        rate = self._rate if self._rate > 0 else 1.0
        return int(min(60, max(1, math.ceil(backlog / rate))))

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.config.queue_size:
                self.stats["rejected"] += 1
                backlog = self._admitted
                raise Overloaded(
                    f"the server is busy ({backlog} images queued, the limit is {self.config.queue_size}); "
                    "try again shortly", self.retry_after_s(backlog))
            self._admitted += 1

    def _release(self, _future: Any = None) -> None:
        with self._lock:
            self._admitted -= 1

    # --- locating ------------------------------------------------------------------------------------
    async def locate(self, data: bytes, name: str, top_k: int, keep_image: bool = False) -> tuple[Any, Decoded]:
        """(Prediction, Decoded upload) for one uploaded image; RequestError for anything refused.

        ``keep_image``: keep the full decoded image in ``Decoded.image`` (else it is dropped as soon as the
        encoder's input crop is made, so a full queue holds small crops, not full-size pictures)."""
        self._admit()
        job = _Job(data, name, top_k, keep_image=keep_image)
        job.future.add_done_callback(self._release)
        try:
            self._decoder.submit(self._decode_and_queue, job)
        except RuntimeError:  # the pool is closing
            job.future.set_exception(RequestError(503, "the server is shutting down"))
        try:
            pred = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)),
                                          timeout=self.config.request_timeout_s)
        except TimeoutError:
            job.abandoned = True
            self.stats["timed_out"] += 1
            raise RequestError(504, f"{name}: no answer within {self.config.request_timeout_s:g} s (the server is "
                                    "busy or the image is slow to process); try again later") from None
        assert job.decoded is not None
        return pred, job.decoded

    def _decode_and_queue(self, job: _Job) -> None:
        try:
            if job.abandoned:
                raise RequestError(504, f"{job.name}: abandoned before decoding")
            job.decoded = decode_upload(job.data or b"", job.name, self.config.max_upload_bytes, self.config.max_pixels,
                                        transform=self._transform)
            job.data = None  # the decoded image is all that is kept
            if self._transform is not None and not job.keep_image:
                job.decoded.image = None
        except BaseException as exc:  # noqa: BLE001 - every outcome must resolve the future
            job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            return
        self._queue.put(job)

    def _work(self) -> None:
        cfg = self.config
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            deadline = time.monotonic() + cfg.batch_wait_ms / 1000.0
            stop = False
            while len(batch) < cfg.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    # wait a little only while more admitted images are on their way (decoding)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._admitted - self._running <= len(batch):
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            live = []
            for j in batch:
                if j.abandoned:
                    j.future.set_exception(RequestError(504, f"{j.name}: abandoned before the model ran"))
                else:
                    live.append(j)
            if live:
                self._run_batch(live)
            if stop:
                return

    def _embed(self, decoded: list[Decoded]) -> np.ndarray:
        if self._transform is not None:
            return self.encoder.encode_pixels(self._transform.normalize(np.stack([d.pixels for d in decoded])))
        return self.encoder.encode_images([d.image for d in decoded], batch_size=len(decoded))

    def _predict(self, jobs: list[_Job], emb: np.ndarray) -> None:
        by_k: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_k.setdefault(j.top_k, []).append(i)
        decoded = [j.decoded for j in jobs if j.decoded is not None]
        assert len(decoded) == len(jobs)  # a job is queued only once decoded
        for k, idx in by_k.items():
            ds = [decoded[i] for i in idx]
            preds = self.geo.locate_embeddings(emb[idx], top_k=k, sources=[d.name for d in ds],
                                               exif=[d.exif for d in ds])
            for i, pred in zip(idx, preds):
                pred.extra["upload"] = dict(decoded[i].info)
                jobs[i].future.set_result(pred)

    def _run_batch(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        with self._lock:
            self._running += len(jobs)
        try:
            try:
                self._predict(jobs, self._embed([j.decoded for j in jobs if j.decoded is not None]))
            except Exception as exc:  # noqa: BLE001 - isolate the image that broke the batch
                if len(jobs) == 1:
                    self.stats["failed"] += 1
                    log.exception("inference failed for %s", jobs[0].name)
                    jobs[0].future.set_exception(
                        exc if isinstance(exc, GeoscopeError) else
                        RequestError(500, f"{jobs[0].name}: the model failed on this image ({type(exc).__name__}: {exc})"))
                else:
                    for j in jobs:
                        if not j.future.done():
                            self._run_batch([j])
                return
        finally:
            with self._lock:
                self._running -= len(jobs)
        dt = max(time.perf_counter() - t0, 1e-6)
        self.stats["batches"] += 1
        self.stats["images"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        rate = len(jobs) / dt
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate

    # --- slow jobs -----------------------------------------------------------------------------------
    async def run_slow(self, fn: Callable[..., Any], *args: Any, what: str = "the explanation") -> Any:
        """Run ``fn(*args)`` on the explanation thread: bounded (429 beyond ``explain_queue``) and timed (504)."""
        with self._lock:
            if self._explaining >= self.config.explain_queue:
                self.stats["rejected"] += 1
                raise Overloaded(f"the server is busy with {self._explaining} explanations; try again shortly",
                                 int(min(60, self.config.explain_timeout_s)))
            self._explaining += 1
        future = self._explainer.submit(fn, *args)

        def done(_f: Any) -> None:
            with self._lock:
                self._explaining -= 1

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          timeout=self.config.explain_timeout_s)
        except TimeoutError:
            future.cancel()
            raise RequestError(504, f"{what} did not finish within {self.config.explain_timeout_s:g} s") from None

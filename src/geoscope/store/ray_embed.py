"""``embed_dataset_ray``: embed a dataset on Ray, one shard per actor (``geoscope embed ... --ray``).

The pipeline is Ray Data's batch inference::

    dataset rows (the samples no shard holds yet)
      -> map_batches(_decode_batch)        tasks: read + decode + resize/crop to uint8, errors kept per sample
      -> map_batches(_EmbedActor)          an actor pool, one model per actor (CPU threads or a GPU);
                                           each actor commits every batch to its own shard before returning
      -> the driver                        counts what came back (the progress bar); writes nothing itself

Fault tolerance comes from the store, not from Ray's bookkeeping: a batch is on disk once its shard's
journal lists it. Ray restarts a killed actor (it opens a new shard) and retries its batches; a batch
the dead actor had already committed is then written twice, and ``finish_store`` keeps the first copy.
An interrupted driver leaves the shards resumable: the same command reads their journals, embeds only
the samples none lists, and finishes the store.

Without an address a small local Ray instance is started (``num_cpus`` from the workers and the cores
left for decoding, no dashboard) and shut down at the end; with ``address`` the job joins that
cluster, whose every node must see the dataset and the store at the same paths (checked first, on
each node). If Ray is already initialised in this process, that instance is used as it is.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from geoscope.data.dataset import Dataset, open_dataset
from geoscope.data.samples import GeoSample, load_sample_image, split_source
from geoscope.encoders import create_encoder
from geoscope.errors import InputError
from geoscope.optional import require
from geoscope.store.decode import reason_text, scalar_extra
from geoscope.store.embed import prepare_store
from geoscope.store.layout import new_shard_name
from geoscope.store.lock import StoreLock
from geoscope.store.reader import EmbeddingStore
from geoscope.store.shard import ShardWriter, done_positions, finish_store, sample_record

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # an unreachable cluster address fails within this
PROBE_TIMEOUT_S = 300.0  # a node's first worker may need to import numpy/PIL on a busy machine
_PROBE_FILES = 8
DECODE_MEMORY = 256 * 2**20  # bytes a decoding task reserves: a few full-size photos at once, and their crops


# --------------------------------------------------------------------------- the samples to do


def _as_dataset(dataset, progress: bool = True) -> Dataset:
    if isinstance(dataset, (str, os.PathLike)):
        return open_dataset(dataset, progress=progress)
    if isinstance(dataset, Dataset):
        return dataset
    samples = list(dataset)
    if all(isinstance(s, GeoSample) for s in samples):
        return Dataset.from_samples(samples)
    raise InputError(
        "embedding on Ray needs a dataset of image files (a folder, a manifest, WebDataset shards or GeoSamples); "
        "embed in-memory images without --ray"
    )


def _todo_table(ds: Dataset, done: dict[int, str], where: Path) -> pd.DataFrame:
    """One row per sample no shard has finished: pos, id, source, lat, lon, offset, size, extra (JSON)."""
    rows: list[tuple] = []
    seen: dict[str, int] = {}
    count = 0
    for pos, s in enumerate(ds):
        count += 1
        sid = str(s.id)
        if sid in seen:
            raise InputError(f"sample id {sid!r} appears twice (samples {seen[sid]} and {pos}); ids must be unique")
        seen[sid] = pos
        logged = done.get(pos)
        if logged is not None:
            if logged != sid:
                raise InputError(
                    f"{where} was started on different data (sample {pos} is {sid!r} here, {logged!r} in the "
                    "store): use another output directory or pass --overwrite"
                )
            continue
        extra = scalar_extra(s.extra)
        rows.append((pos, sid, str(s.source), math.nan if s.lat is None else float(s.lat),
                     math.nan if s.lon is None else float(s.lon), -1 if s.offset is None else int(s.offset),
                     -1 if s.size is None else int(s.size), json.dumps(extra) if extra else ""))
    stale = [p for p in done if p >= count]
    if stale:
        raise InputError(
            f"{where} was started on a larger dataset (it lists sample {max(stale)}, this one has {count}): "
            "use another output directory or pass --overwrite"
        )
    table = pd.DataFrame(rows, columns=["pos", "id", "source", "lat", "lon", "offset", "size", "extra"])
    return table.astype({"pos": "int64", "lat": "float64", "lon": "float64", "offset": "int64", "size": "int64"})


# --------------------------------------------------------------------------- what runs on the workers


def _decode_batch(batch: dict[str, np.ndarray], transform) -> dict[str, Any]:
    """Ray task: read, decode, resize and crop each sample; ``ok`` False and a ``reason`` where it failed."""
    n = len(batch["pos"])
    h, w = transform.crop
    pixels = np.zeros((n, h, w, 3), np.uint8)
    ok = np.zeros(n, bool)
    reasons = [""] * n
    for i in range(n):
        offset, size = int(batch["offset"][i]), int(batch["size"][i])
        sample = GeoSample(str(batch["id"][i]), str(batch["source"][i]),
                           offset=None if offset < 0 else offset, size=None if size < 0 else size)
        try:
            pixels[i] = transform.to_uint8(load_sample_image(sample))
            ok[i] = True
        except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, never fatal
            reasons[i] = reason_text(exc)
    return {**batch, "pixels": pixels, "ok": ok, "reason": np.array(reasons, dtype=object)}


def encoder_from_spec(spec: dict):
    """The encoder a ``{"name": NAME, **options}`` spec describes (``create_encoder(NAME, **options)``;
    the name is positional-only there, so it cannot be passed as a keyword)."""
    options = dict(spec)
    if "name" not in options:
        raise InputError(f"an encoder spec needs a 'name' (a registered encoder, hf-hub:ORG/NAME or a folder), got {spec!r}")
    return create_encoder(options.pop("name"), **options)


class _EmbedActor:
    """Ray actor: one model; writes every batch it embeds to its own shard, then returns (pos, ok)."""

    def __init__(self, out: str, encoder_box: list, threads: int, device: str | None, shard_rows: int):
        import ray
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        encoder = encoder_box[0]
        if isinstance(encoder, ray.ObjectRef):
            encoder = ray.get(encoder)
        if isinstance(encoder, dict):  # a name and options: built here, from this node's weights
            encoder = encoder_from_spec(encoder)
        if device:
            encoder = encoder.to(device)
        self.encoder = encoder.eval()
        self.out, self.shard_rows = Path(out), shard_rows
        self.writer: ShardWriter | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        enc = self.encoder
        ok = np.asarray(batch["ok"], dtype=bool)
        emb = enc.encode_pixels(enc.transform.normalize(np.asarray(batch["pixels"])[ok])) if ok.any() else None
        if self.writer is not None and self.writer.journal.n_rows >= self.shard_rows:
            self.writer.close()  # full: the next batch starts a new shard
            self.writer = None
        if self.writer is None:  # a shard exists once there is something to put in it
            self.writer = ShardWriter(self.out, new_shard_name(), enc.name, enc.dim, capacity=min(self.shard_rows, 4096))
        samples = [sample_record(int(p), str(i), float(a), float(o), str(s), json.loads(x) if x else None)
                   for p, i, a, o, s, x in zip(batch["pos"], batch["id"], batch["lat"], batch["lon"],
                                               batch["source"], batch["extra"])]
        reasons = [None if k else str(r) for k, r in zip(ok, batch["reason"])]
        self.writer.commit(samples, reasons, emb)
        return {"pos": np.asarray(batch["pos"], dtype=np.int64), "ok": ok}


def _probe(paths: list[str], out: str) -> tuple[str, list[bool], bool]:
    """Ray task: which of ``paths`` this node can see, and whether it can write to ``out``."""
    return socket.gethostname(), [os.path.exists(p) for p in paths], os.access(out, os.W_OK)


# --------------------------------------------------------------------------- the cluster


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address, None for Ray's symbolic ones ("auto", "local")."""
    rest = address.strip().split("://", 1)[-1].rstrip("/")
    if rest in ("auto", "local", ""):
        return None
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, naming ``address``, when nothing answers there."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as exc:
        why = f"no answer within {timeout:.0f} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({why}): check the address and that the cluster is "
            "running (`ray status` on its head node)"
        ) from None


def local_num_cpus(workers: int) -> int:
    """CPUs a local instance announces: one per actor, and the cores left (at least one) for decoding."""
    return workers + max(1, (os.cpu_count() or 1) - workers)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the length of the block: the instance this process already has, the cluster at
    ``address``, or a new local instance with ``num_cpus`` (shut down at the end)."""
    ray = require("ray")
    if ray.is_initialized():
        yield ray
        return
    verbose = logger.isEnabledFor(logging.DEBUG)
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=verbose,
                                  logging_level=logging.INFO if verbose else logging.WARNING)
    if address:
        check_reachable(address)
        kwargs["address"] = address
    else:
        kwargs.update(address="local", num_cpus=num_cpus)
    start = time.perf_counter()
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(f"could not start {where}: {' '.join(str(exc).split())[:300]}") from None
    logger.info("Ray ready in %.1f s: %s", time.perf_counter() - start, ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()


def check_visible(ray, table: pd.DataFrame, out: Path) -> None:
    """On every alive node: can its workers see the dataset's files and write to the store?"""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sources = table["source"].drop_duplicates()
    step = max(1, len(sources) // _PROBE_FILES)
    paths = [split_source(s)[0] for s in sources.iloc[::step].head(_PROBE_FILES)]
    probe = ray.remote(num_cpus=0)(_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths, str(out))
            for n in nodes] or [probe.remote(paths, str(out))]
    for node, seen, writable in ray.get(refs, timeout=PROBE_TIMEOUT_S):
        if paths and not any(seen):
            raise InputError(
                f"the Ray workers on {node} cannot read the dataset's images (none of {len(paths)} sampled files, "
                f"e.g. {paths[0]}, exists there): put the dataset on storage every node mounts at the same path"
            )
        if not writable:
            raise InputError(
                f"the Ray workers on {node} cannot write to the store {out}: put it on storage every node mounts "
                "at the same path"
            )


def _quiet_ray_data(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours covers the whole job
    ctx.print_on_execution_start = False
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled": ours is on


# --------------------------------------------------------------------------- the job


def default_ray_workers(ray, local: bool, gpus_per_worker: float) -> int:
    """Embedding actors: one per GPU share when GPUs are asked for, else half the (local) cores."""
    if gpus_per_worker > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_worker))
    cpus = (os.cpu_count() or 1) if local else int(ray.cluster_resources().get("CPU", 1))
    return max(1, cpus // 2)


def embed_dataset_ray(
    dataset,
    encoder,
    out_dir: str | os.PathLike,
    batch_size: int = 32,
    workers: int | None = None,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    progress: bool = True,
    overwrite: bool = False,
    shard_rows: int = 1_000_000,
    on_batch: Callable[[int], None] | None = None,
) -> EmbeddingStore:
    """Embed every image of ``dataset`` with ``encoder`` into the store ``out_dir`` on Ray; resumable.

    ``dataset``: what ``open_dataset`` opens, a ``Dataset``, or GeoSamples of image files. ``encoder``:
    an ``Encoder`` (sent to the actors through Ray's object store) or a name for ``create_encoder``.
    ``workers``: embedding actors (default: one per GPU share with ``gpus_per_worker``, else half the
    cores). ``address``: a running cluster (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``); default: a
    local instance. ``cpus_per_worker``: CPUs each actor reserves on a cluster (its torch threads).
    ``shard_rows``: an actor starts a new shard once its shard holds this many rows (a 1280-d shard of a
    million rows is 2.4 GiB). ``on_batch(n)``: called in this process each time a batch of ``n`` samples is committed.
    Unreadable images are listed in ``errors.csv``; a store another job is writing is refused.
    """
    ray = require("ray")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1 with Ray, got {workers}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0 or shard_rows < 1:
        raise InputError("gpus_per_worker must be at least 0, cpus_per_worker more than 0 and shard_rows at least 1")
    if address:
        check_reachable(address)  # a wrong address fails within seconds, before anything is opened
    if isinstance(encoder, (str, os.PathLike)):
        encoder = create_encoder(str(encoder))
    out = Path(out_dir).absolute()  # the workers resolve it, not this process's working directory
    ds = _as_dataset(dataset, progress)
    out.mkdir(parents=True, exist_ok=True)
    with StoreLock(out):
        existing = prepare_store(out, encoder, overwrite, total=len(ds))
        if existing is not None:
            return existing
        done = done_positions(out, encoder.name, encoder.dim)
        if done:
            logger.info("resuming %s: %d samples already done", out, len(done))
        table = _todo_table(ds, done, out)
        if len(table):
            local = not address and not ray.is_initialized()
            n_workers = workers or max(1, (os.cpu_count() or 1) // 2)
            with ray_session(address, num_cpus=local_num_cpus(n_workers) if local else None) as ray:
                if workers is None and not local:
                    n_workers = default_ray_workers(ray, local, gpus_per_worker)
                _run(ray, table, encoder, out, batch_size, n_workers, local, gpus_per_worker, cpus_per_worker,
                     progress, total=len(ds), initial=len(done), shard_rows=shard_rows, on_batch=on_batch)
        finish_store(out, encoder.name, encoder.dim, preprocessing=encoder.transform.to_dict())
    return EmbeddingStore.open(out)


def _run(ray, table: pd.DataFrame, encoder, out: Path, batch_size: int, workers: int, local: bool,
         gpus_per_worker: float, cpus_per_worker: float, progress: bool, total: int, initial: int,
         shard_rows: int = 1_000_000, on_batch: Callable[[int], None] | None = None) -> None:
    have_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_worker and have_gpus < gpus_per_worker:
        raise InputError(f"{gpus_per_worker:g} GPU per worker was asked for but the Ray cluster has {have_gpus:g} GPUs")
    check_visible(ray, table, out)
    _quiet_ray_data(ray)
    if gpus_per_worker:
        threads, device = 1, "cuda"
    elif local:
        threads, device = max(1, (os.cpu_count() or 1) // workers), None
    else:
        threads, device = max(1, int(cpus_per_worker)), None
    on_cpu = encoder if encoder.device.type == "cpu" else copy.deepcopy(encoder).cpu()  # the caller's stays put
    box = [ray.put(on_cpu)]
    rows_per_block = max(batch_size, min(64 * batch_size, -(-len(table) // (4 * workers))))
    rows_per_block = -(-rows_per_block // batch_size) * batch_size
    blocks = [table.iloc[s: s + rows_per_block] for s in range(0, len(table), rows_per_block)]
    data = ray.data.from_pandas(blocks)
    # Decoding tasks reserve the memory a batch of full-size photos needs while decoding; as their resources
    # differ from the actors', Ray Data also keeps them apart instead of fusing decoding into the actors,
    # where it would wait for the model instead of running beside it.
    decoded = data.map_batches(_decode_batch, fn_kwargs={"transform": encoder.transform}, batch_size=batch_size,
                               batch_format="numpy", num_cpus=1, memory=DECODE_MEMORY)
    embedded = decoded.map_batches(
        _EmbedActor, fn_constructor_kwargs={"out": str(out), "encoder_box": box, "threads": threads, "device": device,
                                            "shard_rows": shard_rows},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1 if local else cpus_per_worker, num_gpus=gpus_per_worker or None,
    )
    bar = tqdm(total=total, initial=initial, unit="img", desc=f"embed {encoder.name} on Ray ({workers} workers)",
               disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
    try:
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(len(batch["pos"]))
            if on_batch is not None:
                on_batch(len(batch["pos"]))
    finally:
        bar.close()

"""Train a head over an embedding store: ``geoscope train --store S --head KIND --cells C -o MODEL``.

Training reads the store, never images, and streams it: an epoch is a seeded permutation cut into
large batches (no DataLoader), each batch read as float32 from the store's memory-mapped float16
shards when it is needed (``heads.rows.EmbeddingRows``), so memory holds one batch, not the store; the
heads fit what they take from the whole training set (standardisation, a neighbour bank) in chunks.
With ``ray=`` the epochs run data-parallel on Ray Train (``train_ray``), each worker reading its share
of every batch; the model folder and checkpoint are the same. A validation split (seeded) gives the
median error after each epoch; training stops early when it has not improved for ``patience``
epochs. After every epoch a checkpoint (weights, optimiser, history, best weights so far) is written
atomically to ``MODEL.train/checkpoint.pt``, beside the model folder rather than in it, so what
users ship is the model alone; running the same command again resumes from it (a ``checkpoint.pt``
inside ``MODEL/`` from older versions is moved there and resumed). At the end the best weights are
kept, the head takes its inference data (neighbour bank, gallery), and ``MODEL/`` receives the
Geolocator (``save_pretrained``), ``metrics.jsonl`` (one line per epoch) and ``report.json`` /
``report.txt`` (the final evaluation on the validation split).

What differs between heads is asked of the head class (``heads.base.Head``): ``needs_cells``,
``uses_scene_labels``, ``default_lr``, ``trainable``; nothing here names a head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from geoscope.atomic import write_json, write_text, write_torch
from geoscope.calibration import (
    Calibration,
    MixtureBatch,
    cell_spread_km,
    collect_mixtures,
    fit_calibration,
    format_reliability,
)
from geoscope.errors import InputError
from geoscope.geo.cells import as_hierarchy, load_cells
from geoscope.geo.metrics import evaluate, format_report
from geoscope.geo.sphere import spherical_mean, validate_latlon
from geoscope.geolocator import Geolocator
from geoscope.heads import create_head, head_class, list_heads
from geoscope.heads.base import Targets, load_head_state
from geoscope.heads.rows import EmbeddingRows, as_rows, chunk_rows
from geoscope.store import EmbeddingStore

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
#: suffix of the folder beside ``MODEL`` that holds the training state (``MODEL.train/checkpoint.pt``)
TRAIN_STATE_SUFFIX = ".train"


def training_state_dir(model_dir: str | os.PathLike) -> Path:
    """The folder beside ``model_dir`` that keeps its training state: ``<parent>/<name>.train``."""
    model = Path(model_dir).expanduser().absolute()
    if not model.name:
        raise InputError(f"cannot keep training state beside {model_dir}: give the model folder a name")
    return model.with_name(model.name + TRAIN_STATE_SUFFIX)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 4096
    lr: float | None = None
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int = 5
    seed: int = 0
    min_epochs: int = 1

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    head: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    best_epoch: int = -1
    stopped_early: bool = False
    #: the peak learning rate used (the config's, or the head class's ``default_lr``)
    lr: float = float("nan")
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None


def split_indices(n: int, val_fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train / validation split of ``n`` rows (at least one row each when n >= 2).

    ``groups`` (n,): rows with the same value go to the same side (several views of one place), so the
    validation split measures places the model has not seen; without groups, or when every group has
    one row, the split is the plain seeded permutation.
    """
    if n < 2:
        raise InputError(f"training needs at least 2 samples with coordinates, the store has {n}")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    if groups is not None:
        _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        if len(counts) >= 2 and counts.max() > 1:
            order = np.random.default_rng(seed).permutation(len(counts))
            taken = np.cumsum(counts[order])
            k = int(np.clip(np.searchsorted(taken, n_val) + 1, 1, len(counts) - 1))  # whole groups, >= n_val rows
            val = np.isin(inverse.ravel(), order[:k])
            return np.flatnonzero(~val), np.flatnonzero(val)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def location_groups(lat, lon, decimals: int = 4) -> np.ndarray:
    """A group id per row: rows whose coordinates agree to ``decimals`` degrees (about 10 m) share one."""
    key = np.round(np.stack([np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)], 1), decimals)
    return np.unique(key, axis=0, return_inverse=True)[1].ravel()


def calibrate_head(head, cells, emb, lat, lon, train_lat=None, train_lon=None, chunk: int = 1024,
                   max_images: int = 20000, seed: int = 0, cell_spread=None) -> Calibration:
    """Fit the model's ``Calibration`` on held-out embeddings ``emb`` with true ``lat`` / ``lon``
    (``geoscope.calibration.fit_calibration``). ``train_lat`` / ``train_lon``: the training locations,
    whose spread in each cell sets the cells' kernel width (or ``cell_spread``, per finest cell, as a saved
    calibration records it, to refit a trained model's calibration). At most ``max_images`` are used (a seeded
    sample). Raises ``InputError`` for a head without a distribution (a single point estimate with
    fewer than 10 held-out images is the other case)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    pick = np.sort(np.random.default_rng(seed).choice(len(emb), max_images, replace=False)) \
        if len(emb) > max_images else None
    if isinstance(emb, EmbeddingRows):  # only the sampled rows are read
        emb = emb.read(pick).numpy()
    else:
        emb = emb.numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, dtype=np.float32)
        emb = emb if pick is None else emb[pick]
    if pick is not None:
        lat, lon = lat[pick], lon[pick]
    geo = Geolocator(None, head, cells, places=False)  # uncalibrated: the head's own distribution
    finest = geo.finest_cells
    parts = []
    for s in range(0, len(emb), chunk):
        dist = geo.distribution(emb[s : s + chunk], top_k=1)
        true_cell = None if finest is None else finest.assign(lat[s : s + chunk], lon[s : s + chunk], nearest=True)
        parts.append(collect_mixtures(dist.head_output, dist.coords[:, 0], lat[s : s + chunk], lon[s : s + chunk],
                                      true_cell))
    spread = None if cell_spread is None else np.asarray(cell_spread, dtype=np.float64)
    if spread is None and finest is not None and train_lat is not None and bool(getattr(head, "n_cells", 0)):
        tl, tn = np.asarray(train_lat, dtype=np.float64), np.asarray(train_lon, dtype=np.float64)
        spread = cell_spread_km(finest.centroids, tl, tn, finest.assign(tl, tn, nearest=True))
    return fit_calibration(MixtureBatch.concat(parts), spread)


def make_targets(lat, lon, cells=None, scene=None) -> Targets:
    """Targets from coordinates, a ``CellHierarchy`` (cell ids per level) and optional scene ids."""
    lat, lon = validate_latlon(lat, lon, "training coordinates")
    levels = [] if cells is None else as_hierarchy(cells).levels
    ids = [torch.from_numpy(np.asarray(g.assign(lat, lon), dtype=np.int64)) for g in levels]
    return Targets(
        torch.from_numpy(lat).float(),
        torch.from_numpy(lon).float(),
        ids,
        None if scene is None else torch.as_tensor(np.asarray(scene, dtype=np.int64)),
    )


def predict_coords(head, emb, chunk: int = 8192) -> np.ndarray:
    """Top-1 (lat, lon) for every embedding (a tensor, or an ``EmbeddingRows`` read a chunk at a time)."""
    if isinstance(emb, EmbeddingRows):
        out = [head.predict(part, top_k=1).coords[:, 0] for part in emb.chunks(min(chunk, chunk_rows(emb.dim)))]
    else:
        out = [head.predict(emb[i : i + chunk], top_k=1).coords[:, 0] for i in range(0, len(emb), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 2))


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            p = p.numpy()
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def training_fingerprint(head, cfg: TrainConfig, targets: Targets, n: int, val_targets: Targets) -> str:
    """What a checkpoint must have been made with to be resumed: head, settings, data (not the worker count)."""
    return _fingerprint(head.config(), cfg.to_dict(), targets.lat[:4096], n, val_targets.lat[:4096])


def read_checkpoint(ckpt: Path, fingerprint: str) -> dict | None:
    """The training state in ``ckpt`` (None when there is none), refused when made by another run."""
    if not ckpt.exists():
        return None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a half-written or foreign file
        raise InputError(f"cannot read the training checkpoint {ckpt}: {exc}; delete it to start over") from None
    if state.get("fingerprint") != fingerprint:
        raise InputError(
            f"the checkpoint {ckpt} was made with another head, data or settings; "
            "delete it (geoscope train --no-resume) or write to another output directory"
        )
    return state


class LocalSync:
    """How ``run_epochs`` works with other processes training the same head: here, none (one process).

    A data-parallel run (``train_ray``) gives every worker an object with the same methods: ``rank`` /
    ``world`` (this worker, how many), ``reduce_grads(head)`` after each backward pass (sum the gradients
    of every worker), ``sum(tensor)`` (summed over the workers), ``agree(flag)`` (rank 0's decision, e.g.
    to stop early, for every worker).
    """

    rank, world = 0, 1

    def reduce_grads(self, head) -> None:
        pass

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def agree(self, flag: bool) -> bool:
        return flag


def fit_head(
    head,
    emb,
    targets: Targets,
    val_emb,
    val_targets: Targets,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    log=None,
    ray=None,
) -> TrainResult:
    """Train ``head`` on ``emb``/``targets``, early-stopping on the median error over the validation data.

    ``emb`` / ``val_emb``: (N, dim) tensors, or ``EmbeddingRows`` (e.g. rows of a store): batches are then
    read from the store's memory maps as they are needed, so no float32 copy of the training set is made.
    ``checkpoint``: a file written atomically after every epoch; if it exists (and was made by the
    same head, data and settings) training resumes from it. ``log(record)`` is called per epoch.
    ``ray``: a ``train_ray.RayTrainOptions`` to train data-parallel on Ray Train (the rows must then be
    rows of a store on storage every worker sees); the result, checkpoint and history are the same kind.
    """
    cfg = config or TrainConfig()
    lr = float(cfg.lr if cfg.lr is not None else getattr(head, "default_lr", 1e-3))
    emb, val_emb = as_rows(emb), as_rows(val_emb)
    if len(emb) == 0:
        raise InputError("no training samples")
    torch.manual_seed(cfg.seed)
    head.on_train_start(emb if getattr(head, "streaming", False) else emb.to_tensor(), targets)
    targets = head.prepare_targets(targets)
    if ray is not None:
        from geoscope.train_ray import fit_head_ray

        return fit_head_ray(head, emb, targets, val_emb, val_targets, cfg, lr, checkpoint, progress, log, ray)
    return run_epochs(head, emb, targets, val_emb, val_targets, cfg, lr, checkpoint, progress, log)


def run_epochs(
    head,
    emb: EmbeddingRows,
    targets: Targets,
    val_emb: EmbeddingRows,
    val_targets: Targets,
    cfg: TrainConfig,
    lr: float,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    log=None,
    sync=None,
) -> TrainResult:
    """The epochs of ``fit_head`` (after the head's ``on_train_start`` / ``prepare_targets``).

    Each step reads one batch of ``cfg.batch_size`` rows of a seeded permutation from ``emb``; with
    ``sync`` (a data-parallel worker, see ``LocalSync``) this worker reads and trains on its share of
    that batch, its loss weighted by the share, and the summed gradients are the ones one process would
    get on the whole batch. Rank 0 validates, logs and writes the checkpoint; the others follow its decisions.
    """
    sync = sync or LocalSync()
    main = sync.rank == 0
    n = len(emb)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, total_steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 5% of the peak
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fingerprint = training_fingerprint(head, cfg, targets, n, val_targets)

    history: list[dict] = []
    best_median, best_state, best_epoch, bad_epochs, start_epoch = math.inf, None, -1, 0, 0
    ckpt = Path(checkpoint) if checkpoint else None
    state = read_checkpoint(ckpt, fingerprint) if ckpt is not None else None
    if state is not None:
        load_head_state(head, state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        best_median, best_epoch, bad_epochs = state["best_median"], state["best_epoch"], state["bad_epochs"]
        best_state = state["best_head"]
        start_epoch = state["epoch"] + 1
        if state.get("finished"):
            start_epoch = cfg.epochs

    stopped_early = bool(history and history[-1].get("stopped_early"))
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        head.train()
        t0, c0 = time.perf_counter(), time.process_time()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 7919 + epoch + 104_729 * sync.rank)
        perm = torch.randperm(n, generator=gen)  # the same on every worker
        total, count = torch.zeros(2, dtype=torch.float64), 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and main), unit="batch")
        for step in bar:
            batch = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            idx = batch.tensor_split(sync.world)[sync.rank] if sync.world > 1 else batch
            optimizer.zero_grad(set_to_none=True)
            if len(idx):
                loss = head.loss(emb.read(idx), targets.take(idx))
                (loss * (len(idx) / len(batch)) if sync.world > 1 else loss).backward()
                total += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=torch.float64)
            sync.reduce_grads(head)
            optimizer.step()
            scheduler.step()
            count += len(batch)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        total = sync.sum(total)
        head.eval()
        if main:
            pred = predict_coords(head, val_emb)
            metrics = evaluate(pred[:, 0], pred[:, 1], val_targets.lat.numpy(), val_targets.lon.numpy())
            record = {
                "epoch": epoch + 1,
                "loss": float(total[0] / max(float(total[1]), 1.0)),
                "val_median_km": metrics["median_km"],
                "val_acc_25km": metrics["acc_25km"],
                "val_acc_750km": metrics["acc_750km"],
                "samples_per_s": count / max(train_s, 1e-9),
                "seconds": train_s,
                "cpu_seconds": train_cpu,
            }
            if sync.world > 1:
                record["workers"] = sync.world
            if metrics["median_km"] < best_median - 1e-9:
                best_median, best_epoch, bad_epochs = metrics["median_km"], epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            else:
                bad_epochs += 1
            stopped_early = bad_epochs >= cfg.patience and epoch + 1 >= cfg.min_epochs and epoch + 1 < cfg.epochs
            record["stopped_early"] = stopped_early
            history.append(record)
            if log is not None:
                log(record)
            if ckpt is not None:
                state = {
                    "fingerprint": fingerprint, "epoch": epoch, "head": head.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "history": json.dumps(history), "best_median": best_median, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs, "best_head": best_state,
                    "finished": stopped_early or epoch + 1 == cfg.epochs,
                }
                write_torch(ckpt, state)  # atomic; a full disk is a StorageError naming the file
        stopped_early = sync.agree(stopped_early)

    if best_state is not None:
        load_head_state(head, best_state)
    head.eval()
    return TrainResult(head, history, best_epoch=best_epoch, stopped_early=stopped_early, lr=lr)


# --- from a store ---------------------------------------------------------------------------------


def _open_store(store):
    if isinstance(store, (str, os.PathLike)):
        return EmbeddingStore.open(store)
    return store


def _scene_ids(store) -> tuple[np.ndarray | None, list[str]]:
    meta = getattr(store, "meta", None)
    if meta is None or "scene" not in meta.columns:
        return None, []
    ok = meta[meta["status"] == "ok"] if "status" in meta.columns else meta
    col = ok["scene"]
    known = col.notna() & (col.astype(str).str.len() > 0)
    labels = sorted(set(col[known].astype(str)))
    lookup = {v: i for i, v in enumerate(labels)}
    ids = np.where(known, col.astype(str).map(lambda v: lookup.get(v, -1)), -1).astype(np.int64)
    return (ids if labels else None), labels


def store_coords(store) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) float64 of a store's rows, refusing stores without coordinates."""
    lat = np.asarray(store.lat, dtype=np.float64) if store.lat is not None else None
    lon = np.asarray(store.lon, dtype=np.float64) if store.lon is not None else None
    where = getattr(store, "path", "the store")
    if lat is None or lon is None or len(lat) == 0 or np.all(np.isnan(lat)):
        raise InputError(f"{where} has no coordinates (lat/lon), so it cannot be used to train or evaluate")
    n = len(store.embeddings)
    if len(lat) != n:
        raise InputError(f"{where}: {n} embeddings but {len(lat)} coordinates")
    return lat, lon


def store_rows(store) -> EmbeddingRows:
    """Every row of a store as an ``EmbeddingRows``: read from its memory-mapped shards as needed."""
    return EmbeddingRows(store if hasattr(store, "read_rows") else store.embeddings)


def store_arrays(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings float32, lat, lon) of a store's rows, refusing stores without coordinates. This is the
    whole store in float32 memory; training streams instead (``store_rows``)."""
    lat, lon = store_coords(store)
    return np.asarray(store.embeddings, dtype=np.float32), lat, lon


def train_from_store(
    store,
    head_kind: str,
    out_dir: str | os.PathLike,
    cells=None,
    config: TrainConfig | None = None,
    head_options: dict | None = None,
    gallery=None,
    progress: bool = True,
    resume: bool = True,
    calibrate: bool = True,
    calibration_store=None,
    ray=None,
):
    """Train a head of ``head_kind`` on a store and save a Geolocator to ``out_dir``.

    ``cells``: a cells file or ``CellHierarchy`` (required by heads that ``needs_cells``; kept with
    the model otherwise). ``gallery``: (N, 2) coordinates for a head that ``uses_gallery`` (default:
    the training coordinates). The training state goes to ``training_state_dir(out_dir)``.
    The validation split keeps rows of one place together (``location_groups``); after training,
    ``calibrate`` fits the model's calibration on it (``calibrate_head``), saved with the model and
    reported in ``report.json`` (``calibration``) and ``report.txt``. ``calibration_store``: held-out
    data (a store of the same encoder, never trained on) to fit the calibration on instead, drawn like
    the images the model will meet; the validation split cannot stand for them when the training data
    are laid out differently (a grid of positions, land only) from the images to be located.
    Embeddings are read from the store's memory maps a batch at a time (never the whole store as
    float32). ``ray``: a ``train_ray.RayTrainOptions`` to run the epochs data-parallel on Ray Train; the
    model folder and the checkpoint are the same as a local run's.
    Returns ``(geolocator, TrainResult)``.
    """
    cls = head_class(head_kind)
    if not cls.trainable:
        raise InputError(f"the {head_kind} head is not trained; choose one of {', '.join(list_heads(trainable=True))}")
    cfg = config or TrainConfig()
    out = Path(out_dir)
    store = _open_store(store)
    lat, lon = store_coords(store)
    rows = store_rows(store)
    held_out = _calibration_rows(calibration_store, store, rows.dim) if calibrate and calibration_store is not None \
        else None  # checked before training, which can take hours
    keep = ~(np.isnan(lat) | np.isnan(lon))
    if keep.sum() < 2:
        raise InputError(f"{getattr(store, 'path', 'the store')} has fewer than 2 rows with coordinates")
    if isinstance(cells, (str, os.PathLike)):
        cells = load_cells(cells)
    if cells is None and cls.needs_cells:
        raise InputError(f"the {head_kind} head needs geocells: pass --cells CELLS (make them with `geoscope cells`)")
    scene, scene_labels = _scene_ids(store) if cls.uses_scene_labels else (None, [])
    if not keep.all():  # a view: nothing is read
        rows, lat, lon = rows.take(keep), lat[keep], lon[keep]
        scene = None if scene is None else scene[keep]
    targets = make_targets(lat, lon, cells, scene)
    if cells is not None and cls.needs_cells:
        outside = float((targets.cells[-1] < 0).float().mean())
        if outside > 0.5:
            raise InputError(
                f"{outside:.0%} of the training points lie outside the given cells; the cells do not cover this store"
            )
    train_idx, val_idx = split_indices(len(rows), cfg.val_fraction, cfg.seed, groups=location_groups(lat, lon))
    tr, va = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    train_rows, val_rows = rows.take(train_idx), rows.take(val_idx)
    options = dict(head_options or {})
    if scene_labels:
        options.setdefault("scene_labels", scene_labels)
    torch.manual_seed(cfg.seed)
    head = create_head(head_kind, rows.dim, cells, **options)
    if gallery is not None:
        if not cls.uses_gallery:
            raise InputError(f"the {head_kind} head searches no GPS gallery, so a gallery cannot be given to it")
        head.set_gallery(gallery)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = training_state_dir(out) / CHECKPOINT
    legacy = out / CHECKPOINT  # where versions before 0.2 kept it, inside the model folder
    if not resume:
        ckpt.unlink(missing_ok=True)
        legacy.unlink(missing_ok=True)
    elif legacy.is_file() and not ckpt.exists():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        os.replace(legacy, ckpt)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    lines: list[str] = []

    def log(record: dict) -> None:  # metrics.jsonl grows every epoch, so a run can be watched
        lines.append(json.dumps(record) + "\n")
        write_text(metrics_path, "".join(lines))
        if progress:
            tqdm.write(f"epoch {record['epoch']}: loss {record['loss']:.4f}, validation median "
                       f"{record['val_median_km']:,.1f} km, {record['samples_per_s']:,.0f} samples/s", file=sys.stderr)

    result = fit_head(
        head, train_rows, targets.take(tr), val_rows, targets.take(va), cfg, checkpoint=ckpt, progress=progress,
        log=log, ray=ray,
    )
    write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in result.history))
    head.fit_data(train_rows if getattr(head, "streaming", False) else train_rows.to_tensor(), targets.take(tr))
    pred = predict_coords(head, val_rows)
    report = evaluate(pred[:, 0], pred[:, 1], lat[val_idx], lon[val_idx])
    mean_lat, mean_lon = _training_mean(lat[train_idx], lon[train_idx])
    baseline = evaluate(np.full(len(val_idx), mean_lat), np.full(len(val_idx), mean_lon), lat[val_idx], lon[val_idx])
    calibration, cal_note = None, "not asked for"
    if calibrate:
        try:
            if held_out is not None:  # a calibration store was given (read before training)
                c_emb, c_lat, c_lon, where = held_out
            else:
                c_emb, c_lat, c_lon = val_rows, lat[val_idx], lon[val_idx]
                where = "the validation split"
            calibration = calibrate_head(head, cells if cls.needs_cells else None, c_emb, c_lat, c_lon,
                                         lat[train_idx], lon[train_idx], seed=cfg.seed)
            cal_note = f"fitted on {where}"
        except InputError as exc:  # a single point estimate, too few held-out images: say so, go on
            cal_note = f"not fitted: {exc}"
            logger.warning("calibration %s", cal_note)
    report = {
        "head": head_kind, "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "lr": result.lr,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
        "validation": report, "baseline_training_mean": baseline,
        "calibration": {"status": cal_note, **(calibration.report if calibration is not None else {})},
        "train_config": cfg.to_dict(),
    }
    result.report, result.train_idx, result.val_idx = report, train_idx, val_idx
    geo = Geolocator(getattr(store, "encoder", None), head, cells, name=out.name,
                     meta={"training": {k: v for k, v in report.items() if k != "train_config"}},
                     calibration=calibration)
    geo.save_pretrained(out)
    write_json(out / "report.json", report)
    text = format_report({head_kind: report["validation"], "training mean": baseline}) + "\n"
    if calibration is not None:
        cr = calibration.report
        text += (f"\ncalibration ({cal_note}, n={cr['n']}): temperature {cr['temperature']:.3f}, kernel "
                 f"{cr['point_sigma_km']:.1f} km around points, {cr['cell_sigma_scale']:.2f} x the cell spread "
                 f"around cell centroids; localizability AUROC "
                 f"{'n/a' if cr['localizability_auroc'] is None else format(cr['localizability_auroc'], '.3f')}\n"
                 "(measured on the split it was fitted on: optimistic; `geoscope eval` measures on other data)\n"
                 + format_reliability({"before (raw point masses)": cr["before"], "after": cr["after"]}) + "\n")
    else:
        text += f"\ncalibration: {cal_note}\n"
    write_text(out / "report.txt", text)
    return geo, result


def _calibration_rows(calibration_store, store, dim: int) -> tuple[EmbeddingRows, np.ndarray, np.ndarray, str]:
    """(embeddings as ``EmbeddingRows``, lat, lon, description) of a calibration store, refused when it cannot serve."""
    cal_store = _open_store(calibration_store)
    where = f"the calibration store {getattr(cal_store, 'path', calibration_store)}"
    if getattr(store, "encoder", None) and getattr(cal_store, "encoder", None) != store.encoder:
        raise InputError(f"{where} was embedded with {getattr(cal_store, 'encoder', None)!r} but the training store "
                         f"with {store.encoder!r}; embed the calibration images with the same encoder")
    c_lat, c_lon = store_coords(cal_store)
    c_rows = store_rows(cal_store)
    if c_rows.dim != dim:
        raise InputError(f"{where} holds {c_rows.dim}-d embeddings but the training store {dim}-d ones")
    ok = ~(np.isnan(c_lat) | np.isnan(c_lon))
    if ok.sum() < 10:
        raise InputError(f"{where} has {int(ok.sum())} rows with coordinates; a calibration needs at least 10")
    return c_rows.take(ok), c_lat[ok], c_lon[ok], where


def _training_mean(lat, lon) -> tuple[float, float]:
    try:
        return spherical_mean(lat, lon)
    except InputError:
        return float(np.mean(lat)), float(np.mean(lon))

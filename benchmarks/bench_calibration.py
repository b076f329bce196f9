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
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_result  # noqa: E402

RADII = (25, 200, 750, 2500)


def _bootstrap_ece(stated, hit, draws: int = 500, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of the ECE over tiles resampled with replacement."""
    from geoscope.calibration import reliability

    rng = np.random.default_rng(seed)
    n = len(stated)
    values = [reliability(stated[idx], hit[idx])["ece"] for idx in (rng.integers(0, n, n) for _ in range(draws))]
    return float(np.quantile(values, 0.05)), float(np.quantile(values, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="the demo's output folder (its cache is reused)")
    args = ap.parse_args()

    from geoscope.calibration import (
        auroc,
        ece_noise_floor,
        entropy_score,
        plot_reliability,
        reliability,
        reliability_at_radii,
        summarize,
    )
    from geoscope.demo import DemoConfig, is_land, run_demo
    from geoscope.geo.sphere import haversine_km
    from geoscope.geolocator import Geolocator
    from geoscope.heads.classifier import ClassifierHead
    from geoscope.heads.hybrid import HybridHead
    from geoscope.store import EmbeddingStore

    report = run_demo(DemoConfig(out=args.out, progress=False, n_heatmaps=0))
    geo = Geolocator.from_pretrained(report["model"], places=False)
    if geo.calibration is None or not geo.calibration.fitted:
        raise SystemExit(f"the demo model {report['model']} carries no calibration: it was trained by an older "
                         "geoscope; delete it and run the demo again")
    store = EmbeddingStore.open(report["stores"]["test"])
    emb = np.asarray(store.embeddings, dtype=np.float32)
    lat, lon = np.asarray(store.lat), np.asarray(store.lon)
    land = is_land(lat, lon)

    calibrated = geo.distribution(emb, top_k=5, radii_km=RADII)
    raw_geo = Geolocator(None, geo.head, geo.cells, places=False)
    raw = raw_geo.distribution(emb, top_k=5, radii_km=RADII)
    best = calibrated.coords[:, 0]
    err = haversine_km(best[:, 0], best[:, 1], lat, lon)
    assert np.allclose(raw.coords[:, 0], best), "calibration must not move the best guess"

    # what main showed: the hybrid's candidates with the classifier's probabilities, point masses
    out = calibrated.head_output
    if isinstance(geo.head, HybridHead):
        classifier = ClassifierHead.predict(geo.head, emb, top_k=1).cell_probs
        from geoscope.calibration import mixture_mass

        before_conf = mixture_mass(best, out.support, classifier, None, RADII)
        before_shown = np.take_along_axis(classifier, out.candidate_support, axis=1)
        before_loc = entropy_score(classifier)
        before_label = "before (main: classifier probabilities at the refined points)"
    else:
        before_conf, before_shown, before_loc = raw.confidence, raw.probs, raw.localizability
        before_label = "before (the head's raw probabilities)"

    versions = {
        before_label: (before_conf, before_shown, before_loc),
        "raw head distribution, uncalibrated": (raw.confidence, raw.probs, raw.localizability),
        "calibrated (fitted at training time)": (calibrated.confidence, calibrated.probs, calibrated.localizability),
    }
    placed = err <= 750
    in_best_cell = None
    if geo.cells is not None and calibrated.cells is not None:
        in_best_cell = geo.cells.finest.assign(lat, lon, nearest=True) == calibrated.cells[:, 0]

    rows, tables, summary = [], {}, {}
    for name, (conf, shown, loc) in versions.items():
        table = reliability_at_radii(conf, err, RADII)
        tables[name] = table
        sorted_share = float(np.mean(np.all(np.diff(shown, axis=1) <= 1e-12, axis=1)))
        a_all = auroc(loc, placed) if loc is not None else float("nan")
        a_conf = auroc(conf[:, RADII.index(750)], placed)
        cand = reliability(shown[:, 0], in_best_cell) if in_best_cell is not None else None
        summary[name] = {"reliability": summarize(table), "sorted_share": sorted_share,
                         "localizability_auroc": a_all, "p750_auroc": a_conf,
                         "best_candidate_cell": None if cand is None else
                         {k: cand[k] for k in ("mean_stated", "observed", "ece")}}
        for k, r in enumerate(RADII):
            t = table[str(r)]
            floor = ece_noise_floor(conf[:, k])
            lo, hi = _bootstrap_ece(conf[:, k], err <= r)
            summary[name]["reliability"][str(r)].update(ece_noise_floor=floor, ece_bootstrap_90=[lo, hi])
            rows.append([name, f"within {r} km of the best guess", f"{t['mean_stated']:.3f}", f"{t['observed']:.3f}",
                         f"{t['ece']:.3f} ({lo:.3f}-{hi:.3f})", f"{floor['mean']:.3f} ({floor['p90']:.3f})"])
        if cand is not None:
            floor = ece_noise_floor(shown[:, 0])
            rows.append([name, "truth in the best candidate's cell", f"{cand['mean_stated']:.3f}",
                         f"{cand['observed']:.3f}", f"{cand['ece']:.3f}", f"{floor['mean']:.3f} ({floor['p90']:.3f})"])
        rows.append([name, "candidates sorted by shown probability", f"{100 * sorted_share:.1f}% of images", "", "", ""])
        rows.append([name, "localizability AUROC, placed within 750 km", f"{a_all:.3f}", "", "", ""])

    RESULTS.mkdir(parents=True, exist_ok=True)
    names = list(versions)
    plot_reliability({names[0]: tables[names[0]]}, RESULTS / "calibration_before.png",
                     title=f"demo held-out tiles (n={len(err)}), before")
    plot_reliability({names[2]: tables[names[2]], names[1]: tables[names[1]]}, RESULTS / "calibration_after.png",
                     title=f"demo held-out tiles (n={len(err)}), after")
    cal = geo.calibration
    status = ((geo.meta.get("training") or {}).get("calibration") or {}).get("status", "")
    status = ("on the demo's calibration tiles: random positions, land and sea, cut and perturbed like the test tiles "
              "with another seed, never trained on" if "calibration store" in status else
              "on its validation split (whole training positions held out)")
    loc = calibrated.localizability
    per_subset = {s: auroc(loc[m], placed[m]) for s, m in (("land", land), ("sea", ~land)) if m.any()}
    (RESULTS / "calibration_details.json").write_text(json.dumps({
        "n": int(len(err)), "n_land": int(land.sum()), "n_sea": int((~land).sum()),
        "versions": summary, "calibration": cal.to_dict() | {"cell_spread_km": "(omitted)"},
        "localizability_auroc_within_subset": per_subset,
        "placed_within_750_share": {"land": float(placed[land].mean()), "sea": float(placed[~land].mean())
                                    if (~land).any() else None},
    }, indent=2) + "\n")
    notes = (
        f"The demo's {land.sum()} held-out land and {(~land).sum()} sea tiles together (`geoscope demo -o {args.out}`; "
        f"the model never saw these positions, nor any sea position). Stated = the mean probability the model gives "
        "to \"the truth lies within R of my best guess\"; observed = the share of tiles for which it does; ECE = "
        "expected calibration error over 10 equal bins of stated probability; the last column is the ECE that "
        "probabilities exactly as right as stated would still show on this many tiles (outcomes drawn from the stated "
        "probabilities 200 times), the floor any calibration is measured against here; the interval beside each ECE "
        "comes from resampling the tiles. The calibration was fitted "
        f"when the model was trained, {status} ({cal.report.get('n')} tiles): temperature {cal.temperature:.2f}, kernel "
        f"{cal.point_sigma_km:.0f} km around refined points and {cal.cell_sigma_scale:.2f} x each cell's spread of "
        f"training points around cell centroids, narrowed by exp(-{cal.weight_sharpening:.2f} x the component's "
        "weight). "
        "\"best candidate's cell\": the probability shown for the best candidate against the share of tiles "
        "whose truth lies in that cell. Localizability AUROC within land only "
        f"{per_subset.get('land', float('nan')):.3f}, sea only {per_subset.get('sea', float('nan')):.3f}. "
        "Details: benchmarks/results/calibration_details.json.\n\n"
        "Reliability diagrams (observed share against stated probability per bin; the diagonal is perfect):\n\n"
        "![before](benchmarks/results/calibration_before.png)\n\n"
        "![after](benchmarks/results/calibration_after.png)"
    )
    write_result("calibration", "Honest confidence: reliability on the demo's held-out tiles (land and sea)",
                 ["probabilities", "event", "stated", "observed", "ECE (90% bootstrap interval)",
                  "ECE of exactly right probabilities: mean (90th percentile)"], rows, notes)


if __name__ == "__main__":
    main()

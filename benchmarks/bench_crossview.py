"""Accuracy and time of the cross-view demo (`geoscope crossview demo`): shaded-relief queries at never-trained
positions and a random heading against Blue Marble reference tiles over land, the model against nearest
neighbour on frozen features and the oracle; training time and samples/s."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/crossview-demo")
    ap.add_argument("--train", type=int, default=None, help="lattice positions (default: the demo's)")
    ap.add_argument("--test", type=int, default=None, help="held-out queries (default: the demo's)")
    ap.add_argument("--near", type=int, default=None, help="extra training places (default: the demo's)")
    ap.add_argument("--verify-top-k", type=int, default=None, help="entries verified per query (default: the demo's)")
    ap.add_argument("--note", default="", help="a sentence added to the notes (e.g. the cold run's time)")
    args = ap.parse_args()

    from geoscope.crossview.demo import CrossViewDemoConfig, run_crossview_demo

    kw = {"out": args.out, "progress": False}
    if args.train:
        kw["n_train"] = args.train
    if args.test:
        kw["n_test"] = args.test
    if args.near is not None:
        kw["n_near"] = args.near
    if args.verify_top_k is not None:
        kw["verify_top_k"] = args.verify_top_k
    report = run_crossview_demo(CrossViewDemoConfig(**kw))
    keys = ["recall@1", "recall@5", "recall@10", "within_25km", "within_200km", "within_750km"]
    rows = [[name] + [f"{100 * r[k]:.1f}%" for k in keys] + [f"{r['median_km']:.0f}"]
            for name, r in report["results"].items()]
    tr = report["training"]
    kinds = "; ".join(f"{k} (n={v['n']}): verified model R@1 {100 * v['model']['recall@1']:.1f}%, median "
                      f"{v['model']['median_km']:.0f} km, global only R@1 {100 * v['global_only']['recall@1']:.1f}%, "
                      f"baseline {100 * v['baseline']['recall@1']:.1f}%" for k, v in report["by_kind"].items())
    ver = report.get("verifier") or {}
    fit = ver.get("fit") or {}
    verifier = (f" Verifier: the global model's top {ver['top_k']} entries aligned with the query over "
                f"{ver['config']['rotations']} headings and shifts up to "
                f"{(ver['config']['window_km'] - ver['config']['query_km']) / 2:g} km on dense per-pixel features at "
                f"{ver['config']['km_per_px']:g} km/px ({ver['config']['dim']} per pixel, hidden width "
                f"{ver['config']['hidden']}; a twin fitted on {fit['pairs']} pixel-aligned pairs outside "
                f"the guard, {fit['steps']} steps in {fit.get('precision', 'fp32')}, {fit['fit_s']:.0f} s, "
                f"loss {fit['loss_start']:.2f} -> "
                f"{fit['loss_end']:.2f}); re-ranked by global score + {ver['config']['weight']:g} x the alignment's "
                f"mean similarity, the query placed where the best alignment puts it; recall@1 counts the reference "
                f"tile nearest that position first." if fit else "")
    cfg = report["config"]
    notes = (
        f"{report['gallery_size']} Blue Marble reference tiles ({cfg['size_km']:g} km, {cfg['pixels']} px) on a land "
        f"lattice (also training positions, query tiles jittered up to {cfg['jitter_km']:g} km) plus "
        f"{cfg['n_near']} extra training places at random land positions, each paired with its nearest reference tile; "
        f"no trained query tile within {report['guard_km']:g} km of a held-out query "
        f"({report['gallery_only_pairs']} lattice pairs only give their reference to the gallery); "
        f"{report['n_queries']} shaded-relief queries at random land positions, random heading, {cfg['rotations']} "
        f"rotations pooled. {kinds}.{verifier} Training: {tr['train_pairs']} pairs x {cfg['views']} view(s), best epoch "
        f"{tr['best_epoch']}, fit {tr['fit_s']:.0f} s at {tr['fit_samples_per_s']:.0f} pairs/s (frozen features); "
        f"embedding the pairs {tr['embed_s']:.0f} s. Whole run {report['total_s']:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["timings_s"].items())
        + f". Load average at start / end {report['load_average']['start']} / {report['load_average']['end']} on "
        f"{report['load_average']['cpus']} cores (a shared machine: times are not the method's)."
        + (f" Same-place classifier on held-out pairs (true vs shuffled, 1:1): accuracy "
           f"{100 * tr['same_place_calibration']['accuracy']:.1f}%, ECE {tr['same_place_calibration']['ece_after']:.3f}."
           if (tr.get("same_place_calibration") or {}).get("status") == "fitted" else "")
        + (" " + args.note if args.note else "")
    )
    write_result("crossview", "Cross-view demo: shaded relief vs Blue Marble, unseen positions, unknown heading",
                 ["method", "R@1", "R@5", "R@10", "<25 km", "<200 km", "<750 km", "median km"], rows, notes)


if __name__ == "__main__":
    main()

"""geoscope eval: score predictions against the truth, or evaluate a model on a dataset.

Two modes, mutually exclusive:

* geoscope eval --pred-file P.csv --truth-file T.csv compares two tables of id,lat,lon (CSV or
  Parquet), matched by id. Ids found in only one table are reported (and --strict makes them an error).
* geoscope eval -m MODEL --dataset DATASET runs geoscope.evaluate.evaluate_model.
"""

from __future__ import annotations

import sys

from geoscope.cli._common import emit
from geoscope.cli.options import (
    add_batch_size,
    add_json,
    add_model,
    add_no_progress,
    deprecate,
    km_list,
    positive_int,
)

_SHOW_IDS = 5


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="accuracy at 1/25/200/750/2500 km, median error, GeoScore and calibration",
        description="Score predictions against the truth, or evaluate a model on a dataset. A model is also "
        "checked for calibration: at 25, 200, 750 and 2500 km, the probability it states that the truth lies within "
        "that distance of its best guess against the share of images for which it does (binned, with the expected "
        "calibration error), and the AUROC of its localizability score for images placed within 750 km.",
        epilog="Use either --pred-file and --truth-file, or --model and --dataset.")
    files = p.add_argument_group("scoring predictions")
    files.add_argument("--pred-file", metavar="CSV", help="predictions: a CSV or Parquet table with id, lat, lon")
    files.add_argument("--truth-file", metavar="CSV", help="true locations: a CSV or Parquet table with id, lat, lon")
    files.add_argument("--id-col", default="id", metavar="NAME", help="id column in both tables")
    files.add_argument("--lat-col", default="lat", metavar="NAME", help="latitude column in both tables")
    files.add_argument("--lon-col", default="lon", metavar="NAME", help="longitude column in both tables")
    files.add_argument("--strict", action="store_true", help="ids found in only one table are an error")
    model = p.add_argument_group("evaluating a model")
    add_model(model)
    model.add_argument("--dataset", metavar="DATASET",
                       help="folder of images, manifest, WebDataset shards, or an embedding store")
    model.add_argument("--limit", type=positive_int, default=None, metavar="N",
                       help="evaluate at most this many images (default: all)")
    add_batch_size(model, default=None, help="images per batch (default: the evaluator's choice)")
    add_no_progress(model)
    p.add_argument("--at-km", type=km_list, default=None, metavar="KM,KM,...",
                   help="accuracy thresholds in km (default: 1,25,200,750,2500)")
    p.add_argument("--places", action="store_true",
                   help="also country / region / city accuracy (reverse geocoding; slower)")
    p.add_argument("--plot", metavar="FILE.png", help="write a cumulative-error plot")
    model.add_argument("--reliability-plot", metavar="FILE.png",
                       help="write reliability diagrams: stated probability within 25/200/750/2500 km of the best "
                            "guess against the observed share")
    add_json(p)
    p.set_defaults(func=_run, parser=p)
    deprecate(p, "--pred", "--pred-file")
    deprecate(p, "--truth", "--truth-file")
    deprecate(p, "--thresholds", "--at-km")


def _run(args) -> int:
    table_mode = args.pred_file is not None or args.truth_file is not None
    model_mode = args.model is not None or args.dataset is not None
    if table_mode and model_mode:
        args.parser.error("use either --pred-file/--truth-file or --model/--dataset, not both")
    if not table_mode and not model_mode:
        args.parser.error("give --pred-file and --truth-file, or --model and --dataset")
    if table_mode and (args.pred_file is None or args.truth_file is None):
        args.parser.error("--pred-file and --truth-file go together: give both")
    if model_mode and (args.model is None or args.dataset is None):
        args.parser.error("--model and --dataset go together: give both")
    if table_mode and (args.weights is not None or args.precision is not None):
        args.parser.error("--weights and --precision go with --model")
    if table_mode and args.reliability_plot:
        args.parser.error("--reliability-plot needs the model's probabilities: use --model and --dataset")
    return _run_tables(args) if table_mode else _run_model(args)


def match_tables(pred, truth):
    """Join predictions and truth on id; returns (joined frame, pred-only ids, truth-only ids)."""
    pred_only = pred.loc[~pred["id"].isin(truth["id"]), "id"].tolist()
    truth_only = truth.loc[~truth["id"].isin(pred["id"]), "id"].tolist()
    joined = truth[["id", "lat", "lon"]].merge(pred[["id", "lat", "lon"]], on="id", suffixes=("_true", "_pred"))
    return joined, pred_only, truth_only


def _run_tables(args) -> int:
    from geoscope.errors import InputError
    from geoscope.geo.metrics import (
        DEFAULT_THRESHOLDS_KM,
        errors_km,
        evaluate,
        plot_cumulative_error,
    )
    from geoscope.geo.table import read_points

    cols = {"id_col": args.id_col, "lat_col": args.lat_col, "lon_col": args.lon_col}
    pred = read_points(args.pred_file, **cols)
    truth = read_points(args.truth_file, **cols)
    joined, pred_only, truth_only = match_tables(pred, truth)
    if pred_only or truth_only:
        msg = _unmatched_message(args, pred_only, truth_only)
        if args.strict or joined.empty:
            raise InputError(msg if not joined.empty else f"no ids in common: {msg}")
        print(f"geoscope: warning: {msg}; scoring the {len(joined)} ids found in both", file=sys.stderr)
    thresholds = args.at_km or DEFAULT_THRESHOLDS_KM
    result = evaluate(joined["lat_pred"], joined["lon_pred"], joined["lat_true"], joined["lon_true"],
                      thresholds=thresholds, places=args.places)
    result = {"pred": str(args.pred_file), "truth": str(args.truth_file), **result,
              "unmatched": {"pred_only": len(pred_only), "truth_only": len(truth_only),
                            "pred_only_ids": pred_only[:100], "truth_only_ids": truth_only[:100]}}
    if args.plot:
        errs = errors_km(joined["lat_pred"], joined["lon_pred"], joined["lat_true"], joined["lon_true"])
        plot_cumulative_error({str(args.pred_file): errs}, args.plot, thresholds=thresholds)
        result["plot"] = str(args.plot)
    emit(result, args.json, _render)
    return 0


def _unmatched_message(args, pred_only, truth_only) -> str:
    parts = []
    for n_ids, ids, where, other in ((len(pred_only), pred_only, args.pred_file, args.truth_file),
                                     (len(truth_only), truth_only, args.truth_file, args.pred_file)):
        if n_ids:
            shown = ", ".join(map(str, ids[:_SHOW_IDS])) + (", ..." if n_ids > _SHOW_IDS else "")
            parts.append(f"{n_ids} id(s) in {where} are not in {other} ({shown})")
    return "; ".join(parts)


def _render(result: dict) -> str:
    from geoscope.geo.metrics import format_report

    name = result.get("pred") or result.get("model") or "result"
    lines = [format_report({name: result})]
    um = result.get("unmatched") or {}
    if um.get("pred_only") or um.get("truth_only"):
        lines.append(f"unmatched ids: {um['pred_only']} only in predictions, {um['truth_only']} only in truth")
    if result.get("n_failed") or result.get("n_skipped"):
        lines.append(f"not scored: {result.get('n_failed', 0)} image(s) could not be located, "
                     f"{result.get('n_skipped', 0)} sample(s) have no coordinates")
    if result.get("plot"):
        lines.append(f"cumulative-error plot: {result['plot']}")
    if result.get("calibration") is not None:
        from geoscope.evaluate import format_calibration

        lines.append(format_calibration(result["calibration"]))
    if result.get("reliability_plot"):
        lines.append(f"reliability diagrams: {result['reliability_plot']}")
    return "\n".join(lines)


def _run_model(args) -> int:
    from geoscope.cli._models import load_geolocator
    from geoscope.evaluate import evaluate_model

    geo = load_geolocator(args.model, args.weights, args.precision, progress=not args.no_progress)
    result = evaluate_model(geo, args.dataset, thresholds=args.at_km, places=args.places, plot=args.plot,
                            limit=args.limit, batch_size=args.batch_size, progress=not args.no_progress,
                            reliability_plot=args.reliability_plot)
    result = dict(result)
    result.setdefault("model", str(args.model))
    emit(result, args.json, _render)
    return 0

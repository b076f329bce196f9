"""Evaluate a Geolocator on a dataset: ``geoscope eval --model MODEL --dataset DATASET``.

``DATASET`` is an embedding store made with the model's encoder (fast: no images are read) or
anything ``data.datasets.open_dataset`` opens (images are located in batches; unreadable ones are
counted and skipped). Samples without coordinates cannot be scored and are skipped. Metrics come
from ``geo.metrics.evaluate``; calibration from ``geoscope.calibration``: for every model, the
reliability of "the truth lies within R of the best guess" at 25 / 200 / 750 / 2500 km (the mass the
model states within R against the observed share, in 10 bins, with the expected calibration error)
and how well localizability separates images placed within 750 km from the rest (AUROC).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from geoscope.calibration import (
    LOCALIZABILITY_RADIUS_KM,
    RELIABILITY_RADII_KM,
    auroc,
    finite_or_none,
    plot_reliability,
    reliability_at_radii,
    summarize,
)
from geoscope.data.datasets import open_dataset
from geoscope.errors import InputError
from geoscope.geo.metrics import DEFAULT_THRESHOLDS_KM, errors_km, evaluate, plot_cumulative_error
from geoscope.geolocator import Geolocator
from geoscope.store import STATE, EmbeddingStore
from geoscope.train import store_coords, store_rows


def _is_store(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and (Path(spec) / STATE).is_file()


def evaluate_model(model, dataset, thresholds=None, places: bool = False, plot=None, limit: int | None = None,
                   batch_size: int | None = None, progress: bool = True, reliability_plot=None) -> dict:
    """Metrics of ``model`` (a Geolocator, a model directory or a pretrained name) on ``dataset``.

    Returns ``geo.metrics.evaluate``'s dict plus ``model``, ``dataset``, ``n_failed`` (images that could
    not be read), ``n_skipped`` (samples without coordinates) and ``calibration`` (``calibrated``: the
    model carries a fitted calibration; ``reliability``: per radius ``n``, ``mean_stated``,
    ``observed``, ``ece`` and the ``bins``; ``localizability_auroc``). With ``plot`` a cumulative-error
    plot, with ``reliability_plot`` the reliability diagrams (PNG).
    """
    geo = model if isinstance(model, Geolocator) else Geolocator.from_pretrained(model)
    thresholds = thresholds or DEFAULT_THRESHOLDS_KM
    radii = RELIABILITY_RADII_KM
    n_failed = n_skipped = 0
    stated: list[np.ndarray] = []
    local: list[float | None] = []
    if _is_store(dataset):
        store = EmbeddingStore.open(dataset)
        lat, lon = store_coords(store)
        keep = ~(np.isnan(lat) | np.isnan(lon))
        n_skipped = int((~keep).sum())
        emb = store_rows(store).take(np.flatnonzero(keep)[:limit])  # read a batch at a time below
        lat, lon = lat[keep][:limit], lon[keep][:limit]
        if geo.encoder_name and store.encoder and store.encoder != geo.encoder_name:
            raise InputError(
                f"store {dataset} was embedded with {store.encoder!r} but the model uses {geo.encoder_name!r}"
            )
        step = batch_size or 1024
        rows = []
        for i in range(0, len(emb), step):
            dist = geo.distribution(emb.read(slice(i, i + step)).numpy(), top_k=1, radii_km=radii)
            rows.append(dist.coords[:, 0])
            stated.append(dist.confidence)
            local += [None] * len(dist.coords) if dist.localizability is None else list(dist.localizability)
        pred = np.concatenate(rows) if rows else np.zeros((0, 2))
    else:
        ds = open_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
        samples = [s for s in ds if s.lat is not None and s.lon is not None]
        n_skipped = len(ds) - len(samples)
        samples = samples[:limit]
        step = batch_size or 16
        located: list[tuple[float, float]] = []
        truth: list[tuple[float | None, float | None]] = []  # never None: samples were filtered above
        bar = None
        if progress:
            bar = tqdm(total=len(samples), desc="evaluate", unit="image")
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            blobs = []
            for s in chunk:
                try:
                    blobs.append(_named_bytes(ds.read_bytes(s), s.id))
                except Exception:  # noqa: BLE001 - unreadable samples are counted, not fatal
                    blobs.append(None)
            readable = [(s, b) for s, b in zip(chunk, blobs) if b is not None]
            preds = geo.locate([b for _, b in readable], top_k=1, batch_size=step, radii_km=radii) if readable else []
            for (s, _), p in zip(readable, preds):
                best = p.best
                if p.ok and best is not None:  # ok implies a best candidate
                    located.append((best.lat, best.lon))
                    truth.append((s.lat, s.lon))
                    stated.append(np.array([[p.confidence.get(r, np.nan) for r in radii]]))
                    local.append(p.localizability)
            n_failed += len(chunk) - sum(p.ok for p in preds)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        pred = np.array(located, dtype=np.float64).reshape(-1, 2)
        t = np.array(truth, dtype=np.float64).reshape(-1, 2)
        lat, lon = t[:, 0], t[:, 1]
    if len(pred) == 0:
        raise InputError(f"nothing to evaluate in {dataset}: no sample with coordinates could be located")
    result = evaluate(pred[:, 0], pred[:, 1], lat, lon, thresholds=thresholds, places=places)
    result.update({"model": geo.name, "dataset": str(dataset), "n_failed": n_failed, "n_skipped": n_skipped})
    err = errors_km(pred[:, 0], pred[:, 1], lat, lon)
    result["calibration"] = calibration_report(np.concatenate(stated) if stated else np.zeros((0, len(radii))),
                                               local, err, radii, calibrated=bool(getattr(geo.calibration, "fitted", False)))
    if reliability_plot:
        tables = result["calibration"]["reliability"]
        if not tables:
            raise InputError(f"model {geo.name} states no probability within a radius (a single point estimate "
                             "without calibration), so there is no reliability diagram to draw")
        plot_reliability({geo.name: tables}, reliability_plot,
                         title=f"{geo.name} on {Path(str(dataset)).name} (n={len(err)})")
        result["reliability_plot"] = str(reliability_plot)
    if plot:
        plot_cumulative_error({geo.name: errors_km(pred[:, 0], pred[:, 1], lat, lon)}, plot, thresholds=thresholds)
        result["plot"] = str(plot)
    return result


def calibration_report(stated: np.ndarray, localizability, errors: np.ndarray,
                       radii=RELIABILITY_RADII_KM, calibrated: bool = False) -> dict:
    """``reliability_at_radii`` of the stated masses (N, len(radii)) (radii where the model stated
    none are left out) and the AUROC of localizability for "placed within LOCALIZABILITY_RADIUS_KM"."""
    stated = np.asarray(stated, dtype=np.float64).reshape(len(errors), len(radii))
    keep = [k for k in range(len(radii)) if np.isfinite(stated[:, k]).all()]
    tables = reliability_at_radii(stated[:, keep], errors, [radii[k] for k in keep]) if keep and len(errors) else {}
    loc = np.array([np.nan if v is None else v for v in localizability], dtype=np.float64)
    hit = errors <= LOCALIZABILITY_RADIUS_KM
    return {
        "calibrated": calibrated,
        "reliability": tables,
        "localizability_auroc": finite_or_none(auroc(loc, hit)) if len(loc) and np.isfinite(loc).all() else None,
        "localizability_radius_km": LOCALIZABILITY_RADIUS_KM,
    }


def format_calibration(report: dict) -> str:
    """The calibration part of an evaluation as text: one line per radius, then the AUROC."""
    tables = summarize(report.get("reliability") or {})
    if not tables:
        return "calibration: the model states no probability within a radius"
    state = "calibrated on held-out data" if report.get("calibrated") else "not calibrated (raw head probabilities)"
    lines = [f"calibration ({state}): stated probability within R of the best guess vs observed share"]
    lines.append(f"{'radius':>9} {'stated':>8} {'observed':>9} {'ECE':>7}")
    for r, v in tables.items():
        lines.append(f"{r + ' km':>9} {v['mean_stated']:>8.3f} {v['observed']:>9.3f} {v['ece']:>7.3f}")
    a = report.get("localizability_auroc")
    if a is not None and np.isfinite(a):
        lines.append(f"localizability AUROC (placed within {report['localizability_radius_km']} km): {a:.3f}")
    return "\n".join(lines)


def _named_bytes(data: bytes, name: str):
    """Image bytes as a file object carrying the sample id as its name (used in error messages)."""
    f = io.BytesIO(data)
    f.name = str(name)
    return f

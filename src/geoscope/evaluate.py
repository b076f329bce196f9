"""Evaluate a Geolocator on a dataset: ``geoscope eval --model MODEL --dataset DATASET``.

``DATASET`` is an embedding store made with the model's encoder (fast: no images are read) or
anything ``data.datasets.open_dataset`` opens (images are located in batches; unreadable ones are
counted and skipped). Samples without coordinates cannot be scored and are skipped. Metrics come
from ``geo.metrics.evaluate``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from geoscope.data.datasets import open_dataset
from geoscope.errors import InputError
from geoscope.geo.metrics import DEFAULT_THRESHOLDS_KM, errors_km, evaluate, plot_cumulative_error
from geoscope.geolocator import Geolocator
from geoscope.store import STATE, EmbeddingStore
from geoscope.train import store_arrays


def _is_store(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and (Path(spec) / STATE).is_file()


def evaluate_model(model, dataset, thresholds=None, places: bool = False, plot=None, limit: int | None = None,
                   batch_size: int | None = None, progress: bool = True) -> dict:
    """Metrics of ``model`` (a Geolocator, a model directory or a pretrained name) on ``dataset``.

    Returns ``geo.metrics.evaluate``'s dict plus ``model``, ``dataset``, ``n_failed`` (images that could
    not be read) and ``n_skipped`` (samples without coordinates); with ``plot`` a cumulative-error plot.
    """
    geo = model if isinstance(model, Geolocator) else Geolocator.from_pretrained(model)
    thresholds = thresholds or DEFAULT_THRESHOLDS_KM
    n_failed = n_skipped = 0
    if _is_store(dataset):
        store = EmbeddingStore.open(dataset)
        emb, lat, lon = store_arrays(store)
        keep = ~(np.isnan(lat) | np.isnan(lon))
        n_skipped = int((~keep).sum())
        emb, lat, lon = emb[keep][:limit], lat[keep][:limit], lon[keep][:limit]
        if geo.encoder_name and store.encoder and store.encoder != geo.encoder_name:
            raise InputError(
                f"store {dataset} was embedded with {store.encoder!r} but the model uses {geo.encoder_name!r}"
            )
        step = batch_size or 8192
        pred = np.concatenate([
            np.asarray(geo.head.predict(emb[i : i + step], top_k=1).coords)[:, 0] for i in range(0, len(emb), step)
        ]) if len(emb) else np.zeros((0, 2))
    else:
        ds = open_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
        samples = [s for s in ds if s.lat is not None and s.lon is not None]
        n_skipped = len(ds) - len(samples)
        samples = samples[:limit]
        step = batch_size or 16
        rows, truth = [], []
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
            preds = geo.locate([b for _, b in readable], top_k=1, batch_size=step) if readable else []
            for (s, _), p in zip(readable, preds):
                if p.ok:
                    rows.append((p.best.lat, p.best.lon))
                    truth.append((s.lat, s.lon))
            n_failed += len(chunk) - sum(p.ok for p in preds)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        pred = np.array(rows, dtype=np.float64).reshape(-1, 2)
        t = np.array(truth, dtype=np.float64).reshape(-1, 2)
        lat, lon = t[:, 0], t[:, 1]
    if len(pred) == 0:
        raise InputError(f"nothing to evaluate in {dataset}: no sample with coordinates could be located")
    result = evaluate(pred[:, 0], pred[:, 1], lat, lon, thresholds=thresholds, places=places)
    result.update({"model": geo.name, "dataset": str(dataset), "n_failed": n_failed, "n_skipped": n_skipped})
    if plot:
        plot_cumulative_error({geo.name: errors_km(pred[:, 0], pred[:, 1], lat, lon)}, plot, thresholds=thresholds)
        result["plot"] = str(plot)
    return result


def _named_bytes(data: bytes, name: str):
    """Image bytes as a file object carrying the sample id as its name (used in error messages)."""
    f = io.BytesIO(data)
    f.name = str(name)
    return f

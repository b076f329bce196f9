"""Geolocation metrics: accuracy within distance thresholds, median / mean error, GeoScore, and
country / region / city agreement (through :mod:`geoscope.geo.places`, computed only when asked)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from geoscope.atomic import write_figure
from geoscope.errors import InputError
from geoscope.geo import places
from geoscope.geo.sphere import haversine_km, validate_latlon

#: The usual thresholds (street, city, region, country, continent), km.
DEFAULT_THRESHOLDS_KM = (1, 25, 200, 750, 2500)
#: GeoGuessr's score scale: 5000 points at 0 km, e-folding distance 1492.7 km.
GEOSCORE_MAX = 5000.0
GEOSCORE_SCALE_KM = 1492.7


def geoscore(d_km) -> np.ndarray:
    """GeoGuessr score ``5000 * exp(-d / 1492.7)`` for distances in km."""
    return GEOSCORE_MAX * np.exp(-np.asarray(d_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def threshold_key(t: float) -> str:
    """Result key for a threshold: ``acc_25km``, ``acc_0.5km``."""
    text = repr(float(t))
    return f"acc_{text[:-2] if text.endswith('.0') else text}km"


def evaluate(pred_lat, pred_lon, true_lat, true_lon, thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM,
             places: bool = False) -> dict:
    """Metrics of predictions against the truth (arrays of equal length).

    Keys: ``n``, ``acc_<t>km`` per threshold (fraction within ``t`` km, inclusive), ``median_km``,
    ``mean_km``, ``geoscore`` (mean), and with ``places=True`` ``country_acc``, ``region_acc`` (same
    admin-1 region) and ``city_acc`` (same nearest town).
    """
    plat, plon = validate_latlon(np.ravel(pred_lat), np.ravel(pred_lon), "predictions")
    tlat, tlon = validate_latlon(np.ravel(true_lat), np.ravel(true_lon), "truth")
    if plat.shape != tlat.shape:
        raise InputError(f"evaluate: {plat.size} predictions but {tlat.size} true locations")
    if plat.size == 0:
        raise InputError("evaluate: nothing to evaluate (no predictions)")
    thresholds = sorted({float(t) for t in thresholds})
    if any(not np.isfinite(t) or t <= 0 for t in thresholds):
        raise InputError(f"evaluate: thresholds must be positive distances in km, got {thresholds}")
    d = haversine_km(plat, plon, tlat, tlon)
    out: dict = {"n": int(d.size)}
    for t in thresholds:
        out[threshold_key(t)] = float(np.mean(d <= t))
    out["median_km"] = float(np.median(d))
    out["mean_km"] = float(np.mean(d))
    out["geoscore"] = float(np.mean(geoscore(d)))
    if places:
        out.update(place_accuracy(plat, plon, tlat, tlon))
    return out


def errors_km(pred_lat, pred_lon, true_lat, true_lon) -> np.ndarray:
    """Great-circle error of each prediction, km."""
    plat, plon = validate_latlon(np.ravel(pred_lat), np.ravel(pred_lon), "predictions")
    tlat, tlon = validate_latlon(np.ravel(true_lat), np.ravel(true_lon), "truth")
    return haversine_km(plat, plon, tlat, tlon)


def place_accuracy(plat, plon, tlat, tlon) -> dict:
    """Fractions of predictions in the true country, the true admin-1 region and nearest the same town.

    A truth at sea (no country) counts as right when the prediction is at sea too.
    """
    lat = np.concatenate([plat, tlat])
    lon = np.concatenate([plon, tlon])
    n = len(plat)
    country = np.asarray(places.country_codes(lat, lon)).astype(str)
    region = np.asarray(places.region_codes(lat, lon)).astype(str)
    found = places.reverse_geocode(lat, lon)
    town = np.array([f"{p.country_code}|{p.region}|{p.town}" if p.town else "" for p in found], dtype=object)
    same_country = country[:n] == country[n:]
    same_region = same_country & (region[:n] == region[n:])
    same_town = (town[:n] == town[n:]) & (town[n:] != "")
    return {"country_acc": float(same_country.mean()), "region_acc": float(same_region.mean()),
            "city_acc": float(same_town.mean())}


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}%"


def format_report(results_by_name: Mapping[str, dict]) -> str:
    """A text table: one row per result (model / run), one column per metric."""
    if not results_by_name:
        return "(no results)"
    first = next(iter(results_by_name.values()))
    acc_keys = [k for k in first if k.startswith("acc_") and k.endswith("km")]
    place_keys = [k for k in ("country_acc", "region_acc", "city_acc") if k in first]
    headers = ["name", "n"] + [k[4:] for k in acc_keys] + ["median km", "mean km", "GeoScore"]
    headers += [k.replace("_acc", "") for k in place_keys]
    rows = []
    for name, r in results_by_name.items():
        row = [name, r.get("n")] + [_pct(r[k]) if k in r else "" for k in acc_keys]
        row += [f"{r['median_km']:.1f}", f"{r['mean_km']:.1f}", f"{r['geoscore']:.0f}"]
        row += [_pct(r[k]) if k in r else "" for k in place_keys]
        rows.append(row)
    return pd.DataFrame(rows, columns=headers).to_string(index=False)


def plot_cumulative_error(errors_by_name: Mapping[str, npt.ArrayLike], path: str | os.PathLike,
                          thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM) -> None:
    """Write a PNG: fraction of predictions within d km against d (log scale), one line per name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for name, err in errors_by_name.items():
            e = np.sort(np.asarray(err, dtype=np.float64))
            if e.size == 0:
                continue
            frac = np.arange(1, e.size + 1) / e.size
            x = np.clip(np.concatenate([[e[0]], e, [20040.0]]), 0.01, None)  # from 0 up to the last, then flat
            ax.step(x, np.concatenate([[0.0], frac, [1.0]]), where="post", label=f"{name} (n={e.size})")
        for t in thresholds:
            ax.axvline(float(t), color="0.8", lw=0.8, zorder=0)
            ax.text(float(t), 1.01, f"{float(t):g} km", ha="center", va="bottom", fontsize=7, color="0.4",
                    transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_xlim(0.1, 20040)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("error (km, log scale)")
        ax.set_ylabel("fraction of images within error")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        write_figure(path, fig)
    finally:
        plt.close(fig)

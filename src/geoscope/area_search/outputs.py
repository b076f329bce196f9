"""What an area search writes: a heatmap GeoTIFF, a PNG over the imagery, the top candidates as
GeoJSON and CSV, and the ``Prediction`` JSON. Every file is written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from geoscope.atomic import atomic_path, write_bytes, write_json, write_text
from geoscope.data.area_grid import AreaGrid
from geoscope.data.tile_grid import tile_grid
from geoscope.geo.sphere import haversine_km

CANDIDATE_COLUMNS = ["rank", "lat", "lon", "score", "probability", "heading_deg", "row", "col"]


def write_heatmap_tif(path: str | Path, grid: AreaGrid, scores: np.ndarray, probs: np.ndarray,
                      tags: dict | None = None) -> Path:
    """A two-band float32 GeoTIFF over the grid (band 1 the score, band 2 the probability; NaN where
    no tile), georeferenced by the grid's transform and CRS: it opens in QGIS in place."""
    import rasterio

    path = Path(path)
    data = np.stack([np.asarray(scores, np.float32), np.where(np.isfinite(scores), probs, np.nan).astype(np.float32)])
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=grid.cols, height=grid.rows, count=2, dtype="float32",
                           crs=grid.crs, transform=grid.transform, nodata=float("nan"), compress="deflate") as ds:
            ds.write(data)
            ds.set_band_description(1, "score")
            ds.set_band_description(2, "probability")
            ds.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
    return path


def top_nodes(values: np.ndarray, grid: AreaGrid, k: int, separation_m: float = 0.0) -> list[tuple[int, int]]:
    """(row, col) of the ``k`` highest finite values, each at least ``separation_m`` from those before it
    (non-maximum suppression on the ground; 0 keeps neighbours)."""
    v = np.where(np.isfinite(values), values, -np.inf).ravel()
    order = np.argsort(-v, kind="stable")
    stride_m = grid.stride_km * 1000.0
    out: list[tuple[int, int]] = []
    for i in order:
        if not np.isfinite(v[i]) or len(out) >= k:
            break
        r, c = divmod(int(i), grid.cols)
        if separation_m > 0 and any(math.hypot(r - r0, c - c0) * stride_m < separation_m for r0, c0 in out):
            continue
        out.append((r, c))
    return out


def candidates_rows(nodes: Sequence[tuple[int, int]], grid: AreaGrid, scores: np.ndarray, probs: np.ndarray,
                    heading: np.ndarray | None) -> list[dict]:
    lat, lon = grid.centres()
    rows = []
    for rank, (r, c) in enumerate(nodes, 1):
        rows.append({"rank": rank, "lat": float(lat[r, c]), "lon": float(lon[r, c]), "score": float(scores[r, c]),
                     "probability": float(probs[r, c]),
                     "heading_deg": None if heading is None else float(heading[r, c]), "row": r, "col": c})
    return rows


def write_candidates(out: Path, rows: list[dict], route: list[dict] | None = None) -> tuple[Path, Path]:
    """``candidates.geojson`` (Points, RFC 7946 [lon, lat]; the route as a LineString when given) and
    ``candidates.csv``."""
    features: list[dict] = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                             "properties": {**{k: v for k, v in r.items() if k not in ("lat", "lon")},
                                            "kind": "candidate"}} for r in rows]
    if route:
        features.append({"type": "Feature",
                         "geometry": {"type": "LineString", "coordinates": [[p["lon"], p["lat"]] for p in route]},
                         "properties": {"kind": "route", "photos": [p["photo"] for p in route]}})
        features.extend({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
                         "properties": {"kind": "route photo", "index": i, "photo": p["photo"]}}
                        for i, p in enumerate(route))
    gj = out / "candidates.geojson"
    write_json(gj, {"type": "FeatureCollection", "features": features})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CANDIDATE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in CANDIDATE_COLUMNS})
    cs = out / "candidates.csv"
    write_text(cs, buf.getvalue())
    return gj, cs


def background_for(source: Any, grid: AreaGrid, pixels: int = 768):
    """A north-up overhead image of the whole area from ``source`` and the tile grid that places it."""
    from pyproj import Transformer

    a = grid.transform
    w_m, h_m = grid.cols * a.a, grid.rows * -a.e
    xc, yc = a.c + w_m / 2.0, a.f - h_m / 2.0
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xc, yc)
    side_km = max(w_m, h_m) / 1000.0
    tg = tile_grid(float(lat), float(lon), side_km, pixels, "utm" if grid.epsg else "aeqd")
    return source.read_tile(tg), tg


def write_heatmap_png(path: str | Path, grid: AreaGrid, values: np.ndarray, source: Any = None,
                      candidates: list[dict] | None = None, route: list[dict] | None = None,
                      truth: tuple[float, float] | None = None, title: str = "", label: str = "probability") -> Path:
    """The heatmap over the area's imagery (when ``source`` is given), candidates numbered, the route
    drawn, the truth (when known) as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyproj import Transformer

    fig, ax = plt.subplots(figsize=(8, 8 * max(0.4, min(2.5, grid.rows / max(grid.cols, 1)))), dpi=100)
    a = grid.transform
    corners_x = [a.c, a.c + grid.cols * a.a]
    corners_y = [a.f, a.f + grid.rows * a.e]
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    bg = None
    if source is not None:
        tile, tg = background_for(source, grid)
        bg = tg
        ax.imshow(tile.array, extent=(0, tg.pixels, tg.pixels, 0))

    def to_xy(lat, lon):
        if bg is not None:
            return bg.to_pixel(lat, lon)
        x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
        return np.asarray(x), np.asarray(y)

    lon0, lat0 = to_ll.transform(corners_x[0], corners_y[0])
    lon1, lat1 = to_ll.transform(corners_x[1], corners_y[1])
    x0, y0 = to_xy(lat0, lon0)
    x1, y1 = to_xy(lat1, lon1)
    vals = np.asarray(values, np.float64)
    finite = np.isfinite(vals)
    lo, hi = (float(vals[finite].min()), float(vals[finite].max())) if finite.any() else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1.0)
    cmap = matplotlib.colormaps["inferno"]
    rgba = cmap(norm(np.where(finite, vals, lo)))
    if bg is not None:  # the imagery shows through where the heatmap is low
        rgba[..., 3] = np.where(finite, 0.15 + 0.7 * np.sqrt(np.clip(norm(np.where(finite, vals, lo)), 0, 1)), 0.0)
    else:
        rgba[..., 3] = finite.astype(float)
    extent = (float(x0), float(x1), float(y1), float(y0))
    ax.imshow(rgba, extent=extent, interpolation="nearest", origin="upper")
    if bg is None:
        ax.set_xlim(float(x0), float(x1))
        ax.set_ylim(float(y1), float(y0))
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.04, label=label)
    if route:
        rx, ry = to_xy(np.array([p["lat"] for p in route]), np.array([p["lon"] for p in route]))
        ax.plot(rx, ry, "-o", color="cyan", lw=1.5, ms=3, label="best route")
    for c in candidates or []:
        cx, cy = to_xy(c["lat"], c["lon"])
        ax.plot(cx, cy, "o", mfc="none", mec="white", ms=10, mew=1.5)
        ax.annotate(str(c["rank"]), (float(cx), float(cy)), color="white", fontsize=8, xytext=(5, 5),
                    textcoords="offset points")
    if truth is not None:
        tx, ty = to_xy(truth[0], truth[1])
        ax.plot(tx, ty, "*", color="lime", ms=14, mec="black", label="truth")
    if route or truth is not None:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    km = grid.stride_km
    ax.set_title(title or f"area search: {grid.rows} x {grid.cols} positions, {km * 1000:g} m apart", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return Path(path)


def mass_within(grid: AreaGrid, probs: np.ndarray, lat: float, lon: float, radii_m: Sequence[float]) -> dict[str, float]:
    """Probability mass within each radius (m) of (lat, lon)."""
    la, lo = grid.centres()
    d = haversine_km(la, lo, lat, lon) * 1000.0
    p = np.where(np.isfinite(probs), probs, 0.0)
    return {f"{r:g}": float(p[d <= r].sum()) for r in radii_m}

"""Maps of a Prediction: the probability of every geocell as a heatmap, with borders and markers.

``plot_prediction(pred, path, truth=None)`` writes a PNG: the cell distribution shaded on an
equirectangular map whose extent is fitted to where the probability mass is (the world, a continent
or a region), Natural Earth country borders, the candidate places with their names, and the true or
claimed (EXIF) location when known. ``plot_cell_probabilities(cells, probs, ax=...)`` is the lower
level piece that shades cells on any matplotlib axes. No online tiles are used.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from geoscope.atomic import write_figure
from geoscope.errors import GeoscopeError, InputError

log = logging.getLogger(__name__)

WORLD_EXTENT = (-180.0, 180.0, -90.0, 90.0)  # lon0, lon1, lat0, lat1


def significant_cells(probs: np.ndarray, mass: float = 0.999, max_cells: int = 5000) -> np.ndarray:
    """Indices of the most probable cells that together hold ``mass`` of the probability (at most
    ``max_cells``), most probable first. Cells with zero probability are never included."""
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    total = probs.sum()
    if total <= 0:
        return order[:0]
    cum = np.cumsum(probs[order]) / total
    n = int(np.searchsorted(cum, mass) + 1)
    order = order[: min(n, max_cells, len(order))]
    return order[probs[order] > 0]


def fit_extent(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    mass: float = 0.9,
    include: Sequence[tuple[float, float]] = (),
    pad: float = 0.2,
    min_span_deg: float = 6.0,
) -> tuple[float, float, float, float]:
    """A map extent ``(lon0, lon1, lat0, lat1)`` around the points that carry ``mass`` of ``weights``,
    plus the ``include`` points (lat, lon), padded by ``pad`` of the span and at least
    ``min_span_deg`` wide. Falls back to the whole world when the mass is spread over more than
    a hemisphere's width."""
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    if weights is not None and len(lat):
        keep = significant_cells(np.asarray(weights, dtype=np.float64), mass=mass, max_cells=len(lat))
        lat, lon = lat[keep], lon[keep]
    extra = np.asarray(list(include), dtype=np.float64).reshape(-1, 2)
    lat = np.concatenate([lat, extra[:, 0]])
    lon = np.concatenate([lon, extra[:, 1]])
    if len(lat) == 0:
        return WORLD_EXTENT
    lat0, lat1, lon0, lon1 = lat.min(), lat.max(), lon.min(), lon.max()
    dlat = max(lat1 - lat0, 1e-9)
    dlon = max(lon1 - lon0, 1e-9)
    lat0, lat1 = lat0 - pad * dlat, lat1 + pad * dlat
    lon0, lon1 = lon0 - pad * dlon, lon1 + pad * dlon
    # at least min_span_deg in each direction (in ground distance for longitude)
    mid_lat = 0.5 * (lat0 + lat1)
    lon_min_span = min_span_deg / max(math.cos(math.radians(min(abs(mid_lat), 80.0))), 0.2)
    if lat1 - lat0 < min_span_deg:
        c = 0.5 * (lat0 + lat1)
        lat0, lat1 = c - min_span_deg / 2, c + min_span_deg / 2
    if lon1 - lon0 < lon_min_span:
        c = 0.5 * (lon0 + lon1)
        lon0, lon1 = c - lon_min_span / 2, c + lon_min_span / 2
    if lon1 - lon0 > 200 or lat1 - lat0 > 110:
        return WORLD_EXTENT
    return (max(lon0, -180.0), min(lon1, 180.0), max(lat0, -90.0), min(lat1, 90.0))


def _fill_box(extent: tuple[float, float, float, float], ratio: float) -> tuple[float, float, float, float]:
    """Widen ``extent`` in one direction so that its ground width / height is ``ratio`` (the map then
    fills the figure, leaving room for labels)."""
    lon0, lon1, lat0, lat1 = extent
    scale = max(math.cos(math.radians(0.5 * (lat0 + lat1))), 0.2)
    width, height = (lon1 - lon0) * scale, lat1 - lat0
    if width < ratio * height:
        grow = (ratio * height / scale - (lon1 - lon0)) / 2
        lon0, lon1 = max(lon0 - grow, -180.0), min(lon1 + grow, 180.0)
    else:
        grow = (width / ratio - height) / 2
        lat0, lat1 = max(lat0 - grow, -90.0), min(lat1 + grow, 90.0)
    return (lon0, lon1, lat0, lat1)


def _mass_outline(cells: Any, probs: Any, mass: float = 0.9, max_cells: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (lat, lon) of the bounding boxes of the cells holding ``mass`` of the probability
    (centroids for cells without polygons): what a map of the distribution has to show."""
    idx = significant_cells(probs, mass=mass, max_cells=max_cells)
    if not hasattr(cells, "polygon"):
        cen = np.asarray(cells.centroids, dtype=np.float64)[idx]
        return cen[:, 0], cen[:, 1]
    lat, lon = [], []
    for i in idx:
        for ring in _rings(cells.polygon(int(i))):
            lon += [ring[:, 0].min(), ring[:, 0].max()]
            lat += [ring[:, 1].min(), ring[:, 1].max()]
    return np.asarray(lat), np.asarray(lon)


def _rings(geometry: dict) -> list[np.ndarray]:
    """Exterior rings (as (n, 2) lon/lat arrays) of a GeoJSON Polygon or MultiPolygon dict."""
    kind = geometry.get("type")
    coords: Any = geometry.get("coordinates")  # nested lists of (lon, lat), as GeoJSON has them
    if kind == "Polygon":
        polys = [coords]
    elif kind == "MultiPolygon":
        polys = coords
    else:
        raise InputError(f"cell polygon has geometry type {kind!r}; expected Polygon or MultiPolygon")
    return [np.asarray(p[0], dtype=np.float64) for p in polys if p]


def plot_cell_probabilities(
    cells: Any,
    probs: npt.ArrayLike,
    ax: Any,
    *,
    cmap: str = "YlOrRd",
    mass: float = 0.999,
    max_cells: int = 5000,
    gamma: float = 0.5,
    alpha: float = 0.85,
    edgecolor: str | None = None,
    colorbar: bool = True,
) -> Any:
    """Shade each cell of ``cells`` (a Geocells: ``polygon(i)``, ``centroids``) by its probability.

    Only the cells holding ``mass`` of the probability are drawn (at most ``max_cells``), on a
    power-law colour scale (``gamma`` < 1 makes the tail visible). Cells without polygons are drawn
    as dots at their centroids. Returns the matplotlib collection (for a colour bar).
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import PowerNorm

    probs = np.asarray(probs, dtype=np.float64)
    n_cells = len(cells) if hasattr(cells, "__len__") else len(np.asarray(cells.centroids))
    if probs.ndim != 1 or len(probs) != n_cells:
        raise InputError(f"cell probabilities have shape {probs.shape} but the cells number {n_cells}")
    idx = significant_cells(probs, mass=mass, max_cells=max_cells)
    vmax = float(probs[idx].max()) if len(idx) else 1.0
    norm = PowerNorm(gamma=gamma, vmin=0.0, vmax=vmax)
    draw_order = idx[::-1]  # most probable on top
    if hasattr(cells, "polygon"):
        verts, values = [], []
        for i in draw_order:
            for ring in _rings(cells.polygon(int(i))):
                verts.append(ring)
                values.append(probs[i])
        artist = PolyCollection(
            verts, array=np.asarray(values), cmap=cmap, norm=norm, alpha=alpha,
            edgecolors=edgecolor or "none", linewidths=0.3, zorder=2,
        )
        ax.add_collection(artist)
    else:
        cen = np.asarray(cells.centroids, dtype=np.float64)[draw_order]
        artist = ax.scatter(cen[:, 1], cen[:, 0], c=probs[draw_order], cmap=cmap, norm=norm, s=12,
                            alpha=alpha, zorder=2, linewidths=0)
    if colorbar:
        cb = ax.figure.colorbar(artist, ax=ax, shrink=0.7, pad=0.02)
        cb.set_label("cell probability")
    return artist


@functools.lru_cache(maxsize=8)
def _border_segments(extent: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Country border lines inside ``extent``, simplified to about a thousandth of its span (the full
    Natural Earth lines have ~0.5 M points: too many to draw a world map quickly)."""
    import shapely

    from geoscope.geo.borders import countries

    borders = countries()

    lon0, lon1, lat0, lat1 = extent
    geoms = np.asarray(borders.geometries, dtype=object)
    if extent != WORLD_EXTENT:
        frame = shapely.box(lon0 - 1, lat0 - 1, lon1 + 1, lat1 + 1)
        geoms = shapely.intersection(geoms[shapely.intersects(geoms, frame)], frame)
    geoms = shapely.simplify(shapely.boundary(geoms), max(lon1 - lon0, lat1 - lat0) / 1500.0)
    segments = []
    for line in geoms:
        for part in getattr(line, "geoms", [line]):
            if not part.is_empty:
                segments.append(np.asarray(part.coords)[:, :2])
    return segments


def draw_borders(ax: Any, extent: tuple[float, float, float, float], color: str = "#555555",
                 linewidth: float = 0.5) -> bool:
    """Draw Natural Earth country borders (``geo.borders.countries()``) inside ``extent``.

    Returns False (and logs why) when the border data is not available, so a map is still drawn.
    """
    try:
        from matplotlib.collections import LineCollection

        from geoscope.geo.borders import countries

        countries()  # loads (and caches) the border data, or says why it cannot
    except (ImportError, GeoscopeError, OSError) as exc:
        log.warning("maps are drawn without country borders: %s", exc)
        return False
    segments = _border_segments(tuple(round(float(v), 3) for v in extent))
    ax.add_collection(LineCollection(segments, colors=color, linewidths=linewidth, zorder=3))
    return True


def _marker_label(rank: int, cand: Any) -> str:
    name = cand.place.label() if getattr(cand, "place", None) is not None else f"{cand.lat:.3f}, {cand.lon:.3f}"
    return f"{rank}. {name} ({100 * cand.probability:.1f}%)"


def _world_inset(ax: Any, extent: tuple[float, float, float, float], best: list, truth: Any, claimed: Any,
                 borders: bool) -> Any:
    """A small world map in the corner of ``ax``: the main map's frame and the far-away points."""
    from matplotlib.patches import Rectangle

    lon0, lon1, lat0, lat1 = extent
    sub = ax.inset_axes([0.70, 0.02, 0.29, 0.29])
    sub.set_facecolor("#dfe9f3")
    if borders:
        draw_borders(sub, WORLD_EXTENT, linewidth=0.2)
    sub.add_patch(Rectangle((lon0, lat0), lon1 - lon0, lat1 - lat0, fill=False, ec="#d7301f", lw=1.2, zorder=4))
    for lat, lon in best:
        sub.plot(lon, lat, marker="o", ms=4, mfc="white", mec="#08306b", zorder=5)
    if truth is not None:
        sub.plot(truth[1], truth[0], marker="o", ms=5, color="black", zorder=6)
    if claimed is not None:
        sub.plot(claimed[1], claimed[0], marker="D", ms=5, color="#00bcd4", mec="black", zorder=6)
    sub.set_xlim(-180, 180)
    sub.set_ylim(-90, 90)
    sub.set_aspect(1.0)
    sub.set_xticks([])
    sub.set_yticks([])
    return sub


def plot_prediction(
    pred: Any,
    path: str | Path | BinaryIO,
    truth: tuple[float, float] | None = None,
    *,
    claimed: tuple[float, float] | Literal[False] | None = None,
    extent: tuple[float, float, float, float] | None = None,
    n_candidates: int = 5,
    title: str | None = None,
    borders: bool = True,
    figsize: tuple[float, float] = (10.0, 6.5),
    dpi: int = 110,
) -> Any:
    """Write a PNG map of ``pred`` to ``path`` (atomically; or into a binary file object) and return ``path``.

    ``truth`` is the known true (lat, lon), drawn as a black dot; ``claimed`` the location the
    metadata claims (default: the Prediction's EXIF GPS; ``False`` to hide it), drawn as a cyan
    diamond. ``extent`` is (lon0, lon1, lat0, lat1); by default it is fitted to the probability mass.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if claimed is None and getattr(pred, "exif", None) is not None and pred.exif.has_gps:
        claimed = (pred.exif.lat, pred.exif.lon)
    elif claimed is False:
        claimed = None
    cands = list(pred.candidates)[:n_candidates]
    best = [(c.lat, c.lon) for c in cands[:1]]
    others = [p for p in (truth, claimed) if p is not None]
    has_cells = pred.cell_probs is not None and pred.cells is not None
    inset = False
    if extent is None:
        if has_cells:
            lat, lon = _mass_outline(pred.cells, pred.cell_probs)
        else:
            lat, lon = np.array([c.lat for c in cands]), np.array([c.lon for c in cands])
        keep = list(best)
        extent = fit_extent(lat, lon, include=keep)
        for point in others:  # the truth, then the claim, as long as the map stays on the mass
            wider = fit_extent(lat, lon, include=keep + [point])
            if wider == WORLD_EXTENT and extent != WORLD_EXTENT:
                inset = True  # a far-away point would shrink the heatmap to a speck: show it on a world inset
            else:
                keep.append(point)
                extent = wider
    if extent != WORLD_EXTENT:
        extent = _fill_box(extent, (figsize[0] - 2.0) / (figsize[1] - 1.0))
    lon0, lon1, lat0, lat1 = extent

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#dfe9f3")
    if has_cells:
        plot_cell_probabilities(pred.cells, pred.cell_probs, ax=ax)
    elif cands:
        ax.scatter([c.lon for c in cands], [c.lat for c in cands], s=[40 + 600 * c.probability for c in cands],
                   c="#d7301f", alpha=0.5, zorder=2)
    if borders:
        draw_borders(ax, extent)
    for rank, c in enumerate(cands, start=1):
        ax.plot(c.lon, c.lat, marker="o", ms=7 if rank == 1 else 5, mfc="white", mec="#08306b", mew=1.5, zorder=5)
        right_half = c.lon >= 0.5 * (lon0 + lon1)  # labels point inwards so they stay on the map
        ax.annotate(_marker_label(rank, c), (c.lon, c.lat), xytext=(-6 if right_half else 6, 6 - 11 * ((rank - 1) % 3)),
                    textcoords="offset points", fontsize=8, zorder=6, ha="right" if right_half else "left",
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.75))
    if truth is not None:
        ax.plot(truth[1], truth[0], marker="o", ms=9, color="black", mec="white", zorder=7, ls="none",
                label="true location")
    if claimed is not None:
        ax.plot(claimed[1], claimed[0], marker="D", ms=8, color="#00bcd4", mec="black", zorder=7, ls="none",
                label="claimed (EXIF) location")
    if truth is not None or claimed is not None:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    if inset:
        _world_inset(ax, extent, best, truth, claimed, borders)
    ax.set_xlim(lon0, lon1)
    ax.set_ylim(lat0, lat1)
    mid = 0.5 * (lat0 + lat1)
    ax.set_aspect(1.0 if extent == WORLD_EXTENT else 1.0 / max(math.cos(math.radians(mid)), 0.2))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.grid(True, lw=0.3, color="white", alpha=0.7)
    ax.set_title(title or f"{Path(str(pred.source)).name}: where the model puts its probability", fontsize=10)
    fig.tight_layout()
    return write_figure(path, fig)  # a binary file object (e.g. BytesIO) or a path

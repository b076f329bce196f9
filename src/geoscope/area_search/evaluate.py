"""How well area search placed photos whose true position is known.

For one photo: the rank of the true tile (the grid node nearest the truth) among all scored nodes
(1 + the nodes scored strictly higher: ties go to the truth, as in ``geo.retrieval_metrics``) and the
localisation error in metres (from the best node to the truth). For many photos:
:func:`summarize` gives median / mean error, recall@1 / 5 / 10 and recall@1 % (``geo.retrieval_metrics``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence

import numpy as np

from geoscope.data.area_grid import AreaGrid
from geoscope.geo.retrieval_metrics import recall_from_ranks
from geoscope.geo.sphere import haversine_km


def node_of(grid: AreaGrid, lat: float, lon: float) -> tuple[int, int] | None:
    """The grid node nearest (lat, lon), or None when the point is outside the grid."""
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(float(lon), float(lat))
    col, row = ~grid.transform @ (x, y)
    r, c = int(np.floor(row)), int(np.floor(col))
    if 0 <= r < grid.rows and 0 <= c < grid.cols:
        return r, c
    return None


@dataclass
class PlacementEval:
    """One photo: ``rank`` of the true node (1 = best; n_scored + 1 when the true node has no tile),
    ``n_scored`` nodes with a score, ``error_m`` from the best node to the truth."""

    rank: int
    n_scored: int
    error_m: float
    best_lat: float
    best_lon: float
    true_lat: float
    true_lon: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_placement(scores: np.ndarray, grid: AreaGrid, true_lat: float, true_lon: float) -> PlacementEval:
    """Rank of the true node and error of the best node for a (rows, cols) score grid (NaN: no tile)."""
    s = np.asarray(scores, np.float64)
    valid = np.isfinite(s)
    n = int(valid.sum())
    lat, lon = grid.centres()
    flat = np.where(valid, s, -np.inf).ravel()
    b = int(np.argmax(flat))
    br, bc = divmod(b, grid.cols)
    node = node_of(grid, true_lat, true_lon)
    if node is None or not valid[node]:
        rank = n + 1
    else:
        rank = 1 + int((s[valid] > s[node]).sum())
    err = float(haversine_km(lat[br, bc], lon[br, bc], true_lat, true_lon)) * 1000.0
    return PlacementEval(rank, n, err, float(lat[br, bc]), float(lon[br, bc]), float(true_lat), float(true_lon))


def summarize(evals: Sequence[PlacementEval], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """n, median / mean error (m), median rank, recall@k and recall@1 % of many placements."""
    if not evals:
        return {"n": 0}
    ranks = np.array([e.rank for e in evals])
    errors = np.array([e.error_m for e in evals])
    n_refs = max(e.n_scored for e in evals)
    out = {"n": len(evals), "median_error_m": float(np.median(errors)), "mean_error_m": float(np.mean(errors)),
           "median_rank": float(np.median(ranks)), "mean_rank": float(np.mean(ranks)), "n_positions": int(n_refs)}
    out.update(recall_from_ranks(ranks, n_refs, ks=ks, percents=(1.0,)))
    return out


def evaluate_pairs(matcher, pairs, batch_size: int = 32, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """recall@k and recall@1 % of a matcher on held-out pairs (a ``crossview build`` folder or its
    ``pairs.csv``): each photo against every tile of its modality, the truth being its own tile.

    Returns {modality: {"n", "recall@1", ..., "recall@1%", "median_rank"}}. Photo headings from the
    manifest are passed to a query-mode matcher (0 when the tiles were turned to the heading).
    """
    import json
    from pathlib import Path

    from geoscope.area_search.matcher import heading_mode, unit_rows
    from geoscope.data.crossview_pairs import read_pairs
    from geoscope.data.images import load_image
    from geoscope.errors import InputError
    from geoscope.geo.retrieval_metrics import ranks_from_embeddings

    df = read_pairs(pairs)
    folder = Path(pairs) if Path(pairs).is_dir() else Path(pairs).parent
    settings: dict = {}
    if (folder / "crossview.json").is_file():
        settings = (json.loads((folder / "crossview.json").read_text(encoding="utf-8")) or {}).get("settings", {}) or {}
    turned = bool(settings.get("rotate_to_heading", False))
    mode = heading_mode(matcher)
    out: dict = {}
    for modality, sub in df.groupby("modality", sort=True):
        if len(sub) < 2:
            raise InputError(f"{folder}: only {len(sub)} {modality} pair(s); recall needs at least two")
        q_parts, r_parts = [], []
        rows = list(sub.itertuples(index=False))
        for a in range(0, len(rows), batch_size):
            chunk = rows[a:a + batch_size]
            headings = [None if mode == "reference" or not np.isfinite(_num(r.heading_deg)) else
                        (0.0 if turned else _num(r.heading_deg)) for r in chunk]
            q_parts.append(matcher.embed_queries([load_image(r.photo) for r in chunk], headings=headings))
            r_parts.append(matcher.embed_references([load_image(r.tile) for r in chunk]))
        ranks = ranks_from_embeddings(unit_rows(np.concatenate(q_parts)), unit_rows(np.concatenate(r_parts)),
                                      np.arange(len(rows)))
        out[str(modality)] = {"n": len(rows), "median_rank": float(np.median(ranks)),
                              **recall_from_ranks(ranks, len(rows), ks=ks, percents=(1.0,))}
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")

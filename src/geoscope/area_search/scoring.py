"""Scores over an area: one photo against every reference tile, and photos along a route combined.

A photo's score at a grid node is the highest cosine similarity between the photo and the node's
tile over the headings tried (:func:`score_photo`). Scores become log-likelihoods by a softmax over
the area at a temperature (:func:`log_likelihood`; the default is half the spread of the scores, so
one standard deviation above the mean is worth a factor e^2).

A route (:func:`route_scores`): photos 1..n taken ``spacing_m`` apart along a path. The position of
photo t+1 lies about ``spacing_m`` from that of photo t, so the best explanation of all photos is the
path of grid nodes, consecutive nodes that far apart, with the greatest sum of log-likelihoods: a
Viterbi pass over the grid. The answer is the **last** photo's position; ``route_scores`` also gives
the best path ending at each node (its nodes are the positions of every photo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np

from geoscope.area_search.matcher import heading_mode, unit_rows
from geoscope.area_search.references import ReferenceSet, nearest_heading_index, reference_matrix
from geoscope.errors import InputError


@dataclass
class PhotoScores:
    """One photo over the area: ``scores`` (rows, cols) float32, NaN where no tile; ``heading``
    (rows, cols) the heading (degrees) that scored best at each node."""

    scores: np.ndarray
    heading: np.ndarray
    headings_tried: tuple[float, ...]
    extra: dict = field(default_factory=dict)


def query_headings(refs: ReferenceSet, matcher: Any, known: float | None, steps: Sequence[float]) -> list[float | None]:
    """The headings to embed the photo at: the known one, or every heading tried (query mode); in
    reference mode the photo is embedded once (references carry the headings)."""
    if heading_mode(matcher) == "reference":
        return [None]
    return [float(known)] if known is not None else [float(h) for h in steps]


def score_photo(refs: ReferenceSet, matcher: Any, image: Any, heading: float | None = None,
                steps: Sequence[float] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)) -> PhotoScores:
    """Score ``image`` against every reference tile of ``refs``: max over headings at each node.

    ``heading``: the compass heading the photo faces, when known; otherwise every heading of
    ``steps`` (query mode) or of the references (reference mode) is tried.
    """
    mode = heading_mode(matcher)
    qh = query_headings(refs, matcher, heading, steps)
    q = unit_rows(matcher.embed_queries([image] * len(qh), headings=qh))
    grid = refs.grid
    n_nodes = len(grid)
    ref_headings = refs.spec.headings
    allowed = np.ones(len(ref_headings), bool)
    if mode == "reference" and heading is not None:
        allowed[:] = False
        allowed[nearest_heading_index(ref_headings, heading)] = True
    best = np.full(n_nodes, -np.inf, np.float32)
    best_h = np.zeros(n_nodes, np.float32)
    for start, r in reference_matrix(refs):
        sims = r @ q.T  # (chunk, A)
        node = refs.node[start:start + len(r)]
        hk = refs.heading_index[start:start + len(r)]
        ok = allowed[hk]
        a = sims.argmax(axis=1)
        s = sims[np.arange(len(r)), a]
        s = np.where(ok, s, -np.inf).astype(np.float32)
        h = np.array(ref_headings, np.float32)[hk] if mode == "reference" else np.array(
            [0.0 if v is None else v for v in qh], np.float32)[a]
        if len(ref_headings) == 1:  # one row per node
            best[node], best_h[node] = s, h
            continue
        # several rows share a node (reference headings): keep the best of them
        order = np.argsort(s, kind="stable")  # ascending, so the best write lands last
        node_o, s_o, h_o = node[order], s[order], h[order]
        better = s_o > best[node_o]
        best[node_o[better]] = s_o[better]
        best_h[node_o[better]] = h_o[better]
    scores = np.where(np.isfinite(best), best, np.nan).astype(np.float32).reshape(grid.rows, grid.cols)
    tried = tuple(float(ref_headings[i]) for i in np.flatnonzero(allowed)) if mode == "reference" else \
        tuple(0.0 if v is None else float(v) for v in qh)
    return PhotoScores(scores, best_h.reshape(grid.rows, grid.cols), tried)


def log_likelihood(scores: np.ndarray, temperature: float | None = None) -> tuple[np.ndarray, float]:
    """(log-softmax of ``scores / T`` over the valid nodes (-inf elsewhere), T). ``temperature``
    None: half the standard deviation of the valid scores."""
    s = np.asarray(scores, np.float64)
    valid = np.isfinite(s)
    if not valid.any():
        raise InputError("no reference tile of the area has enough data to score against")
    if temperature is None:
        spread = float(np.std(s[valid]))
        temperature = spread / 2.0 if spread > 1e-9 else 1.0
    if not temperature > 0:
        raise InputError(f"the temperature must be positive, got {temperature}")
    z = np.where(valid, s / temperature, -np.inf)
    m = z[valid].max()
    lse = m + math.log(np.exp(z[valid] - m).sum())
    return np.where(valid, z - lse, -np.inf), float(temperature)


def probabilities(scores: np.ndarray, temperature: float | None = None) -> tuple[np.ndarray, float]:
    """Softmax of the scores over the valid nodes (0 elsewhere), and the temperature used."""
    ll, t = log_likelihood(scores, temperature)
    return np.where(np.isfinite(ll), np.exp(ll), 0.0), t


def step_offsets(spacing_m: float, stride_m: float, tolerance_m: float | None = None) -> np.ndarray:
    """(K, 2) grid offsets (drow, dcol) whose ground length is within ``tolerance_m`` of ``spacing_m``.

    The default tolerance, 0.75 strides + 10 % of the spacing, covers positions rounded to the grid
    (up to half a stride each way) and a spacing that is only roughly known.
    """
    if not spacing_m >= 0:
        raise InputError(f"the spacing between photos must be zero or more metres, got {spacing_m}")
    tol = 0.75 * stride_m + 0.1 * spacing_m if tolerance_m is None else float(tolerance_m)
    reach = int(math.ceil((spacing_m + tol) / stride_m))
    dr, dc = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    d = np.hypot(dr, dc) * stride_m
    keep = np.abs(d - spacing_m) <= tol
    return np.stack([dr[keep], dc[keep]], axis=1).astype(np.int64)


@dataclass
class RouteResult:
    """The Viterbi pass: ``scores`` (rows, cols) the best path's summed log-likelihood ending at each
    node (the last photo there); ``path(r, c)`` that path, first photo first."""

    scores: np.ndarray
    back: list[np.ndarray]  # per step t >= 1: (rows, cols) offset index taken into step t's node
    offsets: np.ndarray
    temperatures: list[float]

    def path(self, row: int, col: int) -> list[tuple[int, int]]:
        nodes = [(int(row), int(col))]
        for back in reversed(self.back):
            k = int(back[nodes[-1]])
            dr, dc = self.offsets[k]
            nodes.append((nodes[-1][0] - int(dr), nodes[-1][1] - int(dc)))
        return nodes[::-1]


def route_scores(photo_scores: Sequence[np.ndarray], spacing_m: float, stride_m: float,
                 tolerance_m: float | None = None, temperature: float | None = None) -> RouteResult:
    """Combine the score grids of photos taken ``spacing_m`` apart (in order) into one: the best sum of
    per-photo log-likelihoods over paths whose consecutive nodes are that far apart (Viterbi)."""
    if not photo_scores:
        raise InputError("a route needs at least one photo")
    offsets = step_offsets(spacing_m, stride_m, tolerance_m)
    if len(offsets) == 0:
        raise InputError(f"no step on a {stride_m:g} m grid is {spacing_m:g} m long")
    temps: list[float] = []
    ll0, t0 = log_likelihood(photo_scores[0], temperature)
    temps.append(t0)
    v = ll0
    rows, cols = v.shape
    backs: list[np.ndarray] = []
    for s in photo_scores[1:]:
        ll, t = log_likelihood(s, temperature)
        temps.append(t)
        best = np.full((rows, cols), -np.inf)
        arg = np.zeros((rows, cols), np.int16)
        for k, (dr, dc) in enumerate(offsets):
            # the previous node is (r - dr, c - dc)
            shifted = np.full((rows, cols), -np.inf)
            src_r = slice(max(0, -dr), rows - max(0, dr))
            dst_r = slice(max(0, dr), rows - max(0, -dr))
            src_c = slice(max(0, -dc), cols - max(0, dc))
            dst_c = slice(max(0, dc), cols - max(0, -dc))
            if dst_r.start >= dst_r.stop or dst_c.start >= dst_c.stop:
                continue
            shifted[dst_r, dst_c] = v[src_r, src_c]
            better = shifted > best
            best[better] = shifted[better]
            arg[better] = k
        v = best + ll
        backs.append(arg)
    if not np.isfinite(v).any():
        raise InputError(f"no path over the area has photos {spacing_m:g} m apart on tiles with data; "
                         "check --spacing-m against the stride and the area")
    return RouteResult(v, backs, offsets, temps)

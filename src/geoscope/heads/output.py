"""``HeadOutput``: what a head predicts for a batch (plain numpy data, importable without torch).

It lives apart from ``heads.base`` so that heads served without torch (``heads.gallery_search``)
return the same type; ``from geoscope.heads.base import HeadOutput`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class HeadOutput:
    """What a head predicts for a batch of B embeddings.

    ``cell_probs``: (B, n_cells) probabilities over the finest geocells, or None for heads without cells.
    ``coords``: (B, K, 2) candidate (lat, lon) in degrees, best first. ``scores``: (B, K) their
    probabilities. ``cells``: (B, K) the finest-cell index of each candidate, or None.
    ``support`` (M, 2), or (B, M, 2) when it differs per image, and ``support_probs`` (B, M): the whole
    distribution the candidates were drawn from (cell centroids, a GPS gallery, refined points), used for
    confidence; None when the head gives one point. The distribution is a mixture with one component
    per support point (``geoscope.calibration`` puts a fitted kernel around each).
    ``support_cells``: the support points are the finest cells, in order (component m is cell m).
    ``support_refined`` (B, M) bool: points moved from their cell's centroid by image evidence (their
    kernel is narrower than the cell's spread); None when none are.
    ``candidate_support`` (B, K): each candidate's component (index into support); a candidate's
    probability is its component's weight. None when there is no support (a single point).
    ``neighbourhood``: what that component is, in words for the JSON and the docs: "cell" (the
    candidate's finest geocell), "gallery entry" (the locations nearer to the candidate than to any
    other gallery point), "town", or "disc" (a single point estimate: the probability is the mass
    within ``CANDIDATE_DISC_KM`` of it).
    """

    cell_probs: np.ndarray | None
    coords: np.ndarray
    scores: np.ndarray
    cells: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    support: np.ndarray | None = None
    support_probs: np.ndarray | None = None
    support_cells: bool = False
    support_refined: np.ndarray | None = None
    candidate_support: np.ndarray | None = None
    neighbourhood: str = "disc"

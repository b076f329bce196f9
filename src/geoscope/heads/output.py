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
    confidence; None when the head gives one point.
    """

    cell_probs: np.ndarray | None
    coords: np.ndarray
    scores: np.ndarray
    cells: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    support: np.ndarray | None = None
    support_probs: np.ndarray | None = None

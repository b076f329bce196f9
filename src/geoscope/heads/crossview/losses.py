"""Losses of the cross-view twin network, over L2-normalised query / reference embeddings.

- :func:`info_nce`: symmetric InfoNCE (CLIP / Sample4Geo): row i of the queries should match row i of
  the references against every other reference of the batch, and the other way round, at a learnable
  temperature (``logit_scale`` = log of 1 / temperature). Hard negatives enter through the batch: a batch
  built by :func:`geoscope.heads.crossview.mining.proximity_batches` holds neighbouring places together, and
  ``extra_refs`` adds mined references (by similarity) as further columns of the query -> reference side.
- :func:`triplet_loss`: the soft-margin / hinge triplet loss of Mosaic and Where-in-the-World, with the
  hardest negative of each row (or a given one).
- :func:`same_place_loss`: binary cross-entropy of the same-place classifier's logits.

``same`` (B, B) bool masks pairs that show the same place (several views of one position): they are
neither positives' rivals nor negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: CLIP's cap on the learnable logit scale (temperature >= 0.01)
MAX_LOGIT_SCALE = 4.6052


def _mask_same(logits: torch.Tensor, same: torch.Tensor | None) -> torch.Tensor:
    """Logits with pairs of the same place (other than the diagonal) pushed out of the softmax."""
    if same is None:
        return logits
    n = min(logits.shape)
    off = same[:, : logits.shape[1]].clone()
    off[torch.arange(n), torch.arange(n)] = False
    return logits.masked_fill(off, float("-inf"))


def info_nce(q: torch.Tensor, r: torch.Tensor, logit_scale: torch.Tensor, same: torch.Tensor | None = None,
             extra_refs: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of ``q`` (B, D) and ``r`` (B, D), unit rows.

    ``logit_scale``: log(1 / temperature), clamped to ``MAX_LOGIT_SCALE``. ``extra_refs`` (M, D): more
    negatives for the query -> reference direction (mined hard negatives). Returns the mean of both
    directions' cross-entropies.
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * q @ r.T
    target = torch.arange(len(q), device=q.device)
    logits = _mask_same(logits, same)
    q2r = logits if extra_refs is None else torch.cat([logits, scale * q @ extra_refs.T], dim=1)
    r2q = _mask_same(scale * r @ q.T, None if same is None else same.T)
    return 0.5 * (F.cross_entropy(q2r, target) + F.cross_entropy(r2q, target))


def hardest_negatives(sim: torch.Tensor, same: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the most similar non-matching column of each row of ``sim`` (B, B)."""
    s = sim.clone()
    n = len(s)
    s[torch.arange(n), torch.arange(n)] = float("-inf")
    if same is not None:
        s = s.masked_fill(same, float("-inf"))
    return s.argmax(dim=1)


def triplet_loss(q: torch.Tensor, r: torch.Tensor, margin: float = 0.2, negatives: torch.Tensor | None = None,
                 same: torch.Tensor | None = None, soft: bool = False) -> torch.Tensor:
    """Triplet loss of (anchor q_i, positive r_i, negative r_n(i)) on cosine similarity, both directions.

    ``negatives`` (B,): the negative reference of each row; default the hardest in the batch
    (:func:`hardest_negatives`). Hinge ``max(0, margin - s_pos + s_neg)``, or with ``soft`` the soft
    margin ``log(1 + exp(10 (s_neg - s_pos)))`` (Where-in-the-World).
    """
    sim = q @ r.T
    pos = sim.diagonal()
    if negatives is None:
        neg_q = sim.gather(1, hardest_negatives(sim, same)[:, None])[:, 0]
        neg_r = sim.T.gather(1, hardest_negatives(sim.T, None if same is None else same.T)[:, None])[:, 0]
    else:
        neg_q = sim.gather(1, negatives[:, None])[:, 0]
        neg_r = sim.T.gather(1, negatives[:, None])[:, 0]
    gap = torch.cat([neg_q - pos, neg_r - pos])
    return F.softplus(10.0 * gap).mean() if soft else F.relu(margin + gap).mean()


def same_place_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of pair logits against 1 (same place) / 0 (different places)."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())

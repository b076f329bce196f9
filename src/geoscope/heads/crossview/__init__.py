"""The cross-view head (``heads.crossview.head.CrossViewHead``, registered as ``crossview``) and its parts:
``branch`` (aggregation + projection of one view), ``losses`` (InfoNCE, triplet, same-place),
``mining`` (hard negatives by proximity and by similarity), ``same_place`` (the calibrated pair classifier)."""

from geoscope.heads.crossview.head import CrossViewHead

__all__ = ["CrossViewHead"]

"""Registrations of the built-in encoders, one light module per family (no torch at import).

``encoders.registry`` imports every module here on its first lookup. A module registers checkpoints
with ``@register_encoder`` (and open-ended names with ``@register_encoder_loader``); the builders
import the family's torch implementation (``encoders/<family>.py``) only when called.
"""

"""Test oracles and fixtures shared by the tests and benchmarks; never used by the library itself.

- ``geoscope.testing.geoclip.reference_geoclip_class()``: the ``geoclip`` package's own ``GeoCLIP``
  class (the reference that GeoCLIP answers are compared against).
- Tiny random CLIP checkpoints: ``geoscope.encoders.testing.save_tiny_clip``.
"""

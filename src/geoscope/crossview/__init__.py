"""Cross-view matching: train, search and evaluate twin networks that match a view against overhead tiles.

- ``crossview.pairs``: training pairs (a ``crossview build`` folder, or two rasters and positions);
- ``crossview.gallery``: backbone features of views cached in the embedding store, keyed by the encoder;
- ``crossview.train``: ``train_crossview`` (``geoscope crossview train``), resumable;
- ``crossview.model``: ``CrossViewModel`` (``embed_queries``, ``embed_references``, ``same_place_probability``,
  ``locate``), the API area search is written against;
- ``crossview.demo``: ``geoscope crossview demo``, the planet-scale cross-modal benchmark.

The head itself is ``geoscope.heads.crossview`` (registered as ``crossview``).
"""

"""Area search: a ground photo (or a route of photos) against overhead tiles over an area.

- ``matcher``: the :class:`CrossViewMatcher` protocol, :class:`FrozenEncoderMatcher` (the
  frozen-feature baseline) and :func:`load_matcher` (what ``-m/--model`` becomes);
- ``references``: reference tiles over an area embedded once into a cached, resumable store;
- ``scoring``: a photo's score at every position (best heading), routes combined by a Viterbi pass;
- ``search``: :class:`AreaSearch` (prepare once, answer many photos) and :func:`open_area`;
- ``outputs``: heatmap GeoTIFF / PNG, candidates GeoJSON / CSV;
- ``evaluate``: rank of the true tile, error in metres, recall@k.

CLI: ``geoscope crossview search``.
"""

from geoscope.area_search.evaluate import PlacementEval, evaluate_placement, node_of, summarize
from geoscope.area_search.matcher import CrossViewMatcher, FrozenEncoderMatcher, load_matcher
from geoscope.area_search.search import AreaResult, AreaSearch, open_area

__all__ = ["AreaResult", "AreaSearch", "CrossViewMatcher", "FrozenEncoderMatcher", "PlacementEval",
           "evaluate_placement", "load_matcher", "node_of", "open_area", "summarize"]

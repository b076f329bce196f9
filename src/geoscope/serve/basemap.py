"""The page's offline basemap: Natural Earth country borders (``geo.borders.countries()``) as GeoJSON.

Simplified (0.05 degrees, topology kept), wound as RFC 7946 wants and rounded to 0.001 degrees, about 1 MB of JSON (a third of
that gzipped), built once per process and kept as bytes. Nothing is fetched from the network: the
borders are the files ``python -m geoscope.geo.data_setup`` derived at set-up.
"""

from __future__ import annotations

import functools
import json

SIMPLIFY_DEG = 0.05
PRECISION_DEG = 0.001


@functools.lru_cache(maxsize=2)
def countries_geojson(tolerance_deg: float = SIMPLIFY_DEG) -> bytes:
    """A FeatureCollection of every country (properties ``code``, ``name``) as compact UTF-8 JSON."""
    import shapely

    from geoscope.geo.borders import countries
    from geoscope.geo.geojson import to_geojson

    borders = countries()
    simple = shapely.set_precision(shapely.simplify(borders.geometries, tolerance_deg, preserve_topology=True),
                                   PRECISION_DEG)
    features = [
        {"type": "Feature", "geometry": to_geojson(g), "properties": {"code": code, "name": name}}
        for g, code, name in zip(simple, borders.codes, borders.names)
        if g is not None and not g.is_empty
    ]
    doc = {"type": "FeatureCollection", "properties": {"source": "Natural Earth (public domain), simplified",
                                                       "simplified_deg": tolerance_deg}, "features": features}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

import json

import numpy as np
import pytest
from shapely.geometry import shape

from geoscope.data.exif import ExifFindings
from geoscope.geo.places import Place
from geoscope.prediction import Candidate, Prediction


def _pred():
    return Prediction(
        source="a.jpg",
        candidates=[
            Candidate(60.17, 24.94, 0.7, Place("FI", "Finland", "Uusimaa", "FI-18", "Helsinki", 0.5)),
            Candidate(61.50, 23.76, 0.2),
        ],
        cell_probs=np.array([0.1, 0.7, 0.2]),
        confidence={25: 0.6, 200: 0.8, 750: 0.95},
        exif=ExifFindings(lat=61.4978, lon=23.761),
        model="test",
    )


def test_json_round_trip_keeps_candidates_and_exif():
    p = _pred()
    d = json.loads(p.to_json())
    q = Prediction.from_dict(d)
    assert q.candidates[0].place.town == "Helsinki"
    assert q.candidates[1].place is None
    assert q.confidence == {25: 0.6, 200: 0.8, 750: 0.95}
    assert q.exif.lat == 61.4978
    assert d["top_cells"][0] == {"cell": 1, "probability": 0.7}


def test_exif_distance_is_great_circle_to_best_candidate():
    p = _pred()
    assert abs(p.exif_distance_km - 160.8) < 1.0  # Helsinki -> Tampere
    assert Prediction("x").exif_distance_km is None


def test_failed_prediction_keeps_its_error():
    p = Prediction.failed("bad.jpg", "bad.jpg: not an image")
    assert not p.ok and p.best is None
    assert json.loads(p.to_json())["error"] == "bad.jpg: not an image"


def test_geo_interface_is_a_geojson_feature_that_shapely_takes():
    p = _pred()
    feature = p.__geo_interface__
    assert feature["type"] == "Feature"
    assert feature["geometry"] == {"type": "Point", "coordinates": [24.94, 60.17]}  # RFC 7946: lon, lat
    point = shape(p)
    assert (point.x, point.y) == (24.94, 60.17)
    props = feature["properties"]
    assert props["source"] == "a.jpg" and props["probability"] == 0.7 and props["place"] == "Helsinki, Uusimaa, Finland"
    assert props["confidence"] == {"25": 0.6, "200": 0.8, "750": 0.95}
    rows = [(c["lat"], c["lon"], c["place"]) for c in props["candidates"]]
    assert rows == [(60.17, 24.94, "Helsinki, Uusimaa, Finland"), (61.5, 23.76, None)]
    json.dumps(feature)  # plain JSON types throughout
    second = shape(p.candidates[1])
    assert (second.x, second.y) == (23.76, 61.5)
    assert p.candidates[1].__geo_interface__["properties"]["probability"] == 0.2
    failed = Prediction.failed("b.jpg", "b.jpg: not an image")
    assert failed.__geo_interface__["geometry"] is None
    assert failed.__geo_interface__["properties"]["error"] == "b.jpg: not an image"


def test_geopandas_reads_predictions_and_candidates():
    geopandas = pytest.importorskip("geopandas")  # an optional tool, not a geoscope dependency
    p = _pred()
    frame = geopandas.GeoDataFrame.from_features([p, Prediction.failed("b.jpg", "bad")])
    assert list(frame["source"]) == ["a.jpg", "b.jpg"]
    assert frame.geometry.iloc[0].x == 24.94 and frame.geometry.iloc[1] is None
    cands = geopandas.GeoDataFrame.from_features(p.candidates)
    assert list(cands["probability"]) == [0.7, 0.2]

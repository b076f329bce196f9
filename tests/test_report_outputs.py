"""Maps, GeoJSON / KML / CSV exports and the HTML report of a Prediction."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from geoscope.data.exif import ExifFindings
from geoscope.errors import InputError
from geoscope.geo.cells import Geocells
from geoscope.geo.places import Place
from geoscope.prediction import Candidate, Prediction
from geoscope.report.exports import (
    geojson_problems,
    prediction_geojson,
    prediction_kml,
    predictions_csv,
    write_geojson,
    write_kml,
    write_predictions_csv,
)
from geoscope.report.html import render_report, write_report
from geoscope.report.maps import WORLD_EXTENT, fit_extent, plot_cell_probabilities, plot_prediction


def finland_prediction(exif=True) -> Prediction:
    """Figure 2 of the Finland poster: a 30 x 40 grid over Finland, mass around Tampere."""
    cells = Geocells.grid((59.5, 20.0, 70.1, 31.6), 30, 40)
    c = cells.centroids
    d2 = (c[:, 0] - 61.5) ** 2 + ((c[:, 1] - 23.8) * 0.5) ** 2
    p = np.exp(-d2 / 0.5)
    p /= p.sum()
    order = np.argsort(-p)[:3]
    place = Place(country_code="FI", country="Finland", region="Pirkanmaa", town="Tampere", town_km=3.0)
    cands = [Candidate(float(c[i, 0]), float(c[i, 1]), float(p[i]), place if k == 0 else None, int(i))
             for k, i in enumerate(order)]
    return Prediction("photos/lake.jpg", cands, p, cells, {25: 0.2, 200: 0.7, 750: 0.99},
                      ExifFindings(lat=-33.87, lon=151.2, make="Canon") if exif else None, model="fixture")


def test_extent_fits_the_mass_and_falls_back_to_the_world():
    lat = np.array([61.0, 61.5, 62.0, -30.0])
    lon = np.array([23.0, 24.0, 25.0, 150.0])
    lon0, lon1, lat0, lat1 = fit_extent(lat, lon, [0.4, 0.3, 0.29, 0.01])
    assert lat0 < 61.0 and lat1 > 62.0 and lon0 < 23.0 and lon1 > 25.0
    assert lat1 - lat0 < 15 and lon1 - lon0 < 40  # a region, not the world
    assert fit_extent(lat, lon, [0.25, 0.25, 0.25, 0.25]) == WORLD_EXTENT
    assert fit_extent(lat[:3], lon[:3], include=[(-30.0, 150.0)]) == WORLD_EXTENT


def _png_pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_map_png_shades_the_probable_cells(tmp_path):
    pred = finland_prediction(exif=False)
    path = plot_prediction(pred, tmp_path / "m.png", truth=(61.5, 23.8))
    px = _png_pixels(path)
    assert px.shape[0] > 300 and px.shape[1] > 400
    hot = (px[..., 0] > 150) & (px[..., 1] < 80) & (px[..., 2] < 90)  # the dark red of the peak
    assert hot.sum() > 200
    assert (px.reshape(-1, 3) == 0).all(axis=1).sum() > 20  # the black true-location dot


def test_plot_cell_probabilities_checks_lengths():
    from matplotlib.figure import Figure

    pred = finland_prediction()
    ax = Figure().add_subplot()
    with pytest.raises(InputError, match="1199"):
        plot_cell_probabilities(pred.cells, pred.cell_probs[:-1], ax=ax)
    coll = plot_cell_probabilities(pred.cells, pred.cell_probs, ax=ax, colorbar=False)
    assert 0 < len(coll.get_paths()) <= len(pred.cells)


def test_geojson_is_valid_and_lon_lat_ordered(tmp_path):
    pred = finland_prediction()
    path = write_geojson(pred, tmp_path / "p.geojson")
    doc = json.loads(path.read_text())
    assert geojson_problems(doc) == []
    kinds = [f["properties"]["kind"] for f in doc["features"]]
    assert kinds.count("candidate") == 3 and kinds.count("exif_claim") == 1 and kinds.count("cell") > 10
    cand = next(f for f in doc["features"] if f["properties"]["kind"] == "candidate")
    lon, lat = cand["geometry"]["coordinates"]
    assert (lat, lon) == (pred.best.lat, pred.best.lon)
    assert cand["properties"]["label"] == "Tampere, Pirkanmaa, Finland"
    cells = [f for f in doc["features"] if f["properties"]["kind"] == "cell"]
    probs = [f["properties"]["probability"] for f in cells]
    assert probs == sorted(probs, reverse=True) and sum(probs) >= 0.99 - 1e-9
    ring = cells[0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and all(20 <= x <= 31.6 and 59.5 <= y <= 70.1 for x, y in ring)


def test_geojson_checker_catches_broken_documents():
    good = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[24.0, 61.0], [25.0, 61.0], [25.0, 62.0], [24.0, 61.0]]]}}
    assert geojson_problems(good) == []
    open_ring = json.loads(json.dumps(good))
    open_ring["geometry"]["coordinates"][0][-1] = [24.0, 62.0]
    assert any("not closed" in p for p in geojson_problems(open_ring))
    swapped = {"type": "Point", "coordinates": [61.0, 124.0]}  # (lat, lon) written the wrong way round
    assert any("latitude 124.0" in p for p in geojson_problems(swapped))
    assert any("not a GeoJSON geometry" in p for p in geojson_problems({"type": "Circle", "coordinates": []}))
    assert any("features" in p for p in geojson_problems({"type": "FeatureCollection"}))
    assert any("properties" in p for p in geojson_problems({"type": "Feature", "geometry": None}))
    short = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}
    assert any("at least 4" in p for p in geojson_problems(short))


def test_geojson_checker_catches_wrong_winding():
    shell = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]  # counter-clockwise
    hole = [[4.0, 4.0], [4.0, 6.0], [6.0, 6.0], [6.0, 4.0], [4.0, 4.0]]  # clockwise
    good = {"type": "Polygon", "coordinates": [shell, hole]}
    assert geojson_problems(good) == []
    cw_shell = {"type": "Feature", "properties": None,
                "geometry": {"type": "MultiPolygon", "coordinates": [[shell], [shell[::-1]]]}}
    problems = geojson_problems(cw_shell)
    assert len(problems) == 1 and "features" not in problems[0]
    assert problems[0].startswith("root.geometry[1][0]: exterior ring is clockwise")
    ccw_hole = {"type": "Polygon", "coordinates": [shell, hole[::-1]]}
    assert geojson_problems(ccw_hole) == ["root[1]: hole is counter-clockwise; RFC 7946 wants holes clockwise"]


def test_prediction_geojson_winds_cell_rings_counter_clockwise():
    """Adaptive cells (unions of quadtree leaves, which GEOS writes clockwise) and a cells object of
    someone else's that answers clockwise rings both come out right-handed."""
    rng = np.random.default_rng(0)
    lat, lon = rng.normal(61.0, 1.5, 3000), rng.normal(25.0, 3.0, 3000)
    cells = Geocells.adaptive(lat, lon, 20, 200)
    p = rng.dirichlet(np.full(len(cells), 0.2))
    pred = Prediction("x.jpg", [Candidate(61.0, 25.0, 0.5)], p, cells, {})
    doc = prediction_geojson(pred)
    assert sum(f["properties"]["kind"] == "cell" for f in doc["features"]) > 3
    assert geojson_problems(doc) == []

    class ClockwiseCells:
        centroids = cells.centroids

        def __len__(self):
            return len(cells)

        def polygon(self, i):
            g = cells.polygon(i)
            polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
            return {"type": "MultiPolygon", "coordinates": [[r[::-1] for r in rings] for rings in polys]}

    assert geojson_problems({"type": "Polygon", "coordinates": ClockwiseCells().polygon(0)["coordinates"][0]})
    pred = Prediction("x.jpg", [Candidate(61.0, 25.0, 0.5)], p, ClockwiseCells(), {})
    assert geojson_problems(prediction_geojson(pred)) == []


def test_kml_parses_with_fastkml(tmp_path):
    from fastkml import kml

    pred = finland_prediction()
    path = write_kml(pred, tmp_path / "p.kml", max_cells=50)
    doc = kml.KML.from_string(path.read_bytes())
    (document,) = doc.features
    folders = {f.name: f for f in document.features if hasattr(f, "features")}
    assert set(folders) >= {"Candidates", "Cell probabilities"}
    cands = folders["Candidates"].features
    assert len(cands) == 3 and cands[0].name.startswith("1. Tampere")
    point = cands[0].geometry
    assert (point.y, point.x) == pytest.approx((pred.best.lat, pred.best.lon))
    assert len(folders["Cell probabilities"].features) == 50
    claim = [f for f in document.features if getattr(f, "name", "") == "EXIF claimed location"]
    assert len(claim) == 1 and claim[0].geometry.x == pytest.approx(151.2)
    assert "<kml" in prediction_kml(Prediction.failed("x.jpg", "broken"))


def test_csv_has_one_row_per_image_including_failures(tmp_path):
    preds = [finland_prediction(), Prediction.failed("bad.jpg", "cannot decode JPEG")]
    path = write_predictions_csv(preds, tmp_path / "batch.csv", top_k=2)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["source"] for r in rows] == ["photos/lake.jpg", "bad.jpg"]
    assert float(rows[0]["lat_1"]) == pytest.approx(preds[0].best.lat, abs=1e-6)
    assert rows[0]["place_1"] == "Tampere, Pirkanmaa, Finland" and rows[0]["country_code_1"] == "FI"
    assert float(rows[0]["exif_distance_km"]) > 10000
    assert rows[1]["error"] == "cannot decode JPEG" and rows[1]["lat_1"] == ""
    assert predictions_csv([]).count("\n") == 1


def test_html_report_is_self_contained(tmp_path):
    pred = finland_prediction()
    map_png = plot_prediction(pred, tmp_path / "map.png")
    html = render_report(pred, images={"map": map_png}, verification={"verdict": "inconsistent",
                         "reason": "the pixels <disagree>"}, downloads={"GeoJSON": "prediction.geojson"})
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert "<script" not in html
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(data) == map_png.read_bytes()
    assert "Tampere, Pirkanmaa, Finland" in html and "inconsistent" in html
    assert "the pixels &lt;disagree&gt;" in html  # escaped
    out = write_report(tmp_path / "r.html", Prediction.failed("x.jpg", "no such file"))
    assert "could not be located: no such file" in out.read_text()


def test_map_of_a_model_without_cells_shows_its_candidates(tmp_path):
    pred = Prediction("x.jpg", [Candidate(48.86, 2.35, 0.6), Candidate(45.76, 4.84, 0.3)], model="retrieval")
    path = plot_prediction(pred, tmp_path / "c.png", claimed=(48.0, 3.0))
    px = _png_pixels(path)
    reddish = (px[..., 0] > 180) & (px[..., 1] < 140) & (px[..., 2] < 140)
    assert reddish.sum() > 100  # the candidate discs
    assert geojson_problems(prediction_geojson(pred)) == []

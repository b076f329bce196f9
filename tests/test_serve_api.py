"""The HTTP API over real (tiny) models: every image format, every bad input of issue 13, every model
kind, and the same Prediction JSON as ``geoscope locate --json``."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from _imagefixtures import huge_png, jpeg_bytes, synthetic_image, truncated_jpeg  # noqa: E402
from _servefixtures import KINDS, image_bytes, load_model, serve_models  # noqa: E402
from geoscope.report.exports import geojson_problems  # noqa: E402
from geoscope.serve import ServeConfig, create_app  # noqa: E402
from geoscope.verify import VERDICTS  # noqa: E402

LIMITS = dict(max_upload_bytes=300_000, max_pixels=4_000_000, max_top_k=50)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return serve_models(tmp_path_factory)


@pytest.fixture(scope="module")
def client(models):
    app = create_app(load_model(models, "classifier"), ServeConfig(**LIMITS))
    with TestClient(app) as c:
        yield c


def post(client, data: bytes | None, name="photo.jpg", ctype="image/jpeg", path="/api/locate", field="image", **form):
    files = None if data is None else {field: (name, data, ctype)}
    return client.post(path, files=files, data={k: str(v) for k, v in form.items()})


def assert_problem(r, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    msg = body["error"]
    assert "Traceback" not in msg and "\n" not in msg and len(msg) < 400, msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)


def _tiff_pages() -> bytes:
    buf = io.BytesIO()
    a, b = synthetic_image(10, 20, (40, 30)), synthetic_image(-30, 100, (40, 30))
    a.save(buf, format="TIFF", save_all=True, append_images=[b])
    return buf.getvalue()


def _animated_gif() -> bytes:
    buf = io.BytesIO()
    frames = [synthetic_image(10 * i, 20 * i, (40, 30)).convert("P") for i in range(3)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return image_bytes(fmt="HEIF")


VALID = {
    "jpeg": (lambda: image_bytes(fmt="JPEG"), "image/jpeg"),
    "png": (lambda: image_bytes(fmt="PNG"), "image/png"),
    "webp": (lambda: image_bytes(fmt="WEBP"), "image/webp"),
    "tiff": (lambda: image_bytes(fmt="TIFF"), "image/tiff"),
    "bmp": (lambda: image_bytes(fmt="BMP"), "image/bmp"),
    "gif": (lambda: image_bytes(fmt="GIF"), "image/gif"),
    "heic": (_heic, "image/heif"),
    "mpo": (lambda: image_bytes(fmt="MPO"), "image/jpeg"),
    "cmyk-jpeg": (lambda: image_bytes(fmt="JPEG", mode="CMYK"), "image/jpeg"),
    "16-bit-png": (lambda: image_bytes(fmt="PNG", mode="I;16"), "image/png"),
    "palette-png": (lambda: image_bytes(fmt="PNG", mode="P"), "image/png"),
    "greyscale-png": (lambda: image_bytes(fmt="PNG", mode="L"), "image/png"),
    "rgba-png": (lambda: image_bytes(fmt="PNG", mode="RGBA"), "image/png"),
    "animated-gif": (_animated_gif, "image/gif"),
    "multi-page-tiff": (_tiff_pages, "image/tiff"),
}


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_images_in_each_format_are_located(client, kind):
    make, mime = VALID[kind]
    r = post(client, make(), name=f"upload.{kind}", top_k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["error"] is None and len(body["candidates"]) == 3
    assert body["extra"]["upload"]["content_type"] == mime
    probs = [c["probability"] for c in body["candidates"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert body["candidates"][0]["place"] is not None


def test_the_type_comes_from_the_bytes_not_the_name_or_claimed_type(client):
    png = image_bytes(fmt="PNG")
    r = post(client, png, name="holiday.jpg", ctype="image/gif")
    assert r.status_code == 200 and r.json()["extra"]["upload"]["content_type"] == "image/png"
    r = post(client, b"%PDF-1.7 this is a document", name="photo.jpg", ctype="image/jpeg")
    assert_problem(r, 415, "photo.jpg", "not a supported image")


def test_the_answer_is_the_prediction_json_the_cli_prints(client, models, tmp_path, capsys):
    from geoscope.cli import main

    path = tmp_path / "paris.jpg"
    path.write_bytes(jpeg_bytes(48.85, 2.35, gps=True))
    rc = main(["locate", str(path), "-m", str(models["dirs"]["classifier"]), "-k", "4", "--json", "--no-progress"])
    assert rc == 0
    cli = json.loads(capsys.readouterr().out)[0]
    api = post(client, path.read_bytes(), name="paris.jpg", top_k=4).json()
    assert api["source"] == "paris.jpg"
    assert api.pop("extra")["upload"]["bytes"] == path.stat().st_size
    cli.pop("extra"), cli.pop("source"), api.pop("source")
    for a, b in zip(api["candidates"], cli["candidates"]):
        assert a["place"] == b["place"] and a["cell"] == b["cell"]
        assert a["lat"] == pytest.approx(b["lat"]) and a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    assert api["exif"] == cli["exif"] and api["exif"]["lat"] == pytest.approx(48.85, abs=1e-4)
    assert set(api) == set(cli) and api["confidence"].keys() == cli["confidence"].keys()
    assert [c["cell"] for c in api["top_cells"]] == [c["cell"] for c in cli["top_cells"]]


def test_geojson_kml_and_verification_as_documents_and_extras(client):
    data = jpeg_bytes(-33.9, 151.2, gps=True)
    gj = post(client, data, format="geojson", top_k=2)
    assert gj.status_code == 200 and gj.headers["content-type"].startswith("application/geo+json")
    doc = gj.json()
    assert geojson_problems(doc) == []
    kinds = [f["properties"]["kind"] for f in doc["features"]]
    assert kinds.count("candidate") == 2 and kinds.count("exif_claim") == 1 and "cell" in kinds
    kml = post(client, data, format="kml")
    assert kml.status_code == 200 and "kml" in kml.headers["content-type"]
    root = ET.fromstring(kml.content)
    assert len(root.findall(".//{http://www.opengis.net/kml/2.2}Placemark")) >= 6  # 5 candidates + the claim (+ cells)
    both = post(client, data, include="geojson,kml,verification", top_k=2).json()
    assert both["geojson"]["type"] == "FeatureCollection" and both["kml"].startswith("<?xml")
    v = both["verification"]
    assert v["claim_from"] == "exif" and v["verdict"] in VERDICTS and v["claimed_lat"] == pytest.approx(-33.9, abs=1e-4)


def test_verify_with_exif_with_a_claim_and_with_nothing(client):
    r = post(client, jpeg_bytes(35.7, 139.7, gps=True), path="/api/verify")
    assert r.status_code == 200
    v = r.json()["verification"]
    assert v["claim_from"] == "exif" and v["verdict"] in VERDICTS and "lift" in v["reason"]
    r = post(client, image_bytes(), path="/api/verify", claim="-33.9,151.2")
    v = r.json()["verification"]
    assert v["claim_from"] == "argument" and v["claimed_lon"] == pytest.approx(151.2)
    v = post(client, image_bytes(), path="/api/verify").json()["verification"]
    assert v["verdict"] == "inconclusive" and "no GPS" in v["reason"]
    assert_problem(post(client, image_bytes(), path="/api/verify", claim="north"), 400, "claim", "LAT,LON")
    assert_problem(post(client, image_bytes(), path="/api/verify", claim="95,10"), 400, "outside")


def test_explain_returns_map_attribution_geojson_and_kml(client):
    r = post(client, image_bytes(size=(64, 48)), path="/api/explain", grid=4)
    assert r.status_code == 200, r.text
    body = r.json()
    a = body["attribution"]
    assert a["method"] == "occlusion" and a["rows"] == a["cols"] == 4
    blocks = np.array(a["blocks"])
    assert blocks.shape == (4, 4) and np.isfinite(blocks).all()
    assert blocks.sum() == pytest.approx(a["sum"], abs=1e-6)
    for key in ("map_png", "attribution_png", "photo_png"):
        im = Image.open(io.BytesIO(base64.b64decode(body[key])))
        assert im.format == "PNG" and im.width > 40
    assert body["photo_size"] == [64, 48]
    assert geojson_problems(body["geojson"]) == [] and "<kml" in body["kml"]
    assert body["prediction"]["candidates"] and body["verification"]["verdict"] in VERDICTS
    assert_problem(post(client, image_bytes(), path="/api/explain", method="magic"), 400, "method")
    assert_problem(post(client, image_bytes(), path="/api/explain", target="cell:99999"), 400, "does not exist")
    assert_problem(post(client, image_bytes(), path="/api/explain", grid=40), 400, "grid")


# ------------------------------------------------------------------------------------ bad input
def _bomb(tmp_path) -> bytes:
    return huge_png(tmp_path / "bomb.png", 30_000, 30_000).read_bytes()


def _truncated(tmp_path) -> bytes:
    return truncated_jpeg(tmp_path / "cut.jpg", keep=0.4).read_bytes()


def _oversized(tmp_path) -> bytes:
    rng = np.random.default_rng(0)  # noise does not compress: > 300 KB as PNG
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(buf, format="PNG")
    assert len(buf.getvalue()) > LIMITS["max_upload_bytes"]
    return buf.getvalue()


def _many_pixels(tmp_path) -> bytes:  # a real, small file whose header is over the server's pixel limit
    buf = io.BytesIO()
    Image.new("L", (2500, 2000), 128).save(buf, format="PNG")
    return buf.getvalue()


BAD = {
    "zero-byte": (lambda p: b"", 400, ["empty"]),
    "truncated": (_truncated, 422, ["truncated"]),
    "non-image": (lambda p: b"hello, I am a text file\n" * 10, 415, ["not a supported image"]),
    "html-named-jpg": (lambda p: b"<html><script>alert(1)</script></html>", 415, ["not a supported image"]),
    "corrupt-header": (lambda p: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, ["photo.jpg"]),
    "oversized": (_oversized, 413, ["limit", "bytes"]),
    "decompression-bomb": (_bomb, 413, ["pixels"]),
    "too-many-pixels": (_many_pixels, 413, ["5,000,000 pixels", "limit of 4,000,000"]),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_upload_is_a_4xx_with_one_readable_sentence(client, tmp_path, kind):
    make, status, words = BAD[kind]
    assert_problem(post(client, make(tmp_path)), status, *words)
    assert post(client, image_bytes()).status_code == 200  # and the server keeps serving


def test_the_upload_size_is_refused_from_the_header_before_reading(client):
    body = b"x" * 100
    r = client.post("/api/locate", content=body, headers={"content-type": "multipart/form-data; boundary=zz",
                                                          "content-length": str(10**9)})
    assert_problem(r, 413, "1,000,000,000 bytes")


@pytest.mark.parametrize("top_k, words", [("100000", ["top_k", "1 to 50", "100000"]), ("-3", ["top_k", "-3"]),
                                           ("0", ["top_k"]), ("five", ["top_k", "five"]), ("2.5", ["top_k"])])
def test_bad_top_k_is_refused(client, top_k, words):
    assert_problem(post(client, image_bytes(), top_k=top_k), 400, *words)


def test_the_largest_allowed_top_k_works(client):
    r = post(client, image_bytes(), top_k=LIMITS["max_top_k"])
    assert r.status_code == 200 and len(r.json()["candidates"]) == 16  # every one of the model's 16 cells


def test_malformed_requests(client):
    assert_problem(post(client, image_bytes(), field="photo"), 400, "no file field named 'image'", "photo")
    assert_problem(client.post("/api/locate", data={"top_k": "3"}), 415, "multipart/form-data")
    assert_problem(client.post("/api/locate", json={"image": "aGVsbG8="}), 415, "multipart/form-data")
    assert_problem(client.post("/api/locate", files={"top_k": (None, "3")}), 400, "no file field named 'image'")
    assert_problem(post(client, image_bytes(), format="pdf"), 400, "format", "json, geojson, kml")
    assert_problem(post(client, image_bytes(), include="everything"), 400, "include", "everything")
    r = client.post("/api/locate", content=b"--zz\r\nContent-Disposition: form-data; name=\"image\"; "
                    b"filename=\"a.jpg\"\r\n\r\nabc", headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code in (400, 415, 422)  # a body cut in the middle of a part
    two = [("image", ("a.jpg", image_bytes(), "image/jpeg")), ("image", ("b.jpg", image_bytes(), "image/jpeg"))]
    assert_problem(client.post("/api/locate", files=two), 400, "at most 1 image")
    assert_problem(client.get("/api/nothing-here"), 404, "nothing at /api/nothing-here")
    assert_problem(client.get("/api/locate"), 405, "GET is not allowed")
    assert client.get("/healthz").json()["status"] == "ok"


# ------------------------------------------------------------------------------------ every model kind
@pytest.mark.parametrize("kind", list(KINDS) + ["geoclip"])
def test_every_model_kind_answers_and_what_it_cannot_give_is_absent(models, kind):
    geo = load_model(models, kind)
    with TestClient(create_app(geo, ServeConfig(**LIMITS))) as c:
        cfg = c.get("/api/config").json()
        has_cells = kind in ("classifier", "hybrid")
        assert cfg["model"]["provides"]["cell_heatmap"] is has_cells
        assert cfg["model"]["pretrained"] == ("geoclip" if kind == "geoclip" else None)
        r = post(c, jpeg_bytes(48.85, 2.35, gps=True), top_k=3, include="geojson,kml,verification")
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["candidates"]) == (1 if kind == "regressor" else 3)
        assert bool(body["top_cells"]) is has_cells
        # every kind reports confidence: the regressor's point is a one-component mixture with a fitted kernel
        assert set(body["confidence"]) == {"25", "200", "750"}
        cells = [f for f in body["geojson"]["features"] if f["properties"]["kind"] == "cell"]
        assert bool(cells) is has_cells and geojson_problems(body["geojson"]) == []
        assert body["verification"]["verdict"] in VERDICTS
        ex = post(c, image_bytes(), path="/api/explain", grid=3)
        assert ex.status_code == 200, ex.text
        if has_cells:
            assert ex.json()["attribution"]["rows"] == 3
        else:
            assert ex.json()["attribution"] is None and "no cell distribution" in ex.json()["attribution_note"]
            assert ex.json()["map_png"]  # the map is drawn from the candidates


def test_models_config_health_basemap_and_docs(client):
    models = client.get("/api/models").json()
    assert models["loaded"]["kind"] == "classifier" and models["loaded"]["n_cells"] == 16
    assert {"geoclip", "streetclip", "clip-zeroshot"} <= {m["name"] for m in models["pretrained"]}
    cfg = client.get("/api/config").json()
    assert cfg["limits"]["max_top_k"] == 50 and cfg["map"]["tile_url"] is None and cfg["auth"] is False
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["capacity"] == 64 and health["queued"] == 0
    r = client.get("/api/basemap/countries.geojson", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    doc = r.json()
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) > 200
    codes = {f["properties"]["code"] for f in doc["features"]}
    assert {"FR", "JP", "BR", "AU"} <= codes
    assert geojson_problems({"type": "FeatureCollection", "features": doc["features"][:40]}) == []
    spec = client.get("/openapi.json").json()
    for path in ("/api/locate", "/api/verify", "/api/explain", "/api/models", "/healthz"):
        assert path in spec["paths"]
    form = spec["paths"]["/api/locate"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"] and "top_k" in form["properties"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "leaflet.js" in page.text and "cdn" not in page.text.lower()
    assert client.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    assert client.get("/static/vendor/leaflet/images/marker-icon.png").headers["content-type"] == "image/png"

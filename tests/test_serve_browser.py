"""The page in a real browser: Playwright drives Debian's headless Chromium (/usr/bin/chromium; Playwright's
own browser download is never used) against a live ``geoscope serve`` app with a tiny classifier.

It uploads photos, finds the markers and the cell heatmap drawn on the map over the offline basemap,
reads the EXIF panel, downloads JSON / GeoJSON / KML, shows the attribution overlay, checks that no
request leaves the server (no CDN, no tiles), and takes screenshots (laptop and phone sizes) into
``$GEOSCOPE_TEST_ARTIFACTS`` when set, else the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; scripts/setup.sh does)",
                allow_module_level=True)
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from _imagefixtures import jpeg_bytes  # noqa: E402
from _servefixtures import LiveServer, image_bytes, load_model, serve_models  # noqa: E402
from geoscope.report.exports import geojson_problems  # noqa: E402
from geoscope.serve import ServeConfig, create_app  # noqa: E402
from geoscope.verify import VERDICTS  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return serve_models(tmp_path_factory)


@pytest.fixture(scope="module")
def server(models):
    app = create_app(load_model(models, "classifier"), ServeConfig())
    with LiveServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def artifacts(tmp_path) -> Path:
    out = os.environ.get("GEOSCOPE_TEST_ARTIFACTS")
    path = Path(out) if out else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.slow
def test_upload_photos_and_see_them_on_the_map(server, browser, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "paris.jpg").write_bytes(jpeg_bytes(48.85, 2.35, size=(96, 72), gps=True, make="Synth", model="Cam 1"))
    (photos / "sydney.png").write_bytes(image_bytes(-33.9, 151.2, fmt="PNG", size=(96, 72)))
    (photos / "notes.jpg").write_bytes(b"this is a text file with a .jpg name\n")
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith((server.url, "blob:", "data:")) else outside.append(req.url))
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(server.url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("body")).to_have_attribute("data-basemap", "ready", timeout=30_000)
    assert page.locator("path.gs-country").count() > 200  # the offline basemap: Natural Earth countries
    expect(page.locator("#model")).to_contain_text("classifier")
    expect(page.locator("#token-box")).to_be_hidden()  # no token on this server: nothing asks for one

    page.set_input_files("#file", [str(photos / "paris.jpg"), str(photos / "sydney.png"), str(photos / "notes.jpg")])
    expect(page.locator("body")).to_have_attribute("data-pending", "0", timeout=60_000)
    items = page.locator("#results li")
    expect(items).to_have_count(3)
    expect(items.nth(2)).to_contain_text("could not be located")

    # the first photo is shown: markers, heatmap, candidates, EXIF panel
    expect(page.locator("#detail-title")).to_have_text("paris.jpg")
    markers = page.locator(".leaflet-marker-pane .leaflet-marker-icon")
    expect(markers).to_have_count(5)
    assert page.locator("path.gs-cell").count() > 0  # the cell-probability heatmap
    assert page.locator("path.gs-claim").count() == 1  # the EXIF claim
    expect(page.locator(".leaflet-tooltip-pane")).to_contain_text("1. ")
    expect(page.locator("#candidates tbody tr")).to_have_count(5)
    expect(page.locator("#exif-claim")).to_contain_text("The metadata claims 48.85")
    expect(page.locator("#exif-claim")).to_contain_text("Camera: Synth Cam 1")
    assert page.locator("#verdict").inner_text().lower() in VERDICTS
    expect(page.locator("#verdict-reason")).to_contain_text("lift")
    expect(page.locator("#confidence")).to_contain_text("within 750 km")

    # downloads: JSON, GeoJSON, KML
    with page.expect_download() as d:
        page.click("#dl-json")
    pred = json.loads(Path(d.value.path()).read_text())
    assert d.value.suggested_filename == "paris.json" and len(pred["candidates"]) == 5 and pred["error"] is None
    with page.expect_download() as d:
        page.click("#dl-geojson")
    doc = json.loads(Path(d.value.path()).read_text())
    assert d.value.suggested_filename == "paris.geojson" and geojson_problems(doc) == []
    assert sum(f["properties"]["kind"] == "candidate" for f in doc["features"]) == 5
    with page.expect_download() as d:
        page.click("#dl-kml")
    kml = Path(d.value.path()).read_text()
    assert d.value.suggested_filename == "paris.kml" and kml.count("<Placemark") >= 6

    # the attribution overlay on the photo
    page.click("#explain-btn")
    expect(page.locator("#overlay-toggle")).to_be_enabled(timeout=60_000)
    expect(page.locator("#overlay")).to_be_visible()
    expect(page.locator("#explain-note")).to_contain_text("Red: regions")
    out = artifacts(tmp_path)
    page.locator(".panel").evaluate("el => el.scrollTo(0, 0)")
    page.screenshot(path=str(out / "serve-page-laptop.png"))

    # the failed upload says why in plain words; the other photo still shows
    items.nth(2).locator("button").click()
    expect(page.locator("#error")).to_contain_text("notes.jpg: notes.jpg: not a supported image")
    items.nth(1).locator("button").click()
    expect(page.locator("#detail-title")).to_have_text("sydney.png")
    expect(page.locator("#exif-claim")).to_contain_text("no GPS position")
    expect(markers).to_have_count(5)
    assert page.locator("path.gs-claim").count() == 0
    assert outside == [], outside  # nothing was fetched from anywhere else (no CDN, no tiles)
    assert problems == [], problems
    page.close()


@pytest.mark.slow
def test_phone_sized_screen_and_keyboard(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(server.url + "/")
    expect(page.locator("body")).to_have_attribute("data-basemap", "ready", timeout=30_000)
    expect(page.locator("#token-box")).to_be_hidden()
    map_box, drop_box = page.locator("#map").bounding_box(), page.locator("#drop").bounding_box()
    assert map_box["width"] <= 390 and map_box["height"] > 300  # the map fills the width, the panel sits below
    assert drop_box["y"] >= map_box["y"] + map_box["height"] - 1 and drop_box["width"] <= 390
    # keyboard: the "choose photos" button takes the focus and Enter opens the file chooser
    # on a loaded machine Chromium's transient user activation (a few seconds) can lapse before the page's
    # handler runs, and then no chooser opens: Enter is pressed again, up to three times
    for attempt in range(3):
        page.locator("#choose").focus()
        expect(page.locator("#choose")).to_be_focused(timeout=30_000)
        try:
            with page.expect_file_chooser(timeout=20_000) as chooser:
                page.keyboard.press("Enter")
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    photo = tmp_path / "tokyo.jpg"
    photo.write_bytes(jpeg_bytes(35.7, 139.7, size=(96, 72), gps=True))
    chooser.value.set_files(str(photo))
    expect(page.locator("body")).to_have_attribute("data-pending", "0", timeout=60_000)
    expect(page.locator(".leaflet-marker-pane .leaflet-marker-icon")).to_have_count(5)
    page.locator("#dl-json").focus()
    assert page.evaluate("document.activeElement.id") == "dl-json"
    page.screenshot(path=str(artifacts(tmp_path) / "serve-page-phone.png"), full_page=True)
    page.close()


@pytest.mark.slow
def test_the_page_asks_for_the_token_when_the_server_has_one(models, browser, tmp_path):
    token = "browser-test-token-0123456789"
    app = create_app(load_model(models, "regressor"), ServeConfig(host="0.0.0.0", token=token))
    with LiveServer(app) as srv:  # bound to loopback by the test; the token is what is tested
        page = browser.new_page()
        page.goto(srv.url + "/")
        expect(page.locator("#token-box")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("API token")
        page.fill("#token", token)
        page.click("#token-box button")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        photo = tmp_path / "a.jpg"
        photo.write_bytes(jpeg_bytes(10.0, 20.0, size=(64, 48)))
        page.set_input_files("#file", str(photo))
        expect(page.locator("body")).to_have_attribute("data-pending", "0", timeout=60_000)
        # a regressor has one point and no cells: one marker, no heatmap, no attribution button
        expect(page.locator(".leaflet-marker-pane .leaflet-marker-icon")).to_have_count(1)
        assert page.locator("path.gs-cell").count() == 0
        expect(page.locator("#explain-btn")).to_be_hidden()
        page.close()
    if os.environ.get("GEOSCOPE_TEST_ARTIFACTS"):
        shutil.rmtree(tmp_path, ignore_errors=True)

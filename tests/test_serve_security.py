"""Security defaults of the server: loopback unless a token, the token checked in constant time, CORS off,
no client paths, and nothing written to disk while a request is handled."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import tempfile

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from _imagefixtures import jpeg_bytes  # noqa: E402
from _servefixtures import image_bytes, load_model, serve_models  # noqa: E402
from geoscope.errors import InputError  # noqa: E402
from geoscope.serve import ServeConfig, create_app  # noqa: E402
from geoscope.serve.config import is_loopback, load_token  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return serve_models(tmp_path_factory)


@pytest.fixture(scope="module")
def geo(models):
    return load_model(models, "classifier")


def test_loopback_detection():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "8.8.8.8"):
        assert not is_loopback(host), host


def test_any_other_address_needs_a_token(geo):
    with pytest.raises(InputError, match=r"0\.0\.0\.0 .*needs an API token.*GEOSCOPE_API_TOKEN"):
        create_app(geo, ServeConfig(host="0.0.0.0"))
    with pytest.raises(InputError, match="at least 16 characters"):
        ServeConfig(host="0.0.0.0", token="short").check()
    ServeConfig(host="0.0.0.0", token=TOKEN).check()
    ServeConfig(host="127.0.0.1").check()  # loopback: no token needed


def test_tokens_come_from_the_environment_or_a_file(tmp_path):
    assert load_token(env={}) == (None, None)
    assert load_token(env={"GEOSCOPE_API_TOKEN": f"  {TOKEN}\n"}) == (TOKEN, "$GEOSCOPE_API_TOKEN")
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert load_token(f, env={"GEOSCOPE_API_TOKEN": "ignored-because-the-file-wins"}) == (TOKEN, f"file {f}")
    assert load_token(env={"GEOSCOPE_API_TOKEN_FILE": str(f)})[0] == TOKEN
    with pytest.raises(InputError, match="not found"):
        load_token(tmp_path / "missing")
    with pytest.raises(InputError, match="at least 16"):
        load_token(env={"GEOSCOPE_API_TOKEN": "abc"})


def test_the_cli_refuses_a_public_address_without_a_token_before_loading_the_model(monkeypatch, capsys):
    from geoscope.cli import main

    monkeypatch.delenv("GEOSCOPE_API_TOKEN", raising=False)
    monkeypatch.delenv("GEOSCOPE_API_TOKEN_FILE", raising=False)
    rc = main(["serve", "-m", "/nonexistent/model", "--host", "0.0.0.0", "--port", "9"])
    err = capsys.readouterr().err
    assert rc == 1 and "needs an API token" in err and "nonexistent" not in err


def test_with_a_token_every_api_route_needs_it_and_it_is_compared_in_constant_time(geo, monkeypatch):
    import hmac

    from geoscope.serve import app as app_module

    calls = []
    real_compare = hmac.compare_digest

    def recording_compare(a, b):
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", recording_compare)
    with TestClient(create_app(geo, ServeConfig(host="0.0.0.0", token=TOKEN, warmup=False))) as c:
        for method, path in (("get", "/api/config"), ("get", "/api/models"), ("get", "/api/basemap/countries.geojson"),
                             ("post", "/api/locate"), ("post", "/api/verify"), ("post", "/api/explain")):
            r = getattr(c, method)(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert "API token" in r.json()["error"]
        bad = c.post("/api/locate", files={"image": ("a.jpg", image_bytes())},
                     headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
        assert bad.status_code == 401 and c.app.state.pool.stats["images"] == 0  # refused before any work
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/api/config", headers=good).json()["auth"] is True
        assert c.post("/api/locate", files={"image": ("a.jpg", image_bytes())}, headers=good).status_code == 200
        assert c.get("/healthz").status_code == 200  # health says nothing about images: no token
        assert c.get("/").status_code == 200  # the page is static; it asks for the token
    assert calls and all(b == TOKEN.encode() for _, b in calls)


def test_cors_is_off_unless_configured(geo):
    origin = {"Origin": "https://newsroom.example"}
    with TestClient(create_app(geo, ServeConfig(warmup=False))) as c:
        r = c.get("/api/config", headers=origin)
        assert "access-control-allow-origin" not in r.headers
        pre = c.options("/api/locate", headers={**origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
    app = create_app(geo, ServeConfig(cors_origins=("https://newsroom.example",), warmup=False))
    with TestClient(app) as c:
        assert c.get("/api/config", headers=origin).headers["access-control-allow-origin"] == "https://newsroom.example"
        other = c.get("/api/config", headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_page_has_a_strict_content_security_policy(geo):
    with TestClient(create_app(geo, ServeConfig(warmup=False))) as c:
        r = c.get("/")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    tiles = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    with TestClient(create_app(geo, ServeConfig(tile_url=tiles, tile_attribution="© OpenStreetMap", warmup=False))) as c:
        assert "img-src 'self' data: blob: https://tile.openstreetmap.org" in c.get("/").headers["content-security-policy"]
        assert c.get("/api/config").json()["map"]["tile_url"] == tiles
    with pytest.raises(InputError, match="tile URL"):
        ServeConfig(tile_url="file:///etc/passwd").check()


def test_client_file_names_are_labels_never_paths(geo, tmp_path):
    with TestClient(create_app(geo, ServeConfig(warmup=False))) as c:
        r = c.post("/api/locate", files={"image": ("../../etc/passwd", image_bytes())})
        assert r.status_code == 200 and r.json()["source"] == "passwd"
        r = c.post("/api/locate", files={"image": ("C:\\Users\\x\\..\\secret.jpg", image_bytes())})
        assert r.json()["source"] == "secret.jpg"
    keep = tmp_path / "kept"
    data = image_bytes(fmt="PNG")
    with TestClient(create_app(geo, ServeConfig(keep_uploads=keep, warmup=False))) as c:
        for name in ("../escape.png", "/tmp/abs.png"):
            assert c.post("/api/locate", files={"image": (name, data)}).status_code == 200
    assert [p.name for p in keep.iterdir()] == [hashlib.sha256(data).hexdigest() + ".png"]
    assert not (tmp_path / "escape.png").exists()


class _WriteRecorder:
    """Records every attempt to write to the file system (open for writing, os.open with write flags,
    renames, new folders, temporary files)."""

    def __init__(self, monkeypatch):
        self.writes: list[str] = []
        real_open, real_os_open = builtins.open, os.open

        def rec_open(file, mode="r", *a, **k):
            if isinstance(file, (str, bytes, os.PathLike)) and any(ch in str(mode) for ch in "wax+"):
                self.writes.append(f"open({file!r}, {mode!r})")
            return real_open(file, mode, *a, **k)

        def rec_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.writes.append(f"os.open({path!r})")
            return real_os_open(path, flags, *a, **k)

        def refuse(name):
            real = getattr(os, name) if hasattr(os, name) else getattr(tempfile, name)

            def wrapper(*a, **k):
                self.writes.append(f"{name}{a!r}")
                return real(*a, **k)
            return wrapper

        monkeypatch.setattr(builtins, "open", rec_open)
        monkeypatch.setattr(io, "open", rec_open)
        monkeypatch.setattr(os, "open", rec_os_open)
        for name in ("replace", "rename", "mkdir"):
            monkeypatch.setattr(os, name, refuse(name))
        for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"):
            monkeypatch.setattr(tempfile, name, refuse(name))


def test_nothing_is_written_to_disk_while_requests_are_served(geo, tmp_path, monkeypatch):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()  # noise does not compress: well over the 1 MB at which a spooled upload would hit disk
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (700, 800, 3), dtype=np.uint8)).save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > 1024 * 1024
    photo = jpeg_bytes(48.85, 2.35, gps=True)

    def every_route(c):
        files = {"image": ("big.png", big)}
        assert c.post("/api/locate", files=files, data={"include": "geojson,kml,verification"}).status_code == 200
        assert c.post("/api/locate", files={"image": ("p.jpg", photo)}, data={"format": "kml"}).status_code == 200
        assert c.post("/api/verify", files={"image": ("p.jpg", photo)}, data={"claim": "1,2"}).status_code == 200
        assert c.post("/api/explain", files={"image": ("p.jpg", photo)}, data={"grid": "2"}).status_code == 200
        assert c.post("/api/locate", files={"image": ("bad.jpg", b"nonsense")}).status_code == 415
        assert c.get("/api/basemap/countries.geojson").status_code == 200
        assert c.get("/").status_code == 200

    with TestClient(create_app(geo, ServeConfig(max_upload_bytes=8 * 1024 * 1024))) as c:
        every_route(c)  # first use fills process-wide caches (fonts, place lookups); then watch
        recorder = _WriteRecorder(monkeypatch)
        from geoscope.atomic import write_bytes

        write_bytes(tmp_path / "probe.bin", b"x")  # the recorder sees an atomic write ...
        with tempfile.SpooledTemporaryFile(max_size=10) as spooled:  # ... and a spooled file rolling over
            spooled.write(b"y" * 100)
        assert len(recorder.writes) >= 3, recorder.writes
        recorder.writes.clear()
        every_route(c)
        monkeypatch.undo()
    assert recorder.writes == []
    assert list(private_tmp.iterdir()) == []

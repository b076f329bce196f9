"""``geoscope serve``: its options use the house vocabulary, and the real command serves a model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
import httpx  # noqa: E402

from _imagefixtures import jpeg_bytes  # noqa: E402
from _servefixtures import serve_models  # noqa: E402
from geoscope.cli import build_parser, main  # noqa: E402


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return serve_models(tmp_path_factory)


def test_options_follow_the_cli_vocabulary():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    flags = {o for a in sub._actions for o in a.option_strings}
    assert {"-m", "--model", "--weights", "--precision", "--host", "--port", "--workers"} <= flags
    args = parser.parse_args(["serve", "-m", "x"])
    assert (args.host, args.port, args.workers, args.queue_size) == ("127.0.0.1", 8000, 1, 64)
    prec = next(a for a in sub._actions if "--precision" in a.option_strings)
    assert tuple(prec.choices) == ("auto", "fp32", "bf16", "int8")


def test_weights_and_precision_apply_to_a_model_directory(models, capsys, monkeypatch, tmp_path):
    import torch
    import uvicorn

    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    model = str(models["dirs"]["classifier"])
    assert main(["serve", "-m", model, "--precision", "bf16", "--port", "9", "--no-progress"]) == 0
    assert served["port"] == 9 and served["host"] == "127.0.0.1"
    assert served["app"].state.pool.geo.encoder.dtype == torch.bfloat16
    # a --weights that is not a folder is refused before anything is served
    served.clear()
    rc = main(["serve", "-m", model, "--weights", str(tmp_path / "nope"), "--port", "9"])
    assert rc == 1 and "--weights points to" in capsys.readouterr().err and not served


@pytest.mark.slow
def test_geoscope_serve_answers_on_loopback(models, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GEOSCOPE_API_TOKEN="")
    proc = subprocess.Popen([sys.executable, "-m", "geoscope", "serve", "-m", str(models["dirs"]["hybrid"]),
                             "--port", str(port), "--queue-size", "8", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "geoscope serve did not start"
            time.sleep(0.2)
        health = httpx.get(f"{url}/healthz").json()
        assert health["capacity"] == 8 and health["workers"] == 1
        r = httpx.post(f"{url}/api/locate", files={"image": ("rome.jpg", jpeg_bytes(41.9, 12.5, gps=True))},
                       data={"top_k": "2"}, timeout=60)
        assert r.status_code == 200 and len(r.json()["candidates"]) == 2 and r.json()["source"] == "rome.jpg"
        assert "<title>geoscope" in httpx.get(url).text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    banner = err.decode()
    assert f"serving 'hybrid' at http://127.0.0.1:{port}/" in banner and "/docs" in banner

"""The inference pool under load: micro-batching, the bounded queue (429 + Retry-After), time limits,
concurrent clients on a real server, a slow client, and the server staying healthy throughout."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
import httpx  # noqa: E402

from _servefixtures import GatedEncoder, LiveServer, image_bytes, serve_models  # noqa: E402
from geoscope.geolocator import Geolocator  # noqa: E402
from geoscope.serve import ServeConfig, create_app  # noqa: E402

POINTS = [(48.85, 2.35), (-33.9, 151.2), (35.7, 139.7), (40.7, -74.0), (-23.5, -46.6), (55.75, 37.6),
          (1.35, 103.8), (-1.3, 36.8), (64.1, -21.9), (19.4, -99.1), (30.0, 31.2), (-34.6, -58.4)]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return serve_models(tmp_path_factory)


def gated_model(models, fast=True):
    plain = Geolocator.from_pretrained(models["dirs"]["classifier"])
    enc = GatedEncoder(plain.encoder, fast=fast)
    return Geolocator.from_pretrained(models["dirs"]["classifier"], encoder=enc), enc, plain


def locate(url, data, top_k=3, name="p.jpg", timeout=60):
    return httpx.post(f"{url}/api/locate", files={"image": (name, data, "image/jpeg")}, data={"top_k": str(top_k)},
                      timeout=timeout)


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.mark.parametrize("fast", [True, False], ids=["crop-in-decoders", "encode-images"])
def test_queued_requests_are_embedded_as_one_batch_and_answer_as_alone(models, fast):
    geo, enc, plain = gated_model(models, fast)
    images = [image_bytes(a, o) for a, o in POINTS]
    alone = [plain.locate([d], top_k=5, exif=False)[0] for d in images]
    app = create_app(geo, ServeConfig(max_batch=16, warmup=False))
    with LiveServer(app) as srv:
        enc.gate.clear()  # hold the first forward pass so the rest queue up behind it
        with ThreadPoolExecutor(len(images)) as ex:
            first = ex.submit(locate, srv.url, images[0], 3)
            assert enc.entered.acquire(timeout=30)
            rest = [ex.submit(locate, srv.url, d, 2 + i % 3) for i, d in enumerate(images[1:])]
            wait_for(lambda: app.state.pool.admitted == len(images))
            time.sleep(0.1)
            enc.gate.set()
            answers = [first.result()] + [f.result() for f in rest]
    assert [r.status_code for r in answers] == [200] * len(images)
    assert enc.batches[0] == 1 and enc.batches[1] == len(images) - 1, enc.batches  # one batch for all the waiting
    for i, (r, want) in enumerate(zip(answers, alone)):
        got = r.json()["candidates"]
        k = 3 if i == 0 else 2 + (i - 1) % 3
        assert len(got) == k  # each request keeps its own top_k inside a shared batch
        assert [c["cell"] for c in got] == [c.cell for c in want.candidates[:k]]
        np.testing.assert_allclose([c["probability"] for c in got], [c.probability for c in want.candidates[:k]],
                                   atol=1e-4)


def test_a_full_queue_answers_429_with_retry_after_and_healthz_keeps_answering(models):
    geo, enc, _ = gated_model(models)
    app = create_app(geo, ServeConfig(queue_size=3, max_batch=1, warmup=False))
    with LiveServer(app) as srv:
        enc.gate.clear()
        with ThreadPoolExecutor(8) as ex:
            held = [ex.submit(locate, srv.url, image_bytes(*POINTS[i])) for i in range(3)]
            assert enc.entered.acquire(timeout=30)
            wait_for(lambda: app.state.pool.admitted == 3)
            over = [locate(srv.url, image_bytes()) for _ in range(4)]
            health = httpx.get(f"{srv.url}/healthz", timeout=5)
            enc.gate.set()
            done = [f.result() for f in held]
        after = locate(srv.url, image_bytes())
    for r in over:
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"] and "limit is 3" in r.json()["error"]
    assert health.status_code == 200 and health.json()["queued"] == 3 and health.json()["rejected"] >= 4
    assert [r.status_code for r in done] == [200, 200, 200] and after.status_code == 200
    assert app.state.pool.admitted == 0


def test_a_request_over_its_time_limit_gets_504_and_frees_its_place(models):
    geo, enc, _ = gated_model(models)
    app = create_app(geo, ServeConfig(request_timeout_s=0.5, queue_size=4, warmup=False))
    with LiveServer(app) as srv:
        enc.gate.clear()
        with ThreadPoolExecutor(2) as ex:
            stuck = ex.submit(locate, srv.url, image_bytes())
            assert enc.entered.acquire(timeout=30)
            late = locate(srv.url, image_bytes(1, 2))  # queued behind the held batch: times out, never runs
            first = stuck.result()
        enc.gate.set()
        wait_for(lambda: app.state.pool.admitted == 0)
        ok = locate(srv.url, image_bytes())
    assert first.status_code == 504 and "no answer within 0.5 s" in first.json()["error"]
    assert late.status_code == 504
    assert ok.status_code == 200
    assert enc.batches.count(1) == len(enc.batches)  # the abandoned image was dropped, not embedded later
    assert len(enc.batches) == 2


def test_sixteen_concurrent_clients_on_a_real_server(models):
    plain = Geolocator.from_pretrained(models["dirs"]["hybrid"])
    images = [image_bytes(a, o) for a, o in POINTS] * 2
    alone = [plain.locate([d], top_k=3, exif=False)[0] for d in images[:len(POINTS)]]
    app = create_app(plain, ServeConfig())
    with LiveServer(app) as srv:
        with ThreadPoolExecutor(16) as ex:
            answers = list(ex.map(lambda d: locate(srv.url, d), images))
        stats = httpx.get(f"{srv.url}/healthz").json()
    assert [r.status_code for r in answers] == [200] * len(images)
    for r, want in zip(answers, alone * 2):
        assert [c["cell"] for c in r.json()["candidates"]] == [c.cell for c in want.candidates]
    assert stats["images"] == len(images) and stats["failed"] == 0 and stats["queued"] == 0


def test_a_slow_client_gets_408_and_holds_nobody_else_up(models):
    app = create_app(Geolocator.from_pretrained(models["dirs"]["classifier"]), ServeConfig(read_timeout_s=1.0))
    with LiveServer(app) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        head = (b"POST /api/locate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
                b"Content-Length: 5000\r\n\r\n--zz\r\n")
        sock.sendall(head)  # ... and then nothing more
        t0 = time.monotonic()
        others = [locate(srv.url, image_bytes()) for _ in range(2)]
        health = httpx.get(f"{srv.url}/healthz", timeout=5)
        reply = b""
        while b"\r\n\r\n" not in reply or b"}" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - t0
        sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 1 s" in reply
    assert waited < 10
    assert [r.status_code for r in others] == [200, 200] and health.status_code == 200


def test_an_image_the_model_cannot_take_fails_alone(models):
    class Picky(GatedEncoder):
        def encode_images(self, images, batch_size=32):
            if any(im.width == 7 for im in images):
                raise ValueError("cannot encode a 7-pixel-wide image")
            return super().encode_images(images, batch_size)

    plain = Geolocator.from_pretrained(models["dirs"]["classifier"])
    enc = Picky(plain.encoder, fast=False)
    geo = Geolocator.from_pretrained(models["dirs"]["classifier"], encoder=enc)
    app = create_app(geo, ServeConfig(warmup=False))
    with LiveServer(app) as srv:
        enc.gate.clear()
        with ThreadPoolExecutor(4) as ex:
            first = ex.submit(locate, srv.url, image_bytes())
            assert enc.entered.acquire(timeout=30)
            narrow = ex.submit(locate, srv.url, image_bytes(size=(7, 20)), 3, "narrow.png")
            good = ex.submit(locate, srv.url, image_bytes(10, 10))
            wait_for(lambda: app.state.pool.admitted == 3)
            time.sleep(0.05)
            enc.gate.set()
            results = [first.result(), narrow.result(), good.result()]
        healthy = httpx.get(f"{srv.url}/healthz").json()
    assert results[0].status_code == 200 and results[2].status_code == 200
    assert results[1].status_code == 500 and "narrow.png" in results[1].json()["error"]
    assert "7-pixel-wide" in results[1].json()["error"]
    assert healthy["status"] == "ok" and healthy["failed"] == 1


def test_explanations_are_bounded_too(models):
    geo = Geolocator.from_pretrained(models["dirs"]["classifier"])
    app = create_app(geo, ServeConfig(explain_queue=1, warmup=False))
    gate = threading.Event()
    from geoscope.serve import app as app_module

    real = app_module._explain

    def slow_explain(*args):
        gate.wait(30)
        return real(*args)

    app_module._explain = slow_explain
    try:
        with LiveServer(app) as srv:
            with ThreadPoolExecutor(2) as ex:
                first = ex.submit(httpx.post, f"{srv.url}/api/explain", files={"image": ("a.jpg", image_bytes())},
                                  data={"grid": "2"}, timeout=60)
                wait_for(lambda: app.state.pool.health()["explaining"] == 1)
                second = httpx.post(f"{srv.url}/api/explain", files={"image": ("b.jpg", image_bytes())}, timeout=30)
                gate.set()
                assert first.result().status_code == 200
    finally:
        app_module._explain = real
    assert second.status_code == 429 and "explanations" in second.json()["error"]
    assert int(second.headers["retry-after"]) >= 1

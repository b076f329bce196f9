"""Load benchmark of ``geoscope serve`` on loopback: requests/s and p50 / p99 latency at 1, 4 and 16
concurrent clients, against the same model's in-process batch throughput (``Geolocator.locate`` with
batch_size 16 on the same JPEG bytes: decode, EXIF, embed, head, place names, the work a request does).
Also: errors, the server's RSS before and after, and an overload run (a small queue flooded by many
clients) showing 429s while ``/healthz`` keeps answering.

Model: ``efficientnet-lite0`` (weights from its pip package, offline) + a classifier head over adaptive
cells (untrained: speed does not depend on the weights' values). Images: synthetic 640x480 JPEGs.

    python3 benchmarks/bench_serve.py                       # 64 requests per level
    python3 benchmarks/bench_serve.py --requests 24 --images 16 --overload 48   # a quick check

The target (issue 13): throughput at 16 clients >= 0.9 x in-process batch throughput, 0 errors, no memory
growth. Every run is bounded by ``--requests`` per level and ``--seconds`` per level.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def make_model(out: Path) -> Path:
    from geoscope.geo.cells import CellHierarchy
    from geoscope.geolocator import Geolocator
    from geoscope.heads import create_head

    rng = np.random.default_rng(0)
    lat, lon = np.degrees(np.arcsin(rng.uniform(-1, 1, 20_000))), rng.uniform(-180, 180, 20_000)
    cells = CellHierarchy.adaptive(lat, lon, 10, [2000, 200])
    head = create_head("classifier", 1280, cells, hidden=256)
    Geolocator("efficientnet-lite0", head, cells, name="bench-serve").save_pretrained(out)
    return out


def make_images(n: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    out = []
    for i in range(n):
        img = np.stack([np.sin(x / (20 + i)) * 60 + 120, np.cos(y / (15 + i)) * 60 + 110, x / 640 * 200], -1)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def in_process_rate(model: Path, images: list[bytes], rounds: int = 2) -> float:
    from geoscope.geolocator import Geolocator

    geo = Geolocator.from_pretrained(model)
    geo.locate(images[:16], top_k=5, batch_size=16)  # warm up: weights, kernels, gazetteer
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        preds = geo.locate(images, top_k=5, batch_size=16)
        best = max(best, len(images) / (time.perf_counter() - t0))
        assert all(p.ok for p in preds)
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, *extra: str) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "geoscope", "serve", "-m", str(model), "--port", str(port), "--log-level", "warning",
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 300 s")


async def load(url: str, images: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent clients sending ``requests`` locate requests in all (or for ``seconds``)."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    stop_at = time.monotonic() + seconds

    async def client(c: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                r = await c.post(f"{url}/api/locate", files={"image": (f"{i}.jpg", images[i % len(images)], "image/jpeg")},
                                 data={"top_k": "5"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError as exc:
                statuses[-1] = statuses.get(-1, 0) + 1
                print(f"client error: {exc!r}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ok = statuses.get(200, 0)
    lat = np.array(latencies) * 1000
    return {"clients": clients, "sent": sum(statuses.values()), "ok": ok, "statuses": statuses,
            "errors": sum(v for k, v in statuses.items() if k != 200), "rate": ok / wall,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


async def overload(url: str, images: list[bytes], clients: int) -> dict:
    """Flood: ``clients`` requests at once, while /healthz is polled every 50 ms."""
    import httpx

    health: list[tuple[int, float]] = []
    done = asyncio.Event()

    async def poll(c: httpx.AsyncClient) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                r = await c.get(f"{url}/healthz", timeout=10)
                health.append((r.status_code, time.perf_counter() - t0))
            except httpx.HTTPError:
                health.append((-1, time.perf_counter() - t0))
            await asyncio.sleep(0.05)

    async def one(c: httpx.AsyncClient, i: int) -> tuple[int, str | None]:
        r = await c.post(f"{url}/api/locate", files={"image": (f"{i}.jpg", images[i % len(images)], "image/jpeg")})
        return r.status_code, r.headers.get("retry-after")

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as c:
        poller = asyncio.create_task(poll(c))
        results = await asyncio.gather(*(one(c, i) for i in range(clients)))
        done.set()
        await poller
    codes = [s for s, _ in results]
    return {"sent": len(codes), "ok": codes.count(200), "rejected_429": codes.count(429),
            "other": len(codes) - codes.count(200) - codes.count(429),
            "retry_after_present": all(ra is not None for s, ra in results if s == 429),
            "health_polls": len(health), "health_ok": sum(s == 200 for s, _ in health),
            "health_max_ms": 1000 * max((t for _, t in health), default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=300, help="time bound per level")
    ap.add_argument("--images", type=int, default=32, help="distinct JPEGs (640x480)")
    ap.add_argument("--clients", default="1,4,16", help="concurrency levels")
    ap.add_argument("--rounds", type=int, default=2,
                    help="passes over the levels (memory is compared between passes; the last pass is reported)")
    ap.add_argument("--overload", type=int, default=96, help="simultaneous requests in the overload run")
    ap.add_argument("--overload-queue", type=int, default=8, help="the overload server's --queue-size")
    args = ap.parse_args()

    import psutil

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = make_model(work / "model")
    images = make_images(args.images)
    batch_rate = in_process_rate(model, images)
    print(f"in-process batch throughput: {batch_rate:.1f} images/s", file=sys.stderr)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(model, port)
    proc = psutil.Process(server.pid)
    levels = []
    try:
        # warm up every batch size the levels will meet (kernels and buffers are made once per shape)
        for clients in (int(c) for c in args.clients.split(",")):
            asyncio.run(load(url, images, clients, min(2 * clients, args.requests), args.seconds))
        rss_before = proc.memory_info().rss
        rss = []
        for rnd in range(args.rounds):
            for clients in (int(c) for c in args.clients.split(",")):
                result = asyncio.run(load(url, images, clients, args.requests, args.seconds))
                rss.append(proc.memory_info().rss)
                print(f"round {rnd + 1}, {clients} clients: {result}, RSS {rss[-1] / 2**20:.0f} MiB", file=sys.stderr)
                if rnd == args.rounds - 1:
                    levels.append(result)
        rss_after = proc.memory_info().rss
        import httpx

        stats = httpx.get(f"{url}/healthz").json()
    finally:
        server.terminate()
        server.wait(timeout=60)

    port2 = free_port()
    flood = start_server(model, port2, "--queue-size", str(args.overload_queue))
    try:
        over = asyncio.run(overload(f"http://127.0.0.1:{port2}", images, args.overload))
    finally:
        flood.terminate()
        flood.wait(timeout=60)
    print(f"overload: {over}", file=sys.stderr)
    again = in_process_rate(model, images)  # the machine may be busier at one time than another: keep the best
    print(f"in-process batch throughput again: {again:.1f} images/s", file=sys.stderr)
    batch_rate = max(batch_rate, again)

    rows = [["in-process Geolocator.locate, batch 16 (best of before / after)", "-", f"{batch_rate:.1f}", "-", "-", "-", "1.00"]]
    for lv in levels:
        rows.append([f"geoscope serve, {lv['clients']} concurrent client(s)", f"{lv['ok']}/{lv['sent']}",
                     f"{lv['rate']:.1f}", f"{lv['p50']:.0f}", f"{lv['p99']:.0f}", lv["errors"],
                     f"{lv['rate'] / batch_rate:.2f}"])
    rows.append([f"overload: {over['sent']} at once, --queue-size {args.overload_queue}",
                 f"{over['ok']} ok, {over['rejected_429']} x 429, {over['other']} other", "-", "-", "-", over["other"],
                 "-"])
    at16 = next((lv for lv in levels if lv["clients"] == 16), levels[-1])
    notes = (
        f"Model: efficientnet-lite0 + classifier head ({args.images} distinct 640x480 JPEGs, top_k 5). Server RSS "
        f"after a warm-up pass {rss_before / 2**20:.0f} MiB; after each level of {args.rounds} passes "
        f"{', '.join(f'{r / 2**20:.0f}' for r in rss)} MiB ({(rss_after - rss_before) / 2**20:+.0f} MiB over the "
        f"run). Server-side batching: {stats['batches']} batches for "
        f"{stats['images']} images, largest {stats['largest_batch']}. Throughput at {at16['clients']} clients = "
        f"{at16['rate'] / batch_rate:.2f} x in-process batch throughput (target >= 0.9). Overload: "
        f"{over['rejected_429']} of {over['sent']} refused with 429 (Retry-After on all: "
        f"{over['retry_after_present']}); /healthz answered {over['health_ok']} of {over['health_polls']} polls "
        f"during the flood, slowest {over['health_max_ms']:.0f} ms. Client and server share the machine's cores."
    )
    write_result("serve", "HTTP API under load (geoscope serve, loopback)",
                 ["run", "answered", "requests/s", "p50 ms", "p99 ms", "errors", "vs in-process"], rows, notes)


if __name__ == "__main__":
    main()

"""Run ``geoscope ARGS...`` in this process and write a timeline of its phases (for bench_cold_start.py).

    GEOSCOPE_TIMELINE_T0=<parent's time.perf_counter() just before it started this process> \
        python3 benchmarks/_cold_timeline.py OUT.json locate IMAGE --model geoclip ...

``time.perf_counter`` is CLOCK_MONOTONIC on Linux, the same clock in every process, so the parent's
start time gives the interpreter's own start-up too. Each phase is timed by wrapping the function that
does it (from outside: the package is not changed for this): its start and end (wall seconds from the
process start) and the CPU seconds of the thread it ran on (``time.thread_time``). Phases on other
threads (the OpenVINO compile, the place names' preload) are timed on those threads. ``cpu_total`` is
the process's CPU time (every thread) at exit, and, at each top-level mark, so far.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time

T0 = float(os.environ.get("GEOSCOPE_TIMELINE_T0", time.perf_counter()))
START = time.perf_counter() - T0
EVENTS: list[dict] = []
MARKS: list[dict] = []


def now() -> float:
    return time.perf_counter() - T0


def mark(label: str) -> None:
    MARKS.append({"label": label, "wall": now(), "cpu": time.process_time()})


def timed(owner, attr: str, label: str) -> None:
    """Wrap ``owner.attr`` (a function or method) so each call records an event."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        s, c = now(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            EVENTS.append({"label": label, "start": s, "end": now(), "thread_cpu": time.thread_time() - c,
                           "thread": threading.current_thread().name})

    setattr(owner, attr, wrapper)


def install() -> None:
    import geoscope.cli as cli
    import geoscope.cli.locate as locate

    mark("imports: geoscope.cli and the locate command")
    timed(cli, "build_parser", "parser")
    timed(locate, "load_geolocator", "load_geolocator (all)")

    import geoscope.encoders.openvino_runtime as ovr
    import geoscope.geo.places as places
    import geoscope.geolocator as geolocator
    import geoscope.pretrained.loading as loading
    import geoscope.pretrained.served as served
    from geoscope.encoders.exported import ExportedEncoder

    mark("imports: geolocator, pretrained, openvino_runtime modules")
    timed(loading, "create_backbone", "backbone: create (manifest, IR, OpenVINO core)")
    timed(served, "served_geoclip_head", "head: load served GeoCLIP head")
    timed(ovr.OpenVINOEncoder, "_compile", "backbone: compile (from cache)")
    timed(ovr.OpenVINOEncoder, "compiled", "backbone: wait for compile")
    timed(ovr.OpenVINOEncoder, "_run", "backbone: inference (incl. wait)")
    timed(ExportedEncoder, "preprocess", "image: preprocess")
    timed(geolocator, "load_image", "image: decode")
    timed(geolocator.Geolocator, "locate", "locate (all)")
    timed(geolocator.Geolocator, "locate_embeddings", "head: search + places")
    timed(geolocator.Geolocator, "_places", "places: reverse geocode (incl. wait)")
    timed(places, "_load_all", "places: load (preload thread)")
    timed(locate, "print_json", "output")
    timed(locate, "render", "output")


def main() -> int:
    out = sys.argv[1]
    mark("interpreter started")
    install()
    from geoscope.cli import main as cli_main

    rc = 1
    try:
        rc = cli_main(sys.argv[2:])
    finally:
        mark("end")
        doc = {"start": START, "marks": MARKS, "events": EVENTS, "cpu_total": time.process_time()}
        with open(out, "w") as f:
            json.dump(doc, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())

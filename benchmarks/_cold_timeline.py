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
import importlib.abc
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


#: module -> [(attribute path, label)]: wrapped as soon as the module is imported (by the command itself,
#: so the profile does not import anything earlier than the command would)
PATCHES: dict[str, list[tuple[str, str]]] = {
    "geoscope.cli": [("build_parser", "parser")],
    "geoscope.cli.locate": [("load_geolocator", "load_geolocator (head, Geolocator)"),
                            ("print_json", "output"), ("render", "output")],
    "geoscope.pretrained.loading": [("create_backbone", "backbone: create (manifest, IR, OpenVINO core)")],
    "geoscope.pretrained.served": [("served_geoclip_head", "head: load served GeoCLIP head")],
    "geoscope.encoders.openvino_runtime": [("OpenVINOEncoder._compile", "backbone: compile (from cache)"),
                                           ("OpenVINOEncoder.compiled", "backbone: wait for compile"),
                                           ("OpenVINOEncoder._run", "backbone: inference (incl. wait)")],
    "geoscope.encoders.onnx_runtime": [("OnnxEncoder._open_session", "backbone: compile (from cache)"),
                                       ("OnnxEncoder._run", "backbone: inference (incl. wait)")],
    "geoscope.encoders.exported": [("ExportedEncoder.preprocess", "image: preprocess")],
    "geoscope.geolocator": [("load_image", "image: decode"), ("Geolocator.locate", "locate (all)"),
                            ("Geolocator.locate_embeddings", "head: search + places"),
                            ("Geolocator._places", "places: reverse geocode (incl. wait)")],
    "geoscope.geo.places": [("_load_all", "places: load (preload thread)")],
}


def _patch(module) -> None:
    for path, label in PATCHES.get(module.__name__, []):
        owner = module
        *parents, attr = path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        timed(owner, attr, label)
    if module.__name__ == "geoscope.geolocator":
        mark("geoscope.geolocator imported")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps the functions of PATCHES as their modules finish importing."""

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def run(module, exec_module=exec_module):
                    exec_module(module)
                    _patch(module)

                spec.loader.exec_module = run  # type: ignore[method-assign]
                return spec
        return None


def install() -> None:
    sys.meta_path.insert(0, _AfterImport())


def main() -> int:
    out = sys.argv[1]
    mark("interpreter started")
    install()
    from geoscope.cli import main as cli_main

    mark("imports: geoscope.cli")
    # run as the geoscope program itself (its __main__ calls cli.main), which ends with os._exit after
    # its output (cli/locate.py): the timeline is written just before
    sys.modules["__main__"].main = cli_main  # type: ignore[attr-defined]
    real_exit = os._exit

    def write(rc: int = 0) -> None:
        mark("end")
        doc = {"start": START, "marks": MARKS, "events": EVENTS, "cpu_total": time.process_time()}
        with open(out, "w") as f:
            json.dump(doc, f)

    def exit_(rc: int) -> None:
        write()
        real_exit(rc)

    os._exit = exit_  # type: ignore[assignment]
    rc = 1
    try:
        rc = cli_main(sys.argv[2:])
    finally:
        write()
    return rc


if __name__ == "__main__":
    sys.exit(main())

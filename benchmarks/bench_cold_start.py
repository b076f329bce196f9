"""Cold start of ``geoscope locate IMAGE --model geoclip --weights DIR`` against the steady per-image time,
per precision, with a timeline of where a cold start's time goes.

"Cold" is a new process answering one image, timed from start to exit (Python start, imports, model
load, one prediction, place names, output), after the first use has made its exports and caches once
(the first use is reported separately). "Steady" is ``Geolocator.locate([image])`` in a process that
has the same model loaded, at the same precision on the same runtime, and has answered before (median).
Rows:

- **bf16** (``--precision auto`` here): the ``geoclip`` model as ``geoscope locate`` builds it: backbone
  on ``runtime="auto"`` (OpenVINO, from the cached export), head served as numpy arrays; no torch.
- **int8** (``--precision int8``): the same with the backbone in int8 (ONNX Runtime's dynamic quantisation,
  its weights packed for this CPU once and loaded packed).
- with ``--compare-src DIR``: the bf16 command run from another source tree (``PYTHONPATH=DIR``, e.g.
  ``/work/main/src``), an A/B of two versions of geoscope in one run; its steady time is taken as bf16's.
- with ``--torch``: the path geoscope took before, rebuilt in a script: backbone through torch +
  transformers, the torch ``RetrievalHead``.

Cold runs of every row alternate with rounds of the steady timings, so load from other jobs falls on
all alike. The top-1 of every cold run is checked against the steady bf16 answer. Each round also runs
every row once under ``_cold_timeline.py`` (the same command in one process, with its phases timed from
outside), and the profile table gives the median of those: when each phase ends (wall seconds since the
process started) and the CPU seconds of the threads that ran it. int8's accuracy is checked against
OpenVINO fp32 and bf16: cosine of the embeddings and top-1 equality on Kauai.png and synthetic photos.
The backbone is openai/clip-vit-large-patch14's architecture with random weights (no real weights
here: the computation, and so the time, is the same).

    python3 benchmarks/bench_cold_start.py [--rounds 3] [--steady 4] [--compare-src DIR] [--torch] [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent

BEFORE = """
import json, sys
from geoscope.encoders import create_encoder
from geoscope.geolocator import Geolocator
from geoscope.heads.geoclip import load_geoclip_head
from geoscope.pretrained import cache_dir
enc = create_encoder(sys.argv[1], precision="auto", runtime="torch")
geo = Geolocator(enc, load_geoclip_head(cache_dir(), progress=False), name="geoclip")
print(json.dumps([p.to_dict(top_cells=10) for p in geo.locate([sys.argv[2]], top_k=5)]))
"""

#: profile phases: (label, how its end is found in a timeline); CPU: (label, events summed)
PHASES = [
    ("interpreter started", lambda d: d["start"]),
    ("geoscope.cli imported", lambda d: _mark(d, "imports: geoscope.cli")),
    ("compile (OpenVINO) / session (ONNX Runtime) started", lambda d: _event(d, "backbone: compile (from cache)", "start")),
    ("geoscope.geolocator imported", lambda d: _mark(d, "geoscope.geolocator imported")),
    ("head loaded", lambda d: _event(d, "head: load served GeoCLIP head", "end")),
    ("image decoded + preprocessed", lambda d: _event(d, "image: preprocess", "end")),
    ("compile / session ready", lambda d: _event(d, "backbone: compile (from cache)", "end")),
    ("first inference finished", lambda d: _event(d, "backbone: inference (incl. wait)", "end")),
    ("place names loaded (preload thread)", lambda d: _event(d, "places: load (preload thread)", "end")),
    ("head search + place names finished", lambda d: _event(d, "head: search + places", "end")),
    ("output printed", lambda d: _event(d, "output", "end")),
    ("command returned (model freed, unless it exits at once)", lambda d: _mark(d, "end")),
]
CPU_PARTS = [
    ("main thread: backbone build (runtime import, model files)", ["backbone: create (manifest, IR, OpenVINO core)"]),
    ("main thread: image decode + preprocess", ["image: decode", "image: preprocess"]),
    ("main thread: first inference (its share)", ["backbone: inference (incl. wait)"]),
    ("main thread: head search + place lookup", ["head: search + places"]),
    ("preload thread: place names", ["places: load (preload thread)"]),
]


def _mark(d: dict, label: str) -> float:
    return next((m["wall"] for m in d["marks"] if m["label"] == label), float("nan"))


def _event(d: dict, label: str, edge: str) -> float:
    values = [e[edge] for e in d["events"] if e["label"] == label]
    return (min(values) if edge == "start" else max(values)) if values else float("nan")


def run_cold(argv: list[str], env: dict | None = None) -> tuple[float, float, dict]:
    """(wall s, CPU s, first prediction) of one new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout)[0]


def run_timeline(args_: list[str], env: dict, folder: Path) -> dict:
    """One cold run under _cold_timeline.py: its timeline, with the process's wall and CPU time."""
    out = Path(tempfile.mkstemp(suffix=".json", dir=folder)[1])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / "_cold_timeline.py"), str(out), *args_], capture_output=True,
                   check=True, env={**env, "GEOSCOPE_TIMELINE_T0": repr(t)})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    doc = json.loads(out.read_text())
    doc["wall"] = wall
    doc["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return doc


def top1(pred: dict) -> tuple[float, float]:
    c = pred["candidates"][0]
    return round(c["lat"], 4), round(c["lon"], 4)


def accuracy(clip_dir: str, paths: list[str]) -> dict:
    """int8 against OpenVINO fp32 and bf16: embedding cosines and top-1 equality on ``paths``."""
    from geoscope.data.images import load_image
    from geoscope.geolocator import Geolocator

    emb, tops = {}, {}
    for precision in ("fp32", "bf16", "int8"):
        geo = Geolocator.from_pretrained("geoclip", weights=clip_dir, precision=precision, progress=False,
                                         places=False)
        emb[precision] = geo.encoder.encode_images([load_image(p) for p in paths], batch_size=1)
        tops[precision] = [top1(p.to_dict()) for p in geo.locate(paths)]
        del geo

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    out = {}
    for ref in ("fp32", "bf16"):
        c = cos(emb["int8"], emb[ref])
        out[f"int8 vs {ref}"] = (float(c.min()), float(np.median(c)),
                                 sum(a == b for a, b in zip(tops["int8"], tops[ref])))
    c = cos(emb["bf16"], emb["fp32"])
    out["bf16 vs fp32"] = (float(c.min()), float(np.median(c)), sum(a == b for a, b in zip(tops["bf16"], tops["fp32"])))
    return out


TOUCH = """
import sys, time
import numpy as np
t = time.perf_counter()
a = np.empty(int(float(sys.argv[1]) * 2**30), np.uint8)
a[::4096] = 1
print(time.perf_counter() - t)
"""


#: how much new memory ``first_touch_rate`` fills, and how long it waits idle before the second measurement
TOUCH_GIB, TOUCH_PAUSE_S = 0.6, 5.0


def first_touch_rate(gib: float = TOUCH_GIB, pause_s: float = TOUCH_PAUSE_S) -> tuple[float, float]:
    """GiB/s at which a new process gets fresh memory (``gib`` written a byte a page): right after another
    process freed as much, and after ``pause_s`` idle. A compile or session start fills hundreds of MB of
    new memory; on a virtual machine whose host takes freed memory back, that is far slower after a pause."""
    def once() -> float:
        out = subprocess.run([sys.executable, "-c", TOUCH, str(gib)], capture_output=True, text=True, check=True)
        return gib / float(out.stdout.strip())

    once()
    hot = once()
    time.sleep(pause_s)
    return hot, once()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steady", type=int, default=4, help="steady locate calls per round and row")
    ap.add_argument("--weights", help="a real openai/clip-vit-large-patch14 folder, if you have one")
    ap.add_argument("--compare-src", help="another geoscope source tree whose bf16 cold start is timed alongside")
    ap.add_argument("--torch", action="store_true", help="also time the torch + transformers path of before")
    ap.add_argument("--images", type=int, default=6, help="photos of the int8 accuracy check (Kauai.png + synthetic)")
    args = ap.parse_args()

    from geoclip_speed import _backbone, _images

    from geoscope.geolocator import Geolocator
    from geoscope.heads.geoclip_files import geoclip_file

    clip_dir, kind = _backbone(args.weights)
    image = str(geoclip_file("../images/Kauai.png").resolve())
    tmp = Path(tempfile.mkdtemp(prefix="cold-"))
    base = ["locate", image, "--model", "geoclip", "--weights", clip_dir, "--json", "--no-progress"]
    env = dict(os.environ)
    rows = {"bf16": (base + ["--precision", "auto"], env), "int8": (base + ["--precision", "int8"], env)}
    if args.compare_src:
        rows["bf16, --compare-src"] = (base + ["--precision", "auto"],
                                       {**env, "PYTHONPATH": str(Path(args.compare_src).resolve())})
    if args.torch:
        (tmp / "before.py").write_text(BEFORE)
        rows["before (torch)"] = ([str(tmp / "before.py"), clip_dir, image], env)

    def argv(label):
        cmd, _ = rows[label]
        return [sys.executable] + (cmd if label == "before (torch)" else ["-m", "geoscope"] + cmd)

    load0 = os.getloadavg()
    first = {label: run_cold(argv(label), rows[label][1])[0] for label in rows}  # exports and caches, once
    print("first use (exports and caches made once): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in first.items()), file=sys.stderr)
    acc = accuracy(clip_dir, _images(tmp, args.images))

    steady_geo = {p: Geolocator.from_pretrained("geoclip", weights=clip_dir, precision=p, progress=False)
                  for p in ("auto", "int8")}
    if args.torch:
        from geoscope.encoders import create_encoder
        from geoscope.heads.geoclip import load_geoclip_head
        from geoscope.pretrained import cache_dir

        steady_geo["torch"] = Geolocator(create_encoder(clip_dir, precision="auto", runtime="torch"),
                                         load_geoclip_head(cache_dir(), progress=False), name="geoclip")
    steady_of = {"bf16": "auto", "int8": "int8", "bf16, --compare-src": "auto", "before (torch)": "torch"}
    steady_top = {k: top1(g.locate([image])[0].to_dict()) for k, g in steady_geo.items()}  # warm-up + answer
    cold: dict[str, list] = {k: [] for k in rows}
    cold_top: dict[str, set] = {k: set() for k in rows}
    timelines: dict[str, list] = {k: [] for k in rows if k != "before (torch)"}
    steady: dict[str, list] = {k: [] for k in steady_geo}
    for _ in range(args.rounds):
        for label in rows:
            wall, cpu, pred = run_cold(argv(label), rows[label][1])
            cold[label].append((wall, cpu))
            cold_top[label].add(top1(pred))
        for label in timelines:
            timelines[label].append(run_timeline(rows[label][0], rows[label][1], tmp))
        for key, geo in steady_geo.items():
            for _ in range(args.steady):
                c = time.process_time()
                t = time.perf_counter()
                geo.locate([image])
                steady[key].append((time.perf_counter() - t, time.process_time() - c))
    load1 = os.getloadavg()

    table = []
    names = {"bf16": "bf16 (--precision auto: OpenVINO bf16, numpy head)",
             "int8": "int8 (--precision int8: ONNX Runtime int8, weights packed once, numpy head)",
             "bf16, --compare-src": f"bf16 from {args.compare_src} (A/B)",
             "before (torch)": "before (torch + transformers, torch head)"}
    for label in rows:
        s = steady[steady_of[label]]
        cw, cc = statistics.median(w for w, _ in cold[label]), statistics.median(c for _, c in cold[label])
        sw, sc = statistics.median(w for w, _ in s), statistics.median(c for _, c in s)
        same = cold_top[label] == {steady_top[steady_of[label]]} == {steady_top["auto"]}
        table.append([names[label], cw, sw, cw / sw, cc, sc, cc / sc,
                      "yes" if same else f"no: {sorted(cold_top[label])} vs {steady_top['auto']}"])

    prof_labels = list(timelines)
    prof = []
    for phase, find in PHASES:
        prof.append([f"{phase} (wall s since start)"]
                    + [statistics.median(find(d) for d in timelines[k]) for k in prof_labels])
    prof.append(["process exited (wall s)"] + [statistics.median(d["wall"] for d in timelines[k]) for k in prof_labels])
    prof.append(["CPU s, every thread"] + [statistics.median(d["cpu"] for d in timelines[k]) for k in prof_labels])
    for part, events in CPU_PARTS:
        prof.append([f"CPU s, {part}"] + [statistics.median(
            sum(e["thread_cpu"] for e in d["events"] if e["label"] in events) for d in timelines[k])
            for k in prof_labels])
    prof.append(["CPU s, the rest (interpreter, imports, compile / session and inference threads, exit)"]
                + [statistics.median(d["cpu"] - sum(e["thread_cpu"] for e in d["events"]
                                                    if any(e["label"] in ev for _, ev in CPU_PARTS))
                                     for d in timelines[k]) for k in prof_labels])

    hot_rate, cold_rate = first_touch_rate()
    acc_text = "; ".join(f"{k}: cosine min {v[0]:.5f}, median {v[1]:.5f}, same top-1 {v[2]}/{args.images}"
                         for k, v in acc.items())
    loads = (f"load averages (1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start, "
             f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end, on {os.cpu_count()} cores")
    notes = (
        f"Backbone: {kind} ({clip_dir}); image: Kauai.png (the geoclip package's example). Cold = a new process "
        f"running the whole command once (`python3 -m geoscope locate Kauai.png --model geoclip --weights DIR "
        f"--json --no-progress --precision P`), median of {args.rounds}, after a first run of each in this "
        f"benchmark (" + ", ".join(f"{k} {v:.0f} s" for k, v in first.items()) + "; it makes the exports and "
        f"caches when they are missing, once per machine and weights). Steady = `Geolocator.locate([image])` "
        f"in a warm process at the same precision, median of {args.rounds * args.steady}. CPU s counts every "
        f"thread. 'same top-1' compares every cold run's best candidate with the steady bf16 answer. "
        f"int8 accuracy ({args.images} photos: Kauai.png and synthetic ones; OpenVINO fp32 equals torch fp32 to "
        f"1e-4): {acc_text}. The machine is shared: {loads}; wall times are inflated by the load, CPU times much less. "
        f"New memory, as a new process gets it ({TOUCH_GIB:g} GiB, a byte a page): {hot_rate:.1f} GiB/s right after "
        f"another process freed as much, {cold_rate:.1f} GiB/s after {TOUCH_PAUSE_S:g} s idle; "
        "a bf16 cold start fills about 0.65 GB of it "
        "(OpenVINO's compiled weights; int8 about 0.04 GB: its packed weights are used in place from the file), "
        "so on a virtual machine whose host takes freed memory back "
        "(the second rate far below the first) a bf16 cold start after a pause is slower than these back-to-back runs."
    )
    write_result("cold_start", "Cold `geoscope locate --model geoclip` vs the steady per-image time",
                 ["path", "cold wall s", "steady wall s / image", "cold / steady (wall)", "cold CPU s",
                  "steady CPU s / image", "cold / steady (CPU)", "same top-1"], table, notes)
    write_result("cold_start_profile", "Where a cold `geoscope locate --model geoclip` spends its time",
                 ["phase"] + prof_labels, prof,
                 f"Median of {args.rounds} runs of each command under benchmarks/_cold_timeline.py (the command "
                 "run in one process with its phases' functions wrapped from outside; see that file), interleaved "
                 "with the cold runs of the table above. Times are when a phase ended, in wall seconds since the "
                 "process was started; phases on other threads (compile, place names) overlap the main thread's. "
                 "CPU rows: seconds of CPU of the thread(s) that ran the phase ('first inference' counts only the "
                 f"main thread's share: the runtime's worker threads are in 'the rest'). {loads}.")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

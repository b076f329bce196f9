"""Cold start of ``geoscope locate IMAGE --model geoclip --weights DIR`` against the steady per-image time.

"Cold" is a new process answering one image, timed from start to exit (Python start, imports, model
load, one prediction, place names, output), after the first use has made its exports and caches once
(the first use is reported separately). "Steady" is ``Geolocator.locate([image])`` in a process that
has the model loaded and has answered before (median). Both run the same model the same way:

- **geoscope now**: the ``geoclip`` model as ``geoscope locate`` builds it: backbone on ``runtime="auto"``
  (OpenVINO here, from the cached export), head served as numpy arrays; no torch, no transformers.
- **before (torch)**: the path geoscope took before, rebuilt in a script: the backbone through torch +
  transformers (``runtime="torch"``), the torch ``RetrievalHead`` (``heads.geoclip.load_geoclip_head``).

Both at ``precision=auto`` (bf16 where the CPU has it). Cold runs of the two alternate with rounds of
the steady timings, so load from other jobs falls on all alike. The top-1 of every cold run is checked
against the steady answers of both. The backbone is openai/clip-vit-large-patch14's architecture with
random weights (no real weights here: the computation, and so the time, is the same).

    python3 benchmarks/bench_cold_start.py [--rounds 3] [--weights DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

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


def run_cold(argv: list[str]) -> tuple[float, float, dict]:
    """(wall s, CPU s, first prediction) of one new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout)[0]


def top1(pred: dict) -> tuple[float, float]:
    c = pred["candidates"][0]
    return round(c["lat"], 4), round(c["lon"], 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steady", type=int, default=5, help="steady locate calls per round")
    ap.add_argument("--weights", help="a real openai/clip-vit-large-patch14 folder, if you have one")
    args = ap.parse_args()

    from geoclip_speed import _backbone

    from geoscope.encoders import create_encoder
    from geoscope.geolocator import Geolocator
    from geoscope.heads.geoclip import load_geoclip_head
    from geoscope.heads.geoclip_files import geoclip_file
    from geoscope.pretrained import cache_dir

    clip_dir, kind = _backbone(args.weights)
    image = str(geoclip_file("../images/Kauai.png").resolve())
    env_script = Path(tempfile.mkdtemp(prefix="cold-")) / "before.py"
    env_script.write_text(BEFORE)
    now_cmd = [sys.executable, "-m", "geoscope", "locate", image, "--model", "geoclip", "--weights", clip_dir,
               "--json", "--no-progress"]
    before_cmd = [sys.executable, str(env_script), clip_dir, image]
    load0 = os.getloadavg()[0]

    first = run_cold(now_cmd)  # the first use: export, OpenVINO model, served head, compiled-model cache
    run_cold(before_cmd)
    print(f"first use (exports and caches made once): {first[0]:.1f} s", file=sys.stderr)

    now = Geolocator.from_pretrained("geoclip", weights=clip_dir, progress=False)
    before = Geolocator(create_encoder(clip_dir, precision="auto", runtime="torch"),
                        load_geoclip_head(cache_dir(), progress=False), name="geoclip")
    steady_top = {}
    for label, geo in (("now", now), ("before", before)):
        steady_top[label] = top1(geo.locate([image])[0].to_dict())  # warm-up, and the steady answer
    cold = {"now": [], "before": []}
    steady = {"now": [], "before": []}
    cold_top = {"now": set(), "before": set()}
    for _ in range(args.rounds):
        for label, cmd in (("now", now_cmd), ("before", before_cmd)):
            wall, cpu, pred = run_cold(cmd)
            cold[label].append((wall, cpu))
            cold_top[label].add(top1(pred))
        for label, geo in (("now", now), ("before", before)):
            for _ in range(args.steady):
                c = time.process_time()
                t = time.perf_counter()
                geo.locate([image])
                steady[label].append((time.perf_counter() - t, time.process_time() - c))
    rows = []
    for label, name in (("now", "geoscope now (runtime auto: OpenVINO, numpy head)"),
                        ("before", "before (torch + transformers, torch head)")):
        cw = statistics.median(w for w, _ in cold[label])
        cc = statistics.median(c for _, c in cold[label])
        sw = statistics.median(w for w, _ in steady[label])
        sc = statistics.median(c for _, c in steady[label])
        same = cold_top[label] == {steady_top[label]} and steady_top[label] == steady_top["before"]
        rows.append([name, cw, sw, cw / sw, cc, sc, cc / sc, "yes" if same else f"no: {sorted(cold_top[label])}"])
    notes = (
        f"Backbone: {kind} ({clip_dir}); image: Kauai.png (the geoclip package's example). Cold = a new process "
        f"running the whole command once (`{' '.join(Path(a).name if os.sep in a else a for a in now_cmd)}`), "
        f"median of {args.rounds}, after a first run in this benchmark ({first[0]:.0f} s; it makes the exports and "
        f"caches when they are missing, once per machine and weights). Steady = `Geolocator.locate([image])` in a warm "
        f"process, median of "
        f"{args.rounds * args.steady}. Both at precision auto (bf16 here). CPU s counts every thread: on a quiet "
        f"machine the wall time of the single-threaded start-up is about its CPU time, so the CPU ratio is what a "
        f"quiet machine would show more closely than the wall ratio. 'same top-1' compares every cold run's best "
        f"candidate with the steady answer and with the torch path's. The machine is shared (1-min load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores), which "
        "inflates every wall time."
    )
    write_result("cold_start", "Cold `geoscope locate --model geoclip` vs the steady per-image time",
                 ["path", "cold wall s", "steady wall s / image", "cold / steady (wall)", "cold CPU s",
                  "steady CPU s / image", "cold / steady (CPU)", "same top-1"], rows, notes)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

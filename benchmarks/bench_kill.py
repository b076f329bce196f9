"""Kill tests (issue 14, item 3): SIGKILL ``geoscope embed``, ``train`` and ``demo`` at seeded random moments.

    python3 benchmarks/bench_kill.py                    # 20 kills per command (60 in all)
    python3 benchmarks/bench_kill.py --kills 3 --jobs embed,train

For each command an uninterrupted reference run is timed first; the kill moments are drawn (seeded)
uniformly over its working window, from its first output file to its end. Each kill starts from an
empty output folder, SIGKILLs the process group at its moment, inspects what is left (a store or
model either refuses to open, saying why, or opens and equals the reference; nothing opens wrong),
runs the same command again to the end and compares the result with the reference: the same rows in
the same order, no duplicates or gaps, embeddings equal bit for bit (float16, the stored precision),
the same errors; a model whose every weight, config, cells, calibration, report and per-epoch metrics
(less timings) are equal; for the demo, its report, cached stores, thumbnails and model. A moment the
run had already finished by counts as no kill and the next moment is drawn. Writes
``benchmarks/results/kill.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))
from _common import write_result  # noqa: E402

import kill  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per command (default: 20)")
    ap.add_argument("--jobs", default="embed,train,demo", help="comma-separated: embed, train, demo")
    ap.add_argument("--images", type=int, default=1500, help="images in the embed folder (default: 1500)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    ap.add_argument("--log", default=None, metavar="FILE", help="also write every record as JSON lines here")
    a = ap.parse_args()
    jobs = [j.strip() for j in a.jobs.split(",") if j.strip()]

    with tempfile.TemporaryDirectory(prefix="geoscope-kill-") as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        world = kill.make_world(root / "world", a.images)
        log = root / "stderr.log"
        ej = kill.embed_job(world["images"], world["clip"], root / "ref-embed", batch_size=4)
        windows = {"embed": kill.reference_run(ej.args(root / "ref-embed"), root / "ref-embed", log)}
        specs = {"embed": ej}
        if "train" in jobs:
            tj = kill.train_job(root / "ref-embed", world["cells"], root / "ref-train", epochs=10, batch_size=32)
            windows["train"] = kill.reference_run(tj.args(root / "ref-train"), root / "ref-train", log)
            specs["train"] = tj
        if "demo" in jobs:
            dj = kill.demo_job(root / "ref-demo")
            windows["demo"] = kill.reference_run(dj.args(root / "ref-demo"), root / "ref-demo", log)
            specs["demo"] = dj
        print("reference runs (first output, end) s:", windows, file=sys.stderr, flush=True)

        records = []
        for n, job in enumerate(jobs):
            first, total = windows[job]
            moments = iter(kill.schedule(a.seed + n, 10 * a.kills, first, total))
            done = tries = 0
            while done < a.kills and tries < 3 * a.kills:
                tries += 1
                rec = kill.kill_run(specs[job], root / f"run-{job}", next(moments), log)
                records.append(rec)
                print(json.dumps(rec), file=sys.stderr, flush=True)
                if a.log:
                    with open(a.log, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                if rec["killed"]:
                    done += 1
        report(records, jobs, windows, a)


def report(records: list[dict], jobs: list[str], windows: dict, a) -> None:
    rows = []
    for job in jobs:
        first, total = windows[job]
        mine = [r for r in records if r["job"] == job]
        killed = [r for r in mine if r["killed"]]
        ok = [r for r in killed if r["ok"]]
        bad = [r for r in killed if not r["ok"]]
        problems = "; ".join(f"at {r['at_s']} s: " + ", ".join(r["after_kill"] + r["differences"] + r["stray_files"])
                             for r in bad[:3])
        left = {}
        for r in killed:
            where = _stage(r.get("left", ""))
            left[where] = left.get(where, 0) + 1
        rows.append([job, f"{first:.1f} - {total:.1f}", len(killed), len(mine) - len(killed), len(ok),
                     sum(bool(r["after_kill"]) for r in killed), sum(bool(r["differences"]) for r in killed),
                     sum(bool(r["stray_files"]) for r in killed),
                     ", ".join(f"{k} {v}" for k, v in sorted(left.items(), key=lambda kv: -kv[1])),
                     f"{max((r['rerun_s'] for r in killed), default=0):.1f}", problems or "none"])
    survived = sum(r[4] for r in rows)
    kills = sum(r[2] for r in rows)
    load = os.getloadavg()
    notes = (f"{survived} of {kills} kills survived (every check held). embed: {a.images} tiny JPEGs (48x36, two "
             "unreadable files among them), a tiny random CLIP, batch 4, no workers; train: the hybrid head on that "
             "store over 6x12 world geocells, 10 epochs of batches of 32, calibrated on the validation split; demo: "
             "`geoscope demo --quick --train 40 --test 10 --epochs 4` (Blue Marble tiles, efficientnet-lite0). "
             "'window': the reference run's first output file and end, seconds after its start: the kill moments "
             f"are drawn (seed {a.seed} + job number) uniformly in it. 'finished first': moments the run had "
             "already finished by (not counted as kills). The moments are timed from each process's start, so when the "
             "machine was busier than during the reference run (its load swung between about 7 and 35) start-up took "
             "longer and some kills fell before the first output: 'no store', 'no checkpoint', 'nothing written'. "
             "'where the kills landed': what each kill left (an embed: "
             "no store yet, rows committed, or complete; a train: the last checkpointed epoch and whether the model "
             "was saved; the demo: the stage it was in). Each kill starts from an empty output folder; after it, "
             "what is there must either refuse to open (saying it is unfinished) or open and equal the reference "
             "('opened wrong' counts the others); the same command is run again and its result compared with the "
             "reference run's: store rows, order, embeddings bit for bit (float16), coordinates and errors; model "
             "weights bit for bit, config, cells, calibration, report and per-epoch metrics less timings; the demo's "
             "report (less timings), cached stores, thumbnails and model ('result differs'); 'stray files': "
             "temporary files or a lock left in the finished output. Processes ran with one torch thread. Load "
             f"average at the end {load[0]:.1f} (2 cores shared with other jobs): timings are noisy.")
    write_result("kill", "Reliability: SIGKILL at random moments, then the same command again",
                 ["command", "window s", "kills", "finished first", "survived", "opened wrong after the kill",
                  "result differs", "stray files", "where the kills landed", "slowest re-run s", "problems"], rows, notes)


def _stage(left: str) -> str:
    """A kill's ``left`` description reduced to a stage, for counting."""
    if not left:
        return "?"
    if "rows committed" in left and ";" not in left:
        return "mid-store"
    if left.startswith("checkpoint") or left.startswith("no checkpoint"):
        return left.split(",")[0].replace("checkpoint after epoch", "after epoch") + (
            ", model saved" if "model saved" in left else "")
    if left in ("no store", "complete", "finished", "nothing written"):
        return left
    # the demo: the last stage it had reached
    if "checkpoint" in left or "model" in left:
        return "training" if "model saved" not in left else "model saved"
    if "rows committed" in left:
        return "embedding tiles"
    return "stores done"


def from_log() -> None:
    """Render kill.json from a --log file of an interrupted run: ``--from-log FILE --windows JSON``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-log", required=True)
    ap.add_argument("--windows", required=True, help='{"embed": [first, end], ...}')
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--command", default=None, help="the command of the run that wrote the log (recorded as the result's)")
    a = ap.parse_args()
    records = [json.loads(x) for x in Path(a.from_log).read_text().splitlines() if x.strip()]
    windows = json.loads(a.windows)
    report(records, [j for j in ("embed", "train", "demo") if any(r["job"] == j for r in records)], windows, a)
    if a.command:
        from _common import RESULTS

        path = RESULTS / "kill.json"
        doc = json.loads(path.read_text())
        doc["command"] = a.command
        doc["notes"] += " (Table rendered from that run's --log with `--from-log`.)"
        path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    from_log() if "--from-log" in sys.argv else main()

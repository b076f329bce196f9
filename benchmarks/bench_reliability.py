"""The reliability summary (issue 14): one table of the figures the fuzz, kill, disk-full and memory
benchmarks measured, each with the command that measured it.

    python3 benchmarks/bench_reliability.py       # reads benchmarks/results/{fuzz,kill,disk_full,memory}.json

Runs nothing itself; run the four benchmarks first (``benchmarks/run_all.py --only fuzz --only
disk_full --only kill --only memory --only reliability``). Writes ``benchmarks/results/reliability.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, write_result  # noqa: E402


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _when(doc: dict) -> str:
    return f"`{doc['command']}` ({doc['date']})"


def main() -> None:
    rows = []
    fuzz, kill, disk, mem = _load("fuzz"), _load("kill"), _load("disk_full"), _load("memory")
    if fuzz and "summary" in fuzz:
        s = fuzz["summary"]
        kinds = ", ".join(f"{k} {v['inputs']:,}" for k, v in sorted(s["by_kind"].items(), key=lambda kv: -kv[1]["inputs"]))
        slow = s["slowest_cpu"]
        slow_wall = s["slowest"]
        cli = fuzz.get("cli_batches") or []
        ath = fuzz.get("atheris") or {}
        rows += [
            ["malformed inputs tried, by kind", f"{s['inputs']:,} ({kinds})", _when(fuzz)],
            ["crashes", s["crash"], _when(fuzz)],
            ["hangs (over 5 s of CPU for one input)", s["hang"], _when(fuzz)],
            ["contract breaches (a refusal that is not one sentence naming the file, a position out of range)",
             s["contract"], _when(fuzz)],
            ["slowest input", f"#{slow['index']} ({slow['kind']}: {slow['detail']}): {slow['cpu_s']:.2f} s of CPU, "
             f"{slow['seconds']:.2f} s wall-clock on the loaded machine"
             + ("" if slow_wall["index"] == slow["index"] else
                f"; slowest by wall-clock #{slow_wall['index']}: {slow_wall['seconds']:.2f} s"), _when(fuzz)],
            ["peak RSS of one input (worker per input)", f"{s['peak_rss']['rss_mb']:.0f} MB (#{s['peak_rss']['index']}, "
             f"{s['peak_rss']['detail']}); inputs over 2 GB: {s['memory']}", _when(fuzz)],
        ]
        if cli:
            rows.append(["`geoscope embed` / `locate` over a sample of the corpus",
                         f"{sum(b['inputs'] for b in cli):,} inputs, {sum(len(b['defects']) for b in cli)} defects", _when(fuzz)])
        if ath.get("ran"):
            rows.append(["coverage-guided fuzzing of the loader (atheris)",
                         f"{ath['seconds']:.0f} s, {ath['executions']:,} executions, {len(ath['findings'])} findings",
                         _when(fuzz)])
    if mem:
        for r in mem["rows"]:
            rows.append([f"peak RSS: {r[0]}", f"{r[4]} MB (early {r[1]}, midway {r[2]}, end {r[3]})", _when(mem)])
    if kill:
        total = sum(int(r[2]) for r in kill["rows"])
        ok = sum(int(r[4]) for r in kill["rows"])
        per = ", ".join(f"{r[0]} {r[4]} of {r[2]}" for r in kill["rows"])
        rows.append(["SIGKILLs survived (re-run finishes equal to an uninterrupted run, nothing opens wrong)",
                     f"{ok} of {total} ({per})", _when(kill)])
    if disk:
        runs = disk["rows"]
        out = [r for r in runs if r[2] != "0"]  # the runs that did run out of space (exit 0: there was room)
        ok = [r for r in out if all(c == "yes" for c in r[3:6]) and r[7] == "yes" and r[8] == "yes"
              and not str(r[6]).startswith("CORRUPT")]
        per = ", ".join(f"{job} {sum(1 for r in ok if r[0] == job)} of {sum(1 for r in out if r[0] == job)}"
                        for job in dict.fromkeys(r[0] for r in out))
        rows.append(["disk-full runs recovered (one error saying the disk is full and naming the path, nothing "
                     "corrupt, the same command resumed to the result of a run with room)",
                     f"{len(ok)} of {len(out)} runs that ran out of space ({per}; {len(runs) - len(out)} more had room "
                     "and finished)", _when(disk)])
    write_result("reliability", "Reliability: summary", ["measure", "result", "measured by"], rows,
                 "Collected from the four reliability sections above (they give the details and the "
                 "machine load when they ran). Re-render with `python3 benchmarks/bench_reliability.py`.")


if __name__ == "__main__":
    main()

"""Shared by the benchmark scripts: every script writes its own result fragment, and
``benchmarks/run_all.py`` assembles the fragments into BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    try:
        import torch

        tv = f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    except Exception:  # noqa: BLE001
        tv = ""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}{tv}"


def command() -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    return "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def write_result(name: str, title: str, headers: list[str], rows: list[list], notes: str = "") -> Path:
    """Write ``benchmarks/results/<name>.json`` (title, command, machine, date, table, notes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "title": title,
        "command": command(),
        "machine": machine(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "headers": headers,
        "rows": [[_fmt(v) for v in r] for r in rows],
        "notes": notes,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"\n## {title}\n")
    print(" | ".join(headers))
    for r in doc["rows"]:
        print(" | ".join(r))
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)

"""Kill tests (issue 14, item 3): SIGKILL ``geoscope embed``, ``train`` and ``demo`` at seeded random
moments, run the same command again, and compare what it finishes with an uninterrupted run's.

A job is a ``Job``: the geoscope arguments writing to an output folder, what to inspect right after a
kill (``inspect(out)``: a list of problems with the half-written state; empty when everything in it
either refuses to open, saying why, or opens and equals the reference) and how to compare the
finished output with the reference run's (``compare(out)``: a list of differences; empty when equal).

``kill_run(job, out, at_s)`` starts the command in its own process group, SIGKILLs the whole group
``at_s`` seconds after the start (unless it finished before), inspects what it left, runs the same
command again to the end and compares. The moments come from ``schedule(seed, n, lo, hi)``: uniform
in the reference run's working window (from its first output file to its end), so they land in the
work rather than in Python's start-up.

Shared by ``tests/reliability/test_kill.py`` (a few kills, tiny settings) and
``benchmarks/bench_kill.py`` (20 kills per command).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

#: per-epoch figures that are wall-clock measurements, so differ between any two runs
TIMING_KEYS = {"seconds", "samples_per_s", "cpu_seconds", "timings_s", "cpu_s", "total_s"}


@dataclass
class Job:
    name: str
    args: Callable[[Path], list[str]]
    inspect: Callable[[Path], list[str]]
    compare: Callable[[Path], list[str]]
    #: what a kill left, in a few words (how far the job had got)
    describe: Callable[[Path], str] = lambda out: ""


def env() -> dict:
    e = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    e.pop("GEOSCOPE_DEBUG", None)
    return e


def start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "geoscope", *args], stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True, env=env())


def run_to_end(args: list[str], log: Path, timeout: float = 900) -> tuple[int, float]:
    """(exit code, wall seconds) of a run left to finish."""
    t0 = time.monotonic()
    p = start(args, log)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = -9
    return rc, time.monotonic() - t0


def reference_run(args: list[str], out: Path, log: Path, timeout: float = 900) -> tuple[float, float]:
    """Run to the end, watching ``out``: (seconds until its first file appeared, total seconds)."""
    t0 = time.monotonic()
    p = start(args, log)
    first = None
    while p.poll() is None:
        if first is None and out.exists() and any(out.iterdir()):
            first = time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise RuntimeError(f"the reference run of {args[0]} took over {timeout} s")
        time.sleep(0.005)
    total = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"the reference run of {args[0]} failed (exit {p.returncode}): {tail(log)}")
    return (first if first is not None else 0.0), total


def schedule(seed: int, n: int, lo: float, hi: float) -> list[float]:
    """``n`` kill moments (seconds after the start), seeded, uniform in [lo, hi)."""
    return [float(t) for t in np.random.default_rng(seed).uniform(lo, hi, n)]


def tail(log: Path, n: int = 600) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


def kill_run(job: Job, out: Path, at_s: float, log: Path, timeout: float = 900) -> dict:
    """One kill at ``at_s`` and its resumption; ``rec["ok"]`` when every check holds."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    p = start(job.args(out), log)
    while p.poll() is None and time.monotonic() - t0 < at_s:
        time.sleep(0.002)
    killed = p.poll() is None
    if killed:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    rec = {"job": job.name, "at_s": round(at_s, 3), "killed": killed,
           "exit_before_kill": None if killed else p.returncode}
    rec["left"] = job.describe(out)
    rec["after_kill"] = job.inspect(out)
    rc, seconds = run_to_end(job.args(out), log, timeout)
    rec["rerun_exit"], rec["rerun_s"] = rc, round(seconds, 2)
    rec["differences"] = job.compare(out) if rc == 0 else [f"the re-run failed: {tail(log, 300)}"]
    rec["stray_files"] = stray_files(out)
    rec["ok"] = killed and not rec["after_kill"] and rc == 0 and not rec["differences"] and not rec["stray_files"]
    return rec


def stray_files(out: Path) -> list[str]:
    """Temporary files an atomic write left behind (``.NAME.XXXX.tmp...``) and locks still held."""
    if not out.exists():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and ((p.name.startswith(".") and ".tmp" in p.name) or p.name == "store.lock"))


# ------------------------------------------------------------------------------------------- stores
def describe_store(path: Path) -> str:
    """"no store", "N rows committed" (the journals' lines) or "complete"."""
    if not path.exists():
        return "no store"
    state = _json(path / "store.json") or {}
    if state.get("complete"):
        return "complete"
    rows = sum(j.read_bytes().count(b"\n") for j in path.rglob("progress.jsonl"))
    return f"{rows} rows committed"


def store_state(path: Path, ref: Path) -> list[str]:
    """Problems with a store a kill left: none when it is absent, refuses to open (saying it is
    unfinished), or opens and equals the reference."""
    from geoscope.errors import InputError
    from geoscope.store import EmbeddingStore

    if not path.exists() or not any(path.iterdir()):
        return []
    try:
        EmbeddingStore.open(path)
    except InputError:
        return []
    except Exception as exc:  # noqa: BLE001 - what we look for
        return [f"{path.name}: opens wrong: {type(exc).__name__}: {str(exc)[:200]}"]
    return [f"{path.name} (opened after the kill): {d}" for d in compare_stores(path, ref)]


def compare_stores(a: Path, b: Path) -> list[str]:
    """Differences between two stores: rows (ids in order, no duplicates, no gaps), embeddings equal to
    the stored precision (float16, bit for bit), coordinates and the error list."""
    from geoscope.store import EmbeddingStore

    x, y = EmbeddingStore.open(a), EmbeddingStore.open(b)
    out = []
    xi, yi = [str(i) for i in x.ids], [str(i) for i in y.ids]
    if len(set(xi)) != len(xi):
        out.append(f"{len(xi) - len(set(xi))} duplicate ids")
    if set(xi) != set(yi):
        out.append(f"{len(set(yi) - set(xi))} ids missing, {len(set(xi) - set(yi))} extra")
    elif xi != yi:
        out.append("the same ids in another order")
    ex, ey = np.asarray(x.embeddings), np.asarray(y.embeddings)
    if ex.shape != ey.shape:
        out.append(f"embeddings {ex.shape} against {ey.shape}")
    elif xi == yi and not np.array_equal(ex, ey):
        out.append(f"embeddings differ (max {float(np.max(np.abs(ex.astype(np.float32) - ey.astype(np.float32)))):.3g})")
    if xi == yi and not (np.array_equal(np.asarray(x.lat), np.asarray(y.lat), equal_nan=True)
                         and np.array_equal(np.asarray(x.lon), np.asarray(y.lon), equal_nan=True)):
        out.append("coordinates differ")
    if sorted(map(str, x.errors["id"])) != sorted(map(str, y.errors["id"])):
        out.append(f"errors: {len(x.errors)} against {len(y.errors)}")
    return out


# ------------------------------------------------------------------------------------------- models
def model_state(path: Path, ref: Path) -> list[str]:
    """Problems with a model folder a kill left: none when it has no model yet, refuses to load with a
    ``GeoscopeError`` sentence, or loads and equals the reference (a model that loads but differs is
    the failure the issue names: a folder that loads wrong)."""
    from geoscope.errors import GeoscopeError
    from geoscope.geolocator import Geolocator

    if not (path / "config.json").exists():
        return []
    try:
        Geolocator.from_pretrained(path, places=False, progress=False)
    except GeoscopeError:
        return []
    except Exception as exc:  # noqa: BLE001
        return [f"{path.name}: loads wrong: {type(exc).__name__}: {str(exc)[:200]}"]
    return [f"{path.name} (loaded after the kill): {d}" for d in compare_models(path, ref)]


def describe_model(path: Path) -> str:
    """The last checkpointed epoch and whether the model folder has its config yet."""
    import torch

    ckpt = path.with_name(path.name + ".train") / "checkpoint.pt"
    epoch = "no checkpoint"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        epoch = f"checkpoint after epoch {state['epoch'] + 1}" + (" (finished)" if state.get("finished") else "")
    saved = "model saved" if (path / "config.json").exists() else "no model yet"
    return f"{epoch}, {saved}"


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _drop_timings(obj, root: Path | None = None):
    """``obj`` less its wall-clock figures, with the output folder ``root`` in any string written
    ``<out>`` (the calibration's status names the store it was fitted on)."""
    if isinstance(obj, dict):
        return {k: _drop_timings(v, root) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_drop_timings(v, root) for v in obj]
    if isinstance(obj, str) and root is not None:
        return obj.replace(str(root), "<out>")
    return obj


def compare_models(a: Path, b: Path) -> list[str]:
    """Differences between two model folders: every weight bit for bit, config (the files' hashes
    included), cells, calibration, report and the per-epoch metrics (less their timings)."""
    from safetensors.numpy import load_file

    out = []
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if sorted(wa) != sorted(wb):
        out.append(f"weights: tensors {sorted(set(wa) ^ set(wb))[:5]} differ")
    else:
        bad = [k for k in wa if wa[k].shape != wb[k].shape or not np.array_equal(wa[k], wb[k], equal_nan=True)]
        if bad:
            k = bad[0]
            diff = (float(np.max(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64))))
                    if wa[k].shape == wb[k].shape else float("nan"))
            out.append(f"weights: {len(bad)} tensors differ ({k}: max {diff:.3g})")
    for name in ("config.json", "cells.json", "calibration.json", "report.json"):
        if _drop_timings(_json(a / name), a.parent) != _drop_timings(_json(b / name), b.parent):
            out.append(f"{name} differs")
    ma = [_drop_timings(json.loads(x)) for x in (a / "metrics.jsonl").read_text().splitlines()] \
        if (a / "metrics.jsonl").exists() else None
    mb = [_drop_timings(json.loads(x)) for x in (b / "metrics.jsonl").read_text().splitlines()] \
        if (b / "metrics.jsonl").exists() else None
    if ma != mb:
        out.append("metrics.jsonl differs")
    return out


# ------------------------------------------------------------------------------------- the three jobs
def embed_job(images: Path, encoder: Path, ref: Path, batch_size: int = 8) -> Job:
    return Job("embed",
               lambda out: ["embed", str(images), "-e", str(encoder), "-o", str(out), "--no-progress", "--workers",
                            "0", "--batch-size", str(batch_size)],
               lambda out: store_state(out, ref), lambda out: compare_stores(out, ref), describe_store)


def train_job(store: Path, cells: Path, ref: Path, epochs: int = 8, batch_size: int = 64) -> Job:
    return Job("train",
               lambda out: ["train", "--store", str(store), "--head", "hybrid", "--cells", str(cells), "-o", str(out / "model"),
                            "--epochs", str(epochs), "--batch-size", str(batch_size), "--patience", "3",
                            "--no-progress", "--seed", "0"],
               lambda out: model_state(out / "model", ref / "model"),
               lambda out: compare_models(out / "model", ref / "model"), lambda out: describe_model(out / "model"))


def demo_args(out: Path, n_train: int = 40, n_test: int = 10, epochs: int = 4) -> list[str]:
    return ["demo", "--quick", "--train", str(n_train), "--test", str(n_test), "--epochs", str(epochs),
            "--no-progress", "-o", str(out)]


def _demo_stores(out: Path) -> dict[str, Path]:
    """The demo's cached embedding stores (folders with a store.json)."""
    cache = out / "cache"
    return {p.name: p for p in cache.iterdir() if (p / "store.json").is_file()} if cache.is_dir() else {}


def _demo_arrays(out: Path) -> dict[str, Path]:
    """The demo's other cached arrays (the overhead model's stages: descriptors, CNN gallery, tile
    embeddings), by path relative to cache/."""
    cache = out / "cache"
    if not cache.is_dir():
        return {}
    return {str(p.relative_to(cache)): p for d in cache.iterdir() if d.is_dir() and not (d / "store.json").is_file()
            for p in d.rglob("*.npy")}


def demo_state(out: Path, ref: Path) -> list[str]:
    problems = model_state(out / "model", ref / "model")
    refs = _demo_stores(ref)
    for name, path in _demo_stores(out).items():
        problems += store_state(path, refs[name]) if name in refs else [f"cache/{name}: not in the reference run"]
    if (out / "report.json").exists():  # written last: the run had finished
        problems += [f"report.json (after the kill): {d}" for d in compare_demo(out, ref)]
    return problems


def compare_demo(out: Path, ref: Path) -> list[str]:
    """The report (less timings), every cached store and thumbnail array, and the model."""
    diffs = []
    ra, rb = _json(out / "report.json"), _json(ref / "report.json")
    for r in (ra, rb):
        if r is not None:
            r.pop("config", None)  # names the output folder
            r.pop("model", None)
            r.pop("stores", None)
            r.pop("heatmaps", None)
    if _drop_timings(ra, out) != _drop_timings(rb, ref):
        diffs.append("report.json differs")
    a, b = _demo_stores(out), _demo_stores(ref)
    if sorted(a) != sorted(b):
        diffs.append(f"cached stores {sorted(a)} against {sorted(b)}")
    for name in sorted(set(a) & set(b)):
        diffs += [f"cache/{name}: {d}" for d in compare_stores(a[name], b[name])]
        ta, tb = a[name] / "thumbnails.npy", b[name] / "thumbnails.npy"
        if not (ta.exists() and np.array_equal(np.load(ta), np.load(tb))):
            diffs.append(f"cache/{name}/thumbnails.npy differs")
    xa, xb = _demo_arrays(out), _demo_arrays(ref)
    if sorted(xa) != sorted(xb):
        diffs.append(f"cached arrays {sorted(xa)} against {sorted(xb)}")
    diffs += [f"cache/{name} differs" for name in sorted(set(xa) & set(xb))
              if not np.array_equal(np.load(xa[name]), np.load(xb[name]))]
    diffs += [f"model: {d}" for d in compare_models(out / "model", ref / "model")]
    return diffs


def demo_job(ref: Path, **size) -> Job:
    return Job("demo", lambda out: demo_args(out, **size), lambda out: demo_state(out, ref),
               lambda out: compare_demo(out, ref), describe_demo)


def describe_demo(out: Path) -> str:
    """How far the demo had got: its stores, the training, the report."""
    if (out / "report.json").exists():
        return "finished"
    parts = [f"{name.split('-')[0]}: {describe_store(path)}" for name, path in sorted(_demo_stores(out).items())]
    if (out / "model").exists():
        parts.append(describe_model(out / "model"))
    return "; ".join(parts) or "nothing written"


# ------------------------------------------------------------------------------------------ set-up
def make_world(root: Path, n_images: int = 200, seed: int = 3) -> dict[str, Path]:
    """Images (with two unreadable files), a tiny random CLIP and world geocells."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _imagefixtures import make_geotagged_folder, random_points

    from geoscope.encoders.testing import save_tiny_clip
    from geoscope.geo.cells import CellHierarchy, save_cells

    root.mkdir(parents=True, exist_ok=True)
    enc = save_tiny_clip(root / "clip")
    make_geotagged_folder(root / "images", random_points(n_images, seed), size=(48, 36))
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "images" / "empty.png").write_bytes(b"")
    save_cells(CellHierarchy.grid((-90, -180, 90, 180), 6, 12), root / "cells.json")
    return {"images": root / "images", "clip": enc, "cells": root / "cells.json"}

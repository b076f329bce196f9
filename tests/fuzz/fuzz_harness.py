"""Push fuzz inputs through geoscope's front doors and judge each outcome (issue 14).

Every input goes through ``load_image`` and ``read_exif`` in a worker process that the parent
watches: an input that uses more than ``TIME_LIMIT_S`` of CPU time (or ``WALL_LIMIT_S`` of wall-clock
time) is a hang, one whose worker grows past ``RSS_LIMIT_MB`` a memory defect; either is stopped and
the worker replaced. CPU time, not wall-clock time, decides, because the machines this runs on are
shared: under a load of 10 on 2 cores a legitimate 100-megapixel image takes 5 s of wall-clock time
for 3 s of CPU. Outcomes per input and front door:

- ``ok``: decoded (``load_image`` gave an RGB image within the pixel limit; ``read_exif`` gave
  findings whose fields have the right types and ranges);
- ``error``: a clean refusal: an ``ImageError`` / ``InputError`` with a one-line message that names
  the file (``read_exif`` may only refuse an empty input);
- a DEFECT: ``crash`` (any other exception, or the worker died, e.g. a segfault in a decoder),
  ``hang`` (over the time limit), ``memory`` (peak RSS over the limit, or a ``MemoryError``),
  ``contract`` (a refusal without the file's name, a multi-line message, an image that is not RGB,
  findings out of range, ``read_exif`` raising on a non-empty input).

``cli_batch`` writes a sample of inputs into a folder and runs ``geoscope embed`` and
``geoscope locate`` on it in subprocesses with a tiny model, checking that each command finishes
cleanly, accounts for every file, and accepts exactly the files ``load_image`` accepted.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from collections.abc import Callable, Iterable

TIME_LIMIT_S = 5.0
#: a worker still busy after this much wall-clock time is stopped whatever its CPU time (a wait
#: that burns no CPU is a hang too)
WALL_LIMIT_S = 30.0
RSS_LIMIT_MB = 2048
#: address-space ceiling of a worker: a decoder asking for more gets a MemoryError (counted as a
#: memory defect) instead of taking the shared machine down
ADDRESS_LIMIT_MB = 8192
DEFECTS = ("crash", "hang", "memory", "contract")


# ------------------------------------------------------------------------------------ in one process
def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _crash(exc: BaseException) -> tuple[str, str]:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
    return "crash", f"{type(exc).__name__}: {exc} [{where}]"[:600]


def _refusal(exc: Exception, name: str) -> tuple[str, str]:
    msg = str(exc)
    if "MemoryError" in msg:
        return "memory", msg[:600]
    if not msg.strip() or "\n" in msg.strip():
        return "contract", f"message is not one line: {msg!r}"[:600]
    if name not in msg:
        return "contract", f"message does not name the file: {msg!r}"[:600]
    return "error", msg[:600]


def check_load(data: bytes, name: str) -> tuple[str, str]:
    from geoscope.data.images import DEFAULT_MAX_PIXELS, load_image
    from geoscope.errors import InputError

    try:
        im = load_image(data, name=name)
    except InputError as exc:
        return _refusal(exc, name)
    except MemoryError as exc:
        return "memory", f"MemoryError: {exc}"
    except Exception as exc:  # noqa: BLE001 - that is what we are looking for
        return _crash(exc)
    w, h = im.size
    if im.mode != "RGB" or w <= 0 or h <= 0 or w * h > DEFAULT_MAX_PIXELS:
        return "contract", f"load_image gave mode {im.mode} size {im.size}"
    return "ok", f"{w}x{h}"


def _exif_problems(f) -> list[str]:
    out = []
    if f.lat is not None and not (isinstance(f.lat, float) and math.isfinite(f.lat) and -90 <= f.lat <= 90):
        out.append(f"lat {f.lat!r}")
    if f.lon is not None and not (isinstance(f.lon, float) and math.isfinite(f.lon) and -180 <= f.lon <= 180):
        out.append(f"lon {f.lon!r}")
    if (f.lat is None) != (f.lon is None):
        out.append("only one of lat / lon")
    if f.altitude_m is not None and not (isinstance(f.altitude_m, float) and math.isfinite(f.altitude_m)):
        out.append(f"altitude {f.altitude_m!r}")
    for key in ("time", "make", "model"):
        v = getattr(f, key)
        if v is not None and not isinstance(v, str):
            out.append(f"{key} is {type(v).__name__}")
    return out


def check_exif(data: bytes, name: str) -> tuple[str, str]:
    from geoscope.data.exif import read_exif
    from geoscope.errors import InputError

    try:
        f = read_exif(data)
    except InputError as exc:
        if data:
            return "contract", f"read_exif raised on a non-empty input: {exc}"[:600]
        return "error", str(exc)[:600]
    except MemoryError as exc:
        return "memory", f"MemoryError: {exc}"
    except Exception as exc:  # noqa: BLE001
        return _crash(exc)
    problems = _exif_problems(f)
    if problems:
        return "contract", "read_exif findings out of range: " + ", ".join(problems)
    return "ok", "gps" if f.has_gps else "no gps"


def misbehaving_check(data: bytes, name: str) -> dict:  # pragma: no cover - runs in a worker
    """For the harness's own test: misbehaves as ``data`` says (hang, crash, die, memory), else ok."""
    if data == b"hang":
        while True:
            pass
    if data == b"crash":
        raise KeyError("boom")
    if data == b"die":
        os._exit(3)
    if data == b"memory":
        hog = bytearray(600 << 20)  # touched, so it is resident
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        time.sleep(2)
    return {"load_image": "ok", "load_detail": "", "read_exif": "ok", "exif_detail": ""}


def check_bytes(data: bytes, name: str) -> dict:
    """Both front doors on one input, in this process."""
    out = {}
    t = time.perf_counter()
    out["load_image"], out["load_detail"] = check_load(data, name)
    out["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out["read_exif"], out["exif_detail"] = check_exif(data, name)
    out["exif_s"] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------------------------- worker pool
def _worker(conn, address_limit_mb: int, check: str = "") -> None:  # pragma: no cover - runs in a child process
    if address_limit_mb:
        limit = address_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    import geoscope.data.exif  # noqa: F401 - import before the first input, so it is not timed
    import geoscope.data.images  # noqa: F401

    run_check = misbehaving_check if check == "misbehaving" else check_bytes

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, name, data = msg
        _reset_peak_rss()
        t, cpu = time.perf_counter(), time.process_time()
        try:
            res = run_check(data, name)
        except Exception as exc:  # noqa: BLE001 - a check that raises is a crash of the front door it calls
            what, detail = _crash(exc)
            res = {"load_image": what, "load_detail": detail, "read_exif": "unknown", "exif_detail": ""}
        res["seconds"] = time.perf_counter() - t
        res["cpu_s"] = time.process_time() - cpu
        res["rss_mb"] = _peak_rss_mb()
        conn.send((index, res))


def _prefetch(inputs: Iterable, depth: int = 8):
    """Iterate ``inputs`` in a background thread (making an input can take a while; the parent must
    keep watching its workers meanwhile)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def fill() -> None:
        try:
            for x in inputs:
                q.put(x)
        finally:
            q.put(done)

    threading.Thread(target=fill, daemon=True).start()
    while True:
        x = q.get()
        if x is done:
            return
        yield x


@dataclass
class _Slot:
    proc: mp.Process
    conn: object
    job: tuple | None = None
    started: float = 0.0
    cpu_started: float = 0.0
    peak_seen_mb: float = 0.0


@dataclass
class Runner:
    """Runs inputs in ``workers`` watched processes; ``run`` returns one record per input."""

    workers: int = 1
    time_limit_s: float = TIME_LIMIT_S
    wall_limit_s: float = WALL_LIMIT_S
    rss_limit_mb: float = RSS_LIMIT_MB
    address_limit_mb: int = ADDRESS_LIMIT_MB
    #: "" (load_image and read_exif) or "misbehaving" (the harness's self-test)
    check: str = ""
    restarts: int = 0
    _slots: list = field(default_factory=list)

    def _start(self) -> _Slot:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, self.address_limit_mb, self.check), daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def close(self) -> None:
        for s in self._slots:
            try:
                s.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            s.proc.join(timeout=2)
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join()
        self._slots = []

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _replace(self, slot: _Slot) -> _Slot:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join()
        self.restarts += 1
        new = self._start()
        self._slots[self._slots.index(slot)] = new
        return new

    def run(self, inputs: Iterable, on_result: Callable[[dict], None] | None = None) -> list[dict]:
        """``inputs``: FuzzInput-like objects (index, kind, base, detail, suffix, data, name)."""
        while len(self._slots) < self.workers:
            self._slots.append(self._start())
        it = _prefetch(inputs)
        pending: dict[int, object] = {}
        results: list[dict] = []
        exhausted = False

        def record(inp, res: dict) -> None:
            rec = {"index": inp.index, "kind": inp.kind, "base": inp.base, "detail": inp.detail,
                   "suffix": inp.suffix, "bytes": len(inp.data), **res}
            if (rec.get("cpu_s") or 0) > self.time_limit_s and rec.get("load_image") not in DEFECTS:
                # finished, but past the limit (the parent noticed late): still a hang
                rec["load_image"] = "hang"
                rec["load_detail"] = f"took {rec['cpu_s']:.1f} s of CPU; " + rec["load_detail"]
            rec["defect"] = next((rec[k] for k in ("load_image", "read_exif") if rec.get(k) in DEFECTS), None)
            results.append(rec)
            if on_result is not None:
                on_result(rec)

        while True:
            for slot in self._slots:  # hand out work
                if slot.job is None and not exhausted:
                    inp = next(it, None)
                    if inp is None:
                        exhausted = True
                        break
                    pending[inp.index] = inp
                    slot.job = (inp.index,)
                    slot.started, slot.cpu_started = time.perf_counter(), _cpu_s(slot.proc.pid)
                    slot.peak_seen_mb = 0.0
                    try:
                        slot.conn.send((inp.index, inp.name, inp.data))
                    except (OSError, BrokenPipeError):  # the worker died between inputs: a new one
                        slot = self._replace(slot)
                        slot.job, slot.started, slot.cpu_started = (inp.index,), time.perf_counter(), _cpu_s(slot.proc.pid)
                        slot.conn.send((inp.index, inp.name, inp.data))
            busy = [s for s in self._slots if s.job is not None]
            if not busy:
                break
            ready = wait([s.conn for s in busy], timeout=0.05)
            now = time.perf_counter()
            for slot in list(busy):
                index = slot.job[0]
                if slot.conn in ready:
                    try:
                        got_index, res = slot.conn.recv()
                    except (EOFError, OSError):
                        slot.proc.join(timeout=1)
                        code = slot.proc.exitcode
                        res = {"load_image": "crash", "load_detail": f"worker died (exit code {code})",
                               "read_exif": "crash", "exif_detail": "worker died", "seconds": now - slot.started,
                               "cpu_s": None, "rss_mb": slot.peak_seen_mb}
                        self._replace(slot)
                        record(pending.pop(index), res)
                        continue
                    if res.get("rss_mb", 0) > self.rss_limit_mb:
                        res["load_image"] = "memory"
                        res["load_detail"] = f"peak RSS {res['rss_mb']:.0f} MB > {self.rss_limit_mb} MB; " + res["load_detail"]
                    slot.job = None
                    record(pending.pop(got_index), res)
                    continue
                rss = _rss_mb(slot.proc.pid)
                slot.peak_seen_mb = max(slot.peak_seen_mb, rss)
                cpu = _cpu_s(slot.proc.pid) - slot.cpu_started
                over_time = cpu > self.time_limit_s or now - slot.started > self.wall_limit_s
                over_rss = rss > self.rss_limit_mb
                if over_time or over_rss:
                    what = "hang" if over_time else "memory"
                    detail = (f"still running after {cpu:.1f} s of CPU, {now - slot.started:.1f} s wall-clock"
                              if over_time else f"RSS {rss:.0f} MB > {self.rss_limit_mb} MB")
                    res = {"load_image": what, "load_detail": detail, "read_exif": "unknown",
                           "exif_detail": "stopped", "seconds": now - slot.started, "cpu_s": cpu,
                           "rss_mb": slot.peak_seen_mb}
                    self._replace(slot)
                    record(pending.pop(index), res)
        return results


# ----------------------------------------------------------------------------------------- summary
def summarize(results: list[dict]) -> dict:
    by_kind: dict[str, dict] = {}
    for r in results:
        k = by_kind.setdefault(r["kind"], {"inputs": 0, "ok": 0, "error": 0, **dict.fromkeys(DEFECTS, 0),
                                           "max_s": 0.0, "max_rss_mb": 0.0})
        k["inputs"] += 1
        outcome = r["defect"] or r["load_image"]
        k[outcome if outcome in k else "error"] += 1
        k["max_s"] = max(k["max_s"], float(r.get("seconds") or 0))
        k["max_cpu_s"] = max(k.get("max_cpu_s", 0.0), float(r.get("cpu_s") or 0))
        k["max_rss_mb"] = max(k["max_rss_mb"], float(r.get("rss_mb") or 0))
    slowest = max(results, key=lambda r: r.get("seconds") or 0, default=None)
    slowest_cpu = max(results, key=lambda r: r.get("cpu_s") or 0, default=None)
    biggest = max(results, key=lambda r: r.get("rss_mb") or 0, default=None)
    defects = [r for r in results if r["defect"]]
    return {
        "inputs": len(results),
        "by_kind": by_kind,
        "defects": len(defects),
        **{what: sum(1 for r in results if r["defect"] == what) for what in DEFECTS},
        "exif_ok_with_gps": sum(1 for r in results if r.get("exif_detail") == "gps"),
        "load_ok": sum(1 for r in results if r["load_image"] == "ok"),
        "slowest": None if slowest is None else {k: slowest.get(k) for k in ("index", "kind", "detail", "seconds", "cpu_s")},
        "slowest_cpu": None if slowest_cpu is None else {k: slowest_cpu.get(k) for k in ("index", "kind", "detail",
                                                                                         "seconds", "cpu_s")},
        "peak_rss": None if biggest is None else {k: biggest.get(k) for k in ("index", "kind", "detail", "rss_mb")},
        "defect_list": [{k: r.get(k) for k in ("index", "kind", "base", "detail", "load_image", "load_detail",
                                                  "read_exif", "exif_detail", "seconds", "rss_mb")} for r in defects],
    }


# ------------------------------------------------------------------------------------ CLI batches
def make_tiny_model(root: Path) -> tuple[Path, Path]:
    """A tiny random CLIP encoder and a classifier Geolocator over a 4 x 8 grid saved with it:
    (encoder dir, model dir). Built once per ``root``."""
    enc_dir, model_dir = root / "tiny-clip", root / "tiny-model"
    if (model_dir / "config.json").exists():
        return enc_dir, model_dir
    from geoscope.encoders.testing import save_tiny_clip
    from geoscope.geo.cells import Geocells
    from geoscope.geolocator import Geolocator
    from geoscope.heads import create_head

    save_tiny_clip(enc_dir)
    cells = Geocells.grid((-60, -180, 75, 180), 4, 8)
    head = create_head("classifier", 16, cells)
    Geolocator(str(enc_dir), head, cells).save_pretrained(model_dir)
    return enc_dir, model_dir


#: Runs ``argv[2:]`` as a child of this small process and writes the child's peak RSS (KiB) to
#: ``argv[1]``. On Linux a process's ``ru_maxrss`` starts at its parent's RSS when it forks and keeps
#: it through ``exec``, so a command started straight from a pytest worker that has grown to gigabytes
#: reports the worker's size, not its own; started from this launcher, it reports its own peak.
_LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):  # die of the same signal, so the caller sees the same exit status
    if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run(cmd: list[str], timeout: float, env: dict) -> tuple[int | None, str, str, float, float]:
    """(exit code or None on timeout, stdout, stderr, seconds, peak RSS in MB) of one command."""
    import signal
    import tempfile

    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        p = subprocess.Popen([sys.executable, "-c", _LAUNCHER, peak.name, *cmd], stdout=out, stderr=err, env=env,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the launcher and the command
            p.wait()
            rc = -9
        text = peak.read().strip()
        rss = int(text) / 1024.0 if text else 0.0
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"), time.perf_counter() - t, rss


def cli_batch(inputs: list, expected: dict[str, str], workdir: Path, encoder_dir: Path, model_dir: Path,
              per_input_s: float = TIME_LIMIT_S) -> dict:
    """``geoscope embed`` and ``geoscope locate`` on a folder of ``inputs``; ``expected`` maps each
    input's file name to its ``load_image`` outcome ("ok" or not). Returns a record with ``defects``."""
    folder = workdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for inp in inputs:
        (folder / inp.name).write_bytes(inp.data)
        names.append(inp.name)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    timeout = 120.0 + per_input_s * len(inputs)
    defects: list[str] = []
    out: dict = {"inputs": len(inputs)}
    store = workdir / "store"
    rc, stdout, stderr, secs, rss = _run([sys.executable, "-m", "geoscope", "embed", str(folder), "--encoder", str(encoder_dir),
                                     "-o", str(store), "--json", "--no-progress", "--workers", "0"], timeout, env)
    out["embed_s"], out["embed_peak_rss_mb"] = round(secs, 2), round(rss, 1)
    if rc != 0 or "Traceback" in stderr:
        defects.append(f"embed exit {rc}: {stderr.strip()[-800:]}")
    else:
        from geoscope.store import EmbeddingStore

        s = EmbeddingStore.open(store)
        ok_ids = set(map(str, s.ids))
        err = s.errors
        err_ids = set(map(str, err["id"])) if len(err) else set()
        out["embed_ok"], out["embed_errors"] = len(ok_ids), len(err_ids)
        for n in names:
            want = expected.get(n) == "ok"
            if (n in ok_ids) != want or (n in err_ids) == want:
                reason = "" if n not in err_ids else str(err.loc[err["id"].astype(str) == n, "reason"].iloc[0])
                defects.append(f"embed: {n}: load_image said {expected.get(n)}, embed "
                               f"{'embedded it' if n in ok_ids else 'skipped it: ' + reason}"[:600])
    rc, stdout, stderr, secs, rss = _run([sys.executable, "-m", "geoscope", "locate", str(folder), "--model", str(model_dir),
                                     "--json", "--no-progress"], timeout, env)
    out["locate_s"], out["locate_peak_rss_mb"] = round(secs, 2), round(rss, 1)
    if rc != 0 or "Traceback" in stderr:
        defects.append(f"locate exit {rc}: {stderr.strip()[-800:]}")
    else:
        try:
            preds = json.loads(stdout)
        except json.JSONDecodeError as exc:
            preds = []
            defects.append(f"locate --json printed no JSON ({exc})")
        got = {Path(p["source"]).name: p for p in preds}
        out["locate_ok"] = sum(1 for p in preds if not p.get("error"))
        out["locate_failed"] = sum(1 for p in preds if p.get("error"))
        for n in names:
            p = got.get(n)
            want = expected.get(n) == "ok"
            if p is None:
                defects.append(f"locate: {n} missing from the output")
            elif (not p.get("error")) != want:
                defects.append(f"locate: {n}: load_image said {expected.get(n)}, locate said "
                               f"{p.get('error') or 'ok'}"[:600])
    for cmd in ("embed", "locate"):
        if out.get(f"{cmd}_peak_rss_mb", 0) > RSS_LIMIT_MB:
            defects.append(f"{cmd}: peak RSS {out[f'{cmd}_peak_rss_mb']:.0f} MB > {RSS_LIMIT_MB} MB")
    out["defects"] = defects
    return out

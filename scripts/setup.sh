#!/usr/bin/env bash
# One-command set-up for a fresh machine; safe to re-run (every step is skipped when already done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

echo "[setup] 1/5 PyTorch (local CPU wheel, before anything that depends on it)"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
    "${PIP[@]}" "torch==2.13.0"
fi

echo "[setup] 2/5 geoscope and its dependencies (the dev extra includes serve: fastapi, uvicorn, python-multipart)"
"${PIP[@]}" -e ".[dev]"

echo "[setup] 3/5 GeoCLIP published heads (installed without its deps, which would pull torchvision and CUDA)"
if ! "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('geoclip') else 1)" 2>/dev/null; then
    "${PIP[@]}" --no-deps "geoclip==1.3.0"
fi

echo "[setup] 4/5 geographic data (Natural Earth borders, GeoNames places) derived once into the cache"
"$PY" -m geoscope.geo.data_setup

echo "[setup] 5/5 Chromium for the web page's browser test (Debian package; Playwright's own download is not used)"
if [ -x /usr/bin/chromium ]; then
    :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
        echo "[setup] note: could not install chromium with apt-get; the browser test will be skipped"
    fi
else
    echo "[setup] note: no /usr/bin/chromium and no apt-get (as root) to install it; the browser test will be skipped"
fi

if ! command -v geoscope >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
    pyenv rehash || true  # pyenv exposes new console scripts through shims
fi
if ! command -v geoscope >/dev/null 2>&1; then
    echo "[setup] note: 'geoscope' is not on PATH; run 'python3 -m geoscope ...' or add $("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))') to PATH"
fi

echo "[setup] done"

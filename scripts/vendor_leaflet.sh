#!/usr/bin/env bash
# Refresh the Leaflet files the web page is served with (src/geoscope/serve/static/vendor/leaflet/)
# from the npm registry. They are committed, so `pip install` needs neither npm nor a network; run this
# only to move to another Leaflet version (then commit the result). Leaflet is BSD-2-Clause; its
# LICENSE travels with the files.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${LEAFLET_VERSION:-1.9.4}"
DEST=src/geoscope/serve/static/vendor/leaflet
command -v npm >/dev/null 2>&1 || { echo "vendor_leaflet: npm is needed (apt-get install npm)" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "leaflet@${VERSION}" >/dev/null && tar xzf "leaflet-${VERSION}.tgz")
rm -rf "$DEST"
mkdir -p "$DEST/images"
cp "$WORK/package/dist/leaflet.js" "$WORK/package/dist/leaflet.css" "$DEST/"
cp "$WORK/package/dist/images/"*.png "$DEST/images/"
cp "$WORK/package/LICENSE" "$DEST/LICENSE"
echo "$VERSION" > "$DEST/VERSION"
echo "vendor_leaflet: Leaflet $VERSION -> $DEST ($(du -sh "$DEST" | cut -f1))"

"""Outdoor filter accuracy on the labelled pictures that install offline.

python3 benchmarks/bench_outdoor.py [--tiles 40]

No indoor / outdoor benchmark installs from the registries, so the test material is small and says
so: the photographs among the sample images of scikit-image, scikit-learn, matplotlib and geoclip,
labelled by hand (scans, drawings, microscopy and textures are left out), and Blue Marble land tiles
(outdoor by definition, but overhead, unlike the photos the filter is for). Only the offline
``imagenet`` method can be measured here: no CLIP weights install from a registry.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from geoscope.outdoor import OutdoorClassifier  # noqa: E402


def _pkg(module: str, *parts: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(module).submodule_search_locations))).joinpath(*parts)


def labelled_photos() -> list[tuple[str, Path, bool]]:
    """(name, path, is_outdoor) for the photographs that ship with installed packages."""
    sk, sl = _pkg("skimage", "data"), _pkg("sklearn", "datasets", "images")
    mp = _pkg("matplotlib", "mpl-data", "sample_data")
    items = [
        ("skimage camera (man with a camera on a lawn)", sk / "camera.png", True),
        ("skimage rocket (launch pad)", sk / "rocket.jpg", True),
        ("sklearn china (temple)", sl / "china.jpg", True),
        ("sklearn flower (close-up of a flower)", sl / "flower.jpg", True),
        ("skimage coffee (cup on a table)", sk / "coffee.png", False),
        ("skimage astronaut (studio portrait)", sk / "astronaut.png", False),
        ("skimage chelsea (cat, indoors)", sk / "chelsea.png", False),
        ("skimage motorcycle (motorbike in a room)", sk / "motorcycle_left.png", False),
        ("skimage clock (wall clock)", sk / "clock_motion.png", False),
        ("skimage coins (coins on a table)", sk / "coins.png", False),
        ("matplotlib grace_hopper (portrait)", mp / "grace_hopper.jpg", False),
    ]
    if importlib.util.find_spec("geoclip") is not None:
        items.append(("geoclip Kauai (coast)", _pkg("geoclip", "images", "Kauai.png"), True))
    return [it for it in items if it[1].is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=40, help="Blue Marble land tiles (outdoor, overhead)")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    clf = OutdoorClassifier("imagenet")
    photos = labelled_photos()
    t0 = time.perf_counter()
    scores = clf.score([Image.open(p).convert("RGB") for _, p, _ in photos])
    per_image = (time.perf_counter() - t0) / len(photos)
    truth = np.array([o for _, _, o in photos])
    pred = scores >= args.threshold
    rows = [[name, "outdoor" if o else "indoor", f"{s:.2f}", "ok" if (s >= args.threshold) == o else "WRONG"]
            for (name, _, o), s in zip(photos, scores)]
    from geoscope.data.overhead import cut_tile_array, open_raster
    from geoscope.demo import train_positions

    raster = open_raster("bmng")
    lat, lon = train_positions(args.tiles)
    tiles = [Image.fromarray(cut_tile_array(raster, a, b, 800.0, 224)[0]) for a, b in zip(lat, lon)]
    tile_scores = clf.score(tiles)
    acc = float((pred == truth).mean())
    rows.append([f"Blue Marble land tiles (n={len(tiles)}, 800 km)", "outdoor", f"median {np.median(tile_scores):.2f}",
                 f"{(tile_scores >= args.threshold).mean():.0%} kept"])
    rows.append([f"photos: accuracy {acc:.0%} ({int((pred == truth).sum())}/{len(truth)}); outdoor kept "
                 f"{pred[truth].mean():.0%}, indoor dropped {(~pred[~truth]).mean():.0%}", "", "",
                 f"{per_image * 1000:.0f} ms / image"])
    write_result("outdoor", "Outdoor filter (offline ImageNet method) on the labelled sample pictures",
                 ["picture", "label", "outdoor score", "result"], rows,
                 notes=f"method: {clf.describe()}; threshold {args.threshold}. A dozen pictures is a smoke test, not "
                       "an accuracy estimate; CLIP zero-shot could not be measured offline (no weights install).")


if __name__ == "__main__":
    main()

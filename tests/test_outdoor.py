"""geoscope.outdoor and `geoscope filter-outdoor`: indoor photos dropped, with scores and the method named."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoscope.cli import main
from geoscope.encoders.testing import save_tiny_clip
from geoscope.errors import WeightsUnavailableError
from geoscope.outdoor import (
    IMAGENET_INDOOR,
    IMAGENET_OUTDOOR,
    OutdoorClassifier,
    _available_clip,
    filter_outdoor,
)


def _data_dir(module: str, *parts: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(module).submodule_search_locations))).joinpath(*parts)


SKIMAGE = _data_dir("skimage", "data")
SKLEARN = _data_dir("sklearn", "datasets", "images")


@pytest.fixture(scope="module")
def imagenet():
    return OutdoorClassifier("imagenet")


def test_class_lists_do_not_overlap_and_are_imagenet_indices():
    assert not set(IMAGENET_OUTDOOR) & set(IMAGENET_INDOOR)
    assert all(0 <= i < 1000 for i in list(IMAGENET_OUTDOOR) + list(IMAGENET_INDOOR))


def test_imagenet_method_tells_a_coffee_cup_from_a_temple(imagenet):
    images = [Image.open(SKIMAGE / "coffee.png").convert("RGB"), Image.open(SKLEARN / "china.jpg").convert("RGB"),
              Image.open(SKIMAGE / "rocket.jpg").convert("RGB")]
    coffee, temple, rocket = imagenet.score(images)
    assert coffee < 0.1 and temple > 0.9 and rocket > 0.5
    assert imagenet.method == "imagenet" and "ImageNet" in imagenet.describe()


def test_filter_writes_kept_manifest_and_dropped_with_scores(tmp_path, imagenet):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SKIMAGE / "coffee.png", folder / "coffee.png")
    shutil.copy(SKLEARN / "china.jpg", folder / "china.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = filter_outdoor(folder, tmp_path / "kept.csv", classifier=imagenet, progress=False)
    assert (result.kept, result.dropped, result.unreadable) == (1, 2, 1)
    kept = list(csv.DictReader((tmp_path / "kept.csv").read_text().splitlines()))
    assert [k["id"] for k in kept] == ["china.jpg"] and float(kept[0]["outdoor_score"]) > 0.5
    assert kept[0]["path"].endswith("china.jpg")
    dropped = {d["id"]: d for d in csv.DictReader((tmp_path / "dropped.csv").read_text().splitlines())}
    assert dropped["coffee.png"]["reason"].startswith("indoor: outdoor score")
    assert float(dropped["coffee.png"]["outdoor_score"]) < 0.5
    assert dropped["broken.jpg"]["reason"].startswith("unreadable") and dropped["broken.jpg"]["outdoor_score"] == ""
    # the kept manifest opens as a dataset
    from geoscope.data.datasets import open_dataset

    assert len(open_dataset(tmp_path / "kept.csv", progress=False)) == 1


def test_clip_method_runs_zero_shot_prompts(tmp_path):
    model = save_tiny_clip(tmp_path / "tiny-clip")
    clf = OutdoorClassifier("clip", clip=str(model), batch_size=4)
    assert clf.method == "clip" and "zero-shot CLIP" in clf.describe()
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    images = [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())]
    scores = clf.score(images)
    assert scores.shape == (6,) and ((scores > 0) & (scores < 1)).all()
    assert np.allclose(clf.score(images[:3]), scores[:3])  # batching does not change a score
    threshold = float(np.median(scores))
    result = filter_outdoor(folder, tmp_path / "kept.csv", classifier=clf, threshold=threshold, progress=False)
    assert result.method == "clip" and result.kept + result.dropped == 6 and result.kept >= 3
    kept = list(csv.DictReader((tmp_path / "kept.csv").read_text().splitlines()))
    assert all(float(k["outdoor_score"]) >= threshold - 1e-4 for k in kept)


@pytest.mark.skipif(_available_clip() is not None, reason="CLIP weights are installed on this machine")
def test_clip_without_weights_is_one_sentence():
    with pytest.raises(WeightsUnavailableError, match="no CLIP weights on this machine"):
        OutdoorClassifier("clip")


@pytest.mark.skipif(_available_clip() is not None, reason="CLIP weights are installed on this machine")
def test_cli_says_which_method_ran(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SKIMAGE / "coffee.png", folder / "coffee.png")
    shutil.copy(SKIMAGE / "rocket.jpg", folder / "rocket.jpg")
    rc = main(["filter-outdoor", str(folder), "-o", str(tmp_path / "kept.csv"), "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "imagenet" and out["kept"] == 1 and out["dropped_ids"] == ["coffee.png"]
    rc = main(["filter-outdoor", str(folder), "-o", str(tmp_path / "k2.csv"), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "method: ImageNet classifier" in text and "dropped: coffee.png" in text

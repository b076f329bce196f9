"""End to end on a synthetic world whose pictures depend on where they were taken.

Images come from ``_imagefixtures.synthetic_image`` (colour and stripe texture vary smoothly with
latitude / longitude), are embedded by a tiny random CLIP saved to a local directory (a valid encoder
name, so models round-trip), and every head is trained through ``geoscope train``. Each must beat
predicting the training mean by a wide margin; then ``geoscope locate`` and ``geoscope eval`` run on
the saved models.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _imagefixtures import make_geotagged_folder, random_points, synthetic_image
from geoscope.cli import main
from geoscope.data.images import load_image
from geoscope.encoders import create_encoder
from geoscope.encoders.testing import save_tiny_clip
from geoscope.geo.cells import CellHierarchy, save_cells
from geoscope.geolocator import Geolocator
from geoscope.store import EmbeddingStore

SIZE = (32, 32)
OPTIONS = {
    "classifier": ["--option", "hidden=128"],
    "hybrid": ["--option", "hidden=128"],
    "regressor": ["--option", "d_model=48", "--option", "n_heads=2"],
    "retrieval": ["--option", "queue_size=512", "--option", "hidden_dims=[128]"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    clip_dir = save_tiny_clip(root / "tiny-clip", projection_dim=32, hidden_size=32)
    encoder = create_encoder(str(clip_dir))
    pts = np.array(random_points(1200, seed=11))
    emb = encoder.encode_images([synthetic_image(a, o, size=SIZE) for a, o in pts], batch_size=256)
    EmbeddingStore.from_arrays(root / "store", range(len(pts)), emb, pts[:, 0], pts[:, 1],
                                       encoder=str(clip_dir))
    cells = CellHierarchy.adaptive(pts[:, 0], pts[:, 1], 5, [100, 25])
    save_cells(cells, root / "cells.json")
    photos = make_geotagged_folder(root / "photos", [(48.85, 2.35), (-33.9, 151.2), (35.7, 139.7)], size=SIZE)
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"root": root, "store": root / "store", "cells": root / "cells.json", "photos": photos,
            "encoder": encoder, "clip": clip_dir}


@pytest.mark.slow
@pytest.mark.parametrize("head", ["classifier", "hybrid", "regressor", "retrieval"])
def test_each_head_trained_by_the_cli_beats_the_training_mean(head, world, capsys):
    out = world["root"] / f"model-{head}"
    rc = main(["train", "--store", str(world["store"]), "--head", head, "--cells", str(world["cells"]),
               "-o", str(out), "--epochs", "12", "--batch-size", "128", "--val-fraction", "0.2",
               "--no-progress", "--json", *OPTIONS[head]])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    ours, mean = report["validation"]["median_km"], report["baseline_training_mean"]["median_km"]
    assert ours < 0.5 * mean, (ours, mean)
    assert report["n_val"] == 240 and 1 <= report["best_epoch"] <= report["epochs_run"] <= 12
    assert json.loads((out / "report.json").read_text())["validation"]["median_km"] == ours
    assert len((out / "metrics.jsonl").read_text().splitlines()) == report["epochs_run"]

    # locate real files through the CLI: the broken one fails alone, the others have candidates
    rc = main(["locate", str(world["root"] / "photos"), "--model", str(out), "--top-k", "3", "--json", "--no-progress"])
    assert rc == 0
    preds = {p["source"].rsplit("/", 1)[-1]: p for p in json.loads(capsys.readouterr().out)}
    assert set(preds) == {"broken.jpg", "img_0000.jpg", "img_0001.jpg", "img_0002.jpg"}
    assert preds["broken.jpg"]["error"] and not preds["broken.jpg"]["candidates"]
    for name in ("img_0000.jpg", "img_0001.jpg", "img_0002.jpg"):
        p = preds[name]
        assert p["error"] is None and 1 <= len(p["candidates"]) <= 3
        assert p["exif_distance_km"] is not None and p["exif"]["lat"] is not None
        assert set(p["confidence"]) == {"25", "200", "750"}  # the regressor's spread comes from its calibration
        probs = [c["probability"] for c in p["candidates"]]
        assert probs == sorted(probs, reverse=True)  # candidates in the order of what they show
        assert p["calibrated"] and p["neighbourhood"]["kind"] == {"classifier": "cell", "hybrid": "cell",
                                                                  "regressor": "disc", "retrieval": "gallery entry"}[head]
        assert (p["localizability"] is None) == (head == "regressor")

    # save -> load -> save gives identical predictions, from files and from embeddings
    geo = Geolocator.from_pretrained(out)
    files = [str(p) for p, _, _ in world["photos"]]
    first = geo.locate(files, top_k=3)
    geo.save_pretrained(world["root"] / f"copy-{head}")
    again = Geolocator.from_pretrained(world["root"] / f"copy-{head}").locate(files, top_k=3)
    assert [p.to_dict() for p in first] == [p.to_dict() for p in again]
    direct = geo.locate_embeddings(world["encoder"].encode_images([load_image(files[0])]), top_k=3)
    np.testing.assert_allclose([(c.lat, c.lon, c.probability) for c in direct[0].candidates],
                               [(c.lat, c.lon, c.probability) for c in first[0].candidates], rtol=1e-5, atol=1e-4)

    # geoscope eval over the store (no images read)
    rc = main(["eval", "--model", str(out), "--dataset", str(world["store"]), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 1200 and result["median_km"] < 0.5 * mean
    cal = result["calibration"]
    assert cal["calibrated"] and set(cal["reliability"]) == {"25", "200", "750", "2500"}
    assert all(0 <= v["ece"] <= 1 and v["n"] == 1200 for v in cal["reliability"].values())
    assert report["calibration"]["status"] == "fitted on the validation split"


def test_tampered_or_incomplete_model_directory_is_a_clear_error(world, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--store", str(world["store"]), "--head", "classifier", "--cells", str(world["cells"]),
                 "-o", str(out), "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # eval over an image folder: coordinates from EXIF, the broken file has none and is skipped
    assert main(["eval", "--model", str(out), "--dataset", str(world["root"] / "photos"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n"], result["n_skipped"], result["n_failed"]) == (3, 1, 0)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    rc = main(["locate", str(world["photos"][0][0]), "--model", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "model.safetensors does not match the SHA-256" in err and err.count("\n") == 1
    (out / "cells.json").unlink()
    assert main(["locate", str(world["photos"][0][0]), "--model", str(out)]) == 1
    assert "is missing cells.json" in capsys.readouterr().err
    assert main(["locate", "x.jpg", "--model", str(tmp_path / "nowhere" / "model")]) == 1
    assert "not a model directory" in capsys.readouterr().err


def test_weights_and_precision_apply_to_a_model_directory(world, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))  # the runtime exports stay out of the user's cache

    import torch

    from geoscope.cli._models import load_geolocator

    out = tmp_path / "m"
    assert main(["train", "--store", str(world["store"]), "--head", "classifier", "--cells", str(world["cells"]),
                 "-o", str(out), "--epochs", "1", "--no-progress", *OPTIONS["classifier"]]) == 0
    capsys.readouterr()
    photos = str(world["root"] / "photos")

    def locate(*extra):
        assert main(["locate", photos, "-m", str(out), "-k", "3", "--json", "--no-progress", *extra]) == 0
        return [p for p in json.loads(capsys.readouterr().out) if p["error"] is None]

    reference = locate()
    assert len(reference) == 3
    # the backbone's weights read from another folder give the same answers
    copy = shutil.copytree(world["clip"], tmp_path / "clip-copy")
    assert locate("--weights", str(copy), "--precision", "fp32") == reference
    assert [len(p["candidates"]) for p in locate("--precision", "bf16")] == [3, 3, 3]
    assert load_geolocator(str(out)).encoder.dtype == torch.float32  # a model directory defaults to fp32
    assert load_geolocator(str(out), precision="bf16").encoder.dtype == torch.bfloat16
    int8 = load_geolocator(str(out), precision="int8").encoder
    assert (int8.runtime, int8.precision) == ("onnx", "int8")  # a CLIP's int8: ONNX Runtime first (encoders.runtimes)
    rc = main(["locate", photos, "-m", str(out), "--weights", str(tmp_path / "nope")])
    assert rc == 1 and "--weights points to" in capsys.readouterr().err

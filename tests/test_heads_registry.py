"""The head registry: built-in heads are found without importing them, the rules live on the class, and a
head defined in this very file is trained by ``geoscope train --head toy`` (a new head is one file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _features import location_features
from torch import nn

from geoscope.cli import main
from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM
from geoscope.geolocator import Geolocator
from geoscope.heads import (
    build_head,
    create_head,
    head_class,
    list_heads,
    register_head,
)
from geoscope.heads.base import (
    Head,
    HeadOutput,
    Standardize,
    Targets,
    as_float_tensor,
    check_dim,
    eval_mode,
    great_circle_km,
    unit_to_latlon,
)
from geoscope.store import EmbeddingStore
from geoscope.train import training_state_dir


@register_head("toy")
class ToyHead(Head):
    """The smallest useful head: a linear map to a point on the sphere, trained on the great-circle error."""

    default_lr = 0.03  # a rule read from the class: nothing in geoscope names this head

    def __init__(self, in_dim: int, hidden: int = 32):
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        self.norm = Standardize(self.in_dim)
        self.net = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.GELU(), nn.Linear(self.hidden, 3))

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "hidden": self.hidden}

    @classmethod
    def from_config(cls, cfg: dict) -> "ToyHead":
        return cls(cfg["in_dim"], cfg["hidden"])

    def on_train_start(self, emb: torch.Tensor, targets: Targets) -> None:
        self.norm.fit(emb)

    def loss(self, emb: torch.Tensor, batch: Targets) -> torch.Tensor:
        pred = F.normalize(self.net(self.norm(emb)), dim=1)
        return (great_circle_km(pred, batch.unit()) / EARTH_RADIUS_KM).mean()

    @torch.no_grad()
    def predict(self, emb, top_k: int = 1) -> HeadOutput:
        with eval_mode(self):
            x = as_float_tensor(emb)
            check_dim(x, self.in_dim, self.kind)
            coords = unit_to_latlon(self.net(self.norm(x))).double()
        return HeadOutput(None, coords[:, None].numpy(), np.ones((len(coords), 1)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(7)
    lat = np.degrees(np.arcsin(rng.uniform(-0.8, 0.85, 900)))
    lon = rng.uniform(-180, 180, 900)
    emb = location_features(lat, lon, dim=32)
    return EmbeddingStore.from_arrays(tmp_path_factory.mktemp("toy") / "store", range(900), emb, lat, lon,
                                      encoder="toy-features")


def test_a_head_defined_in_a_test_module_trains_through_the_cli(store, tmp_path, capsys):
    assert "toy" in list_heads(trainable=True)
    out = tmp_path / "toy-model"
    rc = main(["train", "--store", str(store.path), "--head", "toy", "-o", str(out), "--epochs", "8",
               "--batch-size", "128", "--option", "hidden=48", "--no-progress", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["head"] == "toy" and report["lr"] == ToyHead.default_lr  # the class's rule was used
    ours, mean = report["validation"]["median_km"], report["baseline_training_mean"]["median_km"]
    assert ours < 0.3 * mean, (ours, mean)
    # the model folder holds the model; the training state lies beside it
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors",
                                                      "report.json", "report.txt"]
    assert (training_state_dir(out) / "checkpoint.pt").is_file()
    geo = Geolocator.from_pretrained(out, places=False)
    assert isinstance(geo.head, ToyHead) and geo.head.hidden == 48
    pred = geo.locate_embeddings(store.embeddings[:5].astype(np.float32), top_k=1)
    assert all(len(p.candidates) == 1 for p in pred)
    # the CLI refuses a name nobody registered, naming the ones there are
    with pytest.raises(SystemExit):
        main(["train", "--store", str(store.path), "--head", "nope", "-o", str(tmp_path / "x")])
    assert "'toy'" in capsys.readouterr().err


def test_train_help_lists_registered_heads(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("classifier", "hybrid", "regressor", "retrieval", "toy"):
        assert name in text
    assert "zeroshot" not in text  # registered, but not trainable


def test_builtin_heads_are_found_without_importing_them():
    code = ("import sys; from geoscope.heads import list_heads; "
            "before = 'geoscope.heads.classifier' in sys.modules; "
            "print(before, list_heads(), list_heads(trainable=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("False ['classifier', 'crossview', 'hybrid', 'neighbours', 'regressor', 'retrieval', "
                           "'zeroshot'] "
                           "['classifier', 'hybrid', 'regressor', 'retrieval']")


def test_rules_live_on_the_classes():
    rules = {k: (head_class(k).needs_cells, head_class(k).uses_scene_labels, head_class(k).uses_gallery,
                 head_class(k).trainable, head_class(k).default_lr) for k in list_heads()}
    assert rules["classifier"] == (True, True, False, True, 2e-3)
    assert rules["hybrid"] == (True, True, False, True, 2e-3)
    assert rules["regressor"] == (False, False, False, True, 1e-3)
    assert rules["retrieval"] == (False, False, True, True, 1e-3)
    assert rules["zeroshot"][3] is False
    assert all(head_class(k).kind == k for k in list_heads())


def test_registering_another_class_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_head("classifier")(type("Impostor", (Head,), {}))
    with pytest.raises(ValueError, match="short identifier"):
        register_head("two words")
    with pytest.raises(InputError, match="unknown head kind 'oracle'.*toy"):
        build_head({"kind": "oracle"})
    head = create_head("toy", 6, hidden=4)
    again = build_head(head.config())
    assert isinstance(again, ToyHead) and again.config() == head.config()


def test_training_state_beside_the_model_and_old_checkpoints_resume(store, tmp_path):
    from geoscope.train import TrainConfig, train_from_store

    out = tmp_path / "m"
    cfg = TrainConfig(epochs=2, batch_size=256)
    _, first = train_from_store(store, "toy", out, config=cfg, progress=False)
    state = training_state_dir(out)
    assert state == tmp_path / "m.train" and (state / "checkpoint.pt").is_file()
    assert not (out / "checkpoint.pt").exists()
    # a model folder from an older version kept its checkpoint inside: it is moved beside it and resumed
    (state / "checkpoint.pt").rename(out / "checkpoint.pt")
    _, again = train_from_store(store, "toy", out, config=cfg, progress=False)
    assert (state / "checkpoint.pt").is_file() and not (out / "checkpoint.pt").exists()
    assert again.history == first.history  # resumed a finished run: nothing retrained
    # such an old folder still loads (the extra file is not part of the model)
    (out / "checkpoint.pt").write_bytes((state / "checkpoint.pt").read_bytes())
    assert isinstance(Geolocator.from_pretrained(out, places=False).head, ToyHead)
    # all model files share one permission mode (safetensors alone used to be written 0600)
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.name != "checkpoint.pt"}
    assert set(modes.values()) == {0o666 & ~mask}, modes

"""``geoscope train --ray``: data-parallel training on Ray Train (issue 15).

The gradient exchange is checked without Ray (two gloo processes must make exactly the update one
process makes on the whole batch); the whole command on the local Ray instance of the test session
(2 workers must reach the single-process model's held-out error, into the same model folder and a
checkpoint a local run resumes from); and the refusals, which need no cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from _features import location_features

from geoscope.cli import main
from geoscope.geo.cells import CellHierarchy, save_cells
from geoscope.store import EmbeddingStore


def _world(root, n=3000, dim=48, seed=3):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.9, n)))
    lon = rng.uniform(-180, 180, n)
    emb = location_features(lat, lon, dim=dim)
    EmbeddingStore.from_arrays(root / "store", range(n), emb, lat, lon, encoder="synthetic")
    cells = CellHierarchy.adaptive(lat, lon, 5, [150, 40])
    save_cells(cells, root / "cells.json")
    return emb, lat, lon, cells


# --------------------------------------------------------------------------- the gradient exchange


def _gloo_worker(rank, world, init_file, data_file, out_file):
    import torch.distributed as dist

    from geoscope.heads import create_head
    from geoscope.heads.rows import EmbeddingRows
    from geoscope.train import TrainConfig, make_targets, run_epochs
    from geoscope.train_ray import GlooSync

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    head, train, targets, val, val_targets = _parts(data_file, create_head, EmbeddingRows, make_targets)
    run_epochs(head, train, targets, val, val_targets, TrainConfig(epochs=2, batch_size=250), 2e-3,
               progress=False, sync=GlooSync(rank, world))
    if rank == 0:
        torch.save(head.state_dict(), out_file)
    dist.destroy_process_group()


def _parts(data_file, create_head, EmbeddingRows, make_targets):
    data = np.load(data_file, allow_pickle=True)
    emb, lat, lon = data["emb"], data["lat"], data["lon"]
    cells = CellHierarchy.adaptive(lat, lon, 5, [150, 40])
    torch.manual_seed(0)
    head = create_head("classifier", emb.shape[1], cells, hidden=32, dropout=0.0)
    targets = make_targets(lat, lon, cells)
    head.on_train_start(EmbeddingRows(emb[:900]), targets.take(slice(0, 900)))
    return (head, EmbeddingRows(emb[:900]), head.prepare_targets(targets.take(slice(0, 900))),
            EmbeddingRows(emb[900:]), targets.take(slice(900, None)))


@pytest.mark.slow
def test_two_gloo_workers_make_the_update_one_process_makes_on_the_whole_batch(tmp_path):
    from geoscope.heads import create_head
    from geoscope.heads.rows import EmbeddingRows
    from geoscope.train import TrainConfig, make_targets, run_epochs

    rng = np.random.default_rng(1)
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.9, 1000)))
    lon = rng.uniform(-180, 180, 1000)
    np.savez(tmp_path / "data.npz", emb=location_features(lat, lon, dim=24), lat=lat, lon=lon)
    head, train, targets, val, val_targets = _parts(tmp_path / "data.npz", create_head, EmbeddingRows, make_targets)
    initial = head.state_dict()["trunk.0.weight"].clone()
    run_epochs(head, train, targets, val, val_targets, TrainConfig(epochs=2, batch_size=250), 2e-3, progress=False)
    # 900 rows in batches of 250: the last batch (150 rows) splits 75 / 75, the others 125 / 125
    torch.multiprocessing.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "data.npz"),
                                                    str(tmp_path / "rank0.pt")), nprocs=2, join=True)
    parallel = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for name, value in head.state_dict().items():
        torch.testing.assert_close(parallel[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert (parallel["trunk.0.weight"] - initial).abs().max() > 1e-3  # (the weights did move)


# --------------------------------------------------------------------------- the command on local Ray


@pytest.mark.slow
def test_train_on_ray_with_two_workers_matches_the_single_process_model(tmp_path, ray_local, capsys):
    _world(tmp_path)
    common = ["train", "--store", str(tmp_path / "store"), "--head", "classifier", "--cells",
              str(tmp_path / "cells.json"), "--epochs", "6", "--batch-size", "256", "--option", "hidden=64",
              "--json", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*common, "-o", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    on_ray = json.loads(capsys.readouterr().out)

    ours, theirs = on_ray["validation"]["median_km"], local["validation"]["median_km"]
    assert abs(ours - theirs) <= 0.10 * theirs, (ours, theirs)
    assert ours < 0.5 * on_ray["baseline_training_mean"]["median_km"]  # it learnt something
    assert (on_ray["n_train"], on_ray["n_val"]) == (local["n_train"], local["n_val"])  # the same split
    # the same model folder, and one metrics line per epoch, each from the 2 workers
    files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == files
    history = [json.loads(line) for line in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, on_ray["epochs_run"] + 1))
    assert all(r["workers"] == 2 for r in history)

    # the checkpoint is a local run's: the same command without --ray resumes from it (nothing left to
    # train) and reports the same model
    assert (tmp_path / "ray.train" / "checkpoint.pt").is_file()
    assert main([*common, "-o", str(tmp_path / "ray")]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["validation"]["median_km"] == pytest.approx(ours, rel=1e-6)
    assert resumed["epochs_run"] == on_ray["epochs_run"]


# --------------------------------------------------------------------------- refusals, without a cluster


def test_ray_not_installed_is_one_sentence_naming_the_extra(tmp_path):
    code = textwrap.dedent(f'''
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` fails
        from geoscope.cli import main
        sys.exit(main(["train", "--store", {str(tmp_path / "store")!r}, "--head", "classifier",
                       "-o", {str(tmp_path / "model")!r}, "--ray"]))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "geoscope train --ray needs the optional package 'ray'" in lines[0]
    assert "pip install 'geoscope[ray]'" in lines[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_fails_within_seconds_naming_it(tmp_path, capsys, address):
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    from geoscope.store.ray_embed import CONNECT_TIMEOUT_S

    _world(tmp_path, n=200)
    start = time.perf_counter()
    rc = main(["train", "--store", str(tmp_path / "store"), "--head", "classifier", "--cells",
               str(tmp_path / "cells.json"), "-o", str(tmp_path / "model"), "--ray-address", address])
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert f"cannot reach the Ray cluster at {address}" in err
    assert took < CONNECT_TIMEOUT_S + 10
    assert not (tmp_path / "model").exists()


def test_workers_without_ray_and_zero_workers_are_refused(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    _world(tmp_path, n=200)
    base = ["train", "--store", str(tmp_path / "store"), "--head", "classifier", "--cells",
            str(tmp_path / "cells.json"), "-o", str(tmp_path / "model")]
    for extra, message in ((["--workers", "2"], "--workers counts Ray training workers: it needs --ray"),
                           (["--ray", "--workers", "0"], "--workers must be at least 1 with --ray")):
        rc = main([*base, *extra])
        err = capsys.readouterr().err
        assert rc == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "model").exists()


def test_training_on_ray_needs_a_store_on_disk():
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    from geoscope.errors import InputError
    from geoscope.heads import create_head
    from geoscope.train import TrainConfig, fit_head, make_targets
    from geoscope.train_ray import RayTrainOptions

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 100), rng.uniform(-170, 170, 100)
    emb = torch.from_numpy(location_features(lat, lon, dim=8))
    cells = CellHierarchy.adaptive(lat, lon, 5, [50])
    head, targets = create_head("classifier", 8, cells, hidden=8), make_targets(lat, lon, cells)
    with pytest.raises(InputError, match="reads the embeddings from a store on disk"):
        fit_head(head, emb[:80], targets.take(slice(0, 80)), emb[80:], targets.take(slice(80, None)),
                 TrainConfig(epochs=1), progress=False, ray=RayTrainOptions(workers=2))

"""``geoscope embed --ray`` on a local Ray instance: the same store as one process, and nothing lost or
duplicated when an actor or the driver is killed mid-job.

Every test here shares one small local Ray instance (the ``ray_local`` session fixture).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from _imagefixtures import make_geotagged_folder
from _ray_helpers import SlowMean, committed, wait_for
from geoscope.cli import main
from geoscope.data.dataset import open_dataset
from geoscope.errors import InputError
from geoscope.store import EmbeddingStore, embed_dataset

pytestmark = pytest.mark.slow  # starting Ray and its actors takes tens of seconds on a busy 2-core machine

F16 = dict(rtol=2e-3, atol=2e-3)  # embeddings are stored as float16


def _by_id(store):
    return dict(zip(store.ids, np.asarray(store.embeddings, dtype=np.float32)))


def _direct(folder, ids):
    enc = SlowMean(0.0)
    return enc.encode_images([Image.open(folder / i).convert("RGB") for i in ids])


def test_embed_on_ray_gives_the_single_process_store(ray_local, tmp_path, capsys):
    make_geotagged_folder(tmp_path / "photos", 11, size=(96, 64))
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rc = main(["embed", str(tmp_path / "photos"), "-o", str(tmp_path / "ray"), "--ray", "--workers", "2",
               "--batch-size", "3", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_ok"], out["n_error"], out["dim"]) == (11, 1, 1280) and out["shards"] >= 1
    single = embed_dataset(str(tmp_path / "photos"), "efficientnet-lite0", tmp_path / "one", batch_size=4,
                           workers=0, progress=False)
    ray_store = EmbeddingStore.open(tmp_path / "ray")
    assert sorted(ray_store.ids) == sorted(single.ids) and len(set(ray_store.ids)) == 11
    a, b = _by_id(ray_store), _by_id(single)
    scale = max(1.0, float(np.abs(np.stack(list(b.values()))).max()))
    for sid in b:
        np.testing.assert_allclose(a[sid] / scale, b[sid] / scale, **F16)
    assert list(ray_store.errors["id"]) == list(single.errors["id"]) == ["broken.jpg"]
    # the same coordinates (from EXIF), and each row's dataset position
    ray_meta = ray_store.meta.set_index("id").loc[single.ids]
    np.testing.assert_allclose(ray_meta["lat"], single.lat)
    assert list(ray_meta["pos"]) == list(single.meta["pos"])
    state = json.loads((tmp_path / "ray" / "store.json").read_text())
    assert state["complete"] and all(s["name"].startswith("shards/") for s in state["shards"])
    assert not (tmp_path / "ray" / "store.lock").exists()
    # a complete store: the same command returns it at once, without starting anything
    start = time.perf_counter()
    assert main(["embed", str(tmp_path / "photos"), "-o", str(tmp_path / "ray"), "--ray", "--no-progress"]) == 0
    assert time.perf_counter() - start < 10


def test_an_actor_killed_mid_job_loses_nothing_and_duplicates_nothing(ray_local, tmp_path):
    from geoscope.store.ray_embed import embed_dataset_ray

    make_geotagged_folder(tmp_path / "img", 40, size=(32, 32))
    out = tmp_path / "store"
    result: dict = {}

    def job():
        try:
            result["store"] = embed_dataset_ray(str(tmp_path / "img"), SlowMean(0.3), out, batch_size=2, workers=2,
                                                progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            result["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    busy = wait_for(lambda: {k: v for k, v in committed(out).items() if v[1] >= 4}, 300, "an actor's second batch")
    victim, (pid, _) = next(iter(busy.items()))
    os.kill(pid, signal.SIGKILL)  # the actor's process, mid-job
    thread.join(600)
    assert "error" not in result, result.get("error")
    store = result["store"]
    ids = list(store.ids)
    assert sorted(ids) == sorted(p.name for p in (tmp_path / "img").iterdir())  # one row per image
    assert len(ids) == len(set(ids)) == 40
    np.testing.assert_allclose(np.asarray(store.embeddings, np.float32), _direct(tmp_path / "img", ids), **F16)
    rows = {s.name: s.stop - s.start for s in store.shards}
    assert 4 <= rows[f"shards/{victim}"] < 40  # what the dead actor had committed is kept; others did the rest


DRIVER = textwrap.dedent('''
    import sys, time, torch
    from geoscope.encoders.base import Encoder
    from geoscope.encoders.preprocess import ImageTransform
    from geoscope.store.ray_embed import embed_dataset_ray

    class SlowMean(Encoder):  # as tests/_ray_helpers.py (defined here, so it travels by value)
        name, dim = "slow-mean", 12
        def __init__(self, delay):
            super().__init__()
            self.transform = ImageTransform(resize=16, crop=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)
            self.w = torch.nn.Parameter(torch.ones(1))
            self.delay = delay
        def forward(self, x):
            time.sleep(self.delay)
            x = self._input(x)
            return torch.cat([x.mean((2, 3)), x[:, :, :3, :3].flatten(2).mean(2) * 2, x.amax((2, 3)), x.amin((2, 3))], 1) * self.w

    folder, out, address = sys.argv[1:4]
    embed_dataset_ray(folder, SlowMean(0.4), out, batch_size=2, workers=1, address=address, progress=False)
''')


def test_a_driver_killed_mid_job_is_resumed_by_the_same_command(ray_local, tmp_path):
    """The driver joins the running cluster (--ray-address), is SIGKILLed, and the job is run again."""
    from geoscope.store.ray_embed import embed_dataset_ray

    make_geotagged_folder(tmp_path / "img", 30, size=(32, 32))
    out = tmp_path / "store"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    address = ray_local.get_runtime_context().gcs_address
    log = open(tmp_path / "driver.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "img"), str(out), address],
                            stderr=log, stdout=log, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or sum(n for _, n in committed(out).values()) >= 6, 300,
                 "the driver's first batches")
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        log.close()
    assert (out / "store.lock").exists() and json.loads((out / "store.lock").read_text())["pid"] == proc.pid
    with pytest.raises(InputError, match="incomplete"):
        EmbeddingStore.open(out)
    before = sum(n for _, n in committed(out).values())
    store = embed_dataset_ray(str(tmp_path / "img"), SlowMean(0.0), out, batch_size=4, workers=1, shard_rows=8,
                              progress=False)
    ids = list(store.ids)
    assert sorted(ids) == sorted(p.name for p in (tmp_path / "img").iterdir()) and len(set(ids)) == 30
    np.testing.assert_allclose(np.asarray(store.embeddings, np.float32), _direct(tmp_path / "img", ids), **F16)
    killed_rows = sum(s.stop - s.start for s in store.shards[:1])
    assert killed_rows >= min(before, 6)  # what the killed job had committed was kept, not redone
    assert len(store.shards) >= 1 + -(-(30 - killed_rows) // 8)  # the new actor rolled over to new shards...
    assert all(s.stop - s.start <= 8 for s in store.shards[1:])  # ...every 8 rows
    assert not (out / "store.lock").exists()


def test_a_dataset_the_workers_cannot_see_is_one_sentence(ray_local, tmp_path):
    from geoscope.store.ray_embed import embed_dataset_ray

    make_geotagged_folder(tmp_path / "img", 4, size=(32, 32))
    dataset = open_dataset(tmp_path / "img")  # opened here, where the files are...
    for p in (tmp_path / "img").iterdir():
        p.unlink()  # ...and gone from where the workers look
    with pytest.raises(InputError, match=r"the Ray workers on \S+ cannot read the dataset's images \(none of 4 sampled "
                                         r"files, e\.g\. .*img_0000\.jpg, exists there\): put the dataset on storage"):
        embed_dataset_ray(dataset, SlowMean(0.0), tmp_path / "store", workers=1, progress=False)

"""Resumability: kill ``embed`` with SIGKILL mid-run, run it again, every sample ends up exactly once."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from _imagefixtures import make_geotagged_folder
from geoscope.store import EmbeddingStore

N = 48

# An encoder whose output is an exact function of the pixels, slowed down so the kill lands mid-run.
SCRIPT = textwrap.dedent('''
    import sys, time, torch
    from geoscope.data.datasets import GeoSample
    from geoscope.encoders.base import Encoder
    from geoscope.encoders.preprocess import ImageTransform
    from geoscope.store import embed_dataset

    class Slow(Encoder):
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

    def samples(folder, n):
        out = [GeoSample(id=f"id{i:03d}", source=f"{folder}/img_{i:04d}.jpg", lat=i / 2, lon=-i / 3) for i in range(n)]
        out.insert(7, GeoSample(id="bad", source=f"{folder}/bad.jpg", lat=0.0, lon=0.0))
        return out

    if __name__ == "__main__":
        folder, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
        embed_dataset(samples(folder, int(sys.argv[4])), Slow(delay), out, batch_size=4, workers=2, progress=False)
''')


def _journal_lines(path):
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _run(script, folder, out, delay):
    with open(script.with_suffix(".log"), "ab") as log:
        return subprocess.Popen([sys.executable, str(script), str(folder), str(out), str(delay), str(N)],
                                start_new_session=True, stderr=log)


def _log(script):
    return script.with_suffix(".log").read_text(errors="replace")[-2000:]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_id_exactly_once(tmp_path):
    make_geotagged_folder(tmp_path / "img", N, size=(48, 40))
    (tmp_path / "img" / "bad.jpg").write_bytes(b"garbage")
    script = tmp_path / "run_embed.py"
    script.write_text(SCRIPT)
    out = tmp_path / "store"
    journal = out / "progress.jsonl"

    for target in (9, 25):  # kill twice, at different depths
        proc = _run(script, tmp_path / "img", out, delay=0.15)
        deadline = time.monotonic() + 60
        while _journal_lines(journal) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, _log(script)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done = _journal_lines(journal)
        assert target <= done < N + 1
        with pytest.raises(Exception, match="incomplete"):
            EmbeddingStore.open(out)
        state = json.loads((out / "store.json").read_text())
        assert state["complete"] is False

    proc = _run(script, tmp_path / "img", out, delay=0.0)
    assert proc.wait(timeout=120) == 0, _log(script)
    store = EmbeddingStore.open(out)
    ids = list(store.ids)
    assert sorted(ids) == [f"id{i:03d}" for i in range(N)]  # every id exactly once
    assert len(set(ids)) == len(ids) == store.embeddings.shape[0]
    assert list(store.errors["id"]) == ["bad"]

    # each row holds the embedding of its own image: recompute in-process and compare
    sys.path.insert(0, str(tmp_path))
    try:
        import run_embed
    finally:
        sys.path.remove(str(tmp_path))
    from PIL import Image

    enc = run_embed.Slow(0.0)
    direct = enc.encode_images([Image.open(tmp_path / "img" / f"img_{int(i[2:]):04d}.jpg").convert("RGB") for i in ids])
    np.testing.assert_allclose(store.embeddings.astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(store.lat, [int(i[2:]) / 2 for i in ids])


def test_torn_journal_line_is_dropped(tmp_path):
    """A kill in the middle of a journal write leaves half a line; the re-run ignores and overwrites it."""
    from _imagefixtures import synthetic_image
    from geoscope.encoders.testing import save_tiny_clip
    from geoscope.encoders import create_encoder
    from geoscope.store import embed_dataset

    enc = create_encoder(str(save_tiny_clip(tmp_path / "clip")))
    items = [(f"m{i}", synthetic_image(i, i, size=(32, 32)), float(i), float(i)) for i in range(6)]

    def first_four():
        yield from items[:4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(first_four(), enc, tmp_path / "s", batch_size=2, workers=0, progress=False)
    journal = tmp_path / "s" / "progress.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    journal.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # the 4th line torn
    store = embed_dataset(items, enc, tmp_path / "s", batch_size=2, workers=0, progress=False)
    assert list(store.ids) == [i[0] for i in items]
    np.testing.assert_allclose(store.embeddings.astype(np.float32), enc.encode_images([i[1] for i in items]),
                               rtol=2e-3, atol=2e-3)

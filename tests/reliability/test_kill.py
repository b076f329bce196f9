"""Kill tests, short mode (issue 14, item 3): SIGKILL ``geoscope embed``, ``train`` and ``demo`` at a few
seeded random moments, run the same command again and get what an uninterrupted run gets.

``benchmarks/bench_kill.py`` runs the full schedule (20 kills per command); these use the same
harness (``kill.py``) with one kill per command and smaller inputs. Each kill starts from an empty output
folder; the moments are drawn in the reference run's working window (first output file to end)."""

from __future__ import annotations

import shutil

import pytest

import kill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    w = kill.make_world(root / "world", 200)
    w["root"], w["log"] = root, root / "stderr.log"
    w["embed"] = kill.embed_job(w["images"], w["clip"], root / "ref-embed", batch_size=4)
    w["embed_window"] = kill.reference_run(w["embed"].args(root / "ref-embed"), root / "ref-embed", w["log"])
    return w


def _kills(job, root, window, n, seed, log):
    """``n`` kills at seeded moments of the reference run's window. The load on the machine changes while
    the suite runs (the reference run may have shared the cores with a heavy test the kill runs do not
    meet): when every moment of a round came after the run had finished, the window is measured again,
    with a run now, and the moments drawn again (two more rounds at most)."""
    records: list[dict] = []
    for round_ in range(3):
        if round_:
            shutil.rmtree(root / f"timing-{job.name}", ignore_errors=True)
            window = kill.reference_run(job.args(root / f"timing-{job.name}"), root / f"timing-{job.name}", log)
        first, total = window
        for at in kill.schedule(seed + 100 * round_, 3 * n, first, total):
            rec = kill.kill_run(job, root / f"run-{job.name}", at, log)
            if rec["killed"]:
                records.append(rec)
            if len(records) == n:
                return records
    assert records, f"every moment came after the {job.name} run had finished"
    return records


def _assert_survived(records, log):
    for rec in records:
        assert rec["ok"], (rec, kill.tail(log))


def test_embed_killed_then_rerun_equals_an_uninterrupted_run(world):
    _assert_survived(_kills(world["embed"], world["root"], world["embed_window"], 1, 1, world["log"]), world["log"])


def test_train_killed_then_rerun_equals_an_uninterrupted_run(world):
    root, log = world["root"], world["log"]
    job = kill.train_job(root / "ref-embed", world["cells"], root / "ref-train", epochs=6, batch_size=32)
    window = kill.reference_run(job.args(root / "ref-train"), root / "ref-train", log)
    _assert_survived(_kills(job, root, window, 1, 2, log), log)


def test_demo_killed_then_rerun_equals_an_uninterrupted_run(world):
    root, log = world["root"], world["log"]
    job = kill.demo_job(root / "ref-demo", n_train=20, n_test=4, epochs=2)
    window = kill.reference_run(job.args(root / "ref-demo"), root / "ref-demo", log)
    _assert_survived(_kills(job, root, window, 1, 3, log), log)

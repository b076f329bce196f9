"""Disk full: ``geoscope embed`` and ``geoscope train`` run out of space at many points (issue 14, item 4).

    python3 benchmarks/bench_disk_full.py            # needs root: mounts a tmpfs (else a loop-mounted ext4 image)

A small filesystem is filled (``tests/reliability/disk_full.py``) so that only a given amount stays
free, then each job runs against it as a subprocess: it must stop with one clear error naming the
path, leave nothing that opens wrong, and, once the space is freed, finish the same command with the
result of a run that had room (same rows and embeddings; a model that predicts the same). Writes
``benchmarks/results/disk_full.json``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))
from _common import write_result  # noqa: E402
from _imagefixtures import make_geotagged_folder, random_points  # noqa: E402

import disk_full  # noqa: E402

EMBED_FREE_KB = (0, 4, 8, 12, 16, 20, 28)
TRAIN_FREE_KB = (0, 64, 512, 1200, 2400, 4600, 6000, 9000)


def main() -> None:
    warnings.simplefilter("ignore")
    reason = disk_full.available()
    if reason:
        write_result("disk_full", "Reliability: disk full during embed and train", ["job", "result"],
                     [["all", "not run"]], f"No small filesystem could be mounted here: {reason}.")
        return
    from geoscope.encoders.testing import save_tiny_clip

    rows, how = [], ""
    with tempfile.TemporaryDirectory(prefix="geoscope-diskfull-") as tmp:
        root = Path(tmp)
        enc = save_tiny_clip(root / "clip")
        make_geotagged_folder(root / "images", random_points(60, 1), size=(48, 36))
        embed = ["embed", str(root / "images"), "--encoder", str(enc), "--no-progress", "--workers", "0", "-o"]
        train = ["train", "--store", str(root / "ref"), "--head", "regressor", "--epochs", "3", "--no-progress",
                 "--seed", "0", "-o"]
        assert disk_full.run_geoscope(embed + [str(root / "ref")])[0] == 0
        assert disk_full.run_geoscope(train + [str(root / "refmodel")])[0] == 0
        runs = [("embed", f, lambda out: embed + [str(out)], disk_full.inspect_store,
                 lambda out: disk_full.same_store(out, root / "ref")) for f in EMBED_FREE_KB]
        runs += [("train", f, lambda out: train + [str(out)], disk_full.inspect_model,
                  lambda out: disk_full.same_model(out, root / "refmodel", root / "ref")) for f in TRAIN_FREE_KB]
        for job, free_kb, command, inspect, compare in runs:
            with disk_full.small_filesystem(16384) as (point, how):
                rec = disk_full.disk_full_run(point, free_kb, command, inspect, compare)
            print(job, rec, file=sys.stderr, flush=True)
            yes = {True: "yes", False: "NO"}
            rows.append([job, rec["free_kb"], rec["exit"], yes[rec["one_line_error"]], yes[rec["says_disk_full"]],
                         yes[rec["names_path"]], rec["state_after_failure"][:70], yes[rec["resumed"]],
                         yes[rec["equal_to_reference"]],
                         (rec["error"][:110] + (f" / re-run: {rec['resume_error'][:110]}" if rec["resume_error"] else ""))])
    bad = [r for r in rows if "NO" in r[3:9] or str(r[6]).startswith("CORRUPT")]
    notes = (f"Small filesystem: {how} of 16 MB, filled to leave the free space shown. embed: 60 JPEGs with a tiny "
             "random CLIP (the finished store is 24 KB); train: a regressor head over that store, 3 epochs (the "
             "model folder is 5.5 MB, its checkpoint 4.5 MB). 'resumed': the same command, re-run after the "
             "filler is deleted, exits 0; 'same result': equal to a run with room (store: ids, embeddings, "
             f"coordinates, errors; model: the same best candidate for 32 embeddings). {len(bad)} of {len(rows)} "
             "runs fall short of the issue's bar (one clear error saying the disk is full and naming the path, nothing "
             "corrupt, resumes to the same result). The first run of this benchmark found three defects, now fixed and "
             "kept as cases of tests/reliability/test_disk_full.py and test_storage_errors.py: the error named no path, "
             "train said \"RuntimeError: [enforce fail at inline_container.cc] unexpected pos\" (torch.save) instead "
             "of that the disk was full, and an embed stopped with 4 KB free could not be resumed; a later run found that one "
             "stopped with 12 KB free could not be resumed either (its new embeddings.npy had its size but no header).")
    write_result("disk_full", "Reliability: disk full during embed and train",
                 ["job", "free KB", "exit", "one-line error", "says the disk is full", "names the path",
                  "state after the failure", "resumed", "same result", "error"], rows, notes)


if __name__ == "__main__":
    main()

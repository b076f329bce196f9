"""data/datasets, the deprecated import path: every name it had still comes from it; the dataset CLI.

The data layer's own tests follow its modules: test_data_samples, _dataset, _folder, _manifest,
_webdataset, _validate, _splits.
"""

from __future__ import annotations

import importlib
import json

import pytest

from _datasetfixtures import make_messy_folder
from _imagefixtures import make_geotagged_folder
import geoscope.data.datasets as old
from geoscope.cli import main
from geoscope.data.datasets import open_dataset, validate_dataset

# every public name geoscope.data.datasets had before the split, and its new home
OLD_NAMES = {
    "geoscope.data.samples": ["GeoSample", "load_sample_image", "read_sample_bytes", "split_source", "TAR_SEP",
                              "TAR_SUFFIXES"],
    "geoscope.data.issues": ["Issue"],
    "geoscope.data.dataset": ["Dataset", "open_dataset"],
    "geoscope.data.sources.manifest": ["ManifestLayout", "PRESETS", "MANIFEST_SUFFIXES"],
    "geoscope.data.sources.columns": ["ID_COLUMNS", "LAT_COLUMNS", "LON_COLUMNS", "PATH_COLUMNS"],
    "geoscope.data.validate": ["validate_dataset", "ValidationReport"],
    "geoscope.data.splits": ["split_dataset", "DatasetSplits", "spatial_groups"],
    "geoscope.data.images": ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "ImageError", "is_image_path",
                             "load_image", "read_limited"],
    "geoscope.errors": ["InputError"],
}


def test_old_import_path_re_exports_every_name_from_its_new_home():
    for module, names in OLD_NAMES.items():
        home = importlib.import_module(module)
        for name in names:
            assert getattr(old, name) is getattr(home, name), f"{name} from {module}"
    assert sorted(old.__all__) == sorted(n for names in OLD_NAMES.values() for n in names)
    assert "deprecated" in old.__doc__.lower() and "one release" in old.__doc__


@pytest.fixture()
def messy_folder(tmp_path):
    return make_messy_folder(tmp_path / "photos")


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_validate_and_split(messy_folder, tmp_path, capsys):
    root, _ = messy_folder
    assert main(["dataset", "validate", str(root), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["n_ok"] == 12 and out["counts"]["unreadable"] == 4
    good = tmp_path / "good"
    make_geotagged_folder(good, 40, seed=11)
    assert main(["dataset", "validate", str(good)]) == 0
    assert "40 samples, 40 usable" in capsys.readouterr().out
    out_dir = tmp_path / "splits"
    rc = main(["dataset", "split", str(good), "-o", str(out_dir), "--method", "spatial", "--cell-km", "200",
               "--buffer-km", "50", "--fractions", "0.6,0.2,0.2", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["splits"].values()) + summary["dropped_by_buffer"] == 40
    parts = {n: open_dataset(out_dir / f"{n}.csv", progress=False) for n in ("train", "val", "test")}
    if summary["dropped_by_buffer"]:
        parts["dropped"] = open_dataset(out_dir / "dropped.csv", progress=False)
    written = sorted(i for p in parts.values() for i in p.ids)
    assert written == sorted(open_dataset(good, progress=False).ids)  # every photo in exactly one file
    assert all(validate_dataset(p, progress=False).ok for p in parts.values())
    assert json.loads((out_dir / "split.json").read_text())["splits"] == summary["splits"]
    assert main(["dataset", "validate", str(tmp_path / "absent")]) == 1
    assert "no such file or folder" in capsys.readouterr().err

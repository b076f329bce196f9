"""The fuzz corpus in its short mode (issue 14): a few hundred hostile inputs through the loader and
the EXIF reader in watched workers, and a sample through ``geoscope embed`` / ``geoscope locate``.
The full corpus (16,000+ inputs) runs by hand: ``python3 benchmarks/bench_fuzz.py``."""

from __future__ import annotations

import collections

import pytest

import fuzz_corpus
import fuzz_harness

SHORT = 300


def test_corpus_is_deterministic_and_every_prefix_has_every_kind():
    kinds = collections.Counter(kind for kind, _ in fuzz_corpus.plan(SHORT))
    assert set(kinds) == set(fuzz_corpus.systematic_counts()) | set(fuzz_corpus.RANDOM_KINDS)
    assert fuzz_corpus.plan(SHORT) == fuzz_corpus.plan(2 * SHORT)[:SHORT]  # input i does not depend on n
    a = [x.data for x in fuzz_corpus.corpus(60, light=True)]
    b = [x.data for x in fuzz_corpus.corpus(60, light=True)]
    assert a == b and len(set(a)) > 50
    counts = fuzz_corpus.systematic_counts()
    assert fuzz_corpus.full_size() >= 10_000 and counts["truncate"] > 1000 and counts["lying-header"] > 1000
    seeds = fuzz_corpus.seeds()
    for fmt in ("jpeg", "png", "webp", "tiff", "gif", "bmp", "heic"):
        assert any(name.startswith(fmt) for name in seeds), fmt
    # truncation at every structure boundary: each PNG chunk start, for example
    png = seeds["png-meta"][0]
    cuts = set(fuzz_corpus.boundaries(png, "png"))
    assert all(start in cuts for _, start, _ in fuzz_corpus.png_chunks(png))


def test_harness_reports_hangs_crashes_deaths_and_memory():
    class Inp:
        def __init__(self, i, data):
            self.index, self.kind, self.base, self.detail, self.suffix, self.data = i, "self-test", "", "", ".x", data
            self.name = f"{i}.x"

    inputs = [Inp(0, b"fine"), Inp(1, b"hang"), Inp(2, b"crash"), Inp(3, b"die"), Inp(4, b"memory"), Inp(5, b"fine")]
    with fuzz_harness.Runner(workers=1, time_limit_s=1.0, rss_limit_mb=300, check="misbehaving") as runner:
        got = {r["index"]: r for r in runner.run(inputs)}
    assert got[0]["defect"] is None and got[5]["defect"] is None
    assert got[1]["defect"] == "hang"
    assert got[2]["defect"] == "crash" and "KeyError" in got[2]["load_detail"]
    assert got[3]["defect"] == "crash" and "worker died" in got[3]["load_detail"]
    assert got[4]["defect"] == "memory"
    assert runner.restarts >= 3


@pytest.mark.slow
def test_short_corpus_through_loader_and_exif_has_no_defects():
    with fuzz_harness.Runner(workers=2) as runner:
        results = runner.run(fuzz_corpus.corpus(SHORT, light=True))
    summary = fuzz_harness.summarize(results)
    assert summary["inputs"] > 0.9 * SHORT
    defects = "\n".join(f"#{d['index']} {d['kind']} {d['base']} {d['detail']}: {d['load_image']} {d['load_detail']} / "
                        f"{d['read_exif']} {d['exif_detail']}" for d in summary["defect_list"])
    assert summary["defects"] == 0, defects
    kinds = summary["by_kind"]
    assert kinds["valid"]["ok"] == kinds["valid"]["inputs"]  # every valid seed decodes
    assert kinds["non-image"]["error"] > 0 and kinds["truncate"]["error"] > 0 and kinds["bomb"]["error"] > 0
    assert summary["exif_ok_with_gps"] > 0


@pytest.mark.slow
def test_embed_and_locate_on_a_folder_of_fuzzed_files(tmp_path):
    inputs = [x for x in fuzz_corpus.corpus(SHORT, light=True) if x.index % 7 == 0]
    with fuzz_harness.Runner(workers=2) as runner:
        results = {r["index"]: r for r in runner.run(inputs)}
    assert not any(r["defect"] for r in results.values())
    expected = {x.name: results[x.index]["load_image"] for x in inputs}
    enc, model = fuzz_harness.make_tiny_model(tmp_path / "model")
    out = fuzz_harness.cli_batch(inputs, expected, tmp_path / "batch", enc, model)
    assert out["defects"] == [], "\n".join(out["defects"])
    assert out["embed_ok"] == out["locate_ok"] == sum(v == "ok" for v in expected.values()) > 0
    assert out["embed_errors"] == out["locate_failed"] > 0

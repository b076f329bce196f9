"""Read every image of a dataset and report what is wrong with it: ``validate_dataset``, ``ValidationReport``."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from geoscope.data.dataset import open_dataset
from geoscope.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image, open_header
from geoscope.data.issues import Issue
from geoscope.data.samples import GeoSample, read_sample_bytes


def _check_sample(args) -> tuple[str, str, str | None, int, int]:
    """(status, reason, sha256, width, height) for one sample: status ok / missing / unreadable.

    Module-level so that worker processes can run it.
    """
    sample, decode, max_pixels, max_bytes = args
    try:
        data = read_sample_bytes(sample, max_bytes)
    except ImageError as exc:
        msg = str(exc)
        status = "missing" if msg.endswith("not found") or "no member" in msg else "unreadable"
        return status, msg, None, 0, 0
    digest = hashlib.sha256(data).hexdigest()
    try:
        if decode:
            im = load_image(data, max_pixels=max_pixels, max_bytes=max_bytes, name=sample.source)
        else:
            im = open_header(data, sample.source, max_pixels)
        return "ok", "", digest, im.size[0], im.size[1]
    except ImageError as exc:
        return "unreadable", str(exc), digest, 0, 0


@dataclass
class ValidationReport:
    """What ``validate_dataset`` found. ``problems`` lists every issue; ``duplicates`` groups of ids
    whose image bytes are identical; ``ok_ids`` the samples that are readable, located and unique."""

    dataset: str
    n_samples: int
    problems: list[Issue]
    duplicates: list[list[str]]
    ok_ids: list[str]

    #: kinds that make a sample unusable (no_coordinates is only a warning: fine for inference).
    ERRORS = ("missing", "unreadable", "bad_coordinates", "duplicate_id", "duplicate_image", "bad_metadata", "not_image")

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.problems:
            out[p.kind] += 1
        return dict(sorted(out.items()))

    @property
    def ok(self) -> bool:
        return not any(p.kind in self.ERRORS for p in self.problems)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_samples": self.n_samples, "n_ok": len(self.ok_ids), "ok": self.ok,
                "counts": self.counts, "duplicates": self.duplicates, "problems": [p.to_dict() for p in self.problems]}

    def format(self, limit: int = 20) -> str:
        lines = [f"{self.dataset}: {self.n_samples} samples, {len(self.ok_ids)} usable"]
        for kind, n in self.counts.items():
            lines.append(f"  {kind}: {n}")
        for p in self.problems[:limit]:
            lines.append(f"  - {p.reason}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (use --json for all)")
        if self.n_samples and self.counts.get("missing", 0) >= self.n_samples:
            lines.append("  hint: no image was found; check the image folder (the images option, --images)")
        return "\n".join(lines)


def validate_dataset(ds, decode: bool = True, workers: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     max_bytes: int | None = DEFAULT_MAX_BYTES, progress: bool = True) -> ValidationReport:
    """Read every image of ``ds`` and report problems, each with its reason; never stops early.

    Reports the issues met while opening, missing files, unreadable / truncated / over-large images
    (``decode=False`` checks headers only: faster, misses truncation), samples without or with bad
    coordinates, and images whose bytes are identical (sha256). ``workers`` > 0 uses processes.
    """
    ds = open_dataset(ds, progress=progress)
    samples = list(ds)
    jobs = [(s, decode, max_pixels, max_bytes) for s in samples]
    bar = dict(total=len(jobs), desc="validating", unit="img", disable=not progress, leave=False)
    if workers and workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_check_sample, jobs, chunksize=16), **bar))
    else:
        results = [_check_sample(j) for j in tqdm(jobs, **bar)]

    problems = list(ds.issues)
    usable: list[tuple[GeoSample, str]] = []
    for s, (status, reason, digest, _w, _h) in zip(samples, results):
        if status != "ok":
            problems.append(Issue(status, s.source, reason, s.id))
            continue
        if not s.has_coords:
            problems.append(Issue("no_coordinates", s.source, f"{s.source}: no coordinates (no GPS in EXIF, "
                                  "no manifest or sidecar entry)", s.id))
        elif not (-90 <= s.lat <= 90 and -180 <= s.lon <= 360 and math.isfinite(s.lat) and math.isfinite(s.lon)):
            problems.append(Issue("bad_coordinates", s.source, f"{s.source}: lat={s.lat}, lon={s.lon} are not "
                                  "valid coordinates", s.id))
            continue
        usable.append((s, digest))
    by_hash: dict[str, list[GeoSample]] = defaultdict(list)
    for s, digest in usable:
        by_hash[digest].append(s)
    duplicates = [[s.id for s in group] for group in by_hash.values() if len(group) > 1]
    later = set()
    for group in by_hash.values():
        for s in group[1:]:
            later.add(s.id)
            problems.append(Issue("duplicate_image", s.source, f"{s.source}: same image bytes as {group[0].source}", s.id))
    ok_ids = [s.id for s, _ in usable if s.id not in later and s.has_coords]
    return ValidationReport(ds.name, len(samples), problems, duplicates, ok_ids)

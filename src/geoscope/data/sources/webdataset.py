"""WebDataset tar shards: members grouped by key (``s001.jpg`` + ``s001.json``), indexed by byte offset."""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections import defaultdict
from typing import Any

import pandas as pd
from tqdm import tqdm

from geoscope.data.images import is_image_path
from geoscope.data.issues import Issue
from geoscope.data.samples import SAMPLE_COLUMNS, TAR_SEP, TAR_SUFFIXES
from geoscope.data.sources.columns import LAT_COLUMNS, LON_COLUMNS, parse_coords, pick_column
from geoscope.errors import InputError


def expand_braces(pattern: str) -> list[str]:
    """'shard-{000..003}.tar' -> 4 names (WebDataset's brace notation); also {a,b}."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        width = len(a)
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    out = []
    for it in items:
        out += expand_braces(pattern[: m.start()] + it + pattern[m.end():])
    return out


def is_pattern(text: str) -> bool:
    """True for a glob or brace pattern that is not itself an existing path."""
    return any(ch in text for ch in "*?[{") and not os.path.exists(text)


def shard_paths(pattern: str) -> list[str]:
    """The shards a glob or brace pattern names, sorted; ``InputError`` if none, or not all ``.tar``."""
    shards = sorted(p for pat in expand_braces(pattern)
                    for p in (glob.glob(pat) if any(c in pat for c in "*?[") else [pat]))
    if not shards:
        raise InputError(f"{pattern}: no files match this pattern")
    if not all(s.lower().endswith(TAR_SUFFIXES) for s in shards):
        raise InputError(f"{pattern}: a pattern must name WebDataset .tar shards")
    return shards


def _wds_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the base name; the rest is the extension."""
    d, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _ends_cleanly(shard: str, offset: int) -> bool:
    """True when a zero block (the tar end-of-archive marker) follows the last member."""
    with open(shard, "rb") as f:
        f.seek(offset)
        block = f.read(512)
    return len(block) == 512 and not block.strip(b"\0")


def read_shards(shards: list[str], lat_key: str | None, lon_key: str | None, progress: bool
                ) -> tuple[pd.DataFrame, list[Issue]]:
    """The sample table of ``shards`` (one row per key with an image member) and what could not be used.

    Coordinates come from the sample's ``.json`` member (keys guessed, or ``lat_key`` / ``lon_key``);
    its other scalar fields become extra columns. Uncompressed shards record each image member's
    byte offset and size, so workers read a member without scanning the tar.
    """
    rows, issues = [], []
    seen: dict[str, str] = {}
    for shard in tqdm(shards, desc="indexing shards", unit="shard", disable=not progress or len(shards) < 4,
                      leave=False):
        if not os.path.exists(shard):
            issues.append(Issue("missing", shard, f"{shard}: shard not found"))
            continue
        groups: dict[str, dict[str, tarfile.TarInfo]] = defaultdict(dict)
        order: list[str] = []
        compressed = not shard.lower().endswith(".tar")
        try:
            with tarfile.open(shard, "r:*") as tar:
                try:
                    for m in tar:
                        if not m.isfile():
                            continue
                        key, ext = _wds_key(m.name)
                        if key not in groups:
                            order.append(key)
                        groups[key][ext] = m
                except (tarfile.TarError, EOFError, OSError) as exc:
                    issues.append(Issue("unreadable", shard, f"{shard}: shard is damaged after "
                                        f"{sum(len(g) for g in groups.values())} members ({exc}); kept what came before"))
                else:
                    if not compressed and not _ends_cleanly(shard, tar.offset):
                        issues.append(Issue("unreadable", shard, f"{shard}: shard ends without the tar end-of-archive "
                                            f"marker after {len(order)} sample(s) (truncated?); later samples are lost"))
                if not compressed:
                    end = os.path.getsize(shard)
                    cut = [k for k in order if any(m.offset_data + m.size > end for m in groups[k].values())]
                    if cut:
                        issues.append(Issue("unreadable", shard, f"{shard}: shard is truncated; {len(cut)} "
                                            f"sample(s) from {cut[0]!r} on are incomplete and were left out"))
                        order = [k for k in order if k not in set(cut)]
                for key in order:
                    members = groups[key]
                    img_ext = next((e for e in members if is_image_path("x." + e.rsplit(".", 1)[-1])), None)
                    src_key = f"{shard}{TAR_SEP}{key}"
                    if img_ext is None:
                        issues.append(Issue("missing", src_key, f"{src_key}: sample has no image member "
                                            f"(found: {', '.join(sorted(members)) or 'nothing'})", key))
                        continue
                    img = members[img_ext]
                    meta: dict[str, Any] = {}
                    lat = lon = None
                    js = members.get("json")
                    if js is not None:
                        try:
                            handle = tar.extractfile(js)
                            meta = json.loads(handle.read().decode("utf-8")) if handle else {}
                            if not isinstance(meta, dict):
                                raise ValueError("not a JSON object")
                        except (ValueError, UnicodeDecodeError, tarfile.TarError, OSError) as exc:
                            issues.append(Issue("bad_metadata", f"{shard}{TAR_SEP}{js.name}",
                                                f"{shard}{TAR_SEP}{js.name}: unreadable JSON ({exc})", key))
                            meta = {}
                    if meta:
                        names = list(meta)
                        la = pick_column(names, lat_key, LAT_COLUMNS, "lat key", src_key, required=False)
                        lo = pick_column(names, lon_key, LON_COLUMNS, "lon key", src_key, required=False)
                        if la and lo:
                            la_v, lo_v, ok = parse_coords([meta[la]], [meta[lo]])
                            if ok[0]:
                                lat, lon = float(la_v[0]), float(lo_v[0])
                            else:
                                issues.append(Issue("bad_coordinates", src_key, f"{src_key}: lat={meta[la]!r}, "
                                                    f"lon={meta[lo]!r} are not valid coordinates", key))
                                continue
                        meta = {k: v for k, v in meta.items() if k not in (la, lo)
                                and isinstance(v, (str, int, float, bool))}
                    if key in seen:
                        issues.append(Issue("duplicate_id", src_key, f"{src_key}: key {key!r} already used in {seen[key]}", key))
                        continue
                    seen[key] = shard
                    row = {"id": key, "source": f"{shard}{TAR_SEP}{img.name}", "lat": lat, "lon": lon,
                           "offset": None if compressed else img.offset_data, "size": img.size}
                    row.update({k: v for k, v in meta.items() if k not in row})
                    rows.append(row)
        except (tarfile.TarError, OSError, EOFError) as exc:
            issues.append(Issue("unreadable", shard, f"{shard}: not a readable tar shard ({exc})"))
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=SAMPLE_COLUMNS)
    for c in ("lat", "lon"):
        table[c] = pd.to_numeric(table[c], errors="coerce")
    return table, issues

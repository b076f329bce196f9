"""Exported encoders: a torch encoder written once as ONNX, cached beside its weights' hash.

``exported_model(family, weight_files, settings, build_torch)`` returns the folder of an export:

    <cache>/exports/<key>/model.onnx (+ model.onnx.data)   the image tower, batch axis dynamic
                          export.json                      what it is: name, dim, preprocessing, key parts
                          ...                              what runtimes derive from it (int8 model, IR)

``key`` is a hash of the weight files' contents (SHA-256 of each) and of the export settings (format
version, family, what is exported, opset), so new weights or new settings make a new export and a
stale one is never loaded. Hashing a 1.7 GB checkpoint takes seconds, so file digests are remembered
in ``<cache>/exports/digests.json`` against the file's size, modification time and inode (like git's
index): an unchanged file is not read again.

The export is built in a temporary folder beside its final place and renamed into place in one
step, so a killed export leaves a ``.tmp-*`` folder that nothing loads (it is removed by the next
export of that key). The first use logs that it is exporting, and how long that takes.

Nothing here imports torch unless an export has to be made (``build_torch`` is only called then).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Iterator, Mapping

from geoscope import settings
from geoscope.atomic import write_json
from geoscope.errors import GeoscopeError

log = logging.getLogger(__name__)

#: bump when the layout or the exported graph changes: every export is then made again
EXPORT_VERSION = 1
#: the ONNX opset the exporter targets
OPSET = 18
MANIFEST = "export.json"
ONNX_FILE = "model.onnx"


def exports_dir() -> Path:
    """``<cache>/exports``: where exported encoders live (``GEOSCOPE_CACHE`` moves it)."""
    return settings.cache_dir() / "exports"


# --- weight digests --------------------------------------------------------------------------------

def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's contents, remembered against (size, mtime, inode) so an unchanged file is
    hashed once per cache folder."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    book = exports_dir() / "digests.json"
    try:
        known = json.loads(book.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path)) if isinstance(known, dict) else None
    if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = _digest_file(path)
    try:  # re-read so that two processes hashing different files both keep theirs
        try:
            known = json.loads(book.read_text())
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):
            known = {}
        known[str(path)] = {"stat": stamp, "sha256": digest}
        write_json(book, known)
    except OSError:
        pass  # a read-only cache costs time, not answers
    return digest


def export_key(weight_files: Mapping[str, str | os.PathLike], settings_: dict[str, Any]) -> str:
    """The key of an export: hash of each weight file's contents and of the export settings."""
    parts = {
        "version": EXPORT_VERSION,
        "opset": OPSET,
        "settings": settings_,
        "files": {name: file_digest(p) for name, p in sorted(weight_files.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


# --- the export ------------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete export, or None (missing, half written, unreadable)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != EXPORT_VERSION or not (folder / ONNX_FILE).is_file():
        return None
    return doc


def export_onnx(module, path: Path, input_size: int, output: str = "embeddings") -> None:
    """Write ``module`` (pixels (B, 3, H, W) -> (B, dim)) as ONNX at ``path``, batch axis dynamic.

    Uses torch's ``torch.export``-based exporter (the TorchScript one is deprecated); the weights go
    to ``path.name + ".data"`` beside it.
    """
    import warnings

    import torch

    module = module.eval()
    x = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter and its optimiser report every step (and, without torchvision, the ops it skips)
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in noisy]
    try:
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (x,), input_names=["pixels"], output_names=[output],
                                        dynamic_shapes=({0: batch},), dynamo=True, opset_version=OPSET,
                                        external_data=True, verbose=False)
            assert program is not None  # dynamo=True always returns the program
            program.save(str(path), external_data=True)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


@contextmanager
def building_folder(target: Path) -> Iterator[Path | None]:
    """Yield an empty temporary folder beside ``target``, renamed onto it when the block succeeds.

    Yields None when ``target`` already exists (nothing to build). A block that raises, or a process
    killed inside it, leaves no ``target``: only a ``.tmp-*`` folder, removed by a later build.
    """
    if target.exists():
        yield None
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():  # not another process finishing the same build first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def exported_model(
    family: str,
    weight_files: Mapping[str, str | os.PathLike],
    export_settings: dict[str, Any],
    build: Callable[[], tuple[Any, dict]],
    what: str,
) -> tuple[Path, dict]:
    """The folder and manifest of the export of these weights, exporting it first when needed.

    ``build()`` returns ``(torch module mapping pixels to embeddings, manifest facts)`` (facts: ``dim``,
    ``input_size``, ``transform`` (an ``ImageTransform`` dict), ...); it is only called to export.
    ``what`` names the model in the log line.
    """
    key = export_key(weight_files, {"family": family, **export_settings})
    folder = exports_dir() / key
    manifest = read_manifest(folder)
    if manifest is not None:
        return folder, manifest
    if folder.exists():  # an export of an older layout, or damaged: moved aside and made again
        manifest = read_manifest(folder)  # unless another process has just finished it
        if manifest is not None:
            return folder, manifest
        stale = folder.with_name(f".tmp-{key}-stale-{os.getpid()}")
        try:
            os.rename(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    log.warning("exporting %s to ONNX once (cached in %s); this takes from seconds to a few minutes", what, folder)
    t0 = time.perf_counter()
    with building_folder(folder) as tmp:
        if tmp is not None:
            module, facts = build()
            export_onnx(module, tmp / ONNX_FILE, int(facts["input_size"]))
            del module
            write_json(tmp / MANIFEST, {
                "version": EXPORT_VERSION, "key": key, "family": family, "settings": export_settings,
                "weights": {k: str(v) for k, v in weight_files.items()}, "created": time.time(), **facts})
    manifest = read_manifest(folder)
    if manifest is None:
        raise GeoscopeError(f"the export of {what} in {folder} is incomplete; delete that folder and try again")
    log.warning("exported %s in %.0f s", what, time.perf_counter() - t0)
    return folder, manifest


def derived(folder: Path, name: str, make: Callable[[Path], None], what: str,
            supersedes: Iterable[str] = ()) -> Path:
    """A folder derived from an export (an int8 model, an OpenVINO IR, ...), made once by
    ``make(tmp_folder)`` and renamed into ``folder / name`` in one step. ``supersedes``: folders an
    earlier geoscope derived for the same purpose, removed once this one exists (an OpenVINO model and its
    compiled cache are over a gigabyte for ViT-L/14)."""
    target = folder / name
    if not target.is_dir():
        log.warning("preparing %s once (cached in %s)", what, target)
        with building_folder(target) as tmp:
            if tmp is not None:
                make(tmp)
    if target.is_dir():
        for old in supersedes:
            if (folder / old).is_dir() and old != name:
                log.info("removing %s, superseded by %s", folder / old, target)
                shutil.rmtree(folder / old, ignore_errors=True)
    return target


def _remove_stale(root: Path, name: str) -> None:
    """Remove half-finished builds of ``name`` left by a killed process (older than an hour)."""
    for p in root.glob(f".tmp-{name}-*"):
        try:
            if time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def weight_files_of(folder: Path, names: Iterable[str]) -> dict[str, Path]:
    """``{name: folder/name}`` for the files that exist (config and preprocessing files are optional)."""
    return {n: folder / n for n in names if (folder / n).is_file()}

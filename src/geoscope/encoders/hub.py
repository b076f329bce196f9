"""Where weights of hub models come from, without ever hanging on a network that is not there.

A hub model (``openai/clip-vit-large-patch14``) is looked up, in order, in:
1. ``$GEOSCOPE_WEIGHTS`` (one or more folders, ``os.pathsep``-separated) as ``ORG/NAME``, ``ORG--NAME``
   or ``NAME`` sub-folders holding ``config.json`` and the weights (e.g. a ``save_pretrained`` copy);
2. the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), read with ``local_files_only=True``;
3. the hub itself, only when ``GEOSCOPE_DOWNLOAD=1`` (or ``allow_download=True``).
Otherwise ``WeightsUnavailableError`` is raised at once with one sentence saying how to provide them.
"""

from __future__ import annotations

import os
from pathlib import Path

from geoscope import optional, settings
from geoscope.errors import WeightsUnavailableError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
DOWNLOAD_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model"]


def has_weights(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds a ``config.json`` and a weights file in Hugging Face layout."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _weights_roots() -> list[Path]:
    return settings.paths("GEOSCOPE_WEIGHTS")


def find_local(repo_id: str) -> Path | None:
    """A local folder with the weights of ``repo_id``, or None. Never touches the network."""
    org, _, name = repo_id.rpartition("/")
    for root in _weights_roots():
        for cand in (root / repo_id, root / f"{org}--{name}", root / name):
            if has_weights(cand):
                return cand
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), bad id, no hub library
        return None
    return snap if has_weights(snap) else None


def _download_allowed(allow_download: bool | None) -> bool:
    if settings.flag("HF_HUB_OFFLINE"):
        return False
    if allow_download is None:
        return settings.flag("GEOSCOPE_DOWNLOAD")
    return allow_download


def missing_message(repo_id: str) -> str:
    return (
        f"weights for {repo_id!r} are not on this machine: pass a local model directory, copy them to "
        f"$GEOSCOPE_WEIGHTS/{repo_id}, pre-download them into the Hugging Face cache (HF_HOME) with "
        f"`hf download {repo_id}`, or set GEOSCOPE_DOWNLOAD=1 to let geoscope download them"
    )


def resolve(repo_id: str, allow_download: bool | None = None) -> Path:
    """Local folder holding ``repo_id``'s weights; downloads only if allowed; else raises at once."""
    found = find_local(repo_id)
    if found is not None:
        return found
    if _download_allowed(allow_download):
        optional.require("huggingface_hub", "downloading weights from the Hugging Face hub")
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo_id, allow_patterns=DOWNLOAD_PATTERNS))
        except Exception as exc:  # noqa: BLE001 - any network / hub failure becomes one sentence
            raise WeightsUnavailableError(f"{missing_message(repo_id)} (download failed: {type(exc).__name__})") from None
        if has_weights(path):
            return path
    raise WeightsUnavailableError(missing_message(repo_id))


def model_dir(source: str | os.PathLike, allow_download: bool | None = None) -> Path:
    """The local folder of a model: ``source`` itself when it is a folder (which must hold weights),
    else the hub id ``source`` resolved as :func:`resolve` does."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not has_weights(path):
            raise WeightsUnavailableError(
                f"{path} holds no model: expected config.json and model.safetensors (a save_pretrained directory)"
            )
        return path
    return resolve(str(source), allow_download)


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """The files a model folder's computation depends on: config, preprocessing and every weights file
    (shards included), by name."""
    names = ["config.json", "preprocessor_config.json"]
    names += sorted(p.name for p in folder.iterdir()
                    if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    return {n: folder / n for n in names if (folder / n).is_file()}

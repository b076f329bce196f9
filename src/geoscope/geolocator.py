"""``Geolocator`` = encoder + head + cells + places: the one object users hold.

    geo = Geolocator.from_pretrained("path/to/model")      # or a named model such as "geoclip"
    for p in geo.locate(["a.jpg", "b.jpg"], top_k=5):
        print(p.best.lat, p.best.lon, p.best.place.label(), p.confidence)
    geo.save_pretrained("out/model")

A model directory holds ``config.json`` (encoder name, head config, file hashes), ``model.safetensors``
(the head's weights and data buffers, e.g. a GPS gallery or neighbour bank), ``cells.json`` when
the model has geocells and ``calibration.json`` when it was calibrated (``geoscope.calibration``:
fitted on held-out data by ``geoscope train``; models saved before have none and keep loading). Loading
checks every file against the SHA-256 recorded in ``config.json``, so a missing, truncated or altered file
is an error, not a silent wrong answer. Weights are read with ``safetensors`` only. The same folder is a
Hugging Face hub repository: ``push_to_hub(repo_id)`` (or ``save_pretrained(dir, push_to_hub=True)``)
uploads it, ``from_pretrained("hf-hub:ORG/NAME")`` reads it back (from a local copy or the hub cache;
downloads only when allowed, see ``encoders.hub``).

``from_pretrained`` takes the same keywords for a folder, a hub id and a named model (``encoder``,
``weights``, ``precision``, ``places``, ``progress``, ``gallery``, ``allow_download``); a keyword the
source cannot honour is an ``InputError``, never silently ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from geoscope import optional
from geoscope.atomic import atomic_path, write_json
from geoscope.calibration import CANDIDATE_DISC_KM, LOCALIZABILITY_RADIUS_KM, Calibration, mixture_mass
from geoscope.data.exif import read_exif
from geoscope.data.images import load_image, read_limited
from geoscope.encoders import PRECISIONS, create_encoder
from geoscope.encoders.hub import resolve as resolve_hub
from geoscope.errors import GeoscopeError, InputError
from geoscope.geo.sphere import pairwise_km
from geoscope.heads import build_head
from geoscope.prediction import CONFIDENCE_RADII_KM, Candidate, Prediction
from geoscope.pretrained import load_parts

FORMAT = "geoscope-geolocator"
FORMAT_VERSION = 1
#: a model folder may carry its encoder in this subfolder (read like weights=DIR)
ENCODER_DIR = "encoder"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CELLS = "cells.json"
#: the calibration fitted at training time (``geoscope.calibration.Calibration``); older models have none
CALIBRATION = "calibration.json"
#: a model on the Hugging Face hub is named ``hf-hub:ORG/NAME`` (``hf:ORG/NAME`` is an alias)
HUB_PREFIXES = ("hf-hub:", "hf:")
#: files of a model folder that are never shipped (training state of older versions, temporary files)
NOT_SHIPPED = ["checkpoint.pt", ".*"]
#: keywords only named pretrained models take (``pretrained.load_parts``)
NAMED_MODEL_OPTIONS = ("cache", "towns_min_population", "templates", "warm")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_label(src, i: int) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    name = getattr(src, "filename", None) or getattr(src, "name", None)
    return str(name) if name else f"image {i}"


def confidence_mass(best: np.ndarray, support: np.ndarray, probs: np.ndarray,
                    radii_km: Sequence[float] = CONFIDENCE_RADII_KM, sigma_km=None) -> dict[int, float]:
    """Probability mass of ``probs`` over ``support`` points within each radius of ``best`` (lat, lon):
    point masses, or Gaussian kernels of per-axis width ``sigma_km`` (scalar or per point) around them."""
    if sigma_km is None:
        d = pairwise_km(np.array([best[0]]), np.array([best[1]]), support[:, 0], support[:, 1])[0]
        return {int(r): float(min(1.0, probs[d <= r].sum())) for r in radii_km}
    sig = np.asarray(sigma_km, dtype=np.float64)
    m = mixture_mass(np.asarray(best)[None], support, np.asarray(probs)[None], sig[None] if sig.ndim else sig,
                     radii_km)[0]
    return {int(r): float(v) for r, v in zip(radii_km, m)}


@dataclass
class Distribution:
    """What a Geolocator predicts for a batch of B images, as arrays (``Geolocator.distribution``).

    ``coords`` (B, K, 2) candidates sorted by ``probs`` (B, K), the probability each shows (the mass
    of its ``neighbourhood``); ``cells`` (B, K) finest-cell ids or None; ``cell_probs`` (B, n_cells)
    calibrated, or None; ``confidence`` (B, len(radii)) mass within each radius of the best candidate
    (NaN where the model gives a single uncalibrated point); ``localizability`` (B,) or None;
    ``calibrated``: a fitted calibration was applied. ``head_output``: the head's raw output.
    """

    coords: np.ndarray
    probs: np.ndarray
    cells: np.ndarray | None
    cell_probs: np.ndarray | None
    confidence: np.ndarray
    radii_km: tuple
    localizability: np.ndarray | None
    neighbourhood: dict
    calibrated: bool
    head_output: Any = None


class Geolocator:
    """An encoder, a head over its embeddings, and optionally the geocells the head predicts over.

    Args:
        encoder: an ``Encoder`` instance, an encoder name for ``encoders.create_encoder`` (created on
            first use, so ``locate_embeddings`` works without the backbone's weights), or None.
        head: a trained head (``heads.base.Head``).
        cells: a ``CellHierarchy`` (or one partition, made a hierarchy of one level; required when the
            head predicts over cells) or None. ``self.cells`` is always a ``CellHierarchy`` or None.
        name: a label written into every ``Prediction.model``.
        meta: free-form facts about the model (training report, licence, ...) kept in config.json.
        places: name candidates with country / region / nearest town.
        calibration: a ``geoscope.calibration.Calibration`` fitted on held-out data (``geoscope train``
            fits one), or None: the head's probabilities as they are, as point masses.
    """

    def __init__(self, encoder, head, cells=None, name: str | None = None, meta: dict | None = None,
                 places: bool = True, calibration: Calibration | None = None):
        self.calibration = calibration
        self._encoder = None if isinstance(encoder, str) else encoder
        self.encoder_name = encoder if isinstance(encoder, str) else getattr(encoder, "name", None)
        #: where and how the encoder is built on first use (from_pretrained's weights= / precision=)
        self._encoder_source: str | None = None
        self._encoder_options: dict[str, Any] = {}
        self.head = head.eval()
        if cells is not None:
            from geoscope.geo.cells import as_hierarchy  # pandas / scipy: only for models with cells

            cells = as_hierarchy(cells)
        self.cells = cells
        if self.cells is not None and hasattr(head, "bind_cells"):
            head.bind_cells(self.cells)
        self.name: str = name or str(getattr(head, "kind", "geolocator"))
        self.meta = dict(meta or {})
        self.places = places
        n_cells = int(getattr(head, "n_cells", 0) or 0)
        if n_cells:
            if cells is None:
                raise InputError(f"the {head.kind} head predicts over {n_cells} geocells but no cells were given")
            finest = self.finest_cells
            if len(finest) != n_cells:
                raise InputError(
                    f"the cells have {len(finest)} finest cells but the {head.kind} head predicts over {n_cells}; "
                    "use the cells the model was trained with"
                )

    # --- parts -------------------------------------------------------------------------------------

    @property
    def finest_cells(self):
        return None if self.cells is None else self.cells.finest

    @property
    def encoder(self):
        """The encoder, created from its name on first use."""
        if self._encoder is None:
            if not self.encoder_name:
                raise InputError(f"model {self.name!r} has no image encoder; use locate_embeddings() with embeddings")
            options = dict(self._encoder_options)
            if self._encoder_source:  # weights=DIR: the recorded encoder, read from a local folder
                options["name"] = self.encoder_name
            encoder = create_encoder(self._encoder_source or self.encoder_name, **options).eval()
            in_dim = getattr(self.head, "in_dim", None)
            if in_dim is not None and encoder.dim != in_dim:
                raise InputError(
                    f"the encoder built from {self._encoder_source or self.encoder_name} gives {encoder.dim}-d "
                    f"embeddings but the {self.head.kind} head of model {self.name!r} takes {in_dim}-d ones"
                )
            self._encoder = encoder
        return self._encoder

    # --- inference ---------------------------------------------------------------------------------

    def distribution(self, emb, top_k: int = 5, radii_km: Sequence[float] = CONFIDENCE_RADII_KM) -> Distribution:
        """The calibrated prediction for (B, dim) embeddings as arrays: candidates sorted by the
        probability they show, the mass within each radius of the best one, localizability."""
        emb = np.asarray(emb.detach().float().numpy() if hasattr(emb, "detach") else emb)
        if emb.ndim == 1:
            emb = emb[None]
        out = self.head.predict(emb, top_k=top_k)
        cal = self.calibration or Calibration()
        coords, scores = np.asarray(out.coords, dtype=np.float64), np.asarray(out.scores, dtype=np.float64)
        B, K = scores.shape
        cells = None if out.cells is None else np.asarray(out.cells)
        radii = tuple(int(r) if float(r).is_integer() else float(r) for r in radii_km)
        confidence = np.full((B, len(radii)), np.nan)
        cell_probs = None if out.cell_probs is None else np.asarray(out.cell_probs, dtype=np.float64)
        localizability = None
        kind = getattr(out, "neighbourhood", "disc")
        neighbourhood = {"kind": kind}
        support_index = getattr(out, "candidate_support", None)
        if out.support is not None and out.support_probs is not None:
            support = np.asarray(out.support, dtype=np.float64)
            weights = cal.weights(out.support_probs)
            M = weights.shape[1]
            sigma = cal.sigmas(M, getattr(out, "support_refined", None), cells=bool(getattr(out, "support_cells", False)),
                               weights=weights)
            if support_index is not None:
                support_index = np.asarray(support_index, dtype=np.int64)
                if kind == "disc":  # one point: its probability is the mass within a disc around it
                    neighbourhood["radius_km"] = CANDIDATE_DISC_KM
                    scores = (mixture_mass(coords[:, 0], support, weights, sigma, [CANDIDATE_DISC_KM])
                              if sigma is not None else np.ones((B, 1))) * np.ones((1, K))
                else:
                    scores = np.take_along_axis(weights, support_index, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")  # candidates in the order of what they show
            coords = np.take_along_axis(coords, order[..., None], axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            cells = None if cells is None else np.take_along_axis(cells, order, axis=1)
            if M > 1 or sigma is not None:
                need = cal.needed_radii(radii)  # the maps also read the masses within their own radii
                masses = mixture_mass(coords[:, 0], support, weights, sigma, need + [LOCALIZABILITY_RADIUS_KM])
                confidence = cal.recalibrate(masses[:, :-1], need)[:, : len(radii)]
                if M > 1:  # a single point carries no spread to judge it by
                    localizability = cal.localizability(weights, masses[:, -1])
            if cell_probs is not None and getattr(out, "support_cells", False):
                cell_probs = weights
        elif K > 1:
            order = np.argsort(-scores, axis=1, kind="stable")
            coords = np.take_along_axis(coords, order[..., None], axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            cells = None if cells is None else np.take_along_axis(cells, order, axis=1)
            confidence = mixture_mass(coords[:, 0], coords, scores, None, radii) if B else confidence
        return Distribution(coords, scores, cells, cell_probs, confidence, radii, localizability, neighbourhood,
                            bool(cal.fitted), out)

    def locate_embeddings(self, emb, top_k: int = 5, sources: Sequence[str] | None = None,
                          exif: Sequence | None = None,
                          radii_km: Sequence[float] = CONFIDENCE_RADII_KM) -> list[Prediction]:
        """Predictions for (B, dim) embeddings (numpy or torch); ``confidence`` at ``radii_km``."""
        emb = np.asarray(emb.detach().float().numpy() if hasattr(emb, "detach") else emb)
        if emb.ndim == 1:
            emb = emb[None]
        if len(emb) == 0:
            return []
        dist = self.distribution(emb, top_k=top_k, radii_km=radii_km)
        coords, scores = dist.coords, dist.probs
        B, K = scores.shape
        place_rows = self._places(coords.reshape(-1, 2)) if self.places else None
        finest = self.finest_cells
        cell_ids = dist.cells
        if cell_ids is None and finest is not None:
            flat = coords.reshape(-1, 2)
            cell_ids = np.asarray(finest.assign(flat[:, 0], flat[:, 1])).reshape(B, K)
        preds = []
        for b in range(B):
            cands = []
            for j in range(K):
                cell = None if cell_ids is None or cell_ids[b, j] < 0 else int(cell_ids[b, j])
                place = None if place_rows is None else place_rows[b * K + j]
                cands.append(Candidate(float(coords[b, j, 0]), float(coords[b, j, 1]), float(scores[b, j]), place, cell))
            conf = {r: float(v) for r, v in zip(dist.radii_km, dist.confidence[b]) if np.isfinite(v)}
            preds.append(Prediction(
                source=sources[b] if sources is not None else f"embedding {b}",
                candidates=cands,
                cell_probs=None if dist.cell_probs is None else np.asarray(dist.cell_probs[b]),
                cells=finest if dist.cell_probs is not None else None,
                confidence=conf,
                exif=None if exif is None else exif[b],
                model=self.name,
                extra=self._extra(dist.head_output.extra, b, B),
                localizability=None if dist.localizability is None else float(dist.localizability[b]),
                neighbourhood=dict(dist.neighbourhood),
                calibrated=dist.calibrated,
            ))
        return preds

    @staticmethod
    def _extra(extra: dict, b: int, batch: int) -> dict:
        row: dict[str, Any] = {}
        labels = extra.get("scene_labels")
        for key, value in extra.items():
            if key == "scene_labels":
                continue
            if isinstance(value, (list, np.ndarray)) and len(value) == batch:
                v = value[b]
                if key == "scene_probs" and labels:
                    v = {lab: float(p) for lab, p in zip(labels, v)}
                elif isinstance(v, np.ndarray):
                    v = v.tolist()
                row[key] = v
        return row

    def _places(self, coords: np.ndarray):
        from geoscope.geo.places import reverse_geocode  # border and town data: on first use

        try:
            return reverse_geocode(coords[:, 0], coords[:, 1])
        except GeoscopeError as exc:
            warnings.warn(f"place names unavailable: {exc}", stacklevel=3)
            return None

    def locate(self, images: Iterable, top_k: int = 5, batch_size: int = 16, progress: bool = False,
               exif: bool = True, radii_km: Sequence[float] = CONFIDENCE_RADII_KM) -> list[Prediction]:
        """Predictions for images given as paths, bytes or ``PIL.Image`` objects, in input order.

        An image that cannot be read or encoded becomes ``Prediction.failed(...)``; the rest go on.
        ``confidence`` is the probability within each of ``radii_km`` of the best candidate.
        """
        images = list(images)
        results: list[Prediction | None] = [None] * len(images)
        draft = self._draft_size() if images else None
        bar = None
        if progress:
            from tqdm.auto import tqdm  # here: 0.04-0.07 s to import (asyncio, metadata), and one photo shows no bar

            bar = tqdm(total=len(images), desc="locate", unit="image")
        for start in range(0, len(images), batch_size):
            chunk = list(enumerate(images[start : start + batch_size], start))
            loaded, names, findings, where = [], [], [], []
            for i, src in chunk:
                name = _source_label(src, i)
                try:
                    if hasattr(src, "read") and not isinstance(src, Image.Image):
                        src = read_limited(src, name=name)  # file objects are read once, used twice
                    im = src.convert("RGB") if isinstance(src, Image.Image) else load_image(src, name=name,
                                                                                             draft_size=draft)
                    found = read_exif(src) if exif else None
                except GeoscopeError as exc:
                    results[i] = Prediction.failed(name, str(exc), model=self.name)
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                    results[i] = Prediction.failed(name, f"{name}: {type(exc).__name__}: {exc}", model=self.name)
                    continue
                loaded.append(im)
                names.append(name)
                findings.append(found)
                where.append(i)
            if loaded:
                for i, pred in zip(where, self._locate_loaded(loaded, names, findings, top_k, radii_km)):
                    results[i] = pred
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return results  # type: ignore[return-value]

    def _draft_size(self) -> int | None:
        """The shortest side the encoder resizes photos to: large JPEGs are decoded at a reduced scale for
        it (``data.decode``). None when the encoder cannot be built (``_locate_loaded`` says why)."""
        try:
            return int(self.encoder.transform.resize)
        except (GeoscopeError, AttributeError):
            return None

    def _locate_loaded(self, images, names, findings, top_k, radii_km=CONFIDENCE_RADII_KM) -> list[Prediction]:
        encoder = self.encoder  # a missing backbone is a model-level error: raise it
        # a head that verifies its candidates on the pixels (crossview with a verifier) is given the images too
        verifies = getattr(self.head, "verifier", None) is not None and hasattr(self.head, "query_pixels")
        pixels = [np.asarray(im.convert("RGB")) for im in images] if verifies else None

        def with_pixels(rows):
            return self.head.query_pixels(rows) if rows is not None else contextlib.nullcontext()

        views = getattr(self.head, "image_views", None)
        if views is not None:  # the head asks for test-time views of each image (crossview: crops, rotations)
            images = [list(views(im)) for im in images]
        try:
            emb = self._encode(encoder, images)
        except GeoscopeError:
            raise
        except Exception:  # noqa: BLE001 - retry one by one so a single bad image is isolated
            out = []
            for i, (im, name, found) in enumerate(zip(images, names, findings)):
                try:
                    with with_pixels(None if pixels is None else pixels[i:i + 1]):
                        out += self.locate_embeddings(self._encode(encoder, [im]), top_k, [name], [found], radii_km)
                except Exception as exc:  # noqa: BLE001
                    out.append(Prediction.failed(name, f"{name}: {type(exc).__name__}: {exc}", model=self.name))
            return out
        with with_pixels(pixels):
            return self.locate_embeddings(emb, top_k, names, findings, radii_km)

    @staticmethod
    def _encode(encoder, images) -> np.ndarray:
        """(B, dim) embeddings of images, or (B, R, dim) when each item is a list of R views."""
        if images and isinstance(images[0], list):
            flat = [v for group in images for v in group]
            emb = encoder.encode_images(flat, batch_size=len(flat))
            return emb.reshape(len(images), len(images[0]), -1)
        return encoder.encode_images(images, batch_size=len(images))

    # --- saving and loading ------------------------------------------------------------------------

    def config(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "encoder": self.encoder_name,
            "head": self.head.config(),
            "cells": CELLS if self.cells is not None else None,
            "calibration": CALIBRATION if self.calibration is not None else None,
            "meta": self.meta,
        }

    def save_pretrained(self, directory: str | os.PathLike, *, push_to_hub: bool = False, repo_id: str | None = None,
                        private: bool | None = None, token: str | None = None,
                        commit_message: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``cells.json`` (when there are cells).

        ``push_to_hub=True`` then uploads the folder to the Hugging Face hub repository ``repo_id``
        (default: the folder's name), as :meth:`push_to_hub` does.
        """
        from safetensors.torch import save_file  # torch

        if not self.encoder_name:
            warnings.warn("saving a model whose encoder has no name: from_pretrained cannot recreate it", stacklevel=2)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.head.state_dict().items()}
        with atomic_path(out / WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        files = {WEIGHTS: _sha256(out / WEIGHTS)}
        if self.cells is not None:
            from geoscope.geo.cells import save_cells

            save_cells(self.cells, out / CELLS)
            files[CELLS] = _sha256(out / CELLS)
        if self.calibration is not None:
            write_json(out / CALIBRATION, self.calibration.to_dict())
            files[CALIBRATION] = _sha256(out / CALIBRATION)
        elif (out / CALIBRATION).exists():
            (out / CALIBRATION).unlink()  # a stale one from an earlier save would not match this model
        config = self.config()
        config["files"] = files
        write_json(out / CONFIG, config)
        if push_to_hub:
            upload_to_hub(out, repo_id or out.resolve().name, private=private, token=token,
                          commit_message=commit_message)
        return out

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None) -> str:
        """Save the model and upload it to the Hugging Face hub repository ``repo_id`` (created if needed).

        Returns the repository's URL. ``Geolocator.from_pretrained("hf-hub:" + repo_id)`` reads it back.
        Failures (no network, no token, no right to write) are one ``GeoscopeError`` sentence.
        """
        with tempfile.TemporaryDirectory(prefix="geoscope-push-") as tmp:
            self.save_pretrained(tmp)
            return upload_to_hub(Path(tmp), repo_id, private=private, token=token, commit_message=commit_message)

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | os.PathLike,
        *,
        encoder=None,
        weights: str | os.PathLike | None = None,
        precision: str | None = None,
        places: bool = True,
        progress: bool = True,
        gallery=None,
        allow_download: bool | None = None,
        **options: Any,
    ) -> "Geolocator":
        """Load a model folder written by ``save_pretrained``, a hub repository (``hf-hub:ORG/NAME``, alias
        ``hf:``), or a named pretrained model (``geoscope models``).

        The same keywords for each; one the source cannot honour is an ``InputError``:

        - ``encoder``: an ``Encoder`` or encoder name used instead of the recorded (or default) backbone.
        - ``weights``: a local folder holding the backbone's weights (not together with ``encoder``).
        - ``precision``: ``auto`` | ``fp32`` | ``bf16`` | ``int8`` for the backbone geoscope builds
          (default: ``auto`` for named models; the encoder's own, fp32, for folders, which were trained on
          fp32 embeddings).
        - ``places``: name candidates with country / region / town. ``progress``: progress bars while
          building (gallery and prompt embeddings).
        - ``gallery``: (N, 2) lat/lon to search, for a head that searches a GPS gallery.
        - ``allow_download``: let a hub repository or backbone be downloaded (default: only local copies and
          the Hugging Face cache, or ``GEOSCOPE_DOWNLOAD=1``).
        - named models only: ``cache``, ``towns_min_population``, ``templates``, ``warm`` (see
          ``pretrained.load_parts``).
        """
        unknown = sorted(set(options) - set(NAMED_MODEL_OPTIONS))
        if unknown:
            raise InputError(
                f"from_pretrained takes no keyword {unknown[0]!r}; it takes encoder, weights, precision, places, "
                f"progress, gallery, allow_download and, for named models, {', '.join(NAMED_MODEL_OPTIONS)}"
            )
        text = str(name_or_dir)
        prefix = next((p for p in HUB_PREFIXES if text.startswith(p)), None)
        path = Path(name_or_dir).expanduser()
        if prefix is None and not path.is_dir():
            if path.exists() or os.sep in text:
                raise InputError(f"{name_or_dir} is not a model directory (expected a folder with {CONFIG})")
            enc, head, meta = load_parts(text, weights=weights, precision=precision, progress=progress,
                                         gallery=gallery, encoder=encoder, allow_download=allow_download, **options)
            return cls(enc, head, None, name=meta["name"], meta=meta, places=places)
        where = f"the model folder {path}"
        if prefix is not None:
            repo = text[len(prefix):]
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise InputError(f"{text!r}: a model on the Hugging Face hub is written hf-hub:ORG/NAME")
            where = f"the hub model {repo}"
            path = resolve_hub(repo, allow_download)
            if encoder is not None and not isinstance(encoder, (str, os.PathLike)):
                allow_download = None  # spent on the model itself; the encoder is already built
        if options:
            raise InputError(f"{sorted(options)[0]}= applies to named pretrained models, not to {where}")
        return cls._load_dir(path, encoder=encoder, weights=weights, precision=precision, places=places,
                             gallery=gallery, allow_download=allow_download, where=where)

    @classmethod
    def _load_dir(cls, path: Path, encoder=None, weights=None, precision: str | None = None, places: bool = True,
                  gallery=None, allow_download: bool | None = None, where: str | None = None) -> "Geolocator":
        from safetensors import SafetensorError  # torch
        from safetensors.torch import load_file

        from geoscope.heads.base import load_head_state  # torch

        where = where or f"the model folder {path}"
        given = encoder is not None and not isinstance(encoder, (str, os.PathLike))
        if encoder is not None and weights is not None:
            raise InputError(f"give {where} either encoder= or weights=, not both: each says where its backbone is")
        if given and (precision is not None or allow_download is not None):
            raise InputError("precision= and allow_download= apply when geoscope builds the encoder, not to an "
                             "encoder you pass; build it at that precision instead")
        if weights is not None and not Path(weights).expanduser().is_dir():
            raise InputError(f"weights= points to {weights}, which is not a folder holding the backbone's weights")
        if precision is not None and precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        cfg_path = path / CONFIG
        if not cfg_path.is_file():
            raise InputError(f"model directory {path} has no {CONFIG}")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{cfg_path} is not readable JSON: {exc}") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise InputError(f"{cfg_path} is not a geoscope model config (format {FORMAT!r} expected)")
        files = config.get("files") or {}
        for required in [WEIGHTS] + ([CELLS] if config.get("cells") else []):
            if required not in files:
                raise InputError(f"{cfg_path} records no hash for {required}; the model directory is incomplete")
        for fname in files:
            if not (path / fname).is_file():
                raise InputError(f"model directory {path} is missing {fname}")
        for fname, digest in files.items():
            f = path / fname
            if _sha256(f) != digest:
                raise InputError(
                    f"{f} does not match the SHA-256 recorded in {CONFIG}: the file was changed or damaged"
                )
        try:
            state = load_file(str(path / WEIGHTS))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path / WEIGHTS} is not a readable safetensors file: {exc}") from None
        head = build_head(config["head"])
        try:
            load_head_state(head, state)
        except RuntimeError as exc:
            raise InputError(f"{path / WEIGHTS} does not fit the head described in {CONFIG}: {exc}") from None
        if gallery is not None:
            if not type(head).uses_gallery:
                raise InputError(f"gallery= applies to heads that search a GPS gallery, not to the {head.kind} head "
                                 f"of {where}")
            head.set_gallery(gallery)
        cells = None
        if config.get("cells"):
            from geoscope.geo.cells import load_cells

            cells = load_cells(path / config["cells"])
        calibration = None
        if config.get("calibration"):  # models trained before calibration existed have none
            cal_path = path / config["calibration"]
            if config["calibration"] not in files:
                raise InputError(f"{cfg_path} records no hash for {config['calibration']}; the model directory is incomplete")
            try:
                cal_doc = json.loads(cal_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{cal_path} is not readable JSON: {exc}") from None
            calibration = Calibration.from_dict(cal_doc, where=str(cal_path))
        if isinstance(encoder, os.PathLike):
            encoder = str(encoder)
        if encoder is None and weights is None and (path / ENCODER_DIR).is_dir():
            weights = path / ENCODER_DIR  # a model folder that carries its own encoder (geoscope demo's overhead model)
        geo = cls(encoder if encoder is not None else config.get("encoder"), head, cells,
                  name=config.get("name"), meta=config.get("meta"), places=places, calibration=calibration)
        if weights is not None:
            if not geo.encoder_name:
                raise InputError(f"{where} records no encoder, so weights= has no backbone to read")
            geo._encoder_source = str(Path(weights).expanduser())
        geo._encoder_options = {k: v for k, v in (("precision", precision), ("allow_download", allow_download))
                                if v is not None}
        return geo


def upload_to_hub(folder: Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                  commit_message: str | None = None) -> str:
    """Upload a saved model folder to the Hugging Face hub repository ``repo_id`` (created if needed).

    Training state and hidden or temporary files are left out. Returns the repository URL; any failure
    is one ``GeoscopeError`` sentence.
    """
    optional.require("huggingface_hub", "pushing to the Hugging Face hub")
    from huggingface_hub import HfApi  # network stack: only when pushing
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise InputError(f"a hub repository is written ORG/NAME (or NAME under your account), got {repo_id!r}")
    if not (folder / CONFIG).is_file():
        raise InputError(f"{folder} holds no saved model ({CONFIG} is missing)")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=str(getattr(url, "repo_id", repo_id)), folder_path=str(folder),
                          commit_message=commit_message or "Upload geoscope model", ignore_patterns=NOT_SHIPPED)
    except Exception as exc:  # noqa: BLE001 - network, authentication, permissions: one sentence
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeoscopeError(f"could not push {folder} to the Hugging Face hub repository {repo_id}: {reason}") from None
    return str(url)

"""What ``-m/--model``, ``-e/--encoder``, ``--weights`` and ``--precision`` load (see ``options.py``).

One precision vocabulary (``auto``, ``fp32``, ``bf16``, ``int8``), passed as it is to
``Geolocator.from_pretrained`` and ``create_encoder``, which choose how each backbone runs it.
"""

from __future__ import annotations

from pathlib import Path

from geoscope.errors import InputError


def load_encoder(name: str, weights: str | None = None, precision: str | None = "fp32"):
    """An image encoder by name (registry name, hf-hub:ORG/NAME or a local directory) at a precision,
    its weights taken from the folder ``weights`` when given (CLIP backbones only)."""
    from geoscope.encoders import create_encoder, list_encoders

    precision = precision or "fp32"
    if weights is None:
        return create_encoder(name, precision=precision).eval()
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise InputError(f"--weights points to {weights}, which is not a folder")
    family = {info.name: info.family for info in list_encoders()}.get(name)
    hub_or_folder = family is None and (str(name).startswith(("hf:", "hf-hub:")) or Path(name).expanduser().is_dir())
    if family != "clip" and not hub_or_folder:
        raise InputError(f"--weights applies to CLIP encoders; {name}'s weights come with its Python package")
    # the encoder is still the one named, wherever its weights were read from
    return create_encoder(str(folder), name=str(name), precision=precision).eval()


def load_geolocator(model: str, weights: str | None = None, precision: str | None = None, progress: bool = True,
                    warm: int | None = None):
    """The Geolocator for ``-m/--model``: a named pretrained model or a model directory.

    ``weights`` / ``precision`` apply to the backbone of either; unset, a named model uses its
    own default (auto) and a model directory runs its encoder at fp32. ``warm``: the batch size the
    command encodes first, so a named model's backbone starts compiling for it while its head loads.
    """
    from geoscope.geolocator import HUB_PREFIXES, Geolocator

    if weights is not None and not Path(weights).expanduser().is_dir():
        raise InputError(f"--weights points to {weights}, which is not a folder")
    options: dict = {"weights": weights, "precision": precision}
    if not Path(model).expanduser().is_dir():
        options["progress"] = progress
        if warm is not None and not str(model).startswith(HUB_PREFIXES):  # a named model
            options["warm"] = warm
    return Geolocator.from_pretrained(model, **{k: v for k, v in options.items() if v is not None or k == "progress"})

"""What ``-m/--model``, ``-e/--encoder``, ``--weights`` and ``--precision`` load (see ``options.py``).

One precision vocabulary, mapped to what the library takes: a named pretrained model gets
``precision=`` and ``weights=`` as they are; an encoder (``embed``, or the encoder recorded in a
model directory) is created at ``dtype`` float32 or bfloat16, and int8 is dynamic quantisation of
its linear layers, as for the named models.
"""

from __future__ import annotations

from pathlib import Path

from geoscope.errors import InputError


def load_encoder(name: str, weights: str | None = None, precision: str | None = "fp32"):
    """An image encoder by name (registry name, hf:ORG/NAME or a local directory) at a precision,
    its weights taken from the folder ``weights`` when given."""
    from geoscope.encoders import create_encoder, list_encoders
    from geoscope.pretrained import quantize_int8, resolve_precision

    precision = resolve_precision(precision or "fp32")
    kwargs = {"dtype": "bfloat16" if precision == "bf16" else "float32"}
    if weights is None:
        encoder = create_encoder(name, **kwargs)
    else:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise InputError(f"--weights points to {weights}, which is not a folder")
        family = {info.name: info.family for info in list_encoders()}.get(name)
        if family == "clip":
            encoder = create_encoder(name, source=folder, **kwargs)
        elif family is None and (str(name).startswith(("hf:", "hf-hub:")) or Path(name).expanduser().is_dir()):
            encoder = create_encoder(str(folder), **kwargs)
            encoder.name = str(name)  # the encoder is still the one named, wherever its weights were read from
        else:
            raise InputError(f"--weights applies to CLIP encoders; {name}'s weights come with its Python package")
    if precision == "int8":
        quantize_int8(encoder)
    return encoder.eval()


def load_geolocator(model: str, weights: str | None = None, precision: str | None = None, progress: bool = True):
    """The Geolocator for ``-m/--model``: a named pretrained model or a model directory.

    ``weights`` / ``precision`` apply to the backbone of either; unset, a named model uses its
    own default (auto) and a model directory runs its encoder at fp32.
    """
    from geoscope.geolocator import Geolocator

    if not Path(model).expanduser().is_dir():
        options: dict = {"progress": progress}
        if weights is not None:
            options["weights"] = weights
        if precision is not None:
            options["precision"] = precision
        return Geolocator.from_pretrained(model, **options)
    geo = Geolocator.from_pretrained(model)
    if weights is None and precision is None:
        return geo
    if not geo.encoder_name:
        raise InputError(f"model {model} has no image encoder, so --weights and --precision do not apply to it")
    encoder = load_encoder(geo.encoder_name, weights, precision or "fp32")
    return Geolocator(encoder, geo.head, geo.cells, name=geo.name, meta=geo.meta, places=geo.places)

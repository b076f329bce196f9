"""The geoscope CLI vocabulary: every option that more than one command takes, defined once.

Commands build their parsers from these (in the manner of rasterio's ``rio/options.py``), so the
same thing is said the same way everywhere:

- ``-o/--output``: what a command writes (a file or a folder, per command);
- ``-m/--model`` with ``--weights DIR`` and ``--precision {auto,fp32,bf16,int8}`` wherever a
  geolocator is loaded; ``-e/--encoder`` with the same ``--weights`` and ``--precision`` where only
  an image encoder is (``embed``);
- ``-k/--top-k``, ``--json``, ``--no-progress``, ``--batch-size``, ``--workers``, ``--seed``;
- ``--bbox SOUTH,WEST,NORTH,EAST``: lat-first like every coordinate in geoscope, parsed into
  ``geoscope.geo.bbox.BBox``; ``LAT,LON`` pairs (``--truth``, ``--claim``); ``--at-km KM,...``
  (distance thresholds) is not ``--thresholds-file FILE`` (verification thresholds JSON);
- the dataset options (``--preset``, ``--images``, ``--split-name``, column names, ``--coords``,
  ``--sidecar``) shared by ``dataset`` and ``embed``.

``GeoscopeParser`` is the parser class of every geoscope parser. Its help shows each option's
default; it accepts the old spellings registered with ``deprecate`` for one release (hidden from
help, with a one-line note on stderr); and it lets coordinate options take negative numbers
without an ``=`` (``--bbox -34,150,-33,152``).

``tests/test_cli_vocabulary.py`` walks every command and holds it to these rules.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.encoders.precision import PRECISIONS

__all__ = [
    "PRECISIONS",
    "GeoscopeParser",
    "HelpFormatter",
    "add_batch_size",
    "add_bbox",
    "add_dataset_source",
    "add_encoder",
    "add_json",
    "add_model",
    "add_no_progress",
    "add_output",
    "add_points",
    "add_seed",
    "add_top_k",
    "add_workers",
    "bbox",
    "bounds_to_bbox",
    "dataset_source_kwargs",
    "deprecate",
    "float_list",
    "fractions",
    "int_list",
    "km_list",
    "latlon",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_fraction",
]


# --- the parser --------------------------------------------------------------------------------------


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``(default: X)`` after every option whose default is a value
    (not None, not False) and whose help does not already say what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            text
            and text is not argparse.SUPPRESS
            and "default" not in text.lower()
            and default is not None
            and default is not False
            and default is not argparse.SUPPRESS
            and default != []
        ):
            if isinstance(default, (list, tuple)):
                return text + f" (default: {','.join(str(v) for v in default)})"
            return text + " (default: %(default)s)"
        return text


@dataclass(frozen=True)
class _Alias:
    new: str
    convert: Callable[[str], str] | None
    hint: str


# a value that starts like a negative number and lists several: -34,150,-33,152 or -33.9,151.2
_SIGNED_LIST = re.compile(r"^-\.?\d[\d.eE+\-]*(,\s*[-+]?\.?\d[\d.eE+\-]*)+$")


class GeoscopeParser(argparse.ArgumentParser):
    """The parser class of every geoscope parser (subparsers inherit it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.deprecated_aliases: dict[str, _Alias] = {}

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None):  # type: ignore[override]
        arg_list = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._rewrite(arg_list), namespace)

    def _rewrite(self, args: list[str]) -> list[str]:
        """Old spellings to new ones (with a note on stderr); ``--opt -1,2`` to ``--opt=-1,2`` for
        options that take signed lists. Stops at ``--`` and at the first subcommand name."""
        out: list[str] = []
        subcommands = self._subcommand_names()
        i = 0
        while i < len(args):
            token = args[i]
            if token == "--" or token in subcommands:
                out.extend(args[i:])
                break
            name, eq, value = token.partition("=")
            alias = self.deprecated_aliases.get(name) if token.startswith("--") else None
            if alias is not None:
                print(f"geoscope: note: {name} is deprecated and will be removed in the next release; "
                      f"use {alias.hint or alias.new}", file=sys.stderr)
                if not eq:
                    if i + 1 >= len(args):
                        self.error(f"argument {name}: expected one argument")
                    value = args[i + 1]
                    i += 1
                if alias.convert is not None:
                    try:
                        value = alias.convert(value)
                    except (argparse.ArgumentTypeError, InputError, ValueError) as exc:
                        self.error(f"argument {name}: {exc}")
                out.append(f"{alias.new}={value}")
            elif (not eq and self._takes_signed_list(token) and i + 1 < len(args)
                  and _SIGNED_LIST.match(args[i + 1])):
                out.append(f"{token}={args[i + 1]}")
                i += 1
            else:
                out.append(token)
            i += 1
        return out

    def _subcommand_names(self) -> set[str]:
        names: set[str] = set()
        for action in self._actions:
            if action.nargs == argparse.PARSER and action.choices:
                names.update(action.choices)
        return names

    def _takes_signed_list(self, option: str) -> bool:
        action = self._option_string_actions.get(option)
        return action is not None and getattr(action.type, "signed_list", False)


def deprecate(parser: argparse.ArgumentParser, old: str, new: str, convert: Callable[[str], str] | None = None,
              hint: str = "") -> None:
    """Accept ``old VALUE`` as ``new VALUE`` (after ``convert``) for one release, hidden from help.

    ``old`` must not be an option of ``parser``; ``new`` must be one. Every alias takes a value.
    """
    if not isinstance(parser, GeoscopeParser):
        raise TypeError("deprecate() needs a GeoscopeParser")
    if old in parser._option_string_actions:
        raise ValueError(f"{old} is a current option of {parser.prog}, not an old spelling")
    if new not in parser._option_string_actions:
        raise ValueError(f"{parser.prog} has no option {new} for {old} to stand for")
    parser.deprecated_aliases[old] = _Alias(new, convert, hint)


# --- value types ---------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), got {value}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or a positive number, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """argparse type: a number between 0 and 1."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def float_list(text: str, n: int | None = None, name: str = "value") -> list[float]:
    """``'a,b,c'`` as floats (``n`` of them when given); an argparse type error names ``name``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise argparse.ArgumentTypeError(f"{name} needs {n} comma-separated numbers, got {len(values)}")
    return values


def int_list(text: str) -> list[int]:
    """``'5000,2000,1000'``: positive whole numbers."""
    return [positive_int(t.strip()) for t in text.split(",")]


def fractions(text: str) -> list[float]:
    """``'0.8,0.1,0.1'``: shares of a whole."""
    return float_list(text, None, "fractions")


def km_list(text: str) -> list[float]:
    """``'1,25,200'``: distances in km, each positive."""
    values = float_list(text, None, "distances")
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"distances must be positive km, got {text}")
    return values


def latlon(text: str) -> tuple[float, float]:
    """``'LAT,LON'`` in degrees."""
    lat, lon = float_list(text, 2, "LAT,LON")
    if not -90.0 <= lat <= 90.0:
        raise argparse.ArgumentTypeError(f"latitude {lat:g} is outside [-90, 90] (write LAT,LON)")
    if not -180.0 <= lon <= 180.0:
        raise argparse.ArgumentTypeError(f"longitude {lon:g} is outside [-180, 180]")
    return lat, lon


def bbox(text: str) -> BBox:
    """``'SOUTH,WEST,NORTH,EAST'`` as a ``BBox``."""
    try:
        return BBox.parse(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("bounding box ").removeprefix("bounding box: ")) from None


for _t in (latlon, bbox, km_list):
    _t.signed_list = True  # type: ignore[union-attr]  # a marker attribute on plain functions, read by _takes_signed_list


def bounds_to_bbox(text: str) -> str:
    """Old ``--bounds WEST,SOUTH,EAST,NORTH`` (lon-first) as the new ``--bbox`` value."""
    west, south, east, north = float_list(text, 4, "--bounds WEST,SOUTH,EAST,NORTH")
    return str(BBox.from_bounds(west, south, east, north))


# --- options -------------------------------------------------------------------------------------------

Container = Any  # an ArgumentParser or an argument group


def add_output(p: Container, help: str, metavar: str = "FILE", required: bool = True,
               default: str | None = None) -> argparse.Action:
    """``-o/--output``: the file or folder a command writes."""
    return p.add_argument("-o", "--output", metavar=metavar, required=required, default=default, help=help)


_MODEL_HELP = ("a named pretrained model (see geoscope models) or a model directory written by geoscope train")
_WEIGHTS_HELP = ("local folder with the backbone's weights, for a model whose backbone is a CLIP model (e.g. a "
                 "copy of openai/clip-vit-large-patch14 for geoclip; also GEOSCOPE_CLIP_L14=DIR) "
                 "(default: the Hugging Face cache or $GEOSCOPE_WEIGHTS)")
_PRECISION_HELP = ("backbone precision: fp32 (reference answers), bf16, int8 (ONNX Runtime's dynamic quantisation: "
                   "int8 weights, activations quantised per batch; the fastest one-photo start, opt-in), or auto "
                   "(bf16 where this CPU computes it natively, else fp32)")


def add_model(p: Container, default: str | None = None, required: bool = False, help: str = _MODEL_HELP) -> None:
    """``-m/--model MODEL`` with ``--weights DIR`` and ``--precision``: wherever a geolocator is loaded."""
    p.add_argument("-m", "--model", metavar="MODEL", default=default, required=required, help=help)
    p.add_argument("--weights", metavar="DIR", default=None, help=_WEIGHTS_HELP)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help=_PRECISION_HELP + " (default: auto for a named model; fp32 for a model directory, "
                   "like geoscope embed)")


def add_encoder(p: Container, default: str = "efficientnet-lite0") -> None:
    """``-e/--encoder NAME`` with ``--weights DIR`` and ``--precision``: where only an image encoder is loaded."""
    p.add_argument("-e", "--encoder", metavar="ENCODER", default=default,
                   help="image encoder: a name from geoscope encoders, hf:ORG/NAME (a CLIP model on the Hugging "
                   "Face hub) or a local model directory")
    p.add_argument("--weights", metavar="DIR", default=None,
                   help="local folder with the encoder's weights, for a CLIP encoder given by name "
                   "(default: the Hugging Face cache or $GEOSCOPE_WEIGHTS)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=_PRECISION_HELP)


def add_top_k(p: Container, default: int = 5, help: str = "candidate places per image") -> argparse.Action:
    return p.add_argument("-k", "--top-k", type=positive_int, default=default, metavar="K", help=help)


def add_json(p: Container, help: str = "print the result as JSON") -> argparse.Action:
    return p.add_argument("--json", action="store_true", help=help)


def add_no_progress(p: Container) -> argparse.Action:
    return p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def add_batch_size(p: Container, default: int | None, help: str = "images per forward pass") -> argparse.Action:
    return p.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help=help)


def add_workers(p: Container, default: int | None, help: str) -> argparse.Action:
    return p.add_argument("--workers", type=non_negative_int, default=default, metavar="N", help=help)


def add_seed(p: Container, help: str = "random seed") -> argparse.Action:
    return p.add_argument("--seed", type=int, default=0, help=help)


class _BBoxAction(argparse.Action):
    def __init__(self, *args: Any, antimeridian: bool = True, **kwargs: Any) -> None:
        self.antimeridian = antimeridian
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values.crosses_antimeridian and not self.antimeridian:
            raise argparse.ArgumentError(
                self, f"{values} crosses the antimeridian (west {values.west:g} > east {values.east:g}), "
                "which this command does not support")
        setattr(namespace, self.dest, values)


def add_bbox(p: Container, help: str, required: bool = False, antimeridian: bool = True) -> argparse.Action:
    """``--bbox SOUTH,WEST,NORTH,EAST`` (degrees, lat-first) as a ``BBox``."""
    return p.add_argument("--bbox", type=bbox, action=_BBoxAction, antimeridian=antimeridian, required=required,
                          default=None, metavar="SOUTH,WEST,NORTH,EAST", help=help)


def add_points(p: Container, help: str, required: bool = True) -> argparse.Action:
    """``--points FILE``: a CSV / Parquet table of points (lat, lon and maybe id columns)."""
    return p.add_argument("--points", metavar="FILE", required=required, default=None, help=help)


_PRESETS = ("im2gps3k", "yfcc4k", "mp16", "osv5m")


def add_dataset_source(p: argparse.ArgumentParser, dataset_help: str | None = None) -> None:
    """The DATASET argument and the options of ``open_dataset`` (shared by ``dataset`` and ``embed``)."""
    p.add_argument("dataset", metavar="DATASET",
                   help=dataset_help or "a folder of images, a CSV / Parquet manifest, or WebDataset .tar shard(s) "
                   "(path, glob or {000..009})")
    g = p.add_argument_group("dataset options")
    g.add_argument("--preset", choices=_PRESETS, default=None, help="column layout of a public benchmark's manifest")
    g.add_argument("--images", metavar="DIR", default=None,
                   help="image folder for a manifest (default: the manifest's folder)")
    g.add_argument("--split-name", metavar="NAME", default=None,
                   help="split the manifest describes, for layouts with images/SPLIT/ (default: the manifest's name)")
    g.add_argument("--id-col", metavar="NAME", default=None, help="manifest column with the sample id")
    g.add_argument("--lat-col", metavar="NAME", default=None,
                   help="manifest column (or shard JSON key) with the latitude (default: found by name)")
    g.add_argument("--lon-col", metavar="NAME", default=None,
                   help="manifest column (or shard JSON key) with the longitude (default: found by name)")
    g.add_argument("--path-col", metavar="NAME", default=None, help="manifest column with the image path")
    g.add_argument("--coords", choices=("auto", "exif", "sidecar", "none"), default="auto",
                   help="where a folder's coordinates come from; auto: the sidecar if given, else EXIF GPS "
                   "(default: auto)")
    g.add_argument("--sidecar", metavar="CSV", default=None, help="CSV of file name or path, lat, lon for a folder")


def dataset_source_kwargs(args: argparse.Namespace) -> dict:
    """``open_dataset`` keyword arguments from the options ``add_dataset_source`` added."""
    return {"preset": args.preset, "images": args.images, "split": args.split_name, "id_col": args.id_col,
            "lat_col": args.lat_col, "lon_col": args.lon_col, "path_col": args.path_col, "coords": args.coords,
            "sidecar": args.sidecar}

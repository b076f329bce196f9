"""The ``geoscope`` command.

Each subcommand lives in its own module in this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returning an exit code or
None). Modules are discovered, so adding a command is adding a file. Options that more than one
command takes come from ``options.py`` (the CLI vocabulary); ``tests/test_cli_vocabulary.py``
holds every command to it. Heavy imports (torch, ...) belong inside the handler, so
``geoscope --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from geoscope import __version__, settings
from geoscope.cli.options import GeoscopeParser
from geoscope.errors import GeoscopeError


def build_parser() -> argparse.ArgumentParser:
    parser = GeoscopeParser(
        prog="geoscope",
        description="Geolocate images from their pixels. geoscope COMMAND --help documents each command.",
    )
    parser.add_argument("--version", action="version", version=f"geoscope {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except GeoscopeError as exc:
        print(f"geoscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("geoscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become one line
        if settings.flag("GEOSCOPE_DEBUG"):
            raise
        print(
            f"geoscope: error: {type(exc).__name__}: {exc} (set GEOSCOPE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return int(rc or 0)

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
from geoscope.errors import GeoscopeError, storage_error


def _command_module(argv: list[str] | None) -> str | None:
    """The module of the command ``argv`` names (``filter-outdoor`` -> ``filter_outdoor``), or None."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        return None
    name = args[0].replace("-", "_")
    known = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return name if name in known else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only`` (a module of this package), just that command, so running
    one command imports one module (``geoscope --help`` and unknown commands get them all)."""
    parser = GeoscopeParser(
        prog="geoscope",
        description="Geolocate images from their pixels. geoscope COMMAND --help documents each command.",
    )
    parser.add_argument("--version", action="version", version=f"geoscope {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or (only is not None and info.name != only):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_command_module(argv))
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
    except OSError as exc:  # a full disk, a quota, a read-only folder, no permission: one sentence naming the path
        err = storage_error(exc, writing=False)
        if err is None or settings.flag("GEOSCOPE_DEBUG"):
            return _unexpected(exc)
        print(f"geoscope: error: {err}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become one line
        return _unexpected(exc)
    return int(rc or 0)


def _unexpected(exc: Exception) -> int:
    """An error no layer turned into a sentence: one line (a traceback with GEOSCOPE_DEBUG=1)."""
    if settings.flag("GEOSCOPE_DEBUG"):
        raise exc
    print(f"geoscope: error: {type(exc).__name__}: {exc} (set GEOSCOPE_DEBUG=1 for a traceback)", file=sys.stderr)
    return 1

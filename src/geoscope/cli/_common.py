"""Output helpers shared by the subcommands: JSON, tables. Options live in ``options.py``."""

from __future__ import annotations

import json
import sys
from typing import Any
from collections.abc import Callable

import numpy as np

from geoscope.cli.options import add_json as add_json_flag  # noqa: F401  (old name, kept for one release)
from geoscope.cli.options import float_list, positive_int  # noqa: F401  (moved to options.py)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_default, ensure_ascii=False)
    sys.stdout.write("\n")


def emit(result: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON or through ``render`` (a human-readable table)."""
    if as_json:
        print_json(result)
    else:
        print(render(result))


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

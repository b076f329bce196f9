"""geoscope encoders: which backbones exist, their size, source, licence, and whether they work here."""

from __future__ import annotations

from geoscope.cli._common import emit, format_table
from geoscope.cli.options import add_json


def register(subparsers) -> None:
    p = subparsers.add_parser("encoders", help="list the pretrained image encoders and whether they work offline here")
    add_json(p)
    p.set_defaults(func=run)


def _render(rows: list[dict]) -> str:
    table = format_table(
        ["name", "dim", "input", "offline", "licence", "source"],
        [[r["name"], r["dim"], r["input_size"], "yes" if r["offline"] else "no", r["licence"], r["source"]] for r in rows],
    )
    return table + ("\n\nAlso: hf-hub:ORG/NAME (alias hf:ORG/NAME; any CLIP model on the Hugging Face hub) "
                    "or a local model directory.")


def run(args) -> int:
    from geoscope.encoders import list_encoders

    emit([info.to_dict() for info in list_encoders()], args.json, _render)
    return 0

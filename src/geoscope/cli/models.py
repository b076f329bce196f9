"""geoscope models: the named pretrained geolocators, their source, size, licence, and whether they work here."""

from __future__ import annotations

from geoscope.cli._common import emit, format_table
from geoscope.cli.options import add_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the named pretrained geolocators and whether their weights are on this machine",
        description="List the named pretrained models (geoscope locate --model NAME). A model directory written "
        "by geoscope train always works offline.",
    )
    add_json(p)
    p.set_defaults(func=run)


def _render(rows: list[dict]) -> str:
    table = format_table(
        ["name", "kind", "available", "licence", "size", "source"],
        [[r["name"], r["kind"], "yes" if r["available"] else "no", r["licence"], r["size"], r["source"]] for r in rows],
    )
    notes = [f"{r['name']}: {r['missing']}" for r in rows if not r["available"] and r.get("missing")]
    tail = "\n\nAlso: zeroshot:ENCODER (zero-shot prompts over any CLIP with a text tower, e.g. zeroshot:hf:ORG/NAME " \
           "or a local directory), or a model directory saved by geoscope train."
    return table + ("\n\n" + "\n".join(notes) if notes else "") + tail


def run(args) -> int:
    from geoscope.pretrained import list_models

    emit([info.to_dict() for info in list_models()], args.json, _render)
    return 0

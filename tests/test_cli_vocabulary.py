"""One CLI vocabulary: every command and sub-command of ``geoscope`` is held to the same rules.

``vocabulary_problems(parser)`` walks a parser tree and lists every broken rule; it is run on the
real ``geoscope`` parser (which must have none) and on small bad parsers (each must be caught), so
a future command that breaks a rule fails here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from geoscope.cli import build_parser
from geoscope.cli.options import (
    PRECISIONS,
    GeoscopeParser,
    add_json,
    add_model,
    add_output,
    add_top_k,
    bbox,
    non_negative_int,
    positive_int,
)

# spellings of "where the output goes" other than -o/--output
_OTHER_OUTPUT = re.compile(r"^(-O|--out|--outdir|--outfile|--out[-_]\w+|--output[-_]\w+|--dest|--destination)$")
# options that go together: each option of a pair needs the other, and never another partner
_PAIRS = {"-o": "--output", "-m": "--model", "-k": "--top-k", "-e": "--encoder"}
_MODEL_OPTIONS = {"--model", "--encoder", "--weights", "--precision"}
# other words for things the vocabulary already names
_SYNONYMS = {"--dtype": "--precision", "--bounds": "--bbox", "--extent": "--bbox", "--topk": "-k/--top-k",
             "--weights-dir": "--weights", "--quiet": "--no-progress", "--progress": "--no-progress"}


def walk(parser: argparse.ArgumentParser, path: str = "geoscope") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser in the tree, with the command line that reaches it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def _is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


# value types that are the same kind of value (a whole-number count; whether 0 is allowed is the command's rule)
_SAME_KIND = {non_negative_int: positive_int}
# commands that print no result (a server), so have no --json
_NO_RESULT = {"geoscope serve"}


def _signature(action: argparse.Action) -> tuple:
    """What kind of value an option takes: its action class, value type, count and constant."""
    return (type(action).__name__, _SAME_KIND.get(action.type, action.type), action.nargs, action.const)


def vocabulary_problems(root: argparse.ArgumentParser) -> list[str]:
    problems: list[str] = []
    seen: dict[str, tuple[tuple, str]] = {}  # option -> (signature, first command using it)
    for where, parser in walk(root):
        if "`" in parser.format_help():
            problems.append(f"{where}: backtick in its help")
        formatter = parser._get_formatter()
        options: set[str] = set()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                listed = {choice.dest: choice.help for choice in action._choices_actions}
                for command in action.choices:
                    if not listed.get(command):
                        problems.append(f"{where} {command}: no help line in the command list")
                continue
            name = "/".join(action.option_strings) or action.metavar or action.dest
            opts = set(action.option_strings)
            options |= opts
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{where} {name}: no help text")
                continue
            shown = formatter._expand_help(action)
            default = action.default
            if (action.nargs != 0 and default not in (None, False, [], argparse.SUPPRESS)
                    and "default" not in shown.lower()):
                problems.append(f"{where} {name}: help does not show the default {default!r}")
            for opt in opts:
                if _OTHER_OUTPUT.match(opt):
                    problems.append(f"{where} {name}: output options are spelled -o/--output")
                if opt in _SYNONYMS:
                    problems.append(f"{where} {name}: the vocabulary calls this {_SYNONYMS[opt]}")
            if "--bbox" in opts and (action.metavar != "SOUTH,WEST,NORTH,EAST" or action.type is not bbox):
                problems.append(f"{where} {name}: bounding boxes are --bbox SOUTH,WEST,NORTH,EAST (options.bbox)")
            if action.dest in ("out", "output", "out_dir", "output_dir") and opts != {"-o", "--output"}:
                problems.append(f"{where} {name}: output options are spelled -o/--output")
            for short, long in _PAIRS.items():
                if (short in opts or long in opts) and opts != {short, long}:
                    problems.append(f"{where} {name}: must be exactly {short}/{long}")
            if "--precision" in opts and tuple(action.choices or ()) != tuple(PRECISIONS):
                problems.append(f"{where} {name}: choices must be {', '.join(PRECISIONS)}")
            for opt in sorted(o for o in opts if o.startswith("--")):
                sig = _signature(action)
                if opt in seen and seen[opt][0] != sig:
                    problems.append(f"{where} {opt}: takes another kind of value than in {seen[opt][1]} "
                                    f"({sig[:3]} vs {seen[opt][0][:3]}): give it another name or share one definition")
                seen.setdefault(opt, (sig, where))
        if not _is_leaf(parser):
            continue
        if "--json" not in options and where not in _NO_RESULT:
            problems.append(f"{where}: no --json")
        if options & _MODEL_OPTIONS:
            loader = "--model" if "--model" in options else "--encoder"
            for needed in (loader, "--weights", "--precision", "--no-progress"):
                if needed not in options:
                    problems.append(f"{where}: loads a model but has no {needed}")
            if "--model" in options and "--encoder" in options:
                problems.append(f"{where}: both --model and --encoder")
        aliases = getattr(parser, "deprecated_aliases", {})
        help_text = parser.format_help()
        for old, alias in aliases.items():
            if alias.new not in options:
                problems.append(f"{where}: old spelling {old} stands for {alias.new}, which it does not have")
            if old in options:
                problems.append(f"{where}: old spelling {old} is also a current option")
            if re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", help_text):
                problems.append(f"{where}: old spelling {old} shows in help")
    return list(dict.fromkeys(problems))


# --- the real parser -----------------------------------------------------------------------------------


def test_every_geoscope_command_speaks_the_vocabulary():
    assert vocabulary_problems(build_parser()) == []


def test_the_walk_reaches_every_command_and_sub_command():
    reached = {where for where, _ in walk(build_parser())}
    assert {"geoscope cells grid", "geoscope cells adaptive", "geoscope cells admin", "geoscope cells info",
            "geoscope dataset validate", "geoscope dataset split", "geoscope locate", "geoscope embed",
            "geoscope eval", "geoscope explain", "geoscope verify", "geoscope tiles", "geoscope train",
            "geoscope demo", "geoscope place", "geoscope models", "geoscope encoders"} <= reached


def _options(command: str) -> dict[str, argparse.Action]:
    parsers = dict(walk(build_parser()))
    return {o: a for a in parsers[f"geoscope {command}"]._actions for o in a.option_strings}


@pytest.mark.parametrize("command", ["locate", "explain", "verify", "eval"])
def test_model_loading_commands_take_model_weights_precision(command):
    opts = _options(command)
    assert {"-m", "--model", "--weights", "--precision", "--no-progress", "--json"} <= set(opts)
    assert opts["--precision"].choices == PRECISIONS == ("auto", "fp32", "bf16", "int8")


def test_embed_takes_an_encoder_with_the_same_weights_and_precision():
    opts = _options("embed")
    assert {"-e", "--encoder", "--weights", "--precision", "--no-progress"} <= set(opts)
    assert opts["--precision"].choices == PRECISIONS and opts["--precision"].default == "fp32"
    assert "--dtype" not in opts and "--model" not in opts


@pytest.mark.parametrize("command, what", [
    ("cells grid", "FILE"), ("cells adaptive", "FILE"), ("cells admin", "FILE"), ("dataset split", "DIR"),
    ("demo", "DIR"), ("embed", "STORE"), ("explain", "DIR"), ("tiles", "OUT"), ("train", "MODEL"),
    ("verify", "FILE"),
])
def test_commands_that_write_use_dash_o(command, what):
    action = _options(command)["-o"]
    assert action.option_strings == ["-o", "--output"] and action.metavar == what


def test_bbox_is_lat_first_everywhere():
    for command in ("cells grid", "tiles"):
        action = _options(command)["--bbox"]
        assert action.metavar == "SOUTH,WEST,NORTH,EAST"
        assert "--bounds" not in _options(command)


# --- the checker catches each broken rule ----------------------------------------------------------------


def _good() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    root = GeoscopeParser(prog="geoscope")
    sub = root.add_subparsers(dest="command")
    cmd = sub.add_parser("good", help="a command that follows every rule")
    add_model(cmd)
    add_output(cmd, help="file to write")
    add_top_k(cmd)
    cmd.add_argument("--no-progress", action="store_true", help="no progress bars")
    cmd.add_argument("--at-km", type=float, default=25.0, help="a distance")
    add_json(cmd)
    return root, sub


def test_the_checker_passes_a_good_parser():
    root, _ = _good()
    assert vocabulary_problems(root) == []


def _bad(build) -> list[str]:
    root, sub = _good()
    bad = sub.add_parser("bad", help="breaks one rule")
    bad.add_argument("--json", action="store_true", help="JSON")
    build(bad, sub)
    return vocabulary_problems(root)


@pytest.mark.parametrize("build, expected", [
    (lambda p, s: p.add_argument("--name", help="a `name` in RST"), "backtick"),
    (lambda p, s: setattr(p, "description", "see ``geoscope cells``"), "backtick"),
    (lambda p, s: p.add_argument("--rows", type=int), "no help text"),
    (lambda p, s: p.add_argument("image"), "no help text"),
    (lambda p, s: p.add_argument("--out", help="folder to write"), "-o/--output"),
    (lambda p, s: p.add_argument("-o", "--out", help="folder to write"), "-o/--output"),
    (lambda p, s: p.add_argument("--output-dir", help="folder to write"), "-o/--output"),
    (lambda p, s: p.add_argument("--output", help="file to write"), "exactly -o/--output"),
    (lambda p, s: p.add_argument("--top-k", type=int, default=5, help="candidates (default 5)"), "exactly -k/--top-k"),
    (lambda p, s: p.add_argument("-k", "--keep", help="keep"), "exactly -k/--top-k"),
    (lambda p, s: p.add_argument("--model", help="a model"), "exactly -m/--model"),
    (lambda p, s: [p.add_argument("-m", "--model", help="m"), p.add_argument("--no-progress", action="store_true",
                                                                             help="n")], "has no --weights"),
    (lambda p, s: p.add_argument("--precision", choices=["fp32", "fp16"], help="p"), "choices must be"),
    (lambda p, s: p.add_argument("--dtype", choices=["float32"], help="p"), "calls this --precision"),
    (lambda p, s: p.add_argument("--bounds", help="WEST,SOUTH,EAST,NORTH"), "calls this --bbox"),
    (lambda p, s: p.add_argument("--bbox", metavar="MIN_LON,MIN_LAT,MAX_LON,MAX_LAT", help="b"), "SOUTH,WEST"),
    (lambda p, s: p.add_argument("--at-km", metavar="FILE", help="a thresholds file"), "another kind of value"),
    (lambda p, s: p.add_argument("--at-km", type=float, nargs="+", help="distances"), "another kind of value"),
    (lambda p, s: s.add_parser("nojson", help="no --json"), "no --json"),
    (lambda p, s: s.add_parser("quiet"), "no help line"),
])
def test_the_checker_catches(build, expected):
    problems = _bad(build)
    assert any(expected in problem for problem in problems), problems


def test_the_checker_wants_defaults_shown():
    # a plain argparse parser does not show defaults: the checker says so
    root = argparse.ArgumentParser(prog="geoscope")
    root.add_argument("--rows", type=int, default=4, help="rows of cells")
    root.add_argument("--json", action="store_true", help="JSON")
    assert any("does not show the default 4" in p for p in vocabulary_problems(root))
    # geoscope's parser shows them by itself, and keeps a default the help already explains
    root = GeoscopeParser(prog="geoscope")
    root.add_argument("--rows", type=int, default=4, help="rows of cells")
    root.add_argument("--cols", type=int, default=3, help="columns (default: as many as rows)")
    root.add_argument("--json", action="store_true", help="JSON")
    text = root.format_help()
    assert "rows of cells (default: 4)" in text and "(default: as many as rows)" in text and "(default: 3)" not in text
    assert vocabulary_problems(root) == []


def test_the_checker_catches_an_old_spelling_that_shows_or_points_nowhere():
    root, _ = _good()
    cmd = dict(walk(root))["geoscope good"]
    alias = type("Alias", (), {"new": "--written", "convert": None, "hint": ""})
    cmd.deprecated_aliases["--out"] = alias()
    assert any("which it does not have" in p for p in vocabulary_problems(root))
    root, _ = _good()
    cmd = dict(walk(root))["geoscope good"]
    cmd.add_argument("--radius", type=float, help="radius in km (was --rad)")
    alias.new = "--radius"
    cmd.deprecated_aliases["--rad"] = alias()
    assert any("--rad shows in help" in p for p in vocabulary_problems(root))
    cmd.deprecated_aliases["--radius"] = alias()
    assert any("--radius is also a current option" in p for p in vocabulary_problems(root))


# --- old spellings -------------------------------------------------------------------------------------


def test_old_spellings_are_hidden_but_work_with_a_note(capsys):
    # tiles: --bounds was WEST,SOUTH,EAST,NORTH (lon-first); it becomes --bbox SOUTH,WEST,NORTH,EAST
    args = build_parser().parse_args(["tiles", "r.png", "--points", "p.csv", "--out", "o", "--size-km", "5",
                                      "--bounds", "-10,-20,30,40"])
    err = capsys.readouterr().err
    assert args.output == "o" and args.bbox.to_bounds() == (-10.0, -20.0, 30.0, 40.0)
    assert (args.bbox.south, args.bbox.west, args.bbox.north, args.bbox.east) == (-20.0, -10.0, 40.0, 30.0)
    assert err.count("deprecated") == 2 and "--bbox SOUTH,WEST,NORTH,EAST" in err
    args = build_parser().parse_args(["embed", "photos", "-o", "s", "--dtype", "bfloat16", "--split=test"])
    assert args.precision == "bf16" and args.split_name == "test"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["embed", "photos", "-o", "s", "--dtype", "float16"])
    assert exc.value.code == 2 and "--precision" in capsys.readouterr().err
    args = build_parser().parse_args(["explain", "x.jpg", "-m", "m", "--out", "d", "--thresholds", "t.json"])
    assert (args.output, args.thresholds_file) == ("d", "t.json")
    args = build_parser().parse_args(["verify", "x.jpg", "-m", "m", "--out=t.json", "--thresholds", "u.json"])
    assert (args.output, args.thresholds_file) == ("t.json", "u.json")
    args = build_parser().parse_args(["dataset", "split", "photos", "--out", "d"])
    assert args.output == "d"
    args = build_parser().parse_args(["demo", "--out", "d"])
    assert args.output == "d"


def test_coordinate_options_take_negative_numbers_without_equals():
    args = build_parser().parse_args(["cells", "grid", "--bbox", "-34,150,-33,152", "--rows", "1", "--cols", "1",
                                      "-o", "c.json"])
    assert (args.bbox.south, args.bbox.west, args.bbox.north, args.bbox.east) == (-34, 150, -33, 152)
    args = build_parser().parse_args(["explain", "x.jpg", "-m", "m", "-o", "d", "--truth", "-33.9,151.2"])
    assert args.truth == (-33.9, 151.2)
    args = build_parser().parse_args(["verify", "x.jpg", "-m", "m", "--claim", "-33.9,-70.5"])
    assert args.claim == (-33.9, -70.5)


def test_negative_values_after_other_options_are_left_to_argparse(capsys):
    with pytest.raises(SystemExit) as exc:  # --rows does not take a list: argparse's own error, exit 2
        build_parser().parse_args(["cells", "grid", "--bbox", "1,2,3,4", "--rows", "-1,2", "--cols", "1", "-o", "c"])
    assert exc.value.code == 2


def test_the_readme_command_lines_parse(capsys):
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("geoscope ")]
    lines += re.findall(r"`(geoscope [a-z]+ [^`]*-o [^`]*)`", readme)
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if argv[-1:] == ["--help"]:
            continue
        args = build_parser().parse_args(argv)  # exits 2 (failing the test) on a stale flag
        assert callable(args.func), line
    assert "deprecated" not in capsys.readouterr().err

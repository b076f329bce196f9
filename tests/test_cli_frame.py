"""The CLI frame: every subcommand has --help; errors are one line with exit code 1; usage errors exit 2."""

import subprocess
import sys

import pytest

from geoscope.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "geoscope" in out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_geoscope_error_is_one_line_exit_1():
    # A real subprocess: what a user sees, with no traceback.
    code = (
        "import sys, argparse\n"
        "from geoscope import cli\n"
        "from geoscope.errors import InputError\n"
        "def boom(args): raise InputError('points.csv: row 3 has lat=91.0, lon=0.0: latitude outside [-90, 90]')\n"
        "orig = cli.build_parser\n"
        "def bp():\n"
        "    p = orig(); sub = next(a for a in p._actions if a.dest == 'command')\n"
        "    sub.add_parser('boom').set_defaults(func=boom); return p\n"
        "cli.build_parser = bp\n"
        "sys.exit(cli.main(['boom']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "row 3" in lines[0] and "Traceback" not in r.stderr

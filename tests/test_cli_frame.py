"""The CLI frame: every command is listed and has --help; --version; usage errors exit 2; errors are
one line with exit code 1 and no traceback."""

import subprocess
import sys

import pytest

import geoscope
from geoscope.cli import build_parser, main

COMMANDS = ["cells", "crossview", "dataset", "demo", "embed", "encoders", "eval", "explain", "filter-outdoor", "locate",
            "models", "place", "serve", "tiles", "train", "verify"]


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action


def test_the_commands_are_the_modules_of_the_cli_package():
    assert sorted(_subcommands().choices) == COMMANDS


def test_top_level_help_lists_every_command_with_its_summary(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: geoscope ")
    summaries = {c.dest: c.help for c in _subcommands()._choices_actions}
    listing = " ".join(out.split())  # argparse wraps long summaries
    for name in COMMANDS:
        assert summaries[name], name
        assert f"{name} {' '.join(summaries[name].split())}" in listing, name


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: geoscope {name} ")


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"geoscope {geoscope.__version__}"
    r = subprocess.run([sys.executable, "-m", "geoscope", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"geoscope {geoscope.__version__}"


def test_unknown_command_is_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-command'" in err and err.startswith("usage: geoscope")


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_bad_option_value_is_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["locate", "x.jpg", "--top-k", "0"])
    assert exc.value.code == 2
    assert "argument -k/--top-k: expected a positive whole number, got 0" in capsys.readouterr().err


def _run_with_handler(handler_source: str, env=None) -> subprocess.CompletedProcess:
    """A real subprocess, so what a user sees: a command 'boom' whose handler runs handler_source."""
    code = (
        "import sys\n"
        "from geoscope import cli\n"
        "from geoscope.errors import InputError\n"
        f"def boom(args):\n    {handler_source}\n"
        "orig = cli.build_parser\n"
        "def bp(only=None):\n"
        "    p = orig(); sub = next(a for a in p._actions if a.dest == 'command')\n"
        "    sub.add_parser('boom').set_defaults(func=boom); return p\n"
        "cli.build_parser = bp\n"
        "sys.exit(cli.main(['boom']))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_geoscope_error_is_one_line_exit_1():
    r = _run_with_handler("raise InputError('points.csv: row 3 has lat=91.0, lon=0.0: latitude outside [-90, 90]')")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == "geoscope: error: points.csv: row 3 has lat=91.0, lon=0.0: latitude outside [-90, 90]"


def test_unexpected_error_is_one_line_exit_1_with_a_way_to_the_traceback():
    import os

    env = {k: v for k, v in os.environ.items() if k != "GEOSCOPE_DEBUG"}
    r = _run_with_handler("raise KeyError('lat')", env=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("geoscope: error: KeyError: 'lat'") and "GEOSCOPE_DEBUG=1" in lines[0]
    r = _run_with_handler("raise KeyError('lat')", env={**env, "GEOSCOPE_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_a_real_command_error_is_one_line_exit_1(tmp_path, capsys):
    rc = main(["cells", "info", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("geoscope: error: ") and err.count("\n") == 1


def test_running_one_command_builds_only_its_parser():
    from geoscope import cli

    assert cli._command_module(["filter-outdoor", "x"]) == "filter_outdoor"
    assert cli._command_module(["--help"]) is None and cli._command_module(["nosuch"]) is None
    assert cli._command_module([]) is None
    sub = next(a for a in cli.build_parser("locate")._actions if a.dest == "command")
    assert list(sub.choices) == ["locate"]
    full = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"locate", "train", "filter-outdoor"} <= set(full.choices)

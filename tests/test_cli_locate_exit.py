"""``geoscope locate`` ends its own process with ``os._exit`` once its answer is flushed (no piecewise
freeing of the model, no interpreter teardown), only when the process is the ``geoscope`` command."""

from __future__ import annotations

import os
import subprocess
import sys

from geoscope.cli import locate

# a process whose __main__ calls cli.main, like ``python -m geoscope`` and the console script
PROGRAM = """
import sys
from geoscope.cli import main
from geoscope.cli.locate import _finish
print("answer", flush=False)
rc = _finish(3)
print("after", rc)
"""


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GEOSCOPE_DEBUG"}
    return subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env={**env, **env_extra},
                          timeout=120)


def test_the_geoscope_process_ends_right_after_its_flushed_answer():
    fast = _run({})
    assert (fast.returncode, fast.stdout) == (3, "answer\n")  # flushed, then gone with the command's code
    debug = _run({"GEOSCOPE_DEBUG": "1"})  # the ordinary exit, for debugging
    assert (debug.returncode, debug.stdout) == (0, "answer\nafter 3\n")


def test_called_from_other_code_it_returns():
    assert not locate._is_the_geoscope_process()  # pytest's __main__ is not the geoscope command
    assert locate._finish(1) == 1

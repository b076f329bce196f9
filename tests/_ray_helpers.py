"""Helpers for the Ray tests: an encoder slow enough that a kill lands mid-job, and shard watching.

The Ray workers of the test session import this module (the session fixture puts ``tests/`` on their
``PYTHONPATH``), so encoders defined here travel to the actors by reference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from geoscope.encoders.base import Encoder
from geoscope.encoders.preprocess import ImageTransform


class SlowMean(Encoder):
    """An encoder whose output is an exact function of the pixels, taking ``delay`` seconds per batch."""

    name, dim = "slow-mean", 12

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.transform = ImageTransform(resize=16, crop=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)
        self.w = torch.nn.Parameter(torch.ones(1))
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        x = self._input(x)
        return torch.cat([x.mean((2, 3)), x[:, :, :3, :3].flatten(2).mean(2) * 2, x.amax((2, 3)), x.amin((2, 3))], 1) * self.w


def committed(out: Path) -> dict[str, tuple[int, int]]:
    """shard name -> (writer pid, journal lines) of every shard under ``out/shards`` right now."""
    result = {}
    for state_file in sorted((Path(out) / "shards").glob("*/shard.json")):
        try:
            pid = json.loads(state_file.read_text())["writer"]["pid"]
            lines = (state_file.parent / "progress.jsonl").read_bytes().count(b"\n")
        except (OSError, ValueError, KeyError):
            continue  # being created right now
        result[state_file.parent.name] = (pid, lines)
    return result


def wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

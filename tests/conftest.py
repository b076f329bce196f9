"""Fixtures shared by the whole suite.

Expensive builds are made once per test process (session scope; under ``pytest -n 2`` each worker
makes its own). Tests run offline: nothing here touches a network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# helper modules that live beside the tests (``_imagefixtures``, ``_tiny_geoclip_backbone``)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    """One torch thread per test process: the suite runs two processes on two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP saved like a real model (config, safetensors, tokenizer), built once."""
    from geoscope.encoders.testing import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir):
    """The tiny CLIP loaded through ``create_encoder``, like any local model directory."""
    from geoscope.encoders import create_encoder

    return create_encoder(str(tiny_clip_dir))

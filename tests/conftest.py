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


def pytest_configure(config):
    """Under ``-n 2 --dist loadfile`` each worker takes whole files from one queue, which pytest-xdist orders
    by how many tests a file holds unless told not to: the long files of one or two tests (the wheel's fresh
    venv, the kill-and-rerun runs, the demos) came last, and one worker ran ~150 s after the other was done.
    The queue keeps the collection's order instead (:func:`pytest_collection_modifyitems`)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Files that hold a ``slow`` test first (a worker that finishes early then fills in with short files);
    the order of files and of the tests in a file is otherwise kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread in every test (the suite runs two processes on two cores); set again for each test,
    so a test that changes it (a runtime, a Ray worker in-process) cannot slow the ones after it."""
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


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray instance (3 CPUs, no dashboard), started once per test process on first use
    and shut down at the end. Its workers also import from ``tests/`` (for ``_ray_helpers``)."""
    import logging
    import os

    ray = pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray] (installed by scripts/setup.sh)")
    path = [str(Path(__file__).parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(path)}})
    yield ray
    ray.shutdown()


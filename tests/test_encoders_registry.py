"""The encoder registry and ``geoscope encoders``."""

import json
import subprocess
import sys

import pytest

from geoscope.cli import main
from geoscope.encoders import create_encoder, list_encoders, register_encoder
from geoscope.errors import InputError


def test_list_encoders_describes_the_required_models():
    infos = {i.name: i for i in list_encoders()}
    assert {"efficientnet-lite0", "efficientnet-lite2", "clip-vit-l14", "clip-vit-b32", "streetclip"} <= set(infos)
    assert infos["efficientnet-lite0"].offline is True  # weights ship in a pip package
    assert (infos["clip-vit-l14"].dim, infos["clip-vit-l14"].input_size) == (768, 224)
    assert (infos["streetclip"].dim, infos["streetclip"].input_size) == (768, 336)
    for info in infos.values():
        assert info.licence and info.source and info.dim > 0


def test_importing_the_registry_does_not_import_torch():
    code = ("import sys, geoscope.encoders; infos = geoscope.encoders.list_encoders(); "
            "print(len(infos), 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["False", "False"] and int(out.stdout.split()[0]) >= 5


@pytest.mark.parametrize("name", ["no-such-encoder", "hf:onlyname", "hf-hub:a/b/c", "hf-hub:"])
def test_unknown_names_are_input_errors(name):
    with pytest.raises(InputError, match="hf-hub:ORG/NAME"):
        create_encoder(name)


class Recorded:
    """What a builder was called with (a stand-in for an encoder: the registry never looks inside)."""

    def __init__(self, runtime, **kw):
        self.runtime, self.kw = runtime, kw


@register_encoder("test-registry-encoder", family="test", dim=7, input_size=16, source="this test module",
                  licence="CC0-1.0", description="registered by a test", available=lambda: True)
def _torch_builder(precision=None, **kw):
    return Recorded("torch", precision=precision, **kw)


@register_encoder("test-registry-encoder", runtime="onnx")
def _onnx_builder(precision=None, **kw):
    return Recorded("onnx", precision=precision, **kw)


def test_an_encoder_registered_anywhere_is_listed_and_built_with_runtime_and_precision():
    info = {i.name: i for i in list_encoders()}["test-registry-encoder"]
    described = (info.family, info.dim, info.input_size, info.offline, info.runtimes)
    assert described == ("test", 7, 16, True, ("torch", "onnx"))
    assert info.to_dict()["runtimes"] == ["torch", "onnx"]
    built = create_encoder("test-registry-encoder", precision="fp32", extra=1)
    assert (built.runtime, built.kw) == ("torch", {"precision": "fp32", "extra": 1})
    # torch does not compute int8 (its dynamic quantisation is deprecated): the default goes to a runtime that does
    assert create_encoder("test-registry-encoder", precision="int8").runtime == "onnx"
    assert create_encoder("test-registry-encoder", runtime="auto").runtime == "torch"  # unmeasured family: torch
    assert create_encoder("test-registry-encoder").kw == {"precision": None}  # the encoder's own default
    assert create_encoder("test-registry-encoder", runtime="onnx", precision="bf16").runtime == "onnx"
    with pytest.raises(InputError, match="no 'openvino' runtime; it runs on torch, onnx"):
        create_encoder("test-registry-encoder", runtime="openvino")
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, int8"):
        create_encoder("test-registry-encoder", precision="float32")


def test_a_name_taken_by_another_builder_is_refused():
    def other(precision=None, **kw):
        return None

    with pytest.raises(ValueError, match="already has a torch builder"):
        register_encoder("test-registry-encoder")(other)
    with pytest.raises(ValueError, match="needs family, dim and input_size"):
        register_encoder("test-registry-incomplete")(other)


def test_cli_encoders_json(capsys):
    assert main(["encoders", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    lite0 = next(r for r in rows if r["name"] == "efficientnet-lite0")
    assert lite0 == {**lite0, "dim": 1280, "input_size": 224, "offline": True, "licence": "Apache-2.0"}


def test_cli_encoders_table(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "streetclip" in out and "offline" in out and "hf:ORG/NAME" in out

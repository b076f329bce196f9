"""The encoder registry and ``geoscope encoders``."""

import json
import subprocess
import sys

import pytest

from geoscope.cli import main
from geoscope.encoders import create_encoder, list_encoders
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
    code = "import sys, geoscope.encoders; geoscope.encoders.list_encoders(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["no-such-encoder", "hf:onlyname", "hf:a/b/c"])
def test_unknown_names_are_input_errors(name):
    with pytest.raises(InputError, match="hf:ORG/NAME"):
        create_encoder(name)


def test_cli_encoders_json(capsys):
    assert main(["encoders", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    lite0 = next(r for r in rows if r["name"] == "efficientnet-lite0")
    assert lite0 == {**lite0, "dim": 1280, "input_size": 224, "offline": True, "licence": "Apache-2.0"}


def test_cli_encoders_table(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "streetclip" in out and "offline" in out and "hf:ORG/NAME" in out

"""``embed --ray`` refusing clearly, without a cluster: Ray not installed, a cluster address that does
not answer, options that do not fit together."""

import subprocess
import sys
import textwrap
import time

import pytest

from _imagefixtures import make_geotagged_folder
from geoscope.cli import main
from geoscope.errors import InputError


def test_ray_not_installed_is_one_sentence_naming_the_extra(tmp_path):
    make_geotagged_folder(tmp_path / "photos", 2, size=(32, 32))
    code = textwrap.dedent(f'''
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` fails
        from geoscope.cli import main
        sys.exit(main(["embed", {str(tmp_path / "photos")!r}, "-o", {str(tmp_path / "st")!r}, "--ray"]))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "geoscope embed --ray needs the optional package 'ray'" in lines[0]
    assert "pip install 'geoscope[ray]'" in lines[0]
    assert not (tmp_path / "st").exists()  # refused before anything was written


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "192.0.2.1:6379"])
def test_an_unreachable_cluster_fails_within_seconds_naming_it(tmp_path, capsys, address):
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    from geoscope.store.ray_embed import CONNECT_TIMEOUT_S

    make_geotagged_folder(tmp_path / "photos", 2, size=(32, 32))
    start = time.perf_counter()
    rc = main(["embed", str(tmp_path / "photos"), "-o", str(tmp_path / "st"), "--ray-address", address])
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert f"cannot reach the Ray cluster at {address}" in err
    assert took < CONNECT_TIMEOUT_S + 15  # the connection attempt is bounded (the rest is start-up)
    assert not (tmp_path / "st").exists()


def test_malformed_addresses_and_options_are_refused(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    from geoscope.store.ray_embed import _host_port

    assert _host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert _host_port("ray://head.example:10001") == ("head.example", 10001)
    assert _host_port("[::1]:6379") == ("::1", 6379)
    assert _host_port("auto") is None
    with pytest.raises(InputError, match="is not HOST:PORT"):
        _host_port("head-node")
    make_geotagged_folder(tmp_path / "photos", 2, size=(32, 32))
    for extra, message in ((["--ray", "--workers", "0"], "--workers must be at least 1 with --ray"),
                           (["--gpus-per-worker", "1"], "--gpus-per-worker needs --ray"),
                           (["--ray-address", "nowhere"], "is not HOST:PORT")):
        rc = main(["embed", str(tmp_path / "photos"), "-o", str(tmp_path / "st")] + extra)
        err = capsys.readouterr().err
        assert rc == 1 and message in err and err.count("\n") == 1, err


def test_an_actor_builds_its_encoder_from_a_name_and_options_spec(tmp_path):
    """A ``{"name": ..., **options}`` spec is built on the worker; ``create_encoder``'s name is positional-only,
    so it must not be passed as a keyword."""
    pytest.importorskip("ray", reason="Ray is the optional extra geoscope[ray]")
    from geoscope.store.ray_embed import _EmbedActor, encoder_from_spec

    spec = {"name": "efficientnet-lite0", "runtime": "torch", "precision": "fp32"}
    actor = _EmbedActor(str(tmp_path / "st"), [spec], threads=0, device=None, shard_rows=10)
    assert actor.encoder.name == "efficientnet-lite0" and actor.encoder.dim == 1280
    assert not actor.encoder.training
    assert spec == {"name": "efficientnet-lite0", "runtime": "torch", "precision": "fp32"}  # not consumed
    with pytest.raises(InputError, match="needs a 'name'"):
        encoder_from_spec({"runtime": "torch"})
    with pytest.raises(InputError, match="precision must be one of"):
        encoder_from_spec({"name": "efficientnet-lite0", "precision": "fp64"})

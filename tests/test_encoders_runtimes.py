"""Encoders served by ONNX Runtime and OpenVINO from a cached export: same embeddings as torch, exported once,
atomically, keyed by the weights; ``runtime="auto"``; int8 on ONNX Runtime (dynamic quantisation) and on
OpenVINO (int8 weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geoscope.encoders import create_encoder
from geoscope.encoders.export import exported_model, exports_dir, file_digest, read_manifest
from geoscope.encoders.openvino_runtime import INT8_WEIGHTS, int8_dir_name
from geoscope.encoders.runtimes import choose_runtime, concrete_precision
from geoscope.encoders.testing import save_tiny_clip
from geoscope.errors import InputError

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder of this module's own (exports land there, not in the user's cache)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSCOPE_CACHE", str(folder))
        yield folder


def _images(n=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, (48 + 9 * i, 64, 3), dtype=np.uint8)
        arr[: 10 + 3 * i] = [200, (40 * i) % 256, 30]  # some structure
        out.append(Image.fromarray(arr))
    return out


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def clip_dir(cache, tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=5)


def test_tiny_clip_on_every_runtime_matches_torch(cache, clip_dir):
    ref_enc = create_encoder(str(clip_dir))
    ref = ref_enc.encode_images(_images())
    assert ref_enc.runtime == "torch" and ref_enc.precision == "fp32"
    for runtime, precision, min_cos in (("onnx", "fp32", 0.99999), ("openvino", "fp32", 0.99999),
                                        ("openvino", "bf16", 0.99), ("onnx", "int8", 0.98),
                                        ("openvino", "int8", 0.999)):
        enc = create_encoder(str(clip_dir), runtime=runtime, precision=precision)
        assert (enc.runtime, enc.precision, enc.dim, enc.input_size) == (runtime, precision, ref_enc.dim, 32)
        assert enc.transform == ref_enc.transform and enc.name == str(clip_dir)
        out = enc.encode_images(_images(), batch_size=2)  # batches of 2 and a batch of 1
        assert out.shape == ref.shape and out.dtype == np.float32
        assert _cos(out, ref).min() >= min_cos, (runtime, precision, _cos(out, ref))
        if precision == "fp32":
            np.testing.assert_allclose(out, ref, atol=1e-4 * np.abs(ref).max())
    # one export serves every runtime and precision: a single folder with its derived models
    folders = [p for p in exports_dir().iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1
    assert {p.name for p in folders[0].iterdir()} >= {"model.onnx", "export.json", "onnx-int8", "openvino-f32",
                                                      "openvino-bf16w", int8_dir_name()}


def test_int8_runs_on_onnx_runtime_and_keeps_the_nearest_neighbour(cache, clip_dir):
    ref = create_encoder(str(clip_dir)).encode_images(_images(8, seed=1))
    q = create_encoder(str(clip_dir), precision="int8", runtime="onnx")
    assert q.runtime == "onnx" and q.precision == "int8"
    ops = {n.op_type for n in __import__("onnx").load(str(q.model_path), load_external_data=False).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the linear layers run in int8
    out = q.encode_images(_images(8, seed=1))
    assert not np.array_equal(out, ref)
    # the same top-1 neighbour among the images as fp32 gives (what the int8 checks of the heads test)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim_ref, sim_q = norm(ref) @ norm(ref).T, norm(out) @ norm(ref).T
    np.fill_diagonal(sim_ref, -2)
    np.fill_diagonal(sim_q, -2)
    assert (sim_ref.argmax(1) == sim_q.argmax(1)).mean() >= 0.75
    with pytest.raises(InputError, match="int8 runs on the onnx or openvino runtime"):
        create_encoder(str(clip_dir), runtime="torch", precision="int8")
    with pytest.raises(InputError, match="onnx runtime runs fp32 and int8"):
        create_encoder(str(clip_dir), runtime="onnx", precision="bf16")


def test_onnx_sessions_start_from_weights_packed_once_for_this_machine(cache, clip_dir, caplog):
    """The first ONNX Runtime session saves its graph with the weights packed for this CPU; later ones load
    that (no packing at start) and compute exactly what a session packing at start does."""
    import onnxruntime as ort

    from geoscope.encoders.onnx_runtime import packed_dir_name

    pixels = create_encoder(str(clip_dir)).transform.normalize(
        np.stack([create_encoder(str(clip_dir)).transform.to_uint8(im) for im in _images(3, seed=2)]))
    for precision in ("fp32", "int8"):
        enc = create_encoder(str(clip_dir), runtime="onnx", precision=precision)
        packed = list(exports_dir().glob(f"*/onnx-{precision}-packed-*"))
        assert [p.name for p in packed] == [packed_dir_name(precision)]
        assert (packed[0] / "model.onnx").is_file()
        plain = ort.InferenceSession(str(enc.model_path), providers=["CPUExecutionProvider"])
        want = plain.run(None, {plain.get_inputs()[0].name: pixels})[0]
        np.testing.assert_allclose(enc._run(pixels), want, rtol=1e-5, atol=1e-6)
        # a copy packed for another machine (another CPU or ONNX Runtime) is replaced, this one reused
        stale = packed[0].parent / f"onnx-{precision}-packed-000000000000"
        stale.mkdir()
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = create_encoder(str(clip_dir), runtime="onnx", precision=precision)
        assert not any("preparing" in r.getMessage() for r in caplog.records)
        assert not stale.exists() and packed[0].is_dir()
        np.testing.assert_array_equal(again._run(pixels), enc._run(pixels))


def test_int8_weights_on_openvino_are_keyed_by_their_settings_reused_and_close(cache, clip_dir, caplog):
    pics = _images(8, seed=1)
    ref = create_encoder(str(clip_dir)).encode_images(pics)
    q = create_encoder(str(clip_dir), precision="int8", runtime="openvino")
    assert (q.runtime, q.precision) == ("openvino", "int8")
    assert q.ir.name == int8_dir_name() and q.ir.parent == q.folder
    # the linear layers' weights are stored as int8 (with their scales), nothing else changes
    import openvino as ov

    model = ov.Core().read_model(str(q.ir / "model_b1.xml"))
    kinds = {o.get_element_type().get_type_name() for o in model.get_ops() if o.get_type_name() == "Constant"}
    assert "i8" in kinds
    out = q.encode_images(pics, batch_size=3)
    assert out.shape == ref.shape and not np.array_equal(out, ref)
    assert _cos(out, ref).min() >= 0.999, _cos(out, ref)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim_ref, sim_q = norm(ref) @ norm(ref).T, norm(out) @ norm(ref).T
    np.fill_diagonal(sim_ref, -2)
    np.fill_diagonal(sim_q, -2)
    assert (sim_ref.argmax(1) == sim_q.argmax(1)).all()
    # made once: a second encoder reuses the folder and says nothing
    stamp = (q.ir / "model.bin").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("WARNING", logger="geoscope.encoders.export"):
        again = create_encoder(str(clip_dir), precision="int8", runtime="openvino")
    assert not caplog.records and again.ir == q.ir and (q.ir / "model.bin").stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode_images(pics[:2]), out[:2], atol=1e-5)
    # other compression settings are another folder
    assert int8_dir_name({**INT8_WEIGHTS, "mode": "int8_asym"}) != int8_dir_name()


def test_export_is_keyed_by_the_weights_and_reused(cache, clip_dir, tmp_path, caplog):
    create_encoder(str(clip_dir), runtime="onnx")
    before = {p.name for p in exports_dir().iterdir()}
    caplog.clear()  # the first call above may have exported (when this test runs first)
    with caplog.at_level("WARNING", logger="geoscope.encoders.export"):
        create_encoder(str(clip_dir), runtime="onnx")  # cached: no new export, nothing said
    assert not any("exporting" in r.getMessage() for r in caplog.records)
    assert {p.name for p in exports_dir().iterdir()} == before
    other = save_tiny_clip(tmp_path / "other", seed=6)  # other weights, same architecture
    with caplog.at_level("WARNING", logger="geoscope.encoders.export"):
        enc = create_encoder(str(other), runtime="onnx")
    assert any("exporting" in r.getMessage() for r in caplog.records)  # the first use says so
    assert len({p.name for p in exports_dir().iterdir()} - before) == 1
    ref = create_encoder(str(other)).encode_images(_images(2))
    np.testing.assert_allclose(enc.encode_images(_images(2)), ref, atol=1e-4 * np.abs(ref).max())
    # a digest is remembered against the file's stat, and recomputed when the file changes
    f = other / "config.json"
    d1 = file_digest(f)
    f.write_text(json.dumps({**json.loads(f.read_text()), "note": "changed"}))
    assert file_digest(f) != d1


def test_a_killed_export_leaves_nothing_that_loads(cache, clip_dir):
    calls = []

    def build():
        calls.append(1)
        raise KeyboardInterrupt  # killed in the middle of exporting

    files = {"weights": clip_dir / "model.safetensors"}
    with pytest.raises(KeyboardInterrupt):
        exported_model("test", files, {"case": "killed"}, build, "a model that never finishes")
    leftovers = [p for p in exports_dir().iterdir() if p.name.startswith(".tmp-")]
    assert calls and not leftovers
    # a half-written folder (no manifest) is never taken for an export
    from geoscope.encoders.export import export_key

    half = exports_dir() / export_key(files, {"family": "test", "case": "half"})
    half.mkdir()
    (half / "model.onnx").write_bytes(b"partial")
    assert read_manifest(half) is None


def test_efficientnet_lite0_packaged_weights_on_every_runtime(cache):
    ref_enc = create_encoder("efficientnet-lite0")
    pics = _images(4, seed=2) + [Image.fromarray(np.full((300, 200, 3), 120, np.uint8))]
    ref = ref_enc.encode_images(pics)
    for runtime in ("onnx", "openvino"):
        enc = create_encoder("efficientnet-lite0", runtime=runtime)
        assert enc.runtime == runtime and enc.dim == 1280
        out = enc.encode_images(pics, batch_size=3)
        assert _cos(out, ref).min() >= 0.999, runtime
    auto = create_encoder("efficientnet-lite0", runtime="auto", precision="auto")
    assert (auto.runtime, auto.precision) == ("openvino", "fp32")  # EfficientNet's auto precision stays fp32


def test_cached_export_loads_without_torch_or_transformers(cache, clip_dir):
    create_encoder(str(clip_dir), runtime="openvino")  # export made (in this process)
    code = (f"import sys; from geoscope.encoders import create_encoder; "
            f"e = create_encoder({str(clip_dir)!r}, runtime='auto', precision='fp32'); "
            "import numpy as np; print(e.runtime, e.encode_pixels(np.zeros((1, 3, 32, 32), np.float32)).shape, "
            "'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "GEOSCOPE_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["openvino", "(1,", "16)", "False", "False"]


def test_the_auto_rule():
    assert choose_runtime("efficientnet", None, ["torch", "onnx", "openvino"], "auto") == "openvino"
    assert choose_runtime("clip", "int8", ["torch", "onnx", "openvino"], "auto") == "onnx"  # packed weights: fastest
    assert choose_runtime("clip", "fp32", ["torch", "onnx", "openvino"], None) == "torch"  # the reference
    assert choose_runtime("clip", "int8", ["torch", "onnx", "openvino"], None) == "onnx"
    assert choose_runtime("clip", "int8", ["torch", "openvino"], None) == "openvino"
    # int8 elsewhere: ONNX Runtime's dynamic quantisation first too
    assert choose_runtime("efficientnet", "int8", ["torch", "onnx", "openvino"], "auto") == "onnx"
    assert choose_runtime("other", "int8", ["torch", "onnx", "openvino"], None) == "onnx"
    assert choose_runtime("other", "fp32", ["torch", "onnx"], "auto") == "torch"  # unmeasured families
    assert choose_runtime("clip", "bf16", ["torch", "onnx"], "auto") == "torch"  # onnx has no bf16
    with pytest.raises(InputError, match="no runtime of this encoder computes int8"):
        choose_runtime("clip", "int8", ["torch"], None)
    assert concrete_precision("efficientnet", "auto") == "fp32" and concrete_precision("clip", None) == "fp32"


def test_auto_falls_back_to_torch_without_the_runtime_packages(monkeypatch):
    import geoscope.encoders.runtimes as rt

    monkeypatch.setattr(rt, "available", lambda module: module == "torch")
    assert choose_runtime("efficientnet", "fp32", ["torch", "onnx", "openvino"], "auto") == "torch"
    # OpenVINO without nncf cannot make int8 weights: a CLIP's int8 goes to ONNX Runtime
    monkeypatch.setattr(rt, "available", lambda module: module != "nncf")
    assert choose_runtime("clip", "int8", ["torch", "onnx", "openvino"], None) == "onnx"


def test_openvino_warm_compiles_in_the_background_and_errors_surface_at_use(cache, clip_dir):
    cold = create_encoder(str(clip_dir), runtime="openvino").encode_images(_images(1))
    enc = create_encoder(str(clip_dir), runtime="openvino")
    enc.warm(1)
    enc.warm(1)  # once is enough: a second call starts nothing
    np.testing.assert_allclose(enc.encode_images(_images(1)), cold, atol=1e-5)
    assert enc._compiled[True].started and not enc._compiled[False].started

    broken = create_encoder(str(clip_dir), runtime="openvino")

    def fail(*a, **k):
        raise RuntimeError("no CPU plugin")

    broken.core.compile_model = fail
    broken.warm(1)
    with pytest.raises(RuntimeError, match="no CPU plugin"):
        broken.encode_images(_images(1))


def test_openvino_compiles_unpinned_and_its_cached_model_matches_torch(cache, clip_dir):
    # OpenVINO pins its threads to cores by default; geoscope turns that off (COMPILE_CONFIG), for the
    # first compile and for the model compiled again from OpenVINO's cache, which must still equal torch
    ref = create_encoder(str(clip_dir), runtime="torch").encode_images(_images(3))
    first = create_encoder(str(clip_dir), runtime="openvino")
    first.encode_images(_images(1))
    assert list((first.ir / "compiled").iterdir())  # OpenVINO's cache holds the compiled model
    again = create_encoder(str(clip_dir), runtime="openvino")
    out = again.encode_images(_images(3), batch_size=1)
    assert again.compiled(1).get_property("ENABLE_CPU_PINNING") is False
    assert _cos(out, ref).min() > 0.99999


def test_bf16_openvino_model_stores_its_weights_as_bfloat16_rounded_once_from_fp32(cache, clip_dir):
    import openvino as ov
    import torch

    enc = create_encoder(str(clip_dir), runtime="openvino", precision="bf16")
    assert enc.ir.name == "openvino-bf16w"
    core = ov.Core()
    fp32 = {op.get_friendly_name(): op.get_data() for op in core.read_model(str(enc.folder / "model.onnx")).get_ops()
            if op.get_type_name() == "Constant"}
    for xml in ("model.xml", "model_b1.xml"):
        weights, others = 0, 0
        for op in core.read_model(str(enc.ir / xml)).get_ops():
            if op.get_type_name() != "Convert" or op.input_value(0).get_node().get_type_name() != "Constant":
                continue
            users = {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
            stored = op.input_value(0).get_element_type()
            if users <= {"MatMul", "Convolution"}:
                assert stored == ov.Type.bf16, op.get_friendly_name()
                bits = np.array(op.input_value(0).get_node().get_data()).view(np.uint16)
                exact = torch.from_numpy(fp32[op.get_friendly_name()].astype(np.float32))
                # torch's own fp32 -> bfloat16 rounding (to nearest even) is the oracle
                np.testing.assert_array_equal(bits, exact.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
                weights += 1
            elif stored != ov.Type.i64:
                assert stored == ov.Type.f16  # biases, norms, embeddings stay fp16
                others += 1
        assert weights >= 6 and others >= 1  # the tiny CLIP's projections and patch convolution; its biases


def test_the_bf16_model_removes_the_folder_it_supersedes_and_nothing_else(cache, clip_dir):
    first = create_encoder(str(clip_dir), runtime="openvino", precision="bf16")
    first.encode_images(_images(1))
    old = first.folder / "openvino-f16w"  # what an earlier geoscope made for bf16
    (old / "compiled").mkdir(parents=True)
    (old / "model.xml").write_text("<net/>")
    keep = first.folder / "openvino-f32-mine"  # anything else in the export folder stays
    keep.mkdir()
    again = create_encoder(str(clip_dir), runtime="openvino", precision="bf16")
    assert not old.exists() and keep.is_dir() and again.ir.is_dir()
    np.testing.assert_allclose(again.encode_images(_images(1)), first.encode_images(_images(1)), atol=1e-6)

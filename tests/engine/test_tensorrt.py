"""The TensorRT path without TensorRT or a GPU: the builder, the FP32 pinning, the engine
cache and the runtime run against tests/engine/fake_tensorrt.py, a double of TensorRT's and
cuda-python's Python APIs that types its tensors, names and types layers as the ONNX parser
of each version does, and refuses what the real ones refuse (each rule cites its source)."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from engine.runtime import contract as C
from engine.runtime import tensorrt_backend as T
from engine.runtime.detector import EngineError, OnnxRuntimeDetector
from engine.runtime.trt_compat import RELEASES, check_graph, parser_rules
from tests.engine import fake_tensorrt as F

VERSIONS = ("8.5.2", "8.6.2", "10.3.0", "11.1.0")  # JetPack 5.1, 6.0, 6.1/6.2, a desktop


def export(tmp_path, backbone="mobilenet_v2", tail="onnx", fp16=False, name=None):
    from engine.export.onnx_export import export_onnx
    from training.model import SSD
    from training.spec import make_spec

    path = tmp_path / (name or f"{backbone}_{tail}_{'fp16' if fp16 else 'fp32'}.onnx")
    return export_onnx(SSD(make_spec(backbone, "a,b", "voc")), path, tail=tail, fp16=fp16)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Both tails of both backbones, FP32 and FP16, as `main.py export` writes them."""
    d = tmp_path_factory.mktemp("graphs")
    return {
        (b, t, p): export(d, b, t, p == "fp16")
        for b in ("mobilenet_v2", "vgg16")
        for t in ("onnx", "efficientnms")
        for p in ("fp32", "fp16")
    }


@pytest.fixture
def with_trt(monkeypatch):
    """Installs a fake `tensorrt` of a version and a fake cuda-python runtime."""

    def install(version, gpu=b"NVIDIA Jetson AGX Orin", cc=(8, 7), fail=None, dla_cores=2):
        trt = F.make_tensorrt(version, dla_cores=dla_cores)
        cudart = F.make_cudart(gpu, cc, fail)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(T, "_import_cudart", lambda: cudart)
        trt.cudart = cudart
        return trt

    return install


def old_pinning(network, trt):
    """The loop of the previous main (every output of every prefixed layer to float32)."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name.startswith((C.L2NORM_PREFIX, C.FP32_PREFIX, C.NMS_PREFIX)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def parse(trt, path):
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if trt.__version__.startswith("8.")
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    return builder, network, ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]


def fp16_config(trt, builder):
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return config


# --- the exported graphs against each version's parser --------------------------------


def test_every_exported_graph_passes_the_check_of_every_supported_tensorrt(graphs):
    for key, path in graphs.items():
        for release in RELEASES:
            assert check_graph(path, release) == [], (key, release)
        m = onnx.load(str(path), load_external_data=False)
        assert (m.opset_import[0].version, m.ir_version) == (17, 8), key


def test_the_previous_detection_count_is_misread_by_tensorrt_8(graphs, with_trt, tmp_path):
    """Shape(start=0, end=1) as the previous export wrote it: TensorRT < 10 ignores start/end
    (onnx-tensorrt 8.6-GA builtin_op_importers.cpp:4434), the count gets two elements and
    the Reshape to [1, 1] fails; 10.x slices. The check says so before TensorRT runs."""
    m = onnx.load(str(graphs["mobilenet_v2", "onnx", "fp32"]))
    nodes = {n.name: n for n in m.graph.node}
    shape, rows, count = nodes["nms/count"], nodes["nms/rows"], nodes["nms/count_k"]
    shape.attribute.extend(
        [onnx.helper.make_attribute("start", 0), onnx.helper.make_attribute("end", 1)]
    )
    count.input[0] = shape.output[0]
    m.graph.node.remove(rows)
    old = tmp_path / "old.onnx"
    onnx.save(m, str(old))
    for version in ("8.5.2", "8.6.2"):
        _, _, ok, errors = parse(with_trt(version), old)
        assert not ok, version
        assert "nms/out_num" in errors[0], version
        assert any("ignores Shape's start/end" in p for p in check_graph(old, version))
    _, _, ok, errors = parse(with_trt("10.3.0"), old)
    assert ok, errors
    assert check_graph(old, "10.3.0") == []


def test_parsers_reject_unknown_ops_and_unregistered_plugins(graphs, with_trt, tmp_path):
    m = onnx.load(str(graphs["mobilenet_v2", "onnx", "fp32"]))
    m.graph.node[3].op_type = "FancyOp"
    odd = tmp_path / "odd.onnx"
    onnx.save(m, str(odd))
    for version in VERSIONS:
        _, _, ok, errors = parse(with_trt(version), odd)
        assert not ok
        assert "Plugin not found" in errors[0]
        assert any("no importer for this op" in p for p in check_graph(odd, version))
    # EfficientNMS_TRT needs the plugin library registered first (10.x parsers no longer
    # do it: onnx-tensorrt 10.0-GA dropped initLibNvInferPlugins)
    trt = with_trt("10.3.0")
    logger = trt.Logger()
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse_from_file(str(graphs["mobilenet_v2", "efficientnms", "fp32"]))
    assert "Plugin not found" in str(parser.get_error(0))


def test_the_8x_parser_needs_an_explicit_batch_network(graphs, with_trt):
    trt = with_trt("8.6.2")
    network = trt.Builder(trt.Logger()).create_network(0)
    parser = trt.OnnxParser(network, trt.Logger())
    assert not parser.parse_from_file(str(graphs["mobilenet_v2", "onnx", "fp32"]))
    assert "kEXPLICIT_BATCH" in parser.get_error(0).desc()


def test_the_check_knows_the_versions(tmp_path):
    assert parser_rules("8.5.2.2").release == "8.5"
    assert parser_rules("8.6").release == "8.6"
    assert parser_rules("10.3.0").release == "10"
    assert parser_rules("11.4.1").release == "11"
    with pytest.raises(EngineError, match="too old"):
        parser_rules("8.2.1")
    with pytest.raises(EngineError, match="unrecognized"):
        parser_rules("ten")
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="not a readable ONNX"):
        check_graph(tmp_path / "x.onnx", "10.3")


# --- FP32 pinning ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0"])
def test_pinning_touches_only_float_layers_and_the_build_succeeds(graphs, with_trt, version):
    for key in [
        ("vgg16", "onnx", "fp32"),
        ("mobilenet_v2", "efficientnms", "fp32"),
        ("vgg16", "onnx", "fp16"),
    ]:
        trt = with_trt(version)
        builder, network, ok, errors = parse(trt, graphs[key])
        assert ok, errors
        pinned = T.pin_fp32(network, trt)
        assert pinned > 0
        floats = {trt.float32, trt.float16}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            for j in range(layer.num_outputs):
                if layer.output_type_is_set(j):
                    assert layer.get_output(j).dtype in floats, (layer.name, j)
            if layer.precision_is_set:
                never = {
                    trt.LayerType[n] for n in ("SHAPE", "CONSTANT", "NMS", "IDENTITY", "PLUGIN_V2")
                }
                assert layer.type not in never, layer.name
        layers = {
            network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)
        }
        if key[0] == "vgg16":
            assert layers["l2norm/node_pow_1"].precision == trt.float32
            assert layers["l2norm/node_pow_1"].output_type_is_set(0)
        if key[1] == "onnx":
            topk = layers["nms/candidates"]  # float scores and INT32 indices
            assert topk.output_type_is_set(0)
            assert not topk.output_type_is_set(1)
            assert not layers["nms/count"].precision_is_set  # the Shape layer
        assert builder.build_serialized_network(network, fp16_config(trt, builder)) is not None, (
            trt.log
        )


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0"])
def test_the_previous_pinning_fails_the_build(graphs, with_trt, version):
    """Every output of every l2norm/, fp32/ and nms/ layer set to float32: integer outputs
    (the NMS indices, TopK's indices, Shape) cannot be float under OBEY_PRECISION_CONSTRAINTS
    (NvInfer.h release/8.6:703-722), and in 8.5 the casts would be rewritten."""
    trt = with_trt(version)
    builder, network, ok, _ = parse(trt, graphs["mobilenet_v2", "onnx", "fp32"])
    old_pinning(network, trt)
    assert builder.build_serialized_network(network, fp16_config(trt, builder)) is None
    assert "inherently" in trt.log[-1] or "Cast" in trt.log[-1]


def test_tensorrt_11_has_no_weak_typing(graphs, with_trt):
    """11.x: no precision on layers, no FP16/INT8/OBEY flags, no EXPLICIT_BATCH
    (pyGraph.cpp and pyCore.cpp release/11.1)."""
    trt = with_trt("11.1.0")
    _, network, ok, _ = parse(trt, graphs["mobilenet_v2", "onnx", "fp16"])
    assert ok
    with pytest.raises(AttributeError):
        network.get_layer(0).precision = trt.float32
    assert not hasattr(trt.BuilderFlag, "FP16")
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 30  # removed in 10.0
    with pytest.raises(TypeError):
        config.set_flag("FP16")


def test_build_settings_per_version():
    s85 = T.build_settings("8.5.2", "fp16", "fp32")
    assert (s85.network_flags, s85.builder_flags, s85.pin_fp32) == (
        ("EXPLICIT_BATCH",),
        ("FP16", "OBEY_PRECISION_CONSTRAINTS"),
        True,
    )
    s103 = T.build_settings("10.3.0", "fp16", "fp32", dla=True)
    assert s103.network_flags == ()
    assert s103.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK")
    s11 = T.build_settings("11.4.1", "fp16", "fp16")
    assert (s11.network_flags, s11.builder_flags, s11.pin_fp32, s11.strongly_typed) == (
        (),
        (),
        False,
        True,
    )
    assert T.build_settings("10.16.1", "fp16", "fp16").network_flags == ("STRONGLY_TYPED",)
    assert T.build_settings("8.6.2", "fp16", "fp16").network_flags == ("EXPLICIT_BATCH",)
    with pytest.raises(EngineError, match="export an FP16 ONNX"):
        T.build_settings("11.0.0", "fp16", "fp32")
    with pytest.raises(EngineError, match="--dla needs --precision fp16"):
        T.build_settings("10.3.0", "fp32", "fp32", dla=True)
    with pytest.raises(EngineError, match="unrecognized TensorRT version"):
        T.build_settings("ten", "fp16", "fp32")


# --- build_engine and its cache ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_the_default_fp16_build_works_on_every_version(graphs, with_trt, tmp_path, version):
    trt = with_trt(version)
    fp16_onnx = version.startswith("11")  # 11.x builds FP16 only from an FP16 ONNX
    for tail in ("onnx", "efficientnms"):
        onnx_path = graphs["mobilenet_v2", tail, "fp16" if fp16_onnx else "fp32"]
        logs = []
        out = T.build_engine(
            onnx_path, cache_dir=tmp_path / tail, workspace_mb=256, log=logs.append
        )
        assert out.read_bytes().startswith(F.MAGIC)
        built = trt.builds[-1]["flags"]
        if not fp16_onnx:
            assert trt.BuilderFlag.FP16 in built
            assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in built
            assert any(m.startswith("kept ") for m in logs)
        meta = json.loads(out.with_suffix(".engine.meta.json").read_text())
        assert meta["class_names"] == ["a", "b"]
        assert meta["tail"] == tail


def test_the_cache_is_keyed_by_content_not_path(graphs, with_trt, tmp_path, monkeypatch):
    trt = with_trt("10.3.0")
    src = graphs["mobilenet_v2", "onnx", "fp32"]
    work = tmp_path / "work"
    work.mkdir()
    copy = work / "model.onnx"
    copy.write_bytes(src.read_bytes())
    cache = tmp_path / "cache"
    logs = []
    first = T.build_engine(copy, cache_dir=cache, log=logs.append)
    monkeypatch.chdir(work)
    again = T.build_engine(Path("model.onnx"), cache_dir=cache, log=logs.append)  # relative
    moved = tmp_path / "elsewhere.onnx"
    moved.write_bytes(src.read_bytes())
    third = T.build_engine(moved, cache_dir=cache, log=logs.append)  # same content, new name
    assert first == again == third
    assert len(trt.builds) == 1
    assert sum("up to date" in m for m in logs) == 2
    sidecar = json.loads(first.with_suffix(".engine.json").read_text())
    assert {k: sidecar[k] for k in ("tensorrt", "gpu", "sm", "precision", "dla_core")} == {
        "tensorrt": "10.3.0",
        "gpu": "NVIDIA Jetson AGX Orin",
        "sm": "87",
        "precision": "fp16",
        "dla_core": None,
    }
    assert (cache / "timing_trt10.3.0_sm87.cache").read_bytes() == b"TIMING-10.3.0"


def test_engine_names_and_mismatches_name_the_gpu_model():
    name = T.engine_cache_name("ab" * 32, "10.3.0", "NVIDIA Jetson AGX Orin", "87", "fp16")
    assert name == "ssd300_abababababab_fp16_trt10.3.0_nvidia-jetson-agx-orin_sm87.engine"
    assert "_dla1_" in T.engine_cache_name("ab" * 32, "10.3.0", "Orin", "87", "fp16", dla_core=1)
    built = {"tensorrt": "10.3.0", "gpu": "NVIDIA GeForce RTX 4090", "sm": "89"}
    assert T.engine_mismatch(built, "10.3.0", "NVIDIA GeForce RTX 4090", "89") is None
    # another GPU model of the same SM is refused too
    why = T.engine_mismatch(built, "10.3.0", "NVIDIA RTX 6000 Ada Generation", "89")
    assert why
    assert "RTX 4090" in why
    assert "main.py build" in why
    assert T.engine_mismatch(built, "10.4.0", "NVIDIA GeForce RTX 4090", "89")


def test_a_stale_engine_is_rebuilt_with_a_message(graphs, with_trt, tmp_path):
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    with_trt("10.3.0")
    out = T.build_engine(onnx_path, tmp_path / "m.engine", cache_dir=tmp_path, log=lambda m: None)
    trt = with_trt("10.4.0")  # the TensorRT of this machine changed
    logs = []
    T.build_engine(onnx_path, out, cache_dir=tmp_path, log=logs.append)
    assert any("built for another ONNX, TensorRT or GPU: rebuilding" in m for m in logs)
    assert len(trt.builds) == 1
    assert trt.builds
    assert trt.Builder


def test_dla_refuses_fp32_and_needs_a_core(graphs, with_trt, tmp_path):
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    with pytest.raises(EngineError, match="--dla needs --precision fp16"):
        T.build_engine(onnx_path, precision="fp32", dla_core=0, cache_dir=tmp_path)
    trt = with_trt("10.3.0")
    with pytest.raises(EngineError, match="--dla needs --precision fp16"):
        T.TensorRTDetector(onnx_path, precision="fp32", dla_core=0, cache_dir=tmp_path)
    with pytest.raises(EngineError, match="DLA core 5 asked for; this device has 2"):
        T.build_engine(onnx_path, cache_dir=tmp_path, dla_core=5, log=lambda m: None)
    out = T.build_engine(onnx_path, cache_dir=tmp_path, dla_core=1, log=lambda m: None)
    assert trt.builds[-1]["device"] == trt.DeviceType.DLA
    assert trt.BuilderFlag.GPU_FALLBACK in trt.builds[-1]["flags"]
    assert "_dla1_" in out.name
    with_trt("11.1.0", dla_cores=0)  # no DLA in 11.0-11.3
    with pytest.raises(EngineError, match="this device has 0"):
        T.build_engine(
            graphs["mobilenet_v2", "onnx", "fp16"], cache_dir=tmp_path, dla_core=0, log=print
        )


def test_build_fails_clearly(graphs, with_trt, tmp_path):
    with_trt("11.4.1")
    with pytest.raises(EngineError, match="strongly typed.*--fp16"):
        T.build_engine(
            graphs["mobilenet_v2", "onnx", "fp32"], cache_dir=tmp_path, log=lambda m: None
        )
    trt = with_trt("10.3.0")
    trt.Builder.build_serialized_network = lambda self, n, c: None
    with pytest.raises(EngineError, match="failed to build"):
        T.build_engine(
            graphs["mobilenet_v2", "onnx", "fp32"], cache_dir=tmp_path, log=lambda m: None
        )


# --- the runtime ----------------------------------------------------------------------------


@pytest.fixture
def real_frame(shared_data):
    frames = sorted((shared_data / "images").rglob("*.jpg"))
    if not frames:
        pytest.skip("no test images in ../shared/data/images")
    return cv2.imread(str(frames[0]))


def test_the_runtime_runs_an_engine_through_cuda_python(graphs, with_trt, tmp_path, real_frame):
    """Build, then pinned buffers, copies, tensor addresses, execute_async_v3, the stream:
    the detections equal ONNX Runtime's on a real image; close() frees everything and a
    detect() afterwards is a clear error, not a crash."""
    trt = with_trt("10.3.0")
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    det = T.TensorRTDetector(onnx_path, cache_dir=tmp_path, log=lambda m: None)
    reference = OnnxRuntimeDetector(onnx_path).detect(real_frame, score_threshold=0.0)
    got = det.detect(real_frame, score_threshold=0.0)
    assert len(got) == len(reference)
    np.testing.assert_array_equal(got.class_ids, reference.class_ids)
    np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-4)
    assert det.host[C.INPUT].dtype == np.uint8
    assert det.host[C.NUM_DETECTIONS].dtype == np.int32
    cudart = trt.cudart
    assert cudart.calls.count("cudaMallocHost") == 5
    assert cudart.calls.count("cudaMalloc") == 5
    before = set(F.CUDA.buffers)
    det.close()
    assert not (set(det.device_ptrs) | set(det._host_ptrs))
    assert len(F.CUDA.buffers) == len(before) - 10
    with pytest.raises(EngineError, match="closed"):
        det.detect(real_frame)
    with pytest.raises(EngineError, match="closed"):
        det.run(np.zeros((1, 300, 300, 3), np.uint8))
    det.close()  # twice is fine


def test_a_failed_allocation_frees_what_was_allocated(graphs, with_trt, tmp_path):
    trt = with_trt("10.3.0")
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    engine = T.build_engine(onnx_path, cache_dir=tmp_path, log=lambda m: None)
    before = set(F.CUDA.buffers)
    trt.cudart.cudaMalloc = lambda size: (trt.cudart.cudaError_t.cudaErrorMemoryAllocation, None)
    with pytest.raises(
        EngineError, match=r"CUDA error in cudaMalloc: cudaErrorMemoryAllocation \(2\)"
    ):
        T.TensorRTDetector(engine)
    assert set(F.CUDA.buffers) == before  # the pinned buffer and the stream were released
    assert "cudaStreamDestroy" in trt.cudart.calls


def test_a_foreign_or_corrupt_engine_is_refused(with_trt, tmp_path):
    with_trt("10.3.0")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"garbage")
    engine.with_suffix(".engine.meta.json").write_text(json.dumps({"class_names": ["a"]}))
    with pytest.raises(EngineError, match="cannot load this engine.*main.py build"):
        T.TensorRTDetector(engine)


def test_an_engine_from_another_gpu_model_is_refused(graphs, with_trt, tmp_path):
    with_trt("10.3.0", gpu=b"NVIDIA GeForce RTX 4090", cc=(8, 9))
    engine = T.build_engine(
        graphs["mobilenet_v2", "onnx", "fp32"], tmp_path / "e.engine", log=lambda m: None
    )
    with_trt("10.3.0", gpu=b"NVIDIA RTX 6000 Ada Generation", cc=(8, 9))
    with pytest.raises(EngineError, match="built with TensorRT 10.3.0 on NVIDIA GeForce RTX 4090"):
        T.TensorRTDetector(engine)


def test_missing_libraries_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        T._import_trt()
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(EngineError, match="cuda-python is not installed"):
        T._import_cudart()
    with pytest.raises(EngineError, match="engine not found"):
        T.TensorRTDetector._engine_info(tmp_path / "missing.engine")
    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(EngineError, match="no x.engine.meta.json beside it"):
        T.TensorRTDetector._engine_info(tmp_path / "x.engine")


def test_build_check_and_dla_on_the_command_line(graphs, tmp_path):
    """`build --check` needs no TensorRT: one line per version, exit 1 when one refuses;
    `--dla` with fp32 is a one-line error before anything runs."""
    from tests.test_cli import run

    code, out, err = run("build", graphs["vgg16", "onnx", "fp16"], "--check", "all")
    assert code == 0, err
    assert out.splitlines() == [f"TensorRT {r}: ok" for r in RELEASES]
    m = onnx.load(str(graphs["mobilenet_v2", "onnx", "fp32"]))
    m.opset_import[0].version = 18
    newer = tmp_path / "opset18.onnx"
    onnx.save(m, str(newer))
    code, out, err = run("build", newer, "--check", "8.5", "--check", "10.3")
    assert code == 1
    assert out.splitlines()[1] == "TensorRT 10.3: ok"
    assert "reads ONNX up to opset 17" in out.splitlines()[0]
    assert err.strip().splitlines() == [f"error: {newer}: 1 of 2 TensorRT versions would refuse it"]
    code, out, err = run("build", newer, "--dla", "0", "--precision", "fp32")
    assert code == 1
    assert (
        err.strip() == "error: --dla needs --precision fp16: the DLA runs FP16 or INT8, never FP32"
    )


def test_the_check_reads_every_kind_of_constant_and_knows_minor_versions():
    """Constant nodes with value_ints/value_int (not only `value`) feed axes and K; an
    integer Pow exponent is refused before TensorRT 10.8 only; a UINT8 network output is
    allowed."""
    h, T_ = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Constant", [], ["axes"], value_ints=[0]),
        h.make_node("Constant", [], ["k"], value_ints=[2]),
        h.make_node("Constant", [], ["two"], value_int=2),
        h.make_node("Unsqueeze", ["x", "axes"], ["x1"], name="unsq"),
        h.make_node("TopK", ["x", "k"], ["top", "idx"], axis=0, name="topk"),
        h.make_node("Pow", ["x", "two"], ["sq"], name="pow"),
        h.make_node("Cast", ["sq"], ["u8"], to=T_.UINT8, name="to_u8"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T_.FLOAT, [4])],
        [
            h.make_tensor_value_info(n, t, None)
            for n, t in [("x1", T_.FLOAT), ("top", T_.FLOAT), ("u8", T_.UINT8)]
        ],
    )
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    assert check_graph(m, "10.8.0") == []
    assert check_graph(m, "11.1") == []
    for version in ("8.5.2", "8.6.2", "10.3.0"):
        problems = check_graph(m, version)
        assert len(problems) == 1, (version, problems)
        assert "Pow node pow: an integer exponent" in problems[0]


# --- INT8 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_graphs(graphs, tmp_path_factory):
    """The exported MobileNetV2 graph quantized in both flavours on 4 synthetic frames (the
    structure matters here; tests/engine/test_quantize.py measures accuracy on real data)."""
    from engine.export.quantize import quantize_onnx

    d = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        p = d / f"frame{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (240, 320, 3), np.uint8))
        images.append(p)
    fp32 = graphs["mobilenet_v2", "onnx", "fp32"]
    return {
        t: quantize_onnx(fp32, d / f"{t}.onnx", images, target=t)
        for t in ("onnxruntime", "tensorrt")
    }


def frames_of(n, size=300):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (1, size, size, 3), np.uint8) for _ in range(n)]


def test_int8_build_settings_per_version():
    s = T.build_settings("8.6.2", "int8", "int8")
    assert (s.network_flags, s.builder_flags, s.pin_fp32) == (
        ("EXPLICIT_BATCH",),
        ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"),
        True,
    )
    s = T.build_settings("10.3.0", "int8", "int8", dla=True)
    assert (s.network_flags, s.builder_flags, s.strongly_typed) == (
        ("STRONGLY_TYPED",),
        ("GPU_FALLBACK",),
        True,
    )
    s = T.build_settings("11.1.0", "int8", "int8")
    assert (s.network_flags, s.builder_flags, s.strongly_typed) == ((), (), True)
    s = T.build_settings("10.3.0", "int8", "fp32", calibrated=True)
    assert s.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert s.pin_fp32
    with pytest.raises(EngineError, match="removed INT8 calibration"):
        T.build_settings("11.1.0", "int8", "fp32", calibrated=True)
    with pytest.raises(EngineError, match="needs calibration images"):
        T.build_settings("8.6.2", "int8", "fp32")
    with pytest.raises(EngineError, match="not an FP16 one"):
        T.build_settings("8.6.2", "int8", "fp16")
    with pytest.raises(EngineError, match="build it with --int8"):
        T.build_settings("8.6.2", "fp16", "int8")


@pytest.mark.parametrize("version", VERSIONS)
def test_an_int8_onnx_builds_explicitly_on_every_version(
    int8_graphs, with_trt, tmp_path, version, real_frame
):
    """Q/DQ (explicit quantization): 8.x with the INT8 flag, 10.x and 11.x strongly typed;
    the engine runs and gives ONNX Runtime's detections of the same graph."""
    trt = with_trt(version)
    onnx_path = int8_graphs["tensorrt"]
    logs = []
    det = T.TensorRTDetector(onnx_path, cache_dir=tmp_path, log=logs.append)  # fp16 asked
    built = trt.builds[-1]
    assert built["qdq"]
    assert built["calibrated"] == 0
    assert any("is an INT8 (Q/DQ) ONNX: building INT8" in m for m in logs)
    if version.startswith("8"):
        assert trt.BuilderFlag.INT8 in built["flags"]
        assert not built["strongly_typed"]
    else:
        assert built["strongly_typed"]
        assert built["flags"] == set()
    assert "_int8_" in next(tmp_path.glob("*.engine")).name
    reference = OnnxRuntimeDetector(onnx_path).detect(real_frame, score_threshold=0.0)
    got = det.detect(real_frame, score_threshold=0.0)
    det.close()
    np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-3)
    assert got.names == reference.names


def test_the_onnxruntime_flavour_is_refused_by_tensorrt_with_the_way_out(
    int8_graphs, with_trt, tmp_path, monkeypatch
):
    trt = with_trt("10.3.0")
    with pytest.raises(EngineError, match="quantized for onnxruntime.*--int8-target tensorrt"):
        T.build_engine(int8_graphs["onnxruntime"], precision="int8", cache_dir=tmp_path)
    # the parser itself refuses it as onnx-tensorrt does (notInvalidType UINT8) ...
    _, _, ok, errors = parse(trt, int8_graphs["onnxruntime"])
    assert not ok
    assert "Found invalid input type of UINT8" in errors[0]
    # ... and `auto` sends it to ONNX Runtime even where TensorRT is installed
    from engine.runtime import detector as D

    monkeypatch.setattr(D, "available_backends", lambda: ["tensorrt", "onnxruntime"])
    with D.open_detector(int8_graphs["onnxruntime"]) as det:
        assert det.backend == "onnxruntime"


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0"])
def test_an_fp32_onnx_is_calibrated_once_then_the_cache_is_used(
    graphs, with_trt, tmp_path, version
):
    """Implicit INT8 (8.x, deprecated 10.x): the entropy calibrator feeds every frame through
    a device buffer, writes the calibration cache, and a rebuild reads the cache instead of
    the images; device memory is freed; another image set is another engine."""
    trt = with_trt(version)
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    pulled = []

    def frames():
        for f in frames_of(5):
            pulled.append(f)
            yield f

    cal = T.Calibration(frames, "a" * 64, "5 frames")
    logs = []
    out = T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path, log=logs.append,
                         calibration=cal)  # fmt: skip
    assert trt.builds[-1]["calibrated"] == 5
    assert len(pulled) == 5
    assert trt.BuilderFlag.INT8 in trt.builds[-1]["flags"]
    assert any(m.startswith("kept ") for m in logs)  # the float tail pinned to FP32
    assert version.startswith("10") == any("deprecates calibrators" in m for m in logs)
    caches = list(tmp_path.glob("calibration_*.cache"))
    assert len(caches) == 1
    assert caches[0].read_bytes().startswith(F.CALIBRATION_HEADER)
    assert F.CUDA.buffers == {}  # the calibrator's buffers are freed
    assert T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path, log=logs.append,
                          calibration=cal) == out  # fmt: skip
    assert logs[-1].startswith("engine up to date")
    out.unlink()
    T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path, log=logs.append,
                   calibration=cal)  # fmt: skip
    assert trt.builds[-1]["calibrated"] == -1
    assert len(pulled) == 5
    other = T.Calibration(lambda: iter(frames_of(2)), "b" * 64, "2 frames")
    second = T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path, log=logs.append,
                            calibration=other)  # fmt: skip
    assert trt.builds[-1]["calibrated"] == 2
    assert second != out  # one engine per calibration set, neither replaces the other
    assert "-calaaaaaaaa_" in out.name
    assert "-calbbbbbbbb_" in second.name
    assert out.is_file()


def test_int8_without_calibration_or_on_tensorrt_11_is_a_clear_error(graphs, with_trt, tmp_path):
    onnx_path = graphs["mobilenet_v2", "onnx", "fp32"]
    with_trt("8.6.2")
    with pytest.raises(EngineError, match="needs calibration images: give --calibration"):
        T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path)
    with_trt("11.1.0")
    cal = T.Calibration(lambda: iter(frames_of(1)), "c" * 64)
    with pytest.raises(EngineError, match="TensorRT 11.1.0 removed INT8 calibration"):
        T.build_engine(onnx_path, precision="int8", cache_dir=tmp_path, calibration=cal)


def test_the_fake_builder_fails_as_tensorrt_does_without_scales(graphs, with_trt):
    """What the calibrator prevents: an INT8 flag with neither Q/DQ nor a calibrator fails
    the build ("Calibration failure occurred with no scaling factors detected")."""
    trt = with_trt("8.6.2")
    builder, network, ok, _ = parse(trt, graphs["mobilenet_v2", "onnx", "fp32"])
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    assert ok
    assert builder.build_serialized_network(network, config) is None
    assert "no scaling factors" in trt.log[-1]


def test_a_calibrator_that_cannot_allocate_frees_what_it_had(graphs, with_trt, tmp_path):
    trt = with_trt("8.6.2", fail={"cudaMalloc": 2})  # cudaErrorMemoryAllocation
    cal = T.Calibration(lambda: iter(frames_of(2)), "e" * 64)
    with pytest.raises(EngineError, match="CUDA error in cudaMalloc"):
        T.build_engine(graphs["mobilenet_v2", "onnx", "fp32"], precision="int8",
                       cache_dir=tmp_path, log=lambda m: None, calibration=cal)  # fmt: skip
    assert F.CUDA.buffers == {}
    assert F.CUDA.streams == set()
    assert trt.builds == []


def test_dla_takes_int8(graphs, int8_graphs, with_trt, tmp_path):
    trt = with_trt("8.6.2")
    cal = T.Calibration(lambda: iter(frames_of(2)), "d" * 64)
    out = T.build_engine(graphs["mobilenet_v2", "onnx", "fp32"], precision="int8", dla_core=0,
                         cache_dir=tmp_path, log=lambda m: None, calibration=cal)  # fmt: skip
    assert "_int8-caldddddddd_dla0_" in out.name
    built = trt.builds[-1]
    assert built["device"] == trt.DeviceType.DLA
    assert {trt.BuilderFlag.INT8, trt.BuilderFlag.GPU_FALLBACK} <= built["flags"]
    with_trt("10.3.0")
    out = T.build_engine(int8_graphs["tensorrt"], precision="int8", dla_core=1,
                         cache_dir=tmp_path, log=lambda m: None)  # fmt: skip
    assert "_int8_dla1_" in out.name


def test_build_int8_on_the_command_line(int8_graphs, graphs, with_trt, tmp_path, shared_data,
                                        capsys):  # fmt: skip
    import main

    with_trt("8.6.2")
    cache = tmp_path / "cache"
    code = main.main(["build", str(graphs["mobilenet_v2", "onnx", "fp32"]), "--int8",
                      "--calibration", str(shared_data / "images"), "--calibration-images", "3",
                      "--cache-dir", str(cache)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "calibrating on 3 of " in out
    assert "calibration cache written" in out
    assert main.main(["build", str(int8_graphs["tensorrt"]), "--int8", "--cache-dir",
                      str(cache)]) == 0  # fmt: skip
    code = main.main(["build", str(graphs["mobilenet_v2", "onnx", "fp32"]), "--calibration",
                      str(shared_data / "images")])  # fmt: skip
    assert code == 1
    assert "--calibration is for --int8 builds" in capsys.readouterr().err

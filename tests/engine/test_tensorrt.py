"""The TensorRT layer's decisions and error paths, without TensorRT or a GPU: the real
library is replaced by a small fake that records what the builder was asked for."""

import json
import sys
import types

import pytest

from engine import tensorrt_backend as T
from engine.runtime import EngineError


class FakeLayer:
    def __init__(self, name):
        self.name, self.precision, self.num_outputs, self.output_types = name, None, 1, {}

    def set_output_type(self, i, t):
        self.output_types[i] = t


def fake_trt(version: str, has_fp16_flag: bool = True, build_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32 = "float32"
    calls = trt.calls = {"flags": [], "network_flags": None, "workspace": None, "dla": None}

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    trt.Logger = Logger
    trt.init_libnvinfer_plugins = lambda logger, ns: calls.setdefault("plugins", True)
    net_flags = {"EXPLICIT_BATCH": 0}
    if int(version.split(".")[0]) >= 10:  # strong typing came after 8.6
        net_flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**net_flags)
    flags = {"OBEY_PRECISION_CONSTRAINTS": 10, "GPU_FALLBACK": 11}
    if has_fp16_flag:
        flags["FP16"] = 12
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.DeviceType = types.SimpleNamespace(DLA="dla", GPU="gpu")

    class Network:
        def __init__(self):
            self.layers = [FakeLayer("node_conv_1"), FakeLayer("l2norm/node_pow_1"),
                           FakeLayer("l2norm/node_div_1"), FakeLayer("fp32/node_softmax"),
                           FakeLayer("nms/nms")]  # fmt: skip
            self.num_layers = len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class TimingCache:
        def serialize(self):
            return b"TIMING"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def create_timing_cache(self, data):
            calls["timing_in"] = data
            return TimingCache()

        def set_timing_cache(self, cache, ignore):
            pass

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            calls["network"] = Network()
            return calls["network"]

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def build_serialized_network(self, network, config):
            calls["builds"] = calls.get("builds", 0) + 1
            return b"ENGINE-BYTES" if build_ok else None

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture
def onnx_file(tmp_path):
    """An exported ONNX of a small model (tail efficientnms: built by TensorRT only)."""
    from engine.export import export_onnx
    from training.model import SSD
    from training.spec import make_spec

    return export_onnx(
        SSD(make_spec("mobilenet_v2", "a,b", "voc")), tmp_path / "m.onnx", tail="efficientnms"
    )


@pytest.fixture
def with_trt(monkeypatch):
    def install(version, **kw):
        trt = fake_trt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(T, "gpu_identity", lambda device=0: ("NVIDIA Jetson AGX Orin", "87"))
        return trt

    return install


def test_build_settings_per_version():
    s86 = T.build_settings("8.6.2", "fp16", "fp32")
    assert s86.network_flags == ("EXPLICIT_BATCH",)
    assert s86.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert s86.pin_l2norm_fp32
    s103 = T.build_settings("10.3.0", "fp16", "fp32", dla=True)
    assert s103.network_flags == ()
    assert s103.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK")
    s11 = T.build_settings("11.4.1", "fp16", "fp16")
    assert s11.network_flags == ("STRONGLY_TYPED",)
    assert s11.builder_flags == ()
    assert not s11.pin_l2norm_fp32
    with pytest.raises(EngineError, match="export an FP16 ONNX"):
        T.build_settings("11.0.0", "fp16", "fp32")
    assert T.build_settings("10.3.0", "fp32", "fp32").builder_flags == ()
    assert T.build_settings("10.16.1", "fp16", "fp16").network_flags == ("STRONGLY_TYPED",)
    with pytest.raises(EngineError, match="unrecognized TensorRT version"):
        T.build_settings("ten", "fp16", "fp32")


def test_engine_names_carry_version_gpu_precision_and_onnx_hash():
    name = T.engine_cache_name("ab" * 32, "10.3.0", "NVIDIA Jetson AGX Orin", "87", "fp16")
    assert name == "ssd300_abababababab_fp16_trt10.3.0_nvidia-jetson-agx-orin_sm87.engine"
    assert "_dla1_" in T.engine_cache_name("ab" * 32, "10.3.0", "Orin", "87", "fp16", dla_core=1)
    assert T.engine_cache_name("cd" * 32, "10.3.0", "X", "87", "fp16") != name


def test_fp16_build_on_tensorrt_10_pins_l2norm_and_caches(with_trt, onnx_file, tmp_path):
    trt = with_trt("10.3.0")
    logs = []
    out = T.build_engine(onnx_file, cache_dir=tmp_path / "cache", workspace_mb=256, log=logs.append)
    assert out.read_bytes() == b"ENGINE-BYTES"
    assert trt.calls["flags"] == [trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS]
    assert trt.calls["network_flags"] == 0
    assert trt.calls["workspace"] == 256 << 20
    layers = {layer.name: layer for layer in trt.calls["network"].layers}
    assert layers["l2norm/node_pow_1"].precision == "float32"
    assert layers["l2norm/node_pow_1"].output_types == {0: "float32"}
    assert layers["fp32/node_softmax"].precision == "float32"
    assert layers["nms/nms"].precision == "float32"
    assert layers["node_conv_1"].precision is None
    assert any(m.startswith("kept 4 layers in FP32") for m in logs)
    sidecar = json.loads(out.with_suffix(".engine.json").read_text())
    assert sidecar["tensorrt"] == "10.3.0"
    assert sidecar["sm"] == "87"
    meta = json.loads(out.with_suffix(".engine.meta.json").read_text())
    assert meta["class_names"] == ["a", "b"]
    assert (tmp_path / "cache" / "timing_trt10.3.0_sm87.cache").read_bytes() == b"TIMING"
    # the same ONNX, TensorRT and GPU: the cached engine is used
    T.build_engine(onnx_file, cache_dir=tmp_path / "cache", log=logs.append)
    assert trt.calls["builds"] == 1
    assert any("up to date" in m for m in logs)
    assert trt.calls["timing_in"] == b""


def test_a_stale_engine_is_rebuilt_with_a_message(with_trt, onnx_file, tmp_path):
    with_trt("10.3.0")
    out = T.build_engine(onnx_file, tmp_path / "m.engine", cache_dir=tmp_path, log=lambda m: None)
    trt = with_trt("10.4.0")  # the TensorRT of this machine changed
    logs = []
    T.build_engine(onnx_file, out, cache_dir=tmp_path, log=logs.append)
    assert any("built for another ONNX, TensorRT or GPU: rebuilding" in m for m in logs)
    assert trt.calls["builds"] == 1
    assert trt.calls["timing_in"] == b""  # timing caches are per TensorRT version too


def test_tensorrt_11_needs_an_fp16_onnx(with_trt, onnx_file, tmp_path):
    with_trt("11.4.1", has_fp16_flag=False)
    with pytest.raises(EngineError, match="strongly typed.*--fp16"):
        T.build_engine(onnx_file, cache_dir=tmp_path, log=lambda m: None)


def test_build_failures_and_dla_checks(with_trt, onnx_file, tmp_path):
    with_trt("10.3.0", build_ok=False)
    with pytest.raises(EngineError, match="failed to build"):
        T.build_engine(onnx_file, cache_dir=tmp_path, log=lambda m: None)
    with_trt("10.3.0")
    with pytest.raises(EngineError, match="DLA core 5 asked for; this device has 2"):
        T.build_engine(onnx_file, cache_dir=tmp_path, dla_core=5, log=lambda m: None)


def test_missing_libraries_and_engines_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        T._import_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("10.3.0"))
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(EngineError, match="cuda-python is not installed"):
        T._import_cudart()
    with pytest.raises(EngineError, match="engine not found"):
        T.TensorRTDetector._engine_info(tmp_path / "missing.engine")
    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(EngineError, match="no x.engine.meta.json beside it"):
        T.TensorRTDetector._engine_info(tmp_path / "x.engine")


def test_a_foreign_or_corrupt_engine_is_refused(tmp_path, monkeypatch):
    trt = fake_trt("10.3.0")

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None  # what TensorRT returns for another version's or a corrupt engine

    trt.Runtime = Runtime
    cudart = types.SimpleNamespace(cudaSetDevice=lambda d: (0,))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(T, "_import_cudart", lambda: cudart)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"garbage")
    engine.with_suffix(".engine.meta.json").write_text(json.dumps({"class_names": ["a"]}))
    with pytest.raises(EngineError, match="cannot load this engine.*main.py build"):
        T.TensorRTDetector(engine)


def test_tensorrt_8_6_builds_an_fp16_onnx_without_strong_typing(with_trt, tmp_path):
    from engine.export import export_onnx
    from training.model import SSD
    from training.spec import make_spec

    onnx16 = export_onnx(
        SSD(make_spec("mobilenet_v2", "a,", "voc")), tmp_path / "h.onnx", fp16=True
    )
    trt = with_trt("8.6.2")
    T.build_engine(onnx16, cache_dir=tmp_path, log=lambda m: None)
    assert trt.calls["network_flags"] == 1 << 0  # EXPLICIT_BATCH only
    assert trt.BuilderFlag.FP16 in trt.calls["flags"]
    assert T.build_settings("8.6.2", "fp16", "fp16").network_flags == ("EXPLICIT_BATCH",)


def test_a_dla_engine_is_loaded_on_its_core(with_trt, onnx_file, tmp_path, monkeypatch):
    trt = with_trt("10.3.0")
    out = T.build_engine(
        onnx_file, tmp_path / "d.engine", cache_dir=tmp_path, dla_core=1, log=lambda m: None
    )
    assert trt.BuilderFlag.GPU_FALLBACK in trt.calls["flags"]
    seen = {}

    class Runtime:
        def __init__(self, logger):
            pass

        def __setattr__(self, name, value):
            seen[name] = value

        def deserialize_cuda_engine(self, data):
            return None

    trt.Runtime = Runtime
    monkeypatch.setattr(
        T, "_import_cudart", lambda: types.SimpleNamespace(cudaSetDevice=lambda d: (0,))
    )
    with pytest.raises(EngineError, match="cannot load this engine"):
        T.TensorRTDetector(out)
    assert seen == {"DLA_core": 1}

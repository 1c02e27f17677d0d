"""Stand-ins for TensorRT's Python API and cuda-python's runtime, faithful where this
project's code depends on them. TensorRT cannot be installed on CI, so every behaviour
here mirrors a line of TensorRT's, onnx-tensorrt's or cuda-python's sources, cited as
`branch:path:line` (NVIDIA/TensorRT release/8.5, release/8.6, release/10.3, release/11.1;
onnx/onnx-tensorrt 8.5-GA, 8.6-GA, 10.0-GA; cuda-bindings 12.9 runtime.pyx).

- Types are enums, never strings: `trt.float32` is `DataType.FLOAT`
  (pyFoundationalTypes.cpp 8.5:176-189); 8.x has no INT64 (10.3:180-202 adds it).
- The parser reads the ONNX and builds typed layers with their real output counts and
  types, named as onnx-tensorrt names them (ImporterContext.cpp registerLayer: the first
  layer of a node carries the node's name, later ones `<name>_<n>`; constants carry the
  initializer's name, importerUtils 8.5-GA onnx2trt_utils.cpp:784-795). It rejects what
  the version's parser rejects (unknown ops without a plugin, UINT8 rules, TopK's K, the
  implicit-batch network of 8.x) and misreads what it misreads: before 10.0 Shape's
  start/end are ignored (8.6-GA builtin_op_importers.cpp:4434), and the misread graph is
  run once in ONNX Runtime to find where it breaks.
- Layers and configs refuse unknown attributes (pybind11 classes have no dynamic
  attributes); 11.x layers have no `precision` nor `set_output_type` (pyGraph.cpp
  11.1:425-439); flag sets are per version (pyCore.cpp 8.5:972-986, 10.3:1338-1367,
  11.1:1600-1621; NetworkDefinitionCreationFlag 10.3:1500-1505, 11.1:1771-1777).
- The builder fails, as under OBEY_PRECISION_CONSTRAINTS (NvInfer.h 8.6:703-739: "build
  fails with an error message"), when a layer is asked for a float output that is
  inherently INT32 (shape layers, TopK indices, NMS) or a plugin output its
  supportsFormatCombination refuses (efficientNMSPlugin.cpp:271-276), and when an 8.5
  Cast (an IIdentityLayer with its output type set, builtin_op_importers.cpp:327-328)
  gets another output type, which would silently change the cast.
- The engine runs: `execute_async_v3` reads the input from fake device memory, runs the
  ONNX with ONNX Runtime and writes the outputs back, so the detector's whole path (pinned
  buffers, copies, stream, tensor addresses) is exercised.
- cuda-python calls return tuples whose first item is the error (runtime.pyx: every
  function returns `(cudaError_t, ...)`; `(err, None)` on failure in 12.9).
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import operator
import re
import types
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from engine.runtime.trt_compat import _OPS_10, _OPS_85, _OPS_86

MAGIC = b"FAKE-TRT-ENGINE\n"
CALIBRATION_HEADER = (
    b"TRT-EntropyCalibration2-"  # the real cache starts "TRT-8601-EntropyCalibration2"
)


def _version(v: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", v)
    return int(m.group(1)), int(m.group(2))


class ParserError:
    """onnx-tensorrt's error object; str() as pyOnnx.cpp 8.5:47-50 formats it."""

    def __init__(self, node: int, code: str, desc: str, func: str = "parseGraph"):
        self._node, self._code, self._desc, self._func = node, code, desc, func

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def code(self):
        return self._code

    def __str__(self):
        return f"In node {self._node} ({self._func}): {self._code}: {self._desc}"


class BuildFailure(Exception):
    """Why the fake builder refuses a network (logged; the build returns None)."""


def make_tensorrt(version: str, dla_cores: int = 2):
    """A `tensorrt` module of this version."""
    major, minor = _version(version)
    v85 = (major, minor) < (8, 6)
    int64 = major >= 10
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log: list[str] = []  # what the logger would print
    trt.builds: list[dict] = []

    types_ = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["INT64"] if int64 else [])
    DataType = enum.Enum("DataType", {n: i for i, n in enumerate(types_)})
    trt.DataType = DataType
    for alias, name in [("float32", "FLOAT"), ("float16", "HALF"), ("int8", "INT8"),
                        ("int32", "INT32"), ("bool", "BOOL"), ("uint8", "UINT8"),
                        ("int64", "INT64")]:  # fmt: skip
        if name in types_:
            setattr(trt, alias, DataType[name])
    np_of = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
             "BOOL": np.bool_, "UINT8": np.uint8, "INT64": np.int64}  # fmt: skip

    def nptype(dt):  # tensorrt/__init__.py 8.5:151-171 (TypeError for the rest)
        if not isinstance(dt, DataType):
            raise TypeError(
                f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {dt}"
            )
        return np_of[dt.name]

    trt.nptype = nptype
    INTEGER = {DataType[n] for n in ("INT32", "BOOL", "UINT8", "INT8") if n in types_}
    if int64:
        INTEGER.add(DataType.INT64)
    FLOATS = {DataType.FLOAT, DataType.HALF}

    layer_types = ["CONVOLUTION", "ACTIVATION", "POOLING", "ELEMENTWISE", "UNARY", "SOFTMAX",
                   "CONCATENATION", "SHUFFLE", "SLICE", "SHAPE", "GATHER", "TOPK", "REDUCE",
                   "CONSTANT", "IDENTITY", "PLUGIN_V2", "NMS", "QUANTIZE",
                   "DEQUANTIZE"]  # fmt: skip
    if not v85:
        layer_types.append("CAST")  # pyGraph.cpp 8.6:253; absent in 8.5
    if major >= 10:
        layer_types.append("PLUGIN_V3")
    LayerType = enum.Enum("LayerType", {n: i for i, n in enumerate(layer_types)})
    trt.LayerType = LayerType

    builder_flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32",
                     "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                     "DIRECT_IO", "SPARSE_WEIGHTS"]  # fmt: skip
    if major < 10:
        builder_flags.append("STRICT_TYPES")
    if major >= 11:  # removed in 11.0 (pyCore.cpp 11.1:1600-1621)
        weak = ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")
        builder_flags = [f for f in builder_flags if f not in weak]
    trt.BuilderFlag = enum.Enum("BuilderFlag", {n: i for i, n in enumerate(builder_flags)})
    if major < 10:  # pyCore.cpp 8.5:1112-1114
        net_flags = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
    elif major == 10:  # 10.3 NvInfer.h:9609-9621
        net_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    else:  # 11.1 NvInfer.h:11462-11480
        net_flags = {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1}
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.DeviceType = enum.Enum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    class Logger:
        __slots__ = ("min_severity",)
        WARNING, INFO, ERROR, VERBOSE = 2, 3, 1, 4

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

    trt.Logger = Logger
    plugins: dict[tuple[str, str], tuple] = {}

    def init_libnvinfer_plugins(logger, namespace):  # registers the standard plugins
        if not isinstance(logger, Logger) or not isinstance(namespace, str):
            raise TypeError("init_libnvinfer_plugins(logger: ILogger, namespace: str)")
        # EfficientNMS_TRT version "1" (efficientNMSPlugin.cpp:29-30); outputs 0 and 3 are
        # INT32, 1 and 2 the input's float type (efficientNMSPlugin.cpp:142-148)
        plugins[("EfficientNMS_TRT", "1")] = ("INT32", None, None, "INT32")
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    class Tensor:
        __slots__ = ("name", "_dtype", "shape", "is_network_input", "is_network_output",
                     "is_shape_tensor")  # fmt: skip

        def __init__(self, name, dtype, shape=()):
            self.name, self._dtype, self.shape = name, dtype, tuple(shape)
            self.is_network_input = self.is_network_output = self.is_shape_tensor = False

        @property
        def dtype(self):
            return self._dtype

        if major < 11:  # 11.x: dtype is read-only (pyGraph.cpp 11.1:412)

            @dtype.setter
            def dtype(self, value):
                if not isinstance(value, DataType):
                    raise TypeError(f"incompatible type for ITensor.dtype: {value!r}")
                self._dtype = value

    class Layer:
        __slots__ = ("name", "type", "_inputs", "_outputs", "_precision", "_precision_set",
                     "_out_types", "metadata")  # fmt: skip

        def __init__(self, name, ltype, inputs, outputs):
            self.name, self.type, self._inputs, self._outputs = name, ltype, inputs, outputs
            self.metadata = ""
            self._precision_set = False
            self._out_types: dict[int, object] = {}
            # getPrecision: FLOAT unless the layer is inherently integer
            ints = outputs and all(t.dtype in INTEGER for t in outputs)
            self._precision = DataType.INT32 if ints else DataType.FLOAT

        @property
        def num_outputs(self):
            return len(self._outputs)

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_output(self, i):
            return self._outputs[i]

        def get_input(self, i):
            return self._inputs[i]

        def get_output_type(self, i):
            return self._out_types.get(i, self._outputs[i].dtype)

    class WeaklyTypedLayer(Layer):
        """8.x and 10.x layers (pyGraph.cpp 8.5:317-332, 10.3:340-356)."""

        __slots__ = ()

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value):
            if not isinstance(value, DataType):
                raise TypeError(f"incompatible type for ILayer.precision: {value!r}")
            self._precision, self._precision_set = value, True

        @property
        def precision_is_set(self):
            return self._precision_set

        def set_output_type(self, index, dtype):
            if not isinstance(dtype, DataType):
                raise TypeError(f"set_output_type(): incompatible function arguments: {dtype!r}")
            if not 0 <= index < len(self._outputs):
                raise IndexError(f"output index {index} out of range")
            self._out_types[index] = dtype

        def output_type_is_set(self, index):
            return index in self._out_types

    LayerClass = Layer if major >= 11 else WeaklyTypedLayer

    class Network:
        __slots__ = ("flags", "layers", "inputs", "outputs", "_names", "_counter", "onnx_bytes")

        def __init__(self, flags):
            self.flags, self.layers, self.inputs, self.outputs = flags, [], [], []
            self._names, self._counter = set(), 0
            self.onnx_bytes = b""

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        def has_implicit_batch_dimension(self):
            return major < 10 and not self.flags & (1 << net_flags["EXPLICIT_BATCH"])

        def add(self, name, ltype, inputs, out_types, out_names=None):
            """registerLayer: the node's name if unused, else name_<global counter>."""
            if name in self._names or not name:
                self._counter += 1
                name = f"{name or '(Unnamed Layer*)'}_{self._counter}"
            self._names.add(name)
            outs = [Tensor((out_names or [])[i] if out_names else f"{name}_out{i}", t)
                    for i, t in enumerate(out_types)]  # fmt: skip
            layer = LayerClass(name, LayerType[ltype], inputs, outs)
            self.layers.append(layer)
            return layer

    class Builder:
        __slots__ = ("logger", "_num_dla")

        def __init__(self, logger):
            self.logger = logger
            self._num_dla = dla_cores

        @property
        def num_DLA_cores(self):  # read-only (pyCore.cpp 8.5:1131)
            return self._num_dla

        def create_network(self, flags=0):
            if not isinstance(flags, int):
                raise TypeError("create_network(flags: int)")
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            try:
                _validate(network, config)
                calibrated = _int8(network, config)
            except BuildFailure as e:
                trt.log.append(f"[E] {e}")
                return None  # what TensorRT returns when the build fails
            trt.builds.append(
                {
                    "flags": set(config.flags),
                    "device": config.default_device_type,
                    "strongly_typed": _strongly_typed(network),
                    "qdq": _qdq(network),
                    "calibrated": calibrated,
                }
            )
            header = json.dumps({"tensorrt": version}).encode()
            return HostMemory(MAGIC + header + b"\n" + network.onnx_bytes)

    class HostMemory:  # IHostMemory: buffer-like serialized engine
        __slots__ = ("_data",)

        def __init__(self, data):
            self._data = data

        def __bytes__(self):
            return self._data

        @property
        def nbytes(self):
            return len(self._data)

    class TimingCache:
        __slots__ = ("data",)

        def __init__(self, data):
            self.data = data

        def serialize(self):
            return HostMemory(b"TIMING-" + version.encode())

    if major < 11:

        class IInt8EntropyCalibrator2:
            """pyInt8.cpp 8.6:293 (py::init<>): subclasses must call this __init__ (pybind11
            trampolines); the builder calls get_batch_size(), get_batch(names) until it gives
            None or [], read_calibration_cache() and write_calibration_cache(buffer).
            Removed in 11.0 (calibrators deprecated since 10.1, NvInfer.h 10.3:8823)."""

            def __init__(self):
                self._trt_initialized = True

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        config_slots = ("int8_calibrator",)  # pyCore.cpp 8.6:1171 def_property
    else:
        config_slots = ()

    class Config:
        """IBuilderConfig (pyCore.cpp 8.5:1054-1103, 10.3:1434-1489); no other attributes."""

        __slots__ = ("flags", "default_device_type", "DLA_core", "pools", "timing_cache",
                     "timing_in", *config_slots)  # fmt: skip

        def __init__(self):
            if config_slots:
                self.int8_calibrator = None
            self.flags: set = set()
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.pools: dict = {}
            self.timing_cache = None
            self.timing_in = None

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"set_flag(): incompatible function arguments: {flag!r}")
            self.flags.add(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size):
            if not isinstance(pool, trt.MemoryPoolType) or not isinstance(size, int):
                raise TypeError("set_memory_pool_limit(pool: MemoryPoolType, pool_size: int)")
            self.pools[pool] = size

        def create_timing_cache(self, data):
            self.timing_in = bytes(data)
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, TimingCache) or not isinstance(ignore_mismatch, bool):
                raise TypeError("set_timing_cache(cache: ITimingCache, ignore_mismatch: bool)")
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    def _validate(network, config):
        """What the build checks that matters here."""
        f = trt.BuilderFlag
        obey = (
            "OBEY_PRECISION_CONSTRAINTS" in f.__members__
            and f.OBEY_PRECISION_CONSTRAINTS in config.flags
        )
        for layer in network.layers:
            if major >= 11:
                break
            asked = dict(layer._out_types)
            for i, dt in asked.items():
                natural = layer._outputs[i].dtype
                if layer.type.name in ("PLUGIN_V2", "PLUGIN_V3"):
                    want = _PLUGIN_TYPES.get(layer.name, {}).get(i)
                    if want is not None and dt != DataType[want]:
                        raise BuildFailure(
                            f"{layer.name}: plugin output {i} supports {want} only "
                            "(efficientNMSPlugin.cpp:271-276)"
                        )
                if natural in INTEGER and dt in FLOATS and obey:
                    raise BuildFailure(
                        f"{layer.name}: no implementation obeys the requested output type "
                        f"{dt.name} for an inherently {natural.name} output"
                    )
            if layer.name in _CASTS and 0 in asked and asked[0] != _CASTS[layer.name]:
                raise BuildFailure(
                    f"{layer.name}: this Cast is an IIdentityLayer whose output type is the "
                    f"cast's target {_CASTS[layer.name].name}; setting {asked[0].name} changes it"
                )
            if obey and layer._precision_set and layer._precision in FLOATS:
                if layer.type.name in ("SHAPE", "CONSTANT") and all(
                    t.dtype in INTEGER for t in layer._outputs
                ):
                    raise BuildFailure(f"{layer.name}: a shape/constant layer runs in INT32 only")
                if layer.type.name in ("PLUGIN_V2", "PLUGIN_V3"):
                    raise BuildFailure(f"{layer.name}: a plugin chooses its own precision")
                if layer.type.name == "NMS":
                    raise BuildFailure(f"{layer.name}: INMSLayer has no FP32-pinned INT32 output")
        if config.default_device_type == trt.DeviceType.DLA:
            low = {getattr(f, n, None) for n in ("FP16", "INT8")}
            if not (low & config.flags) and major < 11:
                if f.GPU_FALLBACK not in config.flags:
                    raise BuildFailure("DLA only supports FP16 and Int8 precision type")
                trt.log.append("[W] DLA only supports FP16 and Int8: layers run on the GPU")

    def _strongly_typed(network):
        return major >= 11 or (
            major == 10 and bool(network.flags & (1 << net_flags["STRONGLY_TYPED"]))
        )

    def _qdq(network):
        return any(layer.type.name in ("QUANTIZE", "DEQUANTIZE") for layer in network.layers)

    def _int8(network, config):
        """INT8: explicit (Q/DQ layers) or implicit (BuilderFlag.INT8 with a calibrator).
        Returns the number of calibration batches the calibrator gave (0: none asked, -1:
        read from its cache)."""
        f = trt.BuilderFlag
        int8_flag = "INT8" in f.__members__ and f.INT8 in config.flags
        qdq = _qdq(network)
        if _strongly_typed(network) and major == 10:
            # "Setting layer precision and layer output types is not allowed" (NvInfer.h
            # 10.3:9616-9619); precision flags have no meaning there
            asked = {n for n in ("FP16", "INT8") if getattr(f, n) in config.flags}
            if asked:
                raise BuildFailure(
                    f"a strongly typed network takes no {', '.join(sorted(asked))} flag"
                )
            if any(layer._precision_set or layer._out_types for layer in network.layers):
                raise BuildFailure("a strongly typed network's layer precisions are not settable")
        if qdq and major < 10 and not int8_flag:
            # "To enable any quantization operations, the INT8 flag must be set in the builder
            # configuration" (TensorRT 8.6 developer guide, Working with INT8)
            raise BuildFailure("Q/DQ layers in the network but BuilderFlag.INT8 is not set")
        calibrator = getattr(config, "int8_calibrator", None)
        if not int8_flag:
            return 0
        if qdq:
            if calibrator is not None:  # explicit quantization ignores it
                trt.log.append("[W] Calibrator won't be used in explicit precision mode. Use "
                               "quantization aware training to generate network with "
                               "Quantize/Dequantize nodes.")  # fmt: skip
            return 0
        if calibrator is None:
            raise BuildFailure("Calibration failure occurred with no scaling factors detected. "
                               "This could be due to no int8 calibrator or insufficient custom "
                               "scales for network layers.")  # fmt: skip
        if not getattr(calibrator, "_trt_initialized", False):
            raise TypeError("IInt8EntropyCalibrator2.__init__() must be called when "
                            "overriding __init__")  # fmt: skip
        cache = calibrator.read_calibration_cache()
        if cache is not None and len(bytes(cache)):
            if not bytes(cache).startswith(CALIBRATION_HEADER + version.encode()):
                raise BuildFailure("calibration cache from another TensorRT version")
            return -1
        names = [t.name for t in network.inputs]
        batch = calibrator.get_batch_size()
        count, digest = 0, 0
        while True:
            try:  # pyInt8.cpp 8.6:52-75: exceptions are printed and end the calibration
                ptrs = calibrator.get_batch(names)
            except Exception as e:  # noqa: BLE001
                trt.log.append(f"[ERROR] Exception caught in get_batch(): {e}")
                break
            if ptrs is None or len(ptrs) == 0:
                break
            if len(ptrs) != len(names) or not all(isinstance(p, int) for p in ptrs):
                raise BuildFailure("get_batch must give one device pointer per input")
            for p, t in zip(ptrs, network.inputs):
                nbytes = batch * int(np.prod(t.shape[1:])) * np.dtype(np_of[t.dtype.name]).itemsize
                data = CUDA.view(p, nbytes)  # ValueError for memory that is not on the device
                digest = (digest * 31 + int(np.frombuffer(data, np.uint8).sum())) % (1 << 61)
            count += 1
        if count == 0:
            raise BuildFailure("Calibration failure occurred with no scaling factors detected.")
        calibrator.write_calibration_cache(
            memoryview(CALIBRATION_HEADER + version.encode() + b"\n" + str(digest).encode())
        )
        return count

    _CASTS: dict[str, object] = {}  # 8.5 Cast layers by name -> their target type

    class OnnxParser:
        __slots__ = ("network", "logger", "_errors")

        def __init__(self, network, logger):
            self.network, self.logger, self._errors = network, logger, []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

        def parse_from_file(self, path):
            try:
                _import(self.network, Path(path))
            except _ParseError as e:
                self._errors.append(ParserError(e.node, e.code, e.desc))
                return False
            return True

    class _ParseError(Exception):
        def __init__(self, node, code, desc):
            super().__init__(desc)
            self.node, self.code, self.desc = node, code, desc

    ops = _OPS_85 if v85 else (_OPS_86 if major < 10 else _OPS_10)

    def _trt_type(onnx_type):
        if onnx_type == TensorProto.INT64:
            return DataType.INT64 if int64 else DataType.INT32  # cast down before 10.0
        names = {
            TensorProto.FLOAT: "FLOAT",
            TensorProto.FLOAT16: "HALF",
            TensorProto.INT32: "INT32",
            TensorProto.BOOL: "BOOL",
            TensorProto.UINT8: "UINT8",
            TensorProto.INT8: "INT8",
        }
        return DataType[names[onnx_type]]

    layer_of_op = {
        "Conv": "CONVOLUTION", "Relu": "ACTIVATION", "Clip": "ACTIVATION", "MaxPool": "POOLING",
        "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE",
        "Pow": "ELEMENTWISE", "Min": "ELEMENTWISE", "Max": "ELEMENTWISE", "Exp": "UNARY",
        "Sqrt": "UNARY", "Softmax": "SOFTMAX", "Concat": "CONCATENATION", "Reshape": "SHUFFLE",
        "Transpose": "SHUFFLE", "Squeeze": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Slice": "SLICE",
        "Shape": "SHAPE", "Gather": "GATHER", "GatherND": "GATHER", "TopK": "TOPK",
        "ReduceSum": "REDUCE", "Identity": "IDENTITY", "Cast": "IDENTITY" if v85 else "CAST",
    }  # fmt: skip

    def _import(network, path):
        if network.has_implicit_batch_dimension():  # ModelImporter.cpp 8.5-GA
            raise _ParseError(-1, "INVALID_VALUE", "This version of the ONNX parser only "
                              "supports TensorRT INetworkDefinitions with an explicit batch "
                              "dimension. Please ensure the network was initialized with the "
                              "kEXPLICIT_BATCH flag.")  # fmt: skip
        data = path.read_bytes()
        model = onnx.load_from_string(data)
        inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
        types_of = {
            v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)
        }
        inits = {t.name: t for t in g.initializer}
        types_of.update({t.name: t.data_type for t in g.initializer})
        tensors: dict[str, object] = {}
        for v in g.input:
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
            t = Tensor(v.name, _trt_type(v.type.tensor_type.elem_type), dims)
            t.is_network_input = True
            tensors[v.name] = t
            network.inputs.append(t)

        def tensor(name):
            if name in tensors:
                return tensors[name]
            if name in inits:  # a Constant layer named after the initializer
                layer = network.add(
                    name, "CONSTANT", [], [_trt_type(inits[name].data_type)], [name]
                )
                tensors[name] = layer.get_output(0)
                return tensors[name]
            return Tensor(name, DataType.FLOAT)

        misread = onnx.ModelProto()
        misread.CopyFrom(model)
        for idx, node in enumerate(g.node):
            name = node.name or f"node_of_{node.output[0]}"
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            ins = [tensor(i) for i in node.input if i]
            out_t = [_trt_type(types_of[o]) if o in types_of and types_of[o] else DataType.FLOAT
                     for o in node.output]  # fmt: skip
            op = node.op_type
            if op not in ops:  # FallbackPluginImporter (builtin_op_importers.cpp 8.5:5425)
                version_ = attrs.get("plugin_version", b"1")
                version_ = version_.decode() if isinstance(version_, bytes) else str(version_)
                kinds = plugins.get((op, version_))
                if kinds is None:
                    raise _ParseError(idx, "UNSUPPORTED_NODE", "Plugin not found, are the plugin "
                                      "name, version, and namespace correct?")  # fmt: skip
                float_in = ins[0].dtype
                out_t = [DataType[k] if k else float_in for k in kinds]
                layer = network.add(name, "PLUGIN_V2", ins, out_t, list(node.output))
                _PLUGIN_TYPES[layer.name] = {i: k for i, k in enumerate(kinds) if k}
            else:
                if op in ("QuantizeLinear", "DequantizeLinear"):
                    _check_qdq(idx, node, ins, inits)
                    q = op == "QuantizeLinear"
                    layer = network.add(name, "QUANTIZE" if q else "DEQUANTIZE", ins[:2],
                                        [DataType.INT8 if q else DataType.FLOAT],
                                        list(node.output))  # fmt: skip
                    for i, o in enumerate(node.output):
                        layer.get_output(i).name = o
                        tensors[o] = layer.get_output(i)
                    continue
                uint8_in = [t for t in ins if t.dtype == DataType.UINT8]
                if uint8_in and v85 and op != "Cast":  # notInvalidType(..., {"UINT8"})
                    raise _ParseError(idx, "UNSUPPORTED_NODE", f"{op} does not take UINT8")
                if (
                    op == "Cast"
                    and uint8_in
                    and attrs["to"] not in (TensorProto.FLOAT, TensorProto.FLOAT16)
                ):
                    raise _ParseError(idx, "UNSUPPORTED_NODE", "UINT8 casts only to FLOAT/HALF")
                if not v85 and DataType.UINT8 in out_t:  # ModelImporter.cpp 8.6-GA:241-254
                    raise _ParseError(idx, "UNSUPPORTED_NODE", "TensorRT does not support UINT8 "
                                      "types for intermediate tensors!")  # fmt: skip
                if op == "TopK":
                    if v85 and node.input[1] not in inits:
                        raise _ParseError(idx, "UNSUPPORTED_NODE", "This version of TensorRT only "
                                          "supports input K as an initializer.")  # fmt: skip
                    out_t = [
                        out_t[0],
                        DataType.INT32,
                    ]  # indices: "always Int32" (NvInfer.h 8.6:719-722)
                if (
                    op in ("Squeeze", "ReduceSum")
                    and len(node.input) > 1
                    and node.input[1] not in inits
                ):
                    raise _ParseError(
                        idx, "UNSUPPORTED_NODE", f"{op} axes input must be an initializer!"
                    )
                if op == "Shape":
                    out_t = [DataType.INT32]  # IShapeLayer: Int32 in 8.x (NvInfer.h 8.5:4344)
                    if major < 10:
                        for a in list(misread.graph.node[idx].attribute):
                            if a.name in ("start", "end"):
                                misread.graph.node[idx].attribute.remove(a)
                if op == "NonMaxSuppression":
                    # the scores' transpose carries the node's name, the INMSLayer gets
                    # <name>_<n> (builtin_op_importers.cpp 8.5:3131-3137); output 0 INT32
                    network.add(name, "SHUFFLE", [ins[1]], [ins[1].dtype])
                    layer = network.add(name, "NMS", ins[:2], [DataType.INT32, DataType.INT32])
                    out = layer.get_output(0)
                    if int64:  # cast to INT64 (onnxOpImporters.cpp 10.0-GA:3705)
                        out = network.add("", "CAST", [out], [DataType.INT64]).get_output(0)
                    out.name = node.output[0]
                    tensors[node.output[0]] = out
                    continue
                layer = network.add(
                    name, layer_of_op.get(op, "ELEMENTWISE"), ins, out_t, list(node.output)
                )
                if op == "Cast" and v85:
                    # An IIdentityLayer whose output type is the cast's target
                    # (builtin_op_importers.cpp 8.5:327-328); kept aside in _CASTS so that
                    # _out_types shows only what the builder's caller asks for.
                    _CASTS[layer.name] = out_t[0]
                if op == "Shape" and major >= 10:  # Shape (Int64) + Cast to INT64 (+ Slice)
                    cast = network.add("", "CAST", [layer.get_output(0)], [DataType.INT64])
                    layer = cast
                if op == "TopK" and int64:
                    network.add(
                        "ONNXTRT_castHelper", "CAST", [layer.get_output(1)], [DataType.INT64]
                    )
            for i, o in enumerate(node.output):
                t = layer.get_output(i)
                t.name = o
                tensors[o] = t
        for v in g.output:
            t = tensors[v.name]
            t.is_network_output = True
            network.outputs.append(t)
            declared = _trt_type(v.type.tensor_type.elem_type)
            if declared == DataType.INT32 and t.dtype != DataType.INT32:
                raise _ParseError(
                    -1,
                    "INVALID_GRAPH",
                    f"For INT32 tensors, the output type must also be INT32 ({v.name})",
                )
        _run_misread(misread, model)
        network.onnx_bytes = data

    _PLUGIN_TYPES: dict[str, dict] = {}

    def _check_qdq(idx, node, ins, inits):
        """QuantDequantLinearHelper (8.6-GA builtin_op_importers.cpp:1157-1236; 8.5-GA
        1184-1260; 10.1-GA onnxOpImporters.cpp:1346-1470)."""
        if ins[0].dtype == DataType.UINT8 or (
            node.op_type == "QuantizeLinear" and len(ins) > 2 and ins[2].dtype == DataType.UINT8
        ):  # CHECK(notInvalidType(inputs.at(0) / inputs.at(2), {"UINT8"}))
            raise _ParseError(idx, "UNSUPPORTED_NODE", "Found invalid input type of UINT8")
        if node.op_type == "DequantizeLinear" and ins[0].dtype == DataType.INT32:
            # IDequantizeLayer: INT8 input only (NvInfer.h 8.6:6127-6130, 10.3:5468-5472)
            raise _ParseError(idx, "UNSUPPORTED_NODE", "IDequantizeLayer input must be INT8")
        if len(node.input) < 3 and major < 10:
            raise _ParseError(idx, "INVALID_NODE", "This version of TensorRT requires 3 inputs "
                              "for the INT8 QuantizeLinear/DequantizeLinear operator.")  # fmt: skip
        if len(node.input) > 2 and node.input[2] in inits:
            zero = onnx.numpy_helper.to_array(inits[node.input[2]])
            if np.any(zero != 0):
                raise _ParseError(idx, "INVALID_NODE", "TensorRT only supports symmetric "
                                  "quantization. The zero point for the "
                                  "QuantizeLinear/DequantizeLinear operator must be all "
                                  "zeros.")  # fmt: skip
        if node.input[1] in inits:
            scale = onnx.numpy_helper.to_array(inits[node.input[1]])
            if not np.all(scale > 0):
                raise _ParseError(idx, "INVALID_NODE", "Scale coefficients must all be positive")

    def _run_misread(misread, model):
        """The graph as this parser reads it, run once: where it does not hold together, the
        real build fails too (e.g. a Reshape of the 2-element Shape to [1, 1])."""
        if misread == model:
            return
        import onnxruntime as ort

        g = misread.graph
        keep = [n for n in g.node if n.op_type in ops]
        if len(keep) != len(g.node):
            return  # a plugin graph cannot run here
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # the failure is reported through the parser
            sess = ort.InferenceSession(
                misread.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
            feeds = {}
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) else 1 for d in i.shape]
                feeds[i.name] = np.zeros(shape, np.uint8 if "uint8" in i.type else np.float32)
            sess.run(None, feeds)
        except Exception as e:  # noqa: BLE001 - any runtime failure is the parse failure
            raise _ParseError(-1, "INVALID_NODE", str(e).splitlines()[0][:300]) from None

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    class Engine:
        __slots__ = ("_io", "_onnx")

        def __init__(self, onnx_bytes):
            self._onnx = onnx_bytes
            m = onnx.load_from_string(onnx_bytes)
            self._io = []
            for v, mode in [(v, "INPUT") for v in m.graph.input] + [
                (v, "OUTPUT") for v in m.graph.output
            ]:
                shape = tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
                self._io.append((v.name, shape, _trt_type(v.type.tensor_type.elem_type), mode))

        @property
        def num_io_tensors(self):
            return len(self._io)

        def get_tensor_name(self, i):
            return self._io[i][0]

        def _get(self, name):
            for io in self._io:
                if io[0] == name:
                    return io
            raise KeyError(name)

        def get_tensor_shape(self, name):
            return self._get(name)[1]

        def get_tensor_dtype(self, name):
            return self._get(name)[2]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode[self._get(name)[3]]

        def create_execution_context(self):
            return Context(self)

    class Context:
        __slots__ = ("engine", "addresses", "_session")

        def __init__(self, engine):
            import onnxruntime as ort

            self.engine, self.addresses = engine, {}
            self._session = ort.InferenceSession(engine._onnx, providers=["CPUExecutionProvider"])

        def set_tensor_address(self, name, memory):  # (name: str, memory: int) -> bool
            if not isinstance(memory, int):
                raise TypeError(
                    f"set_tensor_address(): incompatible function arguments: {memory!r}"
                )
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):  # (stream_handle: int) -> bool
            handle = operator.index(stream_handle)  # pybind's size_t: ints and __index__
            if handle not in CUDA.streams:
                return False
            feeds, outs = {}, []
            for name, shape, dt, mode in self.engine._io:
                n = int(np.prod(shape)) * np.dtype(nptype(dt)).itemsize
                buf = CUDA.view(self.addresses[name], n)
                if mode == "INPUT":
                    feeds[name] = np.frombuffer(buf, nptype(dt)).reshape(shape).copy()
                else:
                    outs.append((name, buf, dt))
            results = self._session.run([o[0] for o in outs], feeds)
            for (_name, buf, dt), r in zip(outs, results):
                arr = np.frombuffer(buf, nptype(dt))
                arr[...] = np.asarray(r, nptype(dt)).reshape(-1)
            return True

    class Runtime:
        __slots__ = ("logger", "DLA_core")

        def __init__(self, logger):
            self.logger, self.DLA_core = logger, -1

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(MAGIC):
                trt.log.append("[E] Engine deserialization failed.")
                return None  # None, not an exception (pyCoreDoc.h 8.6:1702-1708)
            header, _, onnx_bytes = data[len(MAGIC) :].partition(b"\n")
            if json.loads(header)["tensorrt"] != version:
                trt.log.append(
                    "[E] The engine plan file is not compatible with this version of TensorRT"
                )
                return None
            return Engine(onnx_bytes)

    trt.Runtime = Runtime
    return trt


class _FakeCuda:
    """Memory of the fake device and host: ctypes buffers by address."""

    def __init__(self):
        self.buffers: dict[int, ctypes.Array] = {}
        self.streams: set[int] = set()
        self.freed: list[int] = []

    def view(self, ptr, n):
        for base, buf in self.buffers.items():
            if base <= ptr and ptr + n <= base + ctypes.sizeof(buf):
                return (ctypes.c_uint8 * n).from_address(ptr)
        raise ValueError(f"address {ptr:#x} (+{n}) is not allocated memory")


CUDA = _FakeCuda()


def make_cudart(
    device_name: bytes = b"NVIDIA Jetson AGX Orin", cc=(8, 7), fail: dict | None = None
):
    """A `cuda.bindings.runtime` module: every call returns (cudaError_t, *values)."""
    fail = fail if fail is not None else {}
    rt = types.ModuleType("cuda.bindings.runtime")

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorInsufficientDriver = 35
        cudaErrorInvalidResourceHandle = 400

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStream_t:
        def __init__(self, handle):
            self._h = handle

        def __int__(self):
            return self._h

        __index__ = __int__

    class cudaDeviceProp:
        name = device_name
        major, minor = cc

    ok = cudaError_t.cudaSuccess
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaStream_t = cudaError_t, cudaMemcpyKind, cudaStream_t
    rt.cudaStreamNonBlocking = 1
    rt.calls = []

    def call(name, *values):
        rt.calls.append(name)
        if name in fail:
            return (fail.pop(name), *([None] * len(values)))
        return (ok, *values)

    def alloc(name, size):
        if not isinstance(size, int) or size <= 0:
            return (cudaError_t.cudaErrorInvalidValue, None)
        buf = (ctypes.c_uint8 * size)()
        ptr = ctypes.addressof(buf)
        result = call(name, ptr)
        if result[0] == ok:
            CUDA.buffers[ptr] = buf
        return result

    def free(name, ptr):
        if ptr not in CUDA.buffers:
            return (cudaError_t.cudaErrorInvalidValue,)
        del CUDA.buffers[ptr]
        CUDA.freed.append(ptr)
        return call(name)

    rt.cudaSetDevice = lambda device: call("cudaSetDevice")
    rt.cudaGetDeviceCount = lambda: call("cudaGetDeviceCount", 1)
    rt.cudaGetDeviceProperties = lambda device: call("cudaGetDeviceProperties", cudaDeviceProp())
    rt.cudaMallocHost = lambda size: alloc("cudaMallocHost", size)
    rt.cudaMalloc = lambda size: alloc("cudaMalloc", size)
    rt.cudaFreeHost = lambda ptr: free("cudaFreeHost", ptr)
    rt.cudaFree = lambda ptr: free("cudaFree", ptr)

    handles = itertools.count(1000)  # distinct stream handles, never reused

    def stream_create(flags):
        s = cudaStream_t(next(handles))
        result = call("cudaStreamCreateWithFlags", s)
        if result[0] == ok:
            CUDA.streams.add(int(s))
        return result

    def stream_destroy(stream):
        if int(stream) not in CUDA.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        CUDA.streams.discard(int(stream))
        return call("cudaStreamDestroy")

    def memcpy(dst, src, count, kind, stream):
        if int(stream) not in CUDA.streams or not isinstance(kind, cudaMemcpyKind):
            return (cudaError_t.cudaErrorInvalidValue,)
        try:
            CUDA.view(dst, count)
            CUDA.view(src, count)
        except ValueError:
            return (cudaError_t.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, count)
        return call("cudaMemcpyAsync")

    rt.cudaStreamCreateWithFlags = stream_create
    rt.cudaStreamDestroy = stream_destroy
    rt.cudaMemcpyAsync = memcpy
    rt.cudaStreamSynchronize = lambda stream: call("cudaStreamSynchronize")
    rt.cudaGetErrorName = lambda err: (ok, cudaError_t(int(err)).name.encode())
    return rt

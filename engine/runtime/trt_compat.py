"""Would this TensorRT's ONNX parser take this graph? A check run before TensorRT sees it.

TensorRT cannot be installed everywhere (not on CI, not on a desktop without an NVIDIA GPU),
and a graph its parser rejects, or silently reads differently, is found late: on the Jetson,
after a copy and minutes of building. `check_graph(model, "8.5")` lists what the parser of
that TensorRT release would reject or misread, from the rules below. Each rule cites the
onnx-tensorrt source or TensorRT document it mirrors (onnx/onnx-tensorrt branches 8.5-GA,
8.6-GA, 9.3, 10.0-GA, 10.1-GA; TensorRT 11 from NVIDIA's documentation only).

Used by `build` (engine.runtime.tensorrt_backend.build_engine) before parsing, and by the tests on
every graph `export` makes. Needs the onnx package (on the Jetson too), not TensorRT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.runtime.detector import EngineError


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# onnx-tensorrt docs/operators.md of 8.5-GA: the operators marked "Y" (142).
_OPS_85 = _names(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsNaN LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
"""
)
# 8.6-GA adds three; 10.0-GA/10.1-GA five more (docs/operators.md of each branch).
_OPS_86 = _OPS_85 | {"GroupNormalization", "IsInf", "LayerNormalization"}
_OPS_10 = _OPS_86 | {"CastLike", "DeformConv", "Gelu", "Hardmax", "Mish"}

# Plugins the parser falls back to for an op it has no importer for ("No importer registered
# for op: ... Attempting to import as plugin", ModelImporter.cpp 8.5-GA:150-159, 10.1-GA:
# 155-168), by name and plugin_version (a string attribute, default "1",
# builtin_op_importers.cpp 8.5-GA:5428-5430). EfficientNMS_TRT ships from 8.0 to 11.x
# (deprecated in 10.12: plugin/efficientNMSPlugin/efficientNMSPlugin.h release/11.0:30).
_PLUGINS = {"EfficientNMS_TRT": "1"}

# ITopKLayer: "Currently only values of K up to 3840 are supported" (NvInfer.h release/8.5:
# 7055, release/10.3:6672, release/11.1:8595).
MAX_TOPK = 3840
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class ParserRules:
    """What one TensorRT release's ONNX parser takes."""

    release: str  # "8.5", "8.6", "9", "10", "11"
    max_opset: int  # docs/operators.md: "supports operators up to Opset N"
    ops: frozenset[str]
    shape_slice: bool  # Shape's start/end honoured (addShape + Slice from 10.0)
    int64: bool  # INT64 tensors; before 10.0 INT64 is cast down to INT32, clamped
    topk_k_tensor: bool  # TopK's K may be a tensor (8.6: "dynamic K values")
    topk_int: bool  # TopK on integer values
    int_pow: bool = False  # Pow with an integer exponent (10.8: onnx-tensorrt Changelog)


RULES = {
    # 8.5-GA docs/operators.md:5 "supports operators up to Opset 17"; the Shape importer is a
    # bare addShape (builtin_op_importers.cpp:4478-4484); INT64 weights are cast down and
    # clamped (onnx2trt_utils.cpp:370-407); TopK needs K as an initializer and float values
    # (builtin_op_importers.cpp:4894-4904).
    "8.5": ParserRules("8.5", 17, _OPS_85, False, False, False, False),
    # 8.6-GA: opset 17 (docs/operators.md:5), bare addShape (builtin_op_importers.cpp:
    # 4434-4440), TopK with a tensor K and INT32 values (builtin_op_importers.cpp:4872-4898).
    "8.6": ParserRules("8.6", 17, _OPS_86, False, False, True, True),
    # 9.3: opset 19; Shape is addShape + Cast to INT64, still without start/end
    # (builtin_op_importers.cpp:4839-4848).
    "9": ParserRules("9", 19, _OPS_86, False, False, True, True),
    # 10.0-GA: "opset 9 to opset 20" (docs/operators.md:5); Shape's start/end become a Slice
    # (onnxOpImporters.cpp:5188-5219); INT64 is native (importerUtils.cpp:326).
    "10": ParserRules("10", 20, _OPS_10, True, True, True, True),
    # 11.x: "Maximum opset 25" (NVIDIA's ONNX Opset Guide); its parser's sources were not
    # available, so otherwise the 10.x rules apply.
    "11": ParserRules("11", 25, _OPS_10, True, True, True, True),
}
RELEASES = ("8.5", "8.6", "10", "11")  # JetPack 5.1, JetPack 6.0, JetPack 6.1/6.2 and desktops


def parser_rules(trt_version: str) -> ParserRules:
    """The rules for a TensorRT version string ('8.5.2.2', '10.3.0', '11.4.1', or '8.6')."""
    m = re.match(r"(\d+)(?:\.(\d+))?", trt_version.strip())
    if not m:
        raise EngineError(f"unrecognized TensorRT version {trt_version!r}")
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    if major < 8 or (major == 8 and minor < 5):
        raise EngineError(
            f"TensorRT {trt_version} is too old: this project needs 8.5 or newer (JetPack 5.1+)"
        )
    if major == 8:
        return RULES["8.5" if minor == 5 else "8.6"]
    rules = RULES[str(major) if major in (9, 10) else "11"]
    if major > 10 or (major == 10 and minor >= 8):
        rules = replace(rules, int_pow=True)
    return rules


def _load(model):
    import onnx

    source = str(model) if isinstance(model, (str, Path)) else "the ONNX"
    try:
        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        return onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # DecodeError, ValueError, InferenceError ... for a foreign file
        raise EngineError(f"{source}: not a readable ONNX file ({type(e).__name__})") from None


class _Graph:
    """Lookups over one ONNX graph: element types, ranks, constant values."""

    def __init__(self, m) -> None:
        g = m.graph
        values = (*g.value_info, *g.input, *g.output)
        self.types = {v.name: v.type.tensor_type.elem_type for v in values}
        self.types.update({t.name: t.data_type for t in g.initializer})
        self.ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in values
            if v.type.tensor_type.HasField("shape")
        }
        self.inits = {t.name: t for t in g.initializer}
        self.consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
        self.outputs = {v.name for v in g.output}

    def value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output, None if not constant."""
        from onnx import helper, numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.consts.get(name)
        if node is None or not node.attribute:
            return None
        a = node.attribute[0]
        v = helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(v)
        if a.name in ("value_int", "value_ints"):
            return np.asarray(v, np.int64)
        if a.name in ("value_float", "value_floats"):
            return np.asarray(v, np.float32)
        return None  # sparse or string constants: not used as shapes, K or axes


def check_graph(model, trt_version: str) -> list[str]:
    """What the ONNX parser of `trt_version` would reject or read differently in `model`
    (an onnx.ModelProto or a path); an empty list when it would take the graph as is."""
    rules = parser_rules(trt_version)
    m = _load(model)
    graph = _Graph(m)
    problems: list[str] = []
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > rules.max_opset:  # not enforced by the parser, but untested by NVIDIA
        problems.append(
            f"opset {opset}: TensorRT {rules.release} reads ONNX up to opset {rules.max_opset}"
        )
    for n in m.graph.node:
        where = f"{n.op_type} node {n.name or n.output[0]}"
        problems += [f"{where}: {p}" for p in _node_problems(n, graph, rules)]
    problems += _io_problems(m.graph, rules)
    return problems


def _node_problems(n, graph: _Graph, rules: ParserRules) -> list[str]:
    from onnx import TensorProto, helper

    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    release = f"TensorRT {rules.release}"
    out: list[str] = []
    if n.op_type in _PLUGINS:  # dispatch is by op_type only; the domain is ignored
        return _plugin_problems(n.op_type, attrs)
    if n.op_type not in rules.ops:
        return [f"{release}'s parser has no importer for this op and no plugin of this name"]
    # UINT8 only as a network input read by a Cast to FP32/FP16 (8.5: builtin_op_importers.cpp
    # 316-320 and notInvalidType(..., {"UINT8"}); 8.6+: "TensorRT does not support UINT8
    # types for intermediate tensors!", ModelImporter.cpp 8.6-GA:241-254, 10.0-GA:241-255).
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return _qdq_problems(n, graph, rules)
    reads_uint8 = any(graph.types.get(i) == TensorProto.UINT8 for i in n.input)
    if reads_uint8 and (
        n.op_type != "Cast" or attrs.get("to") not in (TensorProto.FLOAT, TensorProto.FLOAT16)
    ):
        out.append(f"{release} reads a UINT8 tensor only in a Cast to FP32 or FP16")
    if any(graph.types.get(o) == TensorProto.UINT8 and o not in graph.outputs for o in n.output):
        out.append(f"{release} has UINT8 only as a network input or output")
    if n.op_type == "Shape" and not rules.shape_slice:
        rank = graph.ranks.get(n.input[0])
        start, end = attrs.get("start", 0), attrs.get("end")
        if start != 0 or (end is not None and (rank is None or end < rank)):
            out.append(
                f"{release} ignores Shape's start/end (a bare addShape) and gives the whole "
                "shape; take the whole Shape and Gather or Slice it"
            )
    if n.op_type == "TopK":
        k = graph.value(n.input[1]) if len(n.input) > 1 else None
        if k is None and not rules.topk_k_tensor:
            out.append(f"{release} needs TopK's K as an initializer")
        if k is not None and int(np.asarray(k).reshape(-1)[0]) > MAX_TOPK:
            out.append(f"K = {int(np.asarray(k).reshape(-1)[0])}; TensorRT's TopK takes <= 3840")
        if not rules.topk_int and graph.types.get(n.input[0]) in (
            TensorProto.INT32,
            TensorProto.INT64,
        ):
            out.append(f"{release}'s TopK takes FP32 or FP16 values only")
    # Axes given as inputs must be known when the network is built: "Squeeze axes input must
    # be an initializer!" (builtin_op_importers.cpp 8.5-GA:4793), "Axis input must be an
    # initializer!" (onnx2trt_utils.cpp 8.5-GA:1712), Unsqueeze "should be a constant
    # tensor" (8.5-GA:5039), Slice "does not support dynamic axes" (8.5-GA:4536).
    axes = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "ReduceSum": 1}.get(n.op_type)
    if axes is not None and len(n.input) > axes and n.input[axes]:
        if graph.value(n.input[axes]) is None:
            out.append("its axes must be an initializer")
    elif n.op_type == "ReduceSum" and not rules.int64 and attrs.get("noop_with_empty_axes"):
        out.append(f"{release} ignores noop_with_empty_axes (onnx2trt_utils.cpp 8.5-GA:1698)")
    if n.op_type == "MaxPool":  # builtin_op_importers.cpp 8.5-GA:2910; onnx2trt_utils 1660
        if len([o for o in n.output if o]) > 1:
            out.append("MaxPool's Indices output is not supported")
        if any(d != 1 for d in attrs.get("dilations", [])):
            out.append("MaxPool dilations other than 1 are not supported")
    if (
        n.op_type == "Pow"
        and not rules.int_pow
        and graph.types.get(n.input[1])
        in (
            TensorProto.INT32,
            TensorProto.INT64,
        )
    ):  # integer exponents from 10.8 (onnx-tensorrt Changelog); refused before
        out.append("an integer exponent (TensorRT < 10.8 takes float exponents only)")
    if not rules.int64:
        # INT64 constants are cast down to INT32 and clamped (onnx2trt_utils.cpp 8.5-GA:
        # 388-404); harmless only for Slice starts/ends, which are clamped to the axis.
        slice_bounds = n.input[1:3] if n.op_type == "Slice" else []
        for name in n.input:
            v = graph.value(name) if name and name not in slice_bounds else None
            wide = v is not None and v.dtype == np.int64 and v.size > 0
            if wide and (v.min() < _INT32[0] or v.max() > _INT32[1]):
                out.append(
                    f"INT64 constant {name} has values outside INT32, which {release} "
                    "clamps (it has no INT64)"
                )
    return out


def _qdq_problems(n, graph: _Graph, rules: ParserRules) -> list[str]:
    """QuantizeLinear/DequantizeLinear as onnx-tensorrt's QuantDequantLinearHelper takes them
    (8.5-GA builtin_op_importers.cpp:1184-1260, 8.6-GA:1157-1236, 10.1-GA
    onnxOpImporters.cpp:1346-1470): INT8 only, never UINT8 data or zero points
    (notInvalidType(..., {"UINT8"}) in every version); constant zero points all zero ("TensorRT
    only supports symmetric quantization"); constant scales all positive; 8.x needs the zero
    point as the third input; IDequantizeLayer takes INT8 input only."""
    from onnx import TensorProto

    release = f"TensorRT {rules.release}"
    out: list[str] = []
    data, zero = n.input[0], (n.input[2] if len(n.input) > 2 else "")
    unsigned = graph.types.get(zero) == TensorProto.UINT8 or (
        n.op_type == "DequantizeLinear" and graph.types.get(data) == TensorProto.UINT8
    )
    if unsigned:
        out.append(
            f"{release} quantizes to signed INT8 only, not UINT8 (an INT8 ONNX for ONNX "
            "Runtime: export with --int8-target tensorrt)"
        )
    if n.op_type == "DequantizeLinear" and graph.types.get(data) == TensorProto.INT32:
        # IDequantizeLayer: INT8 input only (NvInfer.h release/8.6:6127-6130; INT8, FP8 or
        # INT4 in release/10.3:5468-5472)
        out.append(f"{release} dequantizes INT8 only, not INT32 (keep biases in float)")
    if not zero and rules.release.startswith("8"):
        out.append(f"{release} needs the zero point (3 inputs) for INT8")
    z = graph.value(zero) if zero else None
    if z is not None and np.any(z != 0):
        out.append(f"{release} takes symmetric quantization only: the zero point must be 0")
    scale = graph.value(n.input[1]) if len(n.input) > 1 else None
    if scale is not None and not np.all(scale > 0):
        out.append("scale coefficients must all be positive")
    return out


def _plugin_problems(op: str, attrs: dict) -> list[str]:
    """EfficientNMS_TRT's creator checks (efficientNMSPlugin.cpp release/10.3:456-499)."""
    version = attrs.get("plugin_version", b"1")
    version = version.decode() if isinstance(version, bytes) else str(version)
    out = []
    if version != _PLUGINS[op]:
        out.append(f"plugin_version {version!r}; TensorRT has version {_PLUGINS[op]!r}")
    for f in ("score_threshold", "iou_threshold"):
        if not isinstance(attrs.get(f), float):
            out.append(f"{f} must be a FLOAT attribute")
    for f in ("max_output_boxes", "background_class", "score_activation", "box_coding"):
        if not isinstance(attrs.get(f), int):
            out.append(f"{f} must be an INT attribute")
    if out:
        return out
    if attrs["score_threshold"] < 0 or attrs["iou_threshold"] <= 0:
        out.append("thresholds: score >= 0 and IoU > 0")
    if attrs["max_output_boxes"] <= 0:
        out.append("max_output_boxes must be > 0")
    if attrs["score_activation"] not in (0, 1) or attrs["box_coding"] not in (0, 1):
        out.append("score_activation and box_coding must be 0 or 1")
    return out


def _io_problems(g, rules: ParserRules) -> list[str]:
    from onnx import TensorProto

    out = []
    if not rules.int64:
        for v in (*g.input, *g.output):
            if v.type.tensor_type.elem_type == TensorProto.INT64:
                out.append(
                    f"{v.name}: an INT64 network input or output; TensorRT {rules.release} "
                    "has no INT64 tensors"
                )
    return out


def require_compatible(model, trt_version: str, source: str = "the ONNX") -> None:
    """Raises EngineError naming the problems `check_graph` finds (the first three)."""
    problems = check_graph(model, trt_version)
    if problems:
        shown = "; ".join(problems[:3])
        if len(problems) > 3:
            shown += f"; and {len(problems) - 3} more (`main.py build --check` lists them)"
        raise EngineError(f"{source} would not build with TensorRT {trt_version}: {shown}")

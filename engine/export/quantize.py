"""INT8 ONNX models: ONNX Runtime's static quantization of an exported SSD300 graph.

The network's layers get INT8 weights (per output channel) and INT8 activations, calibrated
on real images fed through the graph's own pre-processing (uint8 BGR frames resized to the
input size, exactly what the runtime gives it). The pre-processing, the L2 normalization, the
softmax, the box decoding and the NMS tail stay in float (node name prefixes `fp32/`, `nms/`,
`l2norm/`), and so do the class-score head convolutions (all 12 head convolutions in the
tensorrt flavour): with INT8 score heads the raccoon model's AP50 fell from 0.826 to 0.735;
with float ones it stays 0.826 (see FLOAT_HEADS, docs/benchmarks.md). The format is QDQ
(QuantizeLinear/DequantizeLinear pairs around float ops), in one of two flavours, because
the two runtimes want different integers:

- `onnxruntime` (CPU): unsigned activations with a zero point, signed symmetric weights
  (U8S8), and the activations (Relu, Clip, MaxPool, Add) quantized too, so ONNX Runtime fuses
  each Conv with its activation into one integer kernel. x86's integer dot products (AVX2
  vpmaddubsw, AVX-512 VNNI) multiply u8 by s8; signed activations ran 1.7x slower than FP32.
- `tensorrt`: TensorRT's explicit quantization takes only signed symmetric Q/DQ (zero point 0:
  onnx-tensorrt 8.6-GA builtin_op_importers.cpp:1160-1166 refuses UINT8, :1216-1217 a non-zero
  zero point), weights kept in float behind their own Q/DQ pair and one Q/DQ pair per
  consumer (ONNX Runtime's documented options for TensorRT), biases in float (TensorRT's
  IDequantizeLayer takes INT8 only, NvInfer.h release/8.6:6127-6130), on the inputs of the
  convolutions only: TensorRT fuses the activations itself and picks the rest's precision.

The ONNX metadata says `ssd300.precision = int8` and, in `ssd300.calibration` (JSON), how it
was calibrated: images, their source, method, flavour.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from engine.runtime import contract as C
from training.fileio import atomic_write

if TYPE_CHECKING:  # cv2 and numpy load when calibrating, not with `main.py --help`
    import numpy as np

FLOAT_PREFIXES = (C.FP32_PREFIX, C.NMS_PREFIX, C.L2NORM_PREFIX)  # nodes that stay in float
TARGETS = ("onnxruntime", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
# Per flavour, the calibration that kept AP50 (raccoon test split, docs/benchmarks.md): minmax
# for the asymmetric onnxruntime flavour; symmetric activations waste half their range on
# minmax outliers, so the tensorrt flavour takes the 99.999th percentile (0.805 -> 0.827).
DEFAULT_METHOD = {"onnxruntime": "minmax", "tensorrt": "percentile"}
DEFAULT_IMAGES = 128


def calibration_frames(images: list[Path], size: int) -> Iterator[np.ndarray]:
    """uint8 [1, size, size, 3] BGR frames, resized as the runtime resizes (no letterbox);
    unreadable images are passed over."""
    import cv2

    for path in images:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            continue
        yield cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)[None]


def pick_images(paths: list[Path], n: int, seed: int = 0) -> list[Path]:
    """n images spread over the dataset (a fixed random sample, so exports repeat)."""
    paths = sorted(set(paths))
    if len(paths) <= n:
        return paths
    return sorted(random.Random(seed).sample(paths, n))


# The exporter's initializer names of the prediction convolutions (box offsets, class scores).
LOC_HEADS, CONF_HEADS = "model.head.loc.", "model.head.conf."
# The heads each flavour keeps in float (measured on the raccoon test split, AP50 FP32 0.826):
# quantized class-score heads cost 9 points in the onnxruntime flavour (0.735; 0.738 with
# percentile calibration), quantized box heads none (0.826), and the box heads in INT8 are
# part of the CPU speed-up; the tensorrt flavour keeps both in float (cheap on a GPU).
FLOAT_HEADS = {"onnxruntime": (CONF_HEADS,), "tensorrt": (LOC_HEADS, CONF_HEADS)}


def is_head_conv(node, heads: tuple[str, ...] = (LOC_HEADS, CONF_HEADS)) -> bool:
    """A prediction-head convolution of `heads`: its weight initializer carries the module
    path the exporter gives it (model.head.loc.N / model.head.conf.N)."""
    return len(node.input) > 1 and node.input[1].startswith(heads)


def _options(target: str):
    from onnxruntime.quantization import QuantType

    if target == "onnxruntime":
        return dict(
            op_types_to_quantize=["Conv", "Relu", "Clip", "MaxPool", "Add"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    if target == "tensorrt":
        return dict(
            op_types_to_quantize=["Conv"],
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": True,
                "AddQDQPairToWeight": True,
                "DedicatedQDQPair": True,
                "QuantizeBias": False,  # IDequantizeLayer takes INT8, not INT32 biases
                "OpTypesToExcludeOutputQuantization": ["Conv"],
            },
        )
    raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


def quantize_onnx(
    fp32: str | Path,
    output: str | Path,
    images: list[Path],
    target: str = "onnxruntime",
    source: str = "",
    method: str | None = None,
    progress: Callable[[Iterator], Iterator] | None = None,
    float_heads: bool = True,
) -> Path:
    """Writes the INT8 (QDQ) version of an exported FP32 ONNX for `target`, calibrated on
    `images` (paths of real images; the graph's own pre-processing is applied)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    from engine.runtime.detector import EngineError, read_onnx_info

    method = method or DEFAULT_METHOD.get(target, "minmax")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    options = _options(target)
    info = read_onnx_info(fp32)
    if info.precision != "fp32":
        raise EngineError(f"{fp32}: quantize an FP32 export (this one is {info.precision})")
    if not images:
        raise EngineError("no calibration images")
    model = onnx.load(str(fp32))
    input_name = model.graph.input[0].name
    excluded = [
        n.name
        for n in model.graph.node
        if n.name.startswith(FLOAT_PREFIXES)
        or (n.op_type == "Conv" and is_head_conv(n, FLOAT_HEADS[target] if float_heads else ()))
    ]
    heads = [n for n in model.graph.node if n.op_type == "Conv" and is_head_conv(n)]
    if float_heads and not heads:  # the exporter's names changed: fail, never quantize them
        raise EngineError(f"{fp32}: no prediction-head convolutions ({LOC_HEADS}*) found")
    frames = calibration_frames(images, info.input_size)
    if progress is not None:
        frames = iter(progress(frames))
    first = next(frames, None)
    if first is None:
        raise EngineError("none of the calibration images could be read")
    frames = itertools.chain([first], frames)
    used = 0

    class Reader(CalibrationDataReader):
        def get_next(self):
            nonlocal used
            frame = next(frames, None)
            used += frame is not None
            return None if frame is None else {input_name: frame}

    if method != "minmax":  # histograms: fold every 16 images in, not all of them at the end
        options["extra_options"] = {**options["extra_options"], "CalibMaxIntermediateOutputs": 16}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static's advice to pre-process, printed each time
    try:
        with tempfile.TemporaryDirectory() as tmp:
            quantized = Path(tmp) / "int8.onnx"
            quantize_static(
                str(fp32),
                str(quantized),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                nodes_to_exclude=excluded,
                calibrate_method=methods[method],
                **options,
            )
            result = onnx.load(str(quantized))
    finally:
        root.setLevel(level)
    meta = {p.key: p.value for p in model.metadata_props}
    meta[C.META_PRECISION] = "int8"
    meta[C.META_CALIBRATION] = json.dumps(
        {"images": used, "source": source, "method": method, "target": target}
    )
    del result.metadata_props[:]
    for key, value in meta.items():
        result.metadata_props.add(key=key, value=value)
    return atomic_write(output, lambda tmp: onnx.save_model(result, str(tmp)))

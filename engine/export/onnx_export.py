"""ONNX export of an SSD300 weights file, pre-processing and NMS included.

The graph takes what OpenCV gives after a resize (uint8 [1, 300, 300, 3] BGR) and does the
rest: channel swap, normalization, the network, softmax, box decoding and NMS, ending in
the fixed-size outputs of engine.runtime.contract. Two NMS tails:

- 'onnx': standard NonMaxSuppression, then padding and TopK to K rows. Runs in ONNX
  Runtime and in TensorRT (INMSLayer).
- 'efficientnms': TensorRT's EfficientNMS_TRT plugin in fused-decoder mode, fed with the
  variance-scaled offsets and the default boxes as anchors. TensorRT only (fastest on
  Jetson's TensorRT 10.3).

This side imports torch and training; the runtime side does not.

Over 400 lines on purpose: the graph's pre-processing, decoding and both NMS tails
must agree with engine.runtime.contract and are checked together.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from engine.runtime import contract as C
from training.boxes import cxcywh_to_xyxy
from training.errors import SSDError
from training.model import SSD

# The exporter writes opset 18 (its lowest); the graph is converted to 17, the newest that
# TensorRT 8.5 and 8.6 read (onnx-tensorrt 8.5-GA/8.6-GA README: "opset 7 to 17").
EXPORTER_OPSET = 18
OPSET = 17
MAX_TOP_K = 3840  # the largest K of TensorRT's TopK layer
# Candidates per class before NMS, as the PyTorch post-processing (and Caffe's top_k 400).
CANDIDATES_PER_CLASS = 400
IR_VERSION = 8  # opset 17's IR version: what the onnx inside TensorRT 8.5 (onnx 1.12) reads


class ExportError(SSDError):
    """Export options that cannot make a valid graph."""


class ExportCore(nn.Module):
    """uint8 BGR NHWC frames -> (box tensor, class scores) for a tail.

    tail 'onnx': decoded, clipped (x1, y1, x2, y2) boxes [1, N, 4] and softmax [1, N, C];
    tail 'efficientnms': offsets times the variances [1, N, 4] and softmax [1, N, C].
    """

    def __init__(self, model: SSD, tail: str, half: bool = False) -> None:
        super().__init__()
        self.model, self.tail, self.half = model, tail, half

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.half() if self.half else images.float()
        x = x.flip(-1).permute(0, 3, 1, 2)  # BGR -> RGB, NHWC -> NCHW
        loc, conf = self.model(x)
        loc, scores = loc.float(), torch.softmax(conf.float(), dim=-1)
        if self.tail == "efficientnms":
            v = torch.tensor(self.model.coder.variances, dtype=torch.float32)
            return loc * v, scores
        priors = self.model.priors.float()
        boxes = cxcywh_to_xyxy(self.model.coder.decode(loc, priors[None]))
        return boxes.clamp(0.0, 1.0), scores  # = clip_boxes for normalized boxes


def export_onnx(
    model: SSD,
    path: str | Path,
    tail: str = "onnx",
    top_k: int = 100,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.45,
    fp16: bool = False,
) -> Path:
    """Writes the model as one self-contained ONNX file (weights inside) and returns its path."""
    if tail not in C.TAILS:
        raise ExportError(f"unknown NMS tail {tail!r}; choose one of {', '.join(C.TAILS)}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ExportError(f"top-K must be between 1 and {MAX_TOP_K}, got {top_k}")
    if not (0 <= score_threshold < 1 and 0 < iou_threshold <= 1):
        raise ExportError("thresholds: 0 <= score < 1 and 0 < IoU <= 1")
    path = Path(path)
    model = model.cpu().eval()
    if fp16:
        model = model.half()
    core = ExportCore(model, tail, half=fp16).eval()
    size = model.spec.input_size
    dummy = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    # The exporter logs a warning per torchvision op it cannot find; torchvision is not used.
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            core,
            (dummy,),
            dynamo=True,
            opset_version=EXPORTER_OPSET,
            input_names=[C.INPUT],
            output_names=["_boxes", "_scores"],
            verbose=False,
        )
    quiet.setLevel(level)
    graph_model = _to_opset(program.model_proto, OPSET)
    _int32_slice_bounds(graph_model)
    _mark_l2norm(graph_model)
    if tail == "onnx":
        _append_onnx_nms(
            graph_model,
            top_k,
            score_threshold,
            iou_threshold,
            model.spec.priors.num_boxes,
            model.spec.num_classes,  # with the background: the scores tensor's last axis
        )
    else:
        _append_efficient_nms(graph_model, model, top_k, score_threshold, iou_threshold)
    meta = {
        C.META_FORMAT: C.FORMAT,
        C.META_CLASSES: json.dumps(list(model.spec.class_names)),
        C.META_SPEC: model.spec.to_json(),
        C.META_TAIL: tail,
        C.META_TOP_K: str(top_k),
        C.META_SCORE: repr(float(score_threshold)),
        C.META_IOU: repr(float(iou_threshold)),
        C.META_PRECISION: "fp16" if fp16 else "fp32",
    }
    del graph_model.metadata_props[:]
    for k, v in meta.items():
        graph_model.metadata_props.add(key=k, value=v)
    graph_model.ir_version = IR_VERSION
    graph_model.producer_name = "ssd300-toolchain"
    if tail == "onnx":
        onnx.checker.check_model(graph_model, full_check=True)
    from training.fileio import atomic_write

    atomic_write(path, lambda tmp: onnx.save_model(graph_model, tmp))
    return path


def _to_opset(m: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The exporter's graph converted to `opset` by ONNX's version converter (the ops used
    are unchanged between 17 and 18; the tests compare the outputs)."""
    from onnx import version_converter

    default = next(o for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if default.version == opset:
        return m
    metadata = {
        n.name: list(n.metadata_props) for n in m.graph.node if n.metadata_props
    }  # the converter drops the namespaces _mark_l2norm reads
    out = version_converter.convert_version(m, opset)
    for n in out.graph.node:
        if n.name in metadata and not n.metadata_props:
            n.metadata_props.extend(metadata[n.name])
    return out


def _int32_slice_bounds(m: onnx.ModelProto) -> None:
    """Slice starts/ends that the exporter writes as INT64_MAX ("to the end") become the
    INT32 limits: the same slice (ONNX clamps bounds to the axis), and no INT64 value that
    TensorRT < 10 would have to clamp itself ("cast down INT64 to INT32 ..., clamping",
    onnx-tensorrt 8.5-GA docs/operators.md)."""
    inits = {t.name: t for t in m.graph.initializer}
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    for node in m.graph.node:
        if node.op_type != "Slice":
            continue
        for i in (1, 2):
            t = inits.get(node.input[i]) if len(node.input) > i else None
            if t is None:
                continue
            v = numpy_helper.to_array(t)
            if v.dtype != np.int64 or (v.min() >= lo and v.max() <= hi):
                continue
            name = f"{t.name}_int32_range"
            if name not in inits:
                inits[name] = _const(name, np.clip(v, lo, hi).astype(np.int64))
                m.graph.initializer.append(inits[name])
            node.input[i] = name
    used = {i for n in m.graph.node for i in n.input}
    dropped = [t for t in m.graph.initializer if t.name not in used]
    for t in dropped:  # the INT64_MAX originals no node reads any more
        m.graph.initializer.remove(t)


def _mark_l2norm(m: onnx.ModelProto) -> None:
    """Names the nodes a TensorRT FP16 build must keep in FP32: the L2Norm module's
    (l2norm/...) and those outside the network, i.e. input conversion, softmax and box
    decoding (fp32/...); the NMS tail's nodes are named nms/...."""
    for node in m.graph.node:
        scope = {p.key: p.value for p in node.metadata_props}.get("namespace", "")
        if node.name.startswith((C.L2NORM_PREFIX, C.FP32_PREFIX)):
            continue
        if "training.backbones.L2Norm" in scope:
            node.name = C.L2NORM_PREFIX + node.name
        elif "training.model.SSD" not in scope:
            node.name = C.FP32_PREFIX + node.name


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _replace_outputs(m: onnx.ModelProto, outputs: list[onnx.ValueInfoProto]) -> None:
    del m.graph.output[:]
    m.graph.output.extend(outputs)


def _fixed_outputs(k: int) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(C.NUM_DETECTIONS, TensorProto.INT32, [1, 1]),
        helper.make_tensor_value_info(C.BOXES, TensorProto.FLOAT, [1, k, 4]),
        helper.make_tensor_value_info(C.SCORES, TensorProto.FLOAT, [1, k]),
        helper.make_tensor_value_info(C.CLASSES, TensorProto.INT32, [1, k]),
    ]


def _append_onnx_nms(
    m: onnx.ModelProto, k: int, score_thr: float, iou_thr: float, num_boxes: int, classes: int
) -> None:
    """Tail 'onnx', the PyTorch post-processing in ONNX ops: per foreground class the best
    CANDIDATES boxes (TopK), NonMaxSuppression with the classes as its batch (each class
    has its own candidates), at most K per class, then the K best overall by score (TopK;
    ties keep the NMS order: class, then score), padded with zeros."""
    g = m.graph
    cand = min(CANDIDATES_PER_CLASS, num_boxes)
    g.initializer.extend(
        [
            _const("nms_k", np.array([k], np.int64)),
            _const("nms_iou", np.array([iou_thr], np.float32)),
            _const("nms_score", np.array([score_thr], np.float32)),
            _const("nms_cand", np.array([cand], np.int64)),
            _const("c_start1", np.array([1], np.int64)),
            # the end of the class axis as it is (not INT64_MAX, which TensorRT < 10 clamps)
            _const("c_end", np.array([classes], np.int64)),
            _const("c_axis2", np.array([2], np.int64)),
            _const("c_axis1", np.array([1], np.int64)),
            _const("c_axis0", np.array([0], np.int64)),
            _const("c_zero", np.array(0, np.int64)),
            _const("c_one", np.array(1, np.int64)),
            _const("c_cols02", np.array([0, 2], np.int64)),
            _const("c_pad_scores", np.full([k], -1.0, np.float32)),
            _const("c_pad_boxes", np.zeros([k, 4], np.float32)),
            _const("c_pad_classes", np.zeros([k], np.int64)),
            _const("c_zero_f", np.array(0.0, np.float32)),
            _const("c_k_scalar", np.array([k], np.int64)),
            _const("c_shape_11", np.array([1, 1], np.int64)),
            _const("c_shape_1k", np.array([1, k], np.int64)),
            _const("c_shape_1k4", np.array([1, k, 4], np.int64)),
        ]
    )
    mk = helper.make_node
    g.node.extend(
        [
            mk(
                "Slice",
                ["_scores", "c_start1", "c_end", "c_axis2"],
                ["nms_fg"],
                name="nms/slice_bg",
            ),
            mk("Transpose", ["nms_fg"], ["nms_fg_t"], perm=[0, 2, 1], name="nms/transpose"),
            mk("Squeeze", ["nms_fg_t", "c_axis0"], ["nms_cls_scores"], name="nms/squeeze_s"),
            mk(
                "TopK",
                ["nms_cls_scores", "nms_cand"],
                ["nms_cand_scores", "nms_cand_idx"],
                axis=1,
                largest=1,
                sorted=1,
                name="nms/candidates",
            ),
            mk("Squeeze", ["_boxes", "c_axis0"], ["nms_boxes2d"], name="nms/squeeze_b"),
            mk(
                "Gather",
                ["nms_boxes2d", "nms_cand_idx"],
                ["nms_cand_boxes"],
                axis=0,
                name="nms/candidate_boxes",
            ),
            mk("Unsqueeze", ["nms_cand_scores", "c_axis1"], ["nms_cand_scores3"], name="nms/unsq"),
            mk(
                "NonMaxSuppression",
                ["nms_cand_boxes", "nms_cand_scores3", "nms_k", "nms_iou", "nms_score"],
                ["nms_sel"],
                center_point_box=0,
                name="nms/nms",
            ),
            mk(
                "Gather", ["nms_sel", "c_cols02"], ["nms_sel_ij"], axis=1, name="nms/class_and_rank"
            ),
            mk("Gather", ["nms_sel", "c_zero"], ["nms_cls0"], axis=1, name="nms/class"),
            mk("Add", ["nms_cls0", "c_one"], ["nms_cls"], name="nms/class_id"),
            mk(
                "GatherND", ["nms_cand_scores", "nms_sel_ij"], ["nms_sel_scores"], name="nms/scores"
            ),
            mk("GatherND", ["nms_cand_boxes", "nms_sel_ij"], ["nms_sel_boxes"], name="nms/boxes"),
            mk(
                "Concat",
                ["nms_sel_scores", "c_pad_scores"],
                ["nms_all_scores"],
                axis=0,
                name="nms/pad_s",
            ),
            mk(
                "Concat",
                ["nms_sel_boxes", "c_pad_boxes"],
                ["nms_all_boxes"],
                axis=0,
                name="nms/pad_b",
            ),
            mk("Concat", ["nms_cls", "c_pad_classes"], ["nms_all_cls"], axis=0, name="nms/pad_c"),
            mk(
                "TopK",
                ["nms_all_scores", "c_k_scalar"],
                ["nms_top_scores", "nms_top_idx"],
                axis=0,
                largest=1,
                sorted=1,
                name="nms/topk",
            ),
            mk("Max", ["nms_top_scores", "c_zero_f"], ["nms_scores_k"], name="nms/zero_pad_scores"),
            mk("Reshape", ["nms_scores_k", "c_shape_1k"], [C.SCORES], name="nms/out_scores"),
            mk(
                "Gather",
                ["nms_all_boxes", "nms_top_idx"],
                ["nms_boxes_k"],
                axis=0,
                name="nms/top_b",
            ),
            mk("Reshape", ["nms_boxes_k", "c_shape_1k4"], [C.BOXES], name="nms/out_boxes"),
            mk("Gather", ["nms_all_cls", "nms_top_idx"], ["nms_cls_k"], axis=0, name="nms/top_c"),
            mk("Cast", ["nms_cls_k"], ["nms_cls_k32"], to=TensorProto.INT32, name="nms/cast_c"),
            mk("Reshape", ["nms_cls_k32", "c_shape_1k"], [C.CLASSES], name="nms/out_classes"),
            # The number of selected boxes: the whole Shape, then its first element. Not
            # Shape(start, end): TensorRT < 10 ignores those attributes (onnx-tensorrt
            # 8.6-GA builtin_op_importers.cpp:4434, a bare addShape).
            mk("Shape", ["nms_sel"], ["nms_sel_shape"], name="nms/count"),
            mk("Gather", ["nms_sel_shape", "c_axis0"], ["nms_sel_rows"], axis=0, name="nms/rows"),
            mk("Min", ["nms_sel_rows", "c_k_scalar"], ["nms_count"], name="nms/count_k"),
            mk("Cast", ["nms_count"], ["nms_count32"], to=TensorProto.INT32, name="nms/cast_n"),
            mk("Reshape", ["nms_count32", "c_shape_11"], [C.NUM_DETECTIONS], name="nms/out_num"),
        ]
    )
    _replace_outputs(m, _fixed_outputs(k))


def _append_efficient_nms(
    m: onnx.ModelProto, model: SSD, k: int, score_thr: float, iou_thr: float
) -> None:
    """Tail 'efficientnms': EfficientNMS_TRT(offsets x variances, softmax scores, priors)
    with box_coding 1 (centre-size, the decode done inside the plugin), background class 0
    and no score activation (the scores are already softmax probabilities)."""
    anchors = model.priors.float().cpu().numpy()[None]  # [1, N, 4] (cx, cy, w, h)
    m.graph.initializer.append(_const("nms_anchors", anchors.astype(np.float32)))
    node = helper.make_node(
        "EfficientNMS_TRT",
        ["_boxes", "_scores", "nms_anchors"],
        ["_num32", C.BOXES, C.SCORES, "_classes32"],
        name="nms/efficient_nms",
        plugin_version="1",
        background_class=0,
        box_coding=1,
        iou_threshold=float(iou_thr),
        max_output_boxes=int(k),
        score_activation=0,
        score_threshold=float(score_thr),
        # per-class NMS; named so that 8.6+ does not warn "Attribute class_agnostic not
        # found in plugin node" (8.5's creator ignores it: efficientNMSPlugin.cpp 8.5:461)
        class_agnostic=0,
    )
    m.graph.node.append(node)
    # The plugin's outputs already have the contract's types; these Identity nodes only
    # give them the contract's names.
    m.graph.node.extend(
        [
            helper.make_node("Identity", ["_num32"], [C.NUM_DETECTIONS], name="nms/out_num"),
            helper.make_node("Identity", ["_classes32"], [C.CLASSES], name="nms/out_classes"),
        ]
    )
    _replace_outputs(m, _fixed_outputs(k))


def export_weights(weights: str | Path, output: str | Path | None = None, **options) -> Path:
    """Exports a weights file; the output defaults to WEIGHTS with .onnx (and the tail/fp16
    in the name when they are not the defaults)."""
    from training.weights import load_detector

    weights = Path(weights)
    model = load_detector(weights)
    if output is None:
        suffix = ("" if options.get("tail", "onnx") == "onnx" else "_efficientnms") + (
            "_fp16" if options.get("fp16") else ""
        )
        output = weights.with_name(weights.stem + suffix + ".onnx")
    return export_onnx(model, output, **options)


def export_cached(weights: str | Path, cache_dir: Path | None = None, **options) -> Path:
    """The ONNX of a weights file with these export options, exported once into a cache
    ($SSD300_CACHE/onnx, else ~/.cache/ssd300/onnx) under a name made of the weights' hash
    and the options."""
    import hashlib
    import json

    from training import fileio

    weights = Path(weights)
    cache = fileio.cache_dir("onnx", cache_dir)
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    out = cache / f"{weights.stem}_{fileio.sha256_file(weights)[:12]}_{key}.onnx"
    if not out.is_file():
        print(f"exporting {weights} to ONNX (once; cached as {out})", flush=True)
        export_weights(weights, out, **options)
    return out

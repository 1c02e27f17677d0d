"""The 'efficientnms' tail (TensorRT's EfficientNMS_TRT plugin) against the 'onnx' tail.

The plugin cannot run here, so its inputs are computed by ONNX Runtime (the exported graph
up to the plugin) and fed to a NumPy mirror of the plugin's CUDA code
(efficientnms_reference.py, each step citing the line it mirrors). The tails differ on
purpose in a few places (docs/jetson.md, "The two NMS tails"): the plugin does not clamp
dw/dh before exp, suppresses at IoU >= the threshold (not >), keeps scores >= the threshold,
returns unclipped boxes (the runtime clips them) and takes at most 5000 candidates in all
(2000 on TX1/TX2; the 'onnx' tail 400 per class). On real images with the shipped model
none of these changes a detection: same count, classes and order, scores within 1e-6 and
clipped boxes within 1e-5 (of the image size)."""

import cv2
import numpy as np
import onnx
import pytest

from engine.export.onnx_export import export_weights
from engine.runtime import contract as C
from engine.runtime.detector import OnnxRuntimeDetector
from tests.engine import efficientnms_reference as ref

SHIPPED = "assets/models/ssd300_mobilenet_v2_voc.safetensors"


def test_the_reference_mirrors_the_plugin():
    assert ref._self_check()


def plugin_inputs(path, tmp_path):
    """The efficientnms graph cut before the plugin: (offsets x variances, softmax) and the
    anchors it passes."""
    import onnxruntime as ort

    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type == "EfficientNMS_TRT")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    anchors = next(t for t in m.graph.initializer if t.name == node.input[2])
    kept = [n for n in m.graph.node if n.op_type != "EfficientNMS_TRT" and n.name != "nms/out_num"
            and n.name != "nms/out_classes"]  # fmt: skip
    del m.graph.node[:]
    m.graph.node.extend(kept)
    del m.graph.output[:]
    m.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in node.input[:2]
    )
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, onnx.numpy_helper.to_array(anchors), attrs


def test_both_tails_give_the_same_detections_on_real_images(tmp_path, shared_data):
    images = sorted((shared_data / "images").rglob("*.jpg"))[:6]
    images += sorted((shared_data / "coco128-val-yolo").rglob("*.jpg"))[:24]
    if len(images) < 10:
        pytest.skip("too few real images in ../shared/data")
    options = dict(top_k=100, score_threshold=0.3, iou_threshold=0.45)
    onnx_tail = export_weights(SHIPPED, tmp_path / "a.onnx", tail="onnx", **options)
    eff_tail = export_weights(SHIPPED, tmp_path / "b.onnx", tail="efficientnms", **options)
    det = OnnxRuntimeDetector(onnx_tail)
    sess, anchors, attrs = plugin_inputs(eff_tail, tmp_path)
    assert (attrs["box_coding"], attrs["background_class"], attrs["score_activation"]) == (1, 0, 0)
    assert attrs["class_agnostic"] == 0
    total = 0
    for path in images:
        frame = cv2.imread(str(path))
        batch = det.preprocess(frame)[None]
        num, boxes, scores, classes = det.run(batch)
        loc, probs = sess.run(None, {C.INPUT: batch})
        n2, b2, s2, c2 = ref.efficient_nms(
            loc,
            probs,
            anchors,
            score_threshold=attrs["score_threshold"],
            iou_threshold=attrs["iou_threshold"],
            max_output_boxes=attrs["max_output_boxes"],
            background_class=attrs["background_class"],
            box_coding=attrs["box_coding"],
            score_activation=attrs["score_activation"],
            class_agnostic=bool(attrs["class_agnostic"]),
        )
        n = int(num[0, 0])
        assert int(n2[0, 0]) == n, path.name
        np.testing.assert_array_equal(c2[0, :n], classes[0, :n], err_msg=path.name)
        np.testing.assert_allclose(s2[0, :n], scores[0, :n], atol=1e-6, err_msg=path.name)
        # the plugin's boxes are unclipped; the runtime clips every backend's to the image
        np.testing.assert_allclose(
            np.clip(b2[0, :n], 0, 1), boxes[0, :n], atol=1e-5, err_msg=path.name
        )
        total += n
    assert total >= 10  # the comparison saw real detections

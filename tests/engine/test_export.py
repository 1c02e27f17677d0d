"""The exported graph gives the PyTorch post-processing's detections; both tails."""

import cv2
import numpy as np
import onnx
import pytest
import torch

from engine.export.onnx_export import export_onnx
from engine.runtime import contract as C
from engine.runtime.detector import EngineError, OnnxRuntimeDetector, open_detector, read_onnx_info
from training.model import SSD
from training.postprocess import PostProcessor
from training.spec import make_spec


@pytest.fixture(scope="module")
def trained_like():
    """A VGG16 SSD300 whose random head is scaled so that real images give detections."""
    torch.manual_seed(0)
    m = SSD(make_spec("vgg16", "voc", "voc")).eval()
    with torch.no_grad():
        for conv in m.head.conf:
            conv.weight.mul_(4)  # confident enough to detect, no saturated (tied) scores
    return m


@pytest.fixture(scope="module")
def exported(trained_like, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "vgg.onnx"
    export_onnx(trained_like, path, tail="onnx", top_k=100, score_threshold=0.2, iou_threshold=0.45)
    return path


def torch_reference(model, frame, score, iou, k):
    x = cv2.resize(frame, (300, 300))
    rgb = torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        loc, conf = model(rgb)
    return PostProcessor(model.coder, score, iou, k)(loc, conf, model.priors)[0]


def canonical(scores, classes, boxes, tie=1e-5):
    """Detections in output order, except that runs of scores equal within `tie` (which the
    two float paths may order differently) are sorted by class and box."""
    rows = list(
        zip(np.asarray(scores, float), np.asarray(classes).tolist(), np.asarray(boxes).tolist())
    )
    out, group = [], []
    for row in rows:
        if group and group[0][0] - row[0] > tie:
            out += sorted(group, key=lambda r: (r[1], r[2]))
            group = []
        group.append(row)
    return out + sorted(group, key=lambda r: (r[1], r[2]))


def test_onnx_runtime_gives_the_pytorch_detections_on_real_images(
    trained_like, exported, shared_data
):
    det = OnnxRuntimeDetector(exported)
    images = (
        sorted((shared_data / "images").rglob("*.jpg"))[:4]
        + sorted((shared_data / "images").rglob("*.png"))[:2]
    )
    assert len(images) >= 4
    total = 0
    for path in images:
        frame = cv2.imread(str(path))
        ref = torch_reference(trained_like, frame, 0.2, 0.45, 100)
        got = det.detect(frame)
        h, w = frame.shape[:2]
        ours = canonical(got.scores, got.class_ids, got.boxes / [w, h, w, h])
        theirs = canonical(ref.scores.numpy(), ref.labels.numpy(), ref.boxes.numpy())
        assert [c for _, c, _ in ours] == [c for _, c, _ in theirs], path.name
        np.testing.assert_allclose([s for s, _, _ in ours], [s for s, _, _ in theirs], atol=1e-5)
        np.testing.assert_allclose([b for _, _, b in ours], [b for _, _, b in theirs], atol=1e-4)
        total += len(got)
    assert total > 20  # the comparison is not vacuous


def test_the_graph_has_the_contract_and_metadata(exported):
    m = onnx.load(str(exported))
    assert [i.name for i in m.graph.input] == [C.INPUT]
    inp = m.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.shape.dim] == [1, 300, 300, 3]
    assert [o.name for o in m.graph.output] == list(C.OUTPUTS)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    info = read_onnx_info(exported)
    assert info.class_names[14] == "person"
    assert (info.top_k, info.score_threshold, info.tail) == (100, 0.2, "onnx")
    assert any(n.name.startswith(C.L2NORM_PREFIX) for n in m.graph.node)
    assert not m.graph.initializer[0].data_location  # weights inside the file


def test_padding_and_counts(exported):
    det = OnnxRuntimeDetector(exported)
    black = np.zeros((300, 300, 3), np.uint8)
    num, boxes, scores, classes = det._infer(det.preprocess(black)[None])
    n = int(num[0, 0])
    assert boxes.shape == (1, 100, 4)
    assert scores.shape == (1, 100)
    assert classes.shape == (1, 100)
    assert (scores[0, n:] == 0).all()
    assert (classes[0, n:] == 0).all()
    assert (np.diff(scores[0, :n]) <= 0).all()


def test_efficientnms_tail_structure(trained_like, tmp_path):
    path = export_onnx(
        trained_like,
        tmp_path / "trt.onnx",
        tail="efficientnms",
        top_k=50,
        score_threshold=0.25,
        iou_threshold=0.5,
    )
    m = onnx.load(str(path))
    nms = [n for n in m.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nms) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nms[0].attribute}
    assert attrs["background_class"] == 0
    assert attrs["box_coding"] == 1
    assert attrs["score_activation"] == 0
    assert attrs["max_output_boxes"] == 50
    assert attrs["plugin_version"] == b"1"
    assert attrs["score_threshold"] == pytest.approx(0.25)
    assert attrs["iou_threshold"] == pytest.approx(0.5)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    anchors = inits[nms[0].input[2]]
    np.testing.assert_array_equal(anchors[0], trained_like.priors.numpy())
    # the offsets fed to the plugin are the network's times the variances
    assert any(
        n.op_type == "Mul"
        and any(
            i in inits and np.allclose(inits[i].reshape(-1)[-4:], [0.1, 0.1, 0.2, 0.2])
            for i in n.input
        )
        for n in m.graph.node
    )
    assert [o.name for o in m.graph.output] == list(C.OUTPUTS)
    with pytest.raises(EngineError, match="runs only in TensorRT"):
        OnnxRuntimeDetector(path)


def test_fp16_export_keeps_l2norm_in_fp32(trained_like, tmp_path):
    import copy

    path = export_onnx(copy.deepcopy(trained_like), tmp_path / "fp16.onnx", fp16=True)
    m = onnx.load(str(path))
    assert read_onnx_info(path).precision == "fp16"
    conv_w = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert conv_w, "no FP16 weights"
    l2 = [n for n in m.graph.node if n.name.startswith(C.L2NORM_PREFIX)]
    casts = [n for n in l2 if n.op_type == "Cast"]
    to = {onnx.helper.get_attribute_value(a) for n in casts for a in n.attribute if a.name == "to"}
    assert onnx.TensorProto.FLOAT in to  # computed in float32 inside


def test_bad_models_are_named(tmp_path, exported):
    foreign = tmp_path / "other.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(g), str(foreign))
    with pytest.raises(EngineError, match="not an SSD300 ONNX exported by this project"):
        open_detector(foreign, backend="onnxruntime")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(EngineError, match="not a readable ONNX"):
        open_detector(garbage, backend="onnxruntime")
    with pytest.raises(EngineError, match="model not found"):
        open_detector(tmp_path / "missing.onnx")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineError, match="runs only with the tensorrt backend"):
        open_detector(engine, backend="onnxruntime")


def test_low_thresholds_agree_too(trained_like, tmp_path, shared_data):
    """At the evaluation threshold 0.01 classes have more than 400 candidates: the graph
    keeps the same best 400 per class as the PyTorch post-processing."""
    path = export_onnx(trained_like, tmp_path / "low.onnx", score_threshold=0.01, top_k=200)
    det = OnnxRuntimeDetector(path)
    frame = cv2.imread(str(shared_data / "images" / "darknet" / "dog.jpg"))
    ref = torch_reference(trained_like, frame, 0.01, 0.45, 200)
    got = det.detect(frame)
    assert len(got) == len(ref.scores) == 200
    h, w = frame.shape[:2]
    ours = canonical(got.scores, got.class_ids, got.boxes / [w, h, w, h])
    theirs = canonical(ref.scores.numpy(), ref.labels.numpy(), ref.boxes.numpy())
    assert [c for _, c, _ in ours] == [c for _, c, _ in theirs]
    np.testing.assert_allclose([b for _, _, b in ours], [b for _, _, b in theirs], atol=1e-4)

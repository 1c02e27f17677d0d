"""INT8 export: ONNX Runtime static quantization in its two flavours (onnxruntime: U8S8 with
fused activations; tensorrt: signed symmetric Q/DQ), the CLI around it, and the accuracy
kept on real data."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import main
from engine.commands import export as export_cmd
from engine.export import quantize as Q
from engine.runtime import contract as C
from engine.runtime.detector import EngineError, open_detector, read_onnx_info
from engine.runtime.models import MODELS_DIR
from engine.runtime.trt_compat import RELEASES, check_graph
from tests.conftest import SHARED_DATA

SHIPPED = MODELS_DIR / "ssd300_mobilenet_v2_voc.safetensors"


@pytest.fixture(scope="module")
def calibration(shared_data):
    """16 real photos of coco128's training images (never the held-out val set)."""
    images = sorted((shared_data / "coco128" / "train2017").glob("*.jpg"))
    if not images:
        pytest.skip("coco128 training images missing")
    return Q.pick_images(images, 16)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from engine.export.onnx_export import export_weights

    d = tmp_path_factory.mktemp("fp32")
    return export_weights(SHIPPED, d / "fp32.onnx", score_threshold=0.01, top_k=200)


@pytest.fixture(scope="module")
def int8(fp32, calibration, tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    return {
        t: Q.quantize_onnx(fp32, d / f"{t}.onnx", calibration, target=t, source="coco128")
        for t in Q.TARGETS
    }


def qdq_nodes(path):
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    return m, inits, nodes


def test_metadata_says_int8_and_how_it_was_calibrated(fp32, int8, calibration):
    for target, path in int8.items():
        info = read_onnx_info(path)
        assert (info.precision, info.quantized_for) == ("int8", target)
        assert info.class_names == read_onnx_info(fp32).class_names
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        cal = json.loads(meta[C.META_CALIBRATION])
        assert cal == {"images": len(calibration), "source": "coco128",
                       "method": Q.DEFAULT_METHOD[target], "target": target}  # fmt: skip


def test_the_tail_and_the_heads_stay_float_and_every_other_convolution_is_int8(int8):
    for target, path in int8.items():
        m, _, nodes = qdq_nodes(path)
        assert nodes, "no quantization at all"
        producer = {o: n for n in m.graph.node for o in n.output}
        readers: dict[str, list] = {}
        for n in m.graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        for n in m.graph.node:
            if n.name.startswith(Q.FLOAT_PREFIXES):  # decoding, NMS, L2Norm: float in, out
                for o in n.output:
                    assert all(r.op_type != "QuantizeLinear" for r in readers.get(o, [])), n.name
            if n.op_type in ("Softmax", "Exp", "NonMaxSuppression"):
                for i in n.input:
                    assert producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
        convs = [n for n in m.graph.node if n.op_type == "Conv"]
        assert len([c for c in convs if Q.is_head_conv(c)]) == 12  # 6 maps x (boxes, scores)
        heads = [c for c in convs if Q.is_head_conv(c, Q.FLOAT_HEADS[target])]
        assert len(heads) == {"onnxruntime": 6, "tensorrt": 12}[target]
        for c in heads:  # float: INT8 class-score heads cost 9 AP50 points
            assert c.input[1] in {t.name for t in m.graph.initializer}, (target, c.name)
        for c in convs:  # activations and weights both come through a DequantizeLinear
            if c in heads:
                continue
            assert producer[c.input[0]].op_type == "DequantizeLinear", (target, c.name)
            assert producer[c.input[1]].op_type == "DequantizeLinear", (target, c.name)


def test_the_two_flavours_have_the_integers_their_runtimes_take(int8):
    _, inits, nodes = qdq_nodes(int8["tensorrt"])
    zeros = [inits[n.input[2]] for n in nodes if len(n.input) > 2]
    assert zeros
    assert all(z.dtype == np.int8 and not z.any() for z in zeros)
    for release in RELEASES:
        assert check_graph(int8["tensorrt"], release) == [], release
    _, inits, nodes = qdq_nodes(int8["onnxruntime"])
    zeros = [inits[n.input[2]] for n in nodes if len(n.input) > 2]
    assert any(z.dtype == np.uint8 for z in zeros)  # unsigned activations
    problems = check_graph(int8["onnxruntime"], "10.3")
    assert any("export with --int8-target tensorrt" in p for p in problems)


@pytest.fixture(scope="module")
def held_out(shared_data):
    return str(shared_data / "coco128-val-yolo" / "data.yaml") + ":val"


@pytest.fixture(scope="module")
def fp32_result(fp32, held_out):
    from engine.commands.train import evaluate_exported

    return evaluate_exported(fp32, held_out, coco=False)


def test_the_onnx_evaluation_scores_as_the_weights_evaluation(fp32_result):
    """The exported model, evaluated through ONNX Runtime, gives the shipped model's recorded
    AP50 on coco128-val-yolo (all-point: person 0.277, mean 0.0725, assets/models/README.md,
    measured with the PyTorch evaluation)."""
    person = next(c for c in fp32_result["voc"]["per_class"] if c["class"] == "person")
    assert person["ap"] == pytest.approx(0.277, abs=0.01)
    assert fp32_result["voc"]["map"] == pytest.approx(0.0725, abs=0.002)
    assert fp32_result["precision"] == "fp32"


def test_int8_keeps_ap50_within_a_point_on_held_out_data(fp32, fp32_result, held_out, tmp_path):
    """The default recipe (128 calibration images from coco128's training set, minmax,
    onnxruntime flavour) on the held-out coco128-val-yolo: mean AP50 within 1 point of FP32
    (measured 0.0722 -> 0.0715, docs/benchmarks.md)."""
    from engine.commands.train import evaluate_exported

    images, _ = export_cmd.calibration_images(
        [str(SHARED_DATA / "coco128" / "train2017")], Q.DEFAULT_IMAGES
    )
    int8 = Q.quantize_onnx(fp32, tmp_path / "int8.onnx", images)
    r = evaluate_exported(int8, held_out, coco=False)
    assert r["precision"] == "int8"
    assert abs(r["voc"]["map"] - fp32_result["voc"]["map"]) < 0.01, r["voc"]["map"]


def test_an_int8_onnx_runs_like_any_onnx(int8, shared_data, capsys):
    import cv2

    frame = cv2.imread(str(shared_data / "images" / "darknet" / "person.jpg"))
    with open_detector(int8["onnxruntime"], backend="onnxruntime") as det:
        d = det.detect(frame, score_threshold=0.5)
    assert "person" in d.names
    assert main.main(["info", str(int8["tensorrt"])]) == 0
    out = capsys.readouterr().out
    assert "int8, opset 17" in out
    assert "quantized for tensorrt" in out


def test_export_int8_on_the_command_line(tmp_path, shared_data, capsys):
    out = tmp_path / "shipped_int8.onnx"
    code = main.main(
        ["export", str(SHIPPED), "--int8", "--calibration",
         str(shared_data / "coco128" / "train2017"), "--calibration-images", "4", "-o", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "calibration: 4 of 128 images of" in printed
    assert "int8 for onnxruntime" in printed
    info = read_onnx_info(out)
    assert (info.precision, info.quantized_for) == ("int8", "onnxruntime")
    assert export_cmd.export_output(SHIPPED, None, "onnx", False, "tensorrt").name == (
        "ssd300_mobilenet_v2_voc_int8_trt.onnx"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8"], "--int8 needs --calibration DATA"),
        (["--int8", "--calibration", "X", "--fp16"], "--int8 and --fp16 exclude each other"),
        (["--int8", "--calibration", "X", "--nms", "efficientnms"], "--int8 needs --nms onnx"),
        (["--calibration", "X"], "--calibration, --int8-target and --calibration-method are"),
        (["--int8-target", "tensorrt"], "are for --int8 exports"),
        (["--int8", "--calibration", "EMPTY"], "EMPTY: no images found"),
        (["--int8", "--calibration", "nowhere/at/all"], "not found"),
    ],
)
def test_int8_export_errors_are_one_line(extra, message, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    extra = [str(empty) if a == "EMPTY" else str(tmp_path) if a == "X" else a for a in extra]
    message = message.replace("EMPTY", str(empty))
    code = main.main(["export", str(SHIPPED), "-o", str(tmp_path / "x.onnx"), *extra])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0], err
    assert not (tmp_path / "x.onnx").exists()


def test_unreadable_calibration_images_are_passed_over_and_counted(fp32, calibration, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(EngineError, match="none of the calibration images could be read"):
        Q.quantize_onnx(fp32, tmp_path / "x.onnx", [bad])
    with pytest.raises(EngineError, match="no calibration images"):
        Q.quantize_onnx(fp32, tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()
    out = Q.quantize_onnx(fp32, tmp_path / "y.onnx", [bad, calibration[0]])
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta[C.META_CALIBRATION])["images"] == 1


def test_a_mistyped_split_is_an_error_not_every_image(shared_data):
    """A dataset with a split that does not exist must not fall back to all its images
    (which would calibrate on the evaluation images too)."""
    from training.datasets import DataError

    root = shared_data / "raccoon"
    images, source = export_cmd.calibration_images([f"{root}:splits/train_labels.csv"], 1000)
    assert len(images) == 160
    with pytest.raises(DataError):
        export_cmd.calibration_images([f"{root}:splits/trian_labels.csv"], 1000)
    folder, _ = export_cmd.calibration_images([str(shared_data / "images")], 1000)
    assert len(folder) > 5  # a plain folder of images (no dataset) is taken whole


def test_an_int8_onnx_is_not_quantized_again(int8, calibration, tmp_path):
    with pytest.raises(EngineError, match="quantize an FP32 export"):
        Q.quantize_onnx(int8["tensorrt"], tmp_path / "again.onnx", calibration[:1])


def test_the_calibration_sample_is_fixed_and_spread(tmp_path):
    paths = [tmp_path / f"{i:03d}.jpg" for i in range(300)]
    a, b = Q.pick_images(paths, 10), Q.pick_images(list(reversed(paths)), 10)
    assert a == b
    assert len(a) == 10
    assert max(int(p.stem) for p in a) - min(int(p.stem) for p in a) > 150
    assert Q.pick_images(paths[:5], 10) == paths[:5]


def test_uint8_quantized_tensors_are_what_tensorrt_refuses():
    """The check names the flavour problem once per node, in words a user can act on."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    inits = [
        numpy_helper.from_array(np.float32(0.1), "s"),
        numpy_helper.from_array(np.uint8(128), "z"),
        numpy_helper.from_array(np.int8(3), "zs"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dq"),
        helper.make_node("QuantizeLinear", ["d", "s", "zs"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "s", "zs"], ["y"], name="dq2"),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    problems = check_graph(m, "8.6")
    assert any("q: " in p and "not UINT8" in p for p in problems)
    assert any("dq: " in p and "not UINT8" in p for p in problems)
    assert any("q2: " in p and "zero point must be 0" in p for p in problems)


def test_bench_times_fp32_int8_and_pytorch_side_by_side(fp32, int8, tmp_path, capsys):
    res = tmp_path / "bench.json"
    code = main.main(
        ["bench", str(SHIPPED), str(fp32), str(int8["onnxruntime"]), "--backends", "torch",
         "onnxruntime", "--no-video", "--runs", "3", "--batch", "1", "--json", str(res)]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    rows = json.loads(res.read_text())["backends"]
    assert list(rows) == [
        "ssd300_mobilenet_v2_voc.safetensors torch",
        "ssd300_mobilenet_v2_voc.safetensors onnxruntime",
        "fp32.onnx onnxruntime",
        "onnxruntime.onnx onnxruntime",
    ]
    assert all(r["backend"]["p50_ms"] > 0 for r in rows.values())
    assert "| 1.00x |" in table  # the first row is the reference of the speed-up column
    assert "end_to_end" not in rows["fp32.onnx onnxruntime"]


def test_build_calibration_runs_without_torch(shared_data):
    """`build --int8 --calibration` runs on a Jetson, which has no PyTorch: the image
    listing and the calibration frames import no torch."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pathlib import Path\n"
        "from engine.commands.export import _calibration\n"
        f"c = _calibration([{str(shared_data / 'images')!r}], 3, "
        f"Path({str(MODELS_DIR / 'ssd300_mobilenet_v2_voc.onnx')!r}))\n"
        "frames = list(c.frames())\n"
        "assert len(frames) == 3 and frames[0].shape == (1, 300, 300, 3), c.source\n"
        "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "print(c.source)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=MODELS_DIR.parents[1])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("3 of ")

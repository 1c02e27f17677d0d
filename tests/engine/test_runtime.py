import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.export.onnx_export import export_onnx
from engine.runtime.detector import EngineError, open_detector
from engine.video.overlay import class_color, draw_detections
from training.importers import (
    import_torchvision_mobilenet_v2,
    mobilenet_v2_imagenet_path,
    read_checkpoint,
)
from training.weights import save_detector

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    # ImageNet backbone, random head: image-dependent scores with detections above 0.2
    torch.manual_seed(0)
    sd = read_checkpoint(mobilenet_v2_imagenet_path())
    m = import_torchvision_mobilenet_v2(sd, "voc", "voc").eval()
    d = tmp_path_factory.mktemp("models")
    weights = save_detector(m, d / "m.safetensors")
    onnx_path = export_onnx(m, d / "m.onnx", score_threshold=0.2)
    return weights, onnx_path


def frames(shared_data, n=3):
    paths = sorted((shared_data / "images" / "darknet").glob("*.jpg"))[:n]
    return [cv2.imread(str(p)) for p in paths]


def test_backends_agree_and_boxes_map_back_to_the_frame(model_files, shared_data):
    weights, onnx_path = model_files
    with open_detector(onnx_path) as ort_det, open_detector(weights, score_threshold=0.2) as pt:
        assert ort_det.backend == "onnxruntime"
        assert pt.backend == "torch"
        for frame in frames(shared_data):
            a, b = ort_det.detect(frame), pt.detect(frame)
            assert len(a) > 0
            assert sorted(a.class_ids.tolist()) == sorted(b.class_ids.tolist())
            h, w = frame.shape[:2]
            assert (a.boxes[:, [0, 2]] <= w).all()
            assert (a.boxes[:, [1, 3]] <= h).all()
            np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-4)
            assert a.names[0] == ort_det.class_names[a.class_ids[0] - 1]


def test_thresholds_and_class_filter(model_files, shared_data):
    _, onnx_path = model_files
    det = open_detector(onnx_path)
    frame = frames(shared_data, 1)[0]
    everything = det.detect(frame)
    high = det.detect(frame, score_threshold=float(np.median(everything.scores)))
    assert 0 < len(high) < len(everything)
    one = int(everything.class_ids[0])
    only = det.detect(frame, classes=[one])
    assert set(only.class_ids.tolist()) == {one}


def test_created_and_used_in_a_worker_thread(model_files, shared_data):
    _, onnx_path = model_files
    frame = frames(shared_data, 1)[0]
    results, errors = [], []

    def worker():
        try:
            with open_detector(onnx_path) as det:
                results.append(det.detect(frame))
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join(60)
    assert not errors
    assert len(results) == 1
    assert len(results[0]) > 0


def test_concurrent_calls_give_the_sequential_results(model_files, shared_data):
    _, onnx_path = model_files
    det = open_detector(onnx_path)
    imgs = frames(shared_data, 3)
    expected = [det.detect(f).scores for f in imgs]
    got = [None] * 6

    def run(i):
        got[i] = det.detect(imgs[i % 3]).scores

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(6):
        np.testing.assert_array_equal(got[i], expected[i % 3])


def test_wrong_inputs(model_files):
    weights, onnx_path = model_files
    det = open_detector(onnx_path)
    with pytest.raises(EngineError, match="expected a BGR uint8 frame"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(EngineError, match="export it first"):
        open_detector(weights, backend="onnxruntime")
    with pytest.raises(EngineError, match="runs .safetensors weights"):
        open_detector(onnx_path, backend="torch")
    with pytest.raises(EngineError, match="unknown backend 'cuda'"):
        open_detector(onnx_path, backend="cuda")


def test_overlay_colours_are_stable_and_boxes_are_drawn(model_files, shared_data):
    _, onnx_path = model_files
    assert class_color(3) == class_color(3)
    assert class_color(3) != class_color(4)
    frame = frames(shared_data, 1)[0]
    dets = open_detector(onnx_path).detect(frame)
    drawn = draw_detections(frame.copy(), dets)
    assert (drawn != frame).any()


def run_main(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_export_build_and_bench_commands(model_files, tmp_path, shared_data):
    weights, _ = model_files
    out = tmp_path / "cli.onnx"
    r = run_main("export", weights, "-o", out, "--score-threshold", "0.2", "--top-k", "50")
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    if importlib.util.find_spec("tensorrt") is None:  # the case on these machines
        r = run_main("build", out)
        assert r.returncode == 1
        assert r.stderr.startswith("error: TensorRT is not installed")
        assert len(r.stderr.strip().splitlines()) == 1
    for bad in (["bench", out, "--runs", "0"], ["build", out, "--workspace", "-1"]):
        r = run_main(*bad)
        assert r.returncode == 2
        assert "must be at least" in r.stderr
    r = run_main("bench", tmp_path / "nope.onnx")
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: model not found: {tmp_path / 'nope.onnx'}"
    res = tmp_path / "bench.json"
    video = shared_data / "videos" / "vtest.avi"
    r = run_main("bench", out, "--video", video, "--frames", "10", "--runs", "5", "--json", res)
    assert r.returncode == 0, r.stderr
    assert "bench [1/" in r.stderr  # progress while it measures (it prints the table last)
    assert "end to end, 10 frames of vtest.avi" in r.stderr
    data = json.loads(res.read_text())
    ort_result = data["backends"]["onnxruntime"]
    assert ort_result["end_to_end"]["frames"] == 10
    assert set(ort_result["end_to_end"]["stage_ms"]) == {
        "decode",
        "resize",
        "infer",
        "post",
        "draw",
        "encode",
        "log",
    }
    assert ort_result["backend"]["p50_ms"] > 0
    assert "| onnxruntime |" in r.stdout
    r = run_main("export", tmp_path / "missing.safetensors")
    assert r.returncode == 1
    assert "weights file not found" in r.stderr

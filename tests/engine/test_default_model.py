"""The shipped default model (assets/models, see its README): the weights file and its ONNX
export describe the same detector, it finds the person in darknet's person.jpg (not the dog
in dog.jpg: a strict expected failure, see the model card), and the README's main job
(`main.py demo`) runs end to end."""

import json

import cv2
import numpy as np
import pytest

from engine.runtime.detector import EngineError, open_detector
from engine.runtime.models import DEFAULT_ONNX, DEFAULT_WEIGHTS, default_model, resolve_model

# Boxes drawn by hand on the images (x1, y1, x2, y2 in pixels).
PERSON_IN_PERSON_JPG = (190, 98, 275, 375)
DOG_IN_DOG_JPG = (132, 222, 310, 540)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_the_shipped_files_are_there_and_are_the_default():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_ONNX.is_file()
    assert default_model() == DEFAULT_ONNX
    assert resolve_model(None) == DEFAULT_ONNX
    assert resolve_model("ssd300_mobilenet_v2_voc") == DEFAULT_ONNX
    with pytest.raises(EngineError, match="neither a file nor a downloaded checkpoint"):
        resolve_model("ssd300_nonexistent")
    with pytest.raises(EngineError, match="model not found: missing.onnx"):
        resolve_model("missing.onnx")


@pytest.mark.parametrize("model", [DEFAULT_ONNX, DEFAULT_WEIGHTS], ids=["onnx", "safetensors"])
@pytest.mark.parametrize(
    ("image", "wanted", "box"),
    [
        ("person.jpg", "person", PERSON_IN_PERSON_JPG),
        pytest.param(
            "dog.jpg",
            "dog",
            DOG_IN_DOG_JPG,
            marks=pytest.mark.xfail(
                strict=True,
                reason="the plain detector misses this dog: coco128 has 9 dog boxes, and the "
                "ImageNet prior that found it lost on held-out people (model card)",
            ),
        ),
    ],
)
def test_it_finds_the_person_and_the_dog(shared_data, model, image, wanted, box):
    frame = cv2.imread(str(shared_data / "images" / "darknet" / image))
    backend = "onnxruntime" if model.suffix == ".onnx" else "torch"
    with open_detector(model, backend) as det:
        assert len(det.class_names) == 20
        dets = det.detect(frame)
    names = [det.class_names[c - 1] for c in dets.class_ids]
    hits = [
        (float(s), iou(b, box))
        for b, s, n in zip(dets.boxes, dets.scores, names)
        if n == wanted and iou(b, box) >= 0.5
    ]
    assert hits, f"no {wanted} over the hand-drawn box; found {list(zip(names, dets.scores))}"
    assert max(s for s, _ in hits) >= 0.3


def test_weights_and_onnx_agree(shared_data):
    frame = cv2.imread(str(shared_data / "images" / "darknet" / "person.jpg"))
    with (
        open_detector(DEFAULT_ONNX, "onnxruntime") as a,
        open_detector(DEFAULT_WEIGHTS, "torch") as b,
    ):
        da, db = a.detect(frame), b.detect(frame)
    best_a, best_b = int(np.argmax(da.scores)), int(np.argmax(db.scores))
    assert da.class_ids[best_a] == db.class_ids[best_b]
    assert abs(float(da.scores[best_a]) - float(db.scores[best_b])) < 0.02
    np.testing.assert_allclose(da.boxes[best_a], db.boxes[best_b], atol=2.0)


def test_the_demo_runs_end_to_end(tmp_path):
    """The README's main job, shortened (1 s per photograph): a sample video made from
    scikit-image's photographs, processed by the default model on the CPU."""
    pytest.importorskip("skimage")
    from main import main

    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--seconds", "1", "--no-progress"]) == 0
    sample = out / "sample.mp4"
    annotated = out / "annotated" / "sample.mp4"
    cap = cv2.VideoCapture(str(annotated))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 100
    cap.release()
    assert sample.is_file()
    lines = (out / "annotated" / "sample.jsonl").read_text().splitlines()
    assert len(lines) == 100
    found = [d["class"] for line in lines for d in json.loads(line)["detections"]]
    # The first photograph is the astronaut: a person, found in most of its 25 frames.
    first = [json.loads(line) for line in lines[:25]]
    people = sum(any(d["class"] == "person" for d in f["detections"]) for f in first)
    assert people >= 20, found[:20]
    summary = json.loads((out / "annotated" / "summary.json").read_text())
    assert summary["inputs"][0]["status"] == "ok"

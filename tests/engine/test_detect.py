"""`main.py detect`: images, folders, globs and videos in one run; YOLO labels and a COCO
results file that agree with the detections log."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.runtime.detector import open_detector
from engine.runtime.models import DEFAULT_ONNX
from engine.video.images import coco_image_id, yolo_lines
from main import main
from training.fileio import is_image


@pytest.fixture
def photos(shared_data, tmp_path):
    """Real photographs (darknet's samples and scikit-image's) in a folder, one PNG."""
    src = shared_data / "images"
    if not (src / "darknet").is_dir():
        pytest.skip(f"real images missing: {src / 'darknet'}")
    folder = tmp_path / "photos"
    shutil.copytree(src / "darknet", folder)
    shutil.copy(src / "skimage" / "astronaut.png", folder / "sub-astronaut.png")
    return folder


@pytest.fixture
def model():
    if not DEFAULT_ONNX.is_file():
        pytest.skip(f"the shipped model is missing: {DEFAULT_ONNX}")
    return DEFAULT_ONNX


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_images_a_folder_and_a_video_in_one_run(photos, model, shared_data, tmp_path, capsys):
    video = shared_data / "videos" / "vtest.avi"
    out = tmp_path / "out"
    images = sorted(p for p in photos.iterdir() if is_image(p))
    args = ["detect", str(photos), str(video), "-m", str(model), "-o", str(out), "--end", "1"]
    assert main([*args, "--save-txt", "--coco-json", "--no-progress"]) == 0
    text = capsys.readouterr().out
    n = len(images) + 1
    assert f"summary: {n} inputs, {n} complete; {len(images)} images and 10 video frames" in text

    log = read_jsonl(out / "images.jsonl")
    assert [e["image"] for e in log] == [str(p) for p in images]
    coco = json.loads((out / "detections_coco.json").read_text())
    with open_detector(model, "onnxruntime") as det:
        for entry, path in zip(log, images):
            frame = cv2.imread(str(path))
            h, w = frame.shape[:2]
            assert (entry["width"], entry["height"], entry["frame"]) == (w, h, 0)
            # the annotated copy: same size, boxes drawn
            drawn = cv2.imread(str(out / path.name))
            assert drawn.shape == frame.shape
            expected = det.detect(frame)
            assert [d["class"] for d in entry["detections"]] == expected.names
            np.testing.assert_allclose(
                [d["box"] for d in entry["detections"]] or np.zeros((0, 4)),
                expected.boxes,
                atol=0.01,
            )
            if len(expected):
                assert not np.array_equal(drawn, frame)
            # YOLO labels: class cx cy w h, normalized, 0-based class
            labels = (out / "labels" / path.name).with_suffix(".txt").read_text().splitlines()
            assert labels == yolo_lines(expected, w, h)
            for line, d in zip(labels, entry["detections"]):
                c, cx, cy, bw, bh = line.split()
                assert int(c) == d["class_id"] - 1
                x1, y1, x2, y2 = d["box"]
                assert float(cx) == pytest.approx(
                    (x1 + x2) / 2 / w, abs=5e-5
                )  # the log rounds to 0.01 px
                assert float(bw) == pytest.approx((x2 - x1) / w, abs=5e-5)
            # COCO results: [x, y, w, h] in pixels, the image's id
            mine = [c for c in coco if c["image_id"] == coco_image_id(path)]
            assert [c["category_name"] for c in mine] == expected.names
            for c, d in zip(mine, entry["detections"]):
                x1, y1, x2, y2 = d["box"]
                assert c["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
                assert c["score"] == pytest.approx(d["score"], abs=1e-4)
    assert sum(len(e["detections"]) for e in log) > 0
    # the video went through the video pipeline, as `main.py video` writes it
    assert len(read_jsonl(out / "vtest.jsonl")) == 10
    assert (out / "vtest.mp4").is_file()
    summary = json.loads((out / "summary.json").read_text())
    kinds = [i["kind"] for i in summary["inputs"]]
    assert kinds == ["image"] * len(images) + ["video"]
    assert summary["outputs"]["images_jsonl"] == str(out / "images.jsonl")
    assert not list(out.rglob(".*partial*"))


def test_globs_broken_images_and_what_video_still_refuses(photos, model, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    pattern = str(photos / "*.jpg")
    assert main(["detect", pattern, "-m", str(model), "-o", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "broken.jpg: FAILED: not a readable image" in text
    good = len(list(photos.glob("*.jpg"))) - 1
    assert len(read_jsonl(out / "images.jsonl")) == good
    assert f"{good + 1} inputs, {good} complete" in text
    # `video` keeps its meaning: an image is not a video
    dog = photos / "dog.jpg"
    assert main(["video", str(dog), "-m", str(model), "-o", str(tmp_path / "v")]) == 1
    assert "an image, not a video" in capsys.readouterr().out


def test_save_conf_adds_the_score():
    from engine.runtime.detector import Detections

    dets = Detections(
        np.array([[10, 20, 50, 60]], np.float32), np.array([0.875], np.float32),
        np.array([15], np.int32), ["person"],
    )  # fmt: skip
    assert yolo_lines(dets, 100, 80) == ["14 0.300000 0.500000 0.400000 0.500000"]
    assert yolo_lines(dets, 100, 80, scores=True) == [
        "14 0.300000 0.500000 0.400000 0.500000 0.8750"
    ]
    assert coco_image_id(Path("000000000139.jpg")) == 139
    assert coco_image_id(Path("dog.jpg")) == "dog.jpg"


def test_hidden_folders_are_not_searched_and_a_video_named_images_keeps_its_log(
    photos, model, shared_data, tmp_path
):
    """`detect .` in a checkout must not walk into .git or .venv; a video called images.*
    does not overwrite the run's images.jsonl."""
    from engine.video.sources import resolve_inputs

    hidden = photos / ".cache" / "thumbs"
    hidden.mkdir(parents=True)
    shutil.copy(photos / "dog.jpg", hidden / "dog.jpg")
    (photos / "images.avi").symlink_to(shared_data / "videos" / "vtest.avi")
    sources, problems = resolve_inputs([str(photos)], images=True)
    assert problems == []
    assert not any(".cache" in str(s.target) for s in sources)
    out = tmp_path / "out"
    args = ["detect", str(photos), "-m", str(model), "-o", str(out), "--end", "1", "--no-video"]
    assert main([*args, "--no-progress"]) == 0
    assert all("image" in e for e in read_jsonl(out / "images.jsonl"))
    assert len(read_jsonl(out / "images-2.jsonl")) == 10  # the video's own log


def test_a_summary_of_failed_videos_counts_frames_not_images():
    from engine.commands.video import format_summary
    from engine.video.options import InputResult

    lines = format_summary([InputResult("a.mp4", "failed", "broken")], 1.0, Path("out"))
    assert lines[0].startswith("summary: 1 input, 0 complete; 0 frames in 1.0 s")

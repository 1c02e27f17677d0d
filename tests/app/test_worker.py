"""The GUI worker's file playback: in real time it skips the frames a slow detector cannot
keep up with (the video plays at its own speed, the skips are counted as dropped); without
it every frame is processed."""

import time

import cv2
import pytest

from app.worker import DetectionWorker, source_from_text
from engine.runtime.detector import Detections


class SlowDetector:
    """Stands in for a model that needs `seconds` per frame."""

    class_names = ["person"]
    info = type("Info", (), {"score_threshold": 0.3, "iou_threshold": 0.45})()

    def __init__(self, seconds):
        self.seconds = seconds

    def detect(self, frame):
        time.sleep(self.seconds)
        return Detections.empty()

    def describe(self):
        return "slow stand-in"


@pytest.fixture
def clip(shared_data):
    path = shared_data / "videos" / "vtest.avi"
    if not path.is_file():
        pytest.skip(f"real data not available: {path}")
    return path


def play(clip, realtime, packets=8):
    worker = DetectionWorker("unused.onnx", source_from_text(str(clip)), realtime=realtime)
    got = []
    worker._publish = lambda p: (got.append(p), len(got) >= packets and worker.stop())
    worker._run_file(SlowDetector(seconds=0.25))  # 4 FPS on a 10 FPS clip
    return got


def test_real_time_playback_skips_what_a_slow_model_cannot_keep_up_with(clip):
    fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS)
    assert fps >= 8  # a clip faster than the stand-in model
    got = play(clip, realtime=True)
    indices = [p.index for p in got]
    steps = [b - a for a, b in zip(indices, indices[1:])]
    assert min(steps) >= 1
    assert sum(steps) / len(steps) >= 0.6 * fps * 0.25  # about fps x 0.25 s per packet
    assert got[-1].stats["dropped"] == indices[-1] - (len(indices) - 1)
    assert got[-1].stats["dropped"] > 0
    # each packet carries its frame's time in the file
    assert got[-1].seconds == pytest.approx(indices[-1] / fps)


def test_without_real_time_every_frame_is_processed(clip):
    got = play(clip, realtime=False, packets=5)
    assert [p.index for p in got] == [0, 1, 2, 3, 4]
    assert got[-1].stats["dropped"] == 0

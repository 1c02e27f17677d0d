"""The GUI worker runs the frame pipeline (engine.video.pipeline) on a file: in real time it
passes over the frames a slow detector cannot keep up with (the video plays at its own
speed, the skips are counted as dropped); without it every frame is processed; pauses,
steps, seeks and recordings go through the same pipeline."""

import threading
import time

import cv2
import pytest
from PyQt5.QtCore import Qt

from app.worker import DetectionWorker, source_from_text
from engine.runtime.detector import open_detector
from engine.runtime.models import DEFAULT_ONNX


class Slow:
    """The shipped model, made to need `seconds` per inference."""

    def __init__(self, det, seconds):
        self.det, self.seconds = det, seconds

    def __getattr__(self, name):
        return getattr(self.det, name)

    def run(self, batch):
        t0 = time.perf_counter()
        out = self.det.run(batch)
        time.sleep(max(0.0, self.seconds - (time.perf_counter() - t0)))
        return out


@pytest.fixture(scope="module")
def model():
    if not DEFAULT_ONNX.is_file():
        pytest.skip(f"the shipped model is missing: {DEFAULT_ONNX}")
    det = open_detector(DEFAULT_ONNX, "onnxruntime")
    yield det
    det.close()


@pytest.fixture
def clip(shared_data):
    path = shared_data / "videos" / "vtest.avi"
    if not path.is_file():
        pytest.skip(f"real data not available: {path}")
    return path


def start(clip, det, realtime, packets, seconds=0.25):
    """Runs a worker's pipeline in a thread until `packets` frames were published."""
    worker = DetectionWorker("unused.onnx", source_from_text(str(clip)), realtime=realtime)
    got, messages = [], []
    publish = worker._publish

    def collect(p):
        got.append(p)
        publish(p)
        worker.take()  # as the window does on frameAvailable
        if len(got) >= packets:
            worker.stop()

    worker._publish = collect
    worker.message.connect(messages.append, Qt.DirectConnection)  # no event loop here
    proc = worker.processor(Slow(det, seconds))  # 4 FPS on a 10 FPS clip
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=proc.process(worker.source, {})))
    thread.start()
    return worker, got, messages, thread, result


def play(clip, det, realtime, packets=8):
    worker, got, _, thread, result = start(clip, det, realtime, packets)
    thread.join(120)
    assert result["r"].status == "interrupted", result["r"]
    return got


def test_real_time_playback_skips_what_a_slow_model_cannot_keep_up_with(clip, model):
    fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS)
    assert fps >= 8  # a clip faster than the stand-in model
    got = play(clip, model, realtime=True)
    indices = [p.index for p in got]
    steps = [b - a for a, b in zip(indices, indices[1:])]
    assert min(steps) >= 1
    assert sum(steps) / len(steps) >= 0.6 * fps * 0.25  # about fps x 0.25 s per packet
    assert got[-1].stats["dropped"] == indices[-1] - (len(indices) - 1)
    assert got[-1].stats["dropped"] > 0
    # each packet carries its frame's time in the file, and the model's detections
    assert got[-1].seconds == pytest.approx(indices[-1] / fps)
    for p in got[:3]:  # all the model's detections, as detect() gives them
        expected = model.detect(p.frame)
        assert p.dets.boxes.tolist() == pytest.approx(expected.boxes.tolist(), abs=1e-3)
        assert p.dets.names == expected.names
    assert got[-1].stats["inference_fps"] == pytest.approx(4, rel=0.3)


def test_without_real_time_every_frame_is_processed(clip, model):
    got = play(clip, model, realtime=False, packets=5)
    assert [p.index for p in got] == list(range(len(got)))  # (frames in flight finish)
    assert len(got) >= 5
    assert got[-1].stats["dropped"] == 0


def test_pause_step_seek_and_a_recording_through_the_pipeline(clip, model, tmp_path):
    worker, got, messages, thread, result = start(clip, model, False, 10**6, seconds=0.0)
    recorded = []
    worker.recording.connect(recorded.append, Qt.DirectConnection)
    try:
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.start_recording(tmp_path / "rec")
        while len(got) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.set_paused(True)
        time.sleep(0.3)
        n = len(got)
        time.sleep(0.3)
        assert len(got) == n  # paused: nothing more comes
        t0 = time.perf_counter()
        worker.stop_recording()  # finalized while paused, off the caller's thread
        assert time.perf_counter() - t0 < 0.5
        while not any(m.startswith("recording saved:") for m in messages):
            assert time.monotonic() < deadline, messages
            time.sleep(0.01)
        assert recorded[0].endswith("rec.mp4")
        assert recorded[-1] == ""
        worker.step()
        while len(got) == n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[n].index == got[n - 1].index + 1  # one step: the next frame
        k = len(got)
        worker.seek(500)
        while got[-1].index != 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        # shown although paused, nothing after it, and nothing read before the seek
        assert [p.index for p in got[k:]] == [500]
        worker.seek(10**6)  # past the end: the last frame, then the end of the file
        worker.set_paused(False)
        while not any(m.startswith("end of the file") for m in messages):
            assert time.monotonic() < deadline, messages
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(60)
    assert result["r"].status == "interrupted"
    video = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) >= 1
    assert not list(tmp_path.glob(".*partial*"))

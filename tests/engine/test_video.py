"""The video command on the real clips: outputs that match the inputs, logs that match the
drawn boxes, bad inputs, full disks and signals."""

import argparse
import http.server
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.commands.args import seconds as parse_time
from engine.commands.video import parse_classes
from engine.runtime.detector import Detections, EngineError, open_detector
from engine.video.files import FileReader
from engine.video.overlay import draw_detections
from engine.video.pipeline import VideoOptions, output_paths
from engine.video.sources import Source, mask_credentials, resolve_inputs
from engine.video.writers import h264_available
from main import main

ROOT = Path(__file__).resolve().parents[2]
CLIPS = [
    "vtest.avi",
    "one-by-one-person-detection.mp4",
    "car-detection.mp4",
    "bottle-detection.mp4",
]


@pytest.fixture
def model(detector_onnx):
    return detector_onnx


@pytest.fixture
def videos(shared_data):
    return shared_data / "videos"


def run(*args: str) -> int:
    return main(["video", *map(str, args), "--no-progress"])


def decode_all(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps


def count_frames(path: Path) -> tuple[int, int, int, float]:
    """(decoded frames, width, height, fps) without keeping the frames."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n, w, h, fps


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the real clips ------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_output_has_the_input_frames_size_and_rate(model, videos, tmp_path, clip):
    src = videos / clip
    # The detector runs on every 10th frame (keeps the test fast); every frame is written.
    assert run(src, "-m", model, "-o", tmp_path, "--every", 10) == 0
    stem = Path(clip).stem
    n_in, w_in, h_in, fps_in = count_frames(src)
    n_out, w_out, h_out, fps_out = count_frames(tmp_path / f"{stem}.mp4")
    assert (n_out, w_out, h_out) == (n_in, w_in, h_in)
    assert fps_out == pytest.approx(fps_in, rel=1e-3)
    log = read_log(tmp_path / f"{stem}.jsonl")
    assert [e["frame"] for e in log] == list(range(0, n_in, 10))
    assert log[1]["time"] == pytest.approx(10 / fps_in, abs=1e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    (entry,) = summary["inputs"]
    assert entry["status"] == "ok"
    assert entry["frames"] == n_in
    assert not list(tmp_path.glob(".*partial*"))


def test_log_has_every_frame_and_agrees_with_the_drawn_boxes(model, videos, tmp_path):
    src = videos / "vtest.avi"
    assert run(src, "-m", model, "-o", tmp_path, "--end", 3, "--csv") == 0
    log = read_log(tmp_path / "vtest.jsonl")
    assert [e["frame"] for e in log] == list(range(30))
    assert sum(len(e["detections"]) for e in log) > 0

    inputs, _ = decode_all(src)
    outputs, _ = decode_all(tmp_path / "vtest.mp4")
    assert len(outputs) == 30
    with open_detector(model) as det:
        for entry in log[::7]:
            frame = inputs[entry["frame"]]
            # The log holds the detector's own output for that frame ...
            direct = det.detect(frame)
            assert [d["class"] for d in entry["detections"]] == direct.names
            np.testing.assert_allclose(
                [d["box"] for d in entry["detections"]], direct.boxes, atol=0.01
            )
            # ... and the output frame shows exactly those boxes: redrawing the logged
            # boxes on the input gives the output frame (up to compression), and the
            # drawn pixels differ clearly from the input there.
            dets = Detections(
                np.array([d["box"] for d in entry["detections"]], np.float32).reshape(-1, 4),
                np.array([d["score"] for d in entry["detections"]], np.float32),
                np.array([d["class_id"] for d in entry["detections"]], np.int32),
                [d["class"] for d in entry["detections"]],
            )
            redrawn = draw_detections(frame.copy(), dets)
            drawn = np.abs(redrawn.astype(int) - frame).sum(-1) > 60
            assert drawn.sum() > 200
            out = outputs[entry["frame"]].astype(int)
            err_redrawn = np.abs(out - redrawn)[drawn].mean()
            err_plain = np.abs(out - frame)[drawn].mean()
            assert err_redrawn < 25, err_redrawn
            assert err_plain > 2 * err_redrawn, (err_plain, err_redrawn)

    rows = (tmp_path / "vtest.csv").read_text().splitlines()
    assert rows[0] == "frame,time,class_id,class,score,x1,y1,x2,y2"
    assert len(rows) - 1 == sum(len(e["detections"]) for e in log)


def test_start_end_class_filter_and_log_only(model, videos, tmp_path):
    src = videos / "car-detection.mp4"  # 12.5 FPS
    with open_detector(model) as det:
        names = det.class_names
    assert run(src, "-m", model, "-o", tmp_path, "--start", "0:02", "--end", 4, "--no-video") == 0
    log = read_log(tmp_path / "car-detection.jsonl")
    assert [e["frame"] for e in log] == list(range(25, 50))
    assert log[0]["time"] == pytest.approx(2.0)
    assert not (tmp_path / "car-detection.mp4").exists()
    seen = {d["class"] for e in log for d in e["detections"]}
    keep = sorted(seen)[0]
    out2 = tmp_path / "filtered"
    assert run(src, "-m", model, "-o", out2, "--start", 2, "--end", 4, "--classes", keep) == 0
    filtered = read_log(out2 / "car-detection.jsonl")
    assert {d["class"] for e in filtered for d in e["detections"]} == {keep}
    assert parse_classes(f"{keep},1", names) == sorted({names.index(keep) + 1, 1})


@pytest.mark.parametrize(("codec", "ext"), [("mp4v", ".mp4"), ("mjpg", ".avi")])
def test_opencv_codecs(model, videos, tmp_path, codec, ext):
    src = videos / "car-detection.mp4"
    assert run(src, "-m", model, "-o", tmp_path, "--end", 1, "--codec", codec) == 0
    assert count_frames(tmp_path / f"car-detection{ext}")[:3] == (13, 768, 432)


def test_without_pyav_auto_falls_back_to_mp4v_with_a_note(monkeypatch):
    from engine.video import writers

    monkeypatch.setattr(writers, "h264_available", lambda: False)
    codec, note = writers.resolve_codec("auto")
    assert codec == "mp4v"
    assert "pip install av" in note
    with pytest.raises(EngineError, match="PyAV"):
        writers.resolve_codec("h264")


def test_a_backend_error_fails_that_input_only(model, videos, tmp_path):
    from engine.video.pipeline import VideoProcessor

    class Flaky:
        """Wraps a detector; its inference fails from the 5th frame on."""

        def __init__(self, det):
            self.det, self.calls = det, 0

        def __getattr__(self, name):
            return getattr(self.det, name)

        def run(self, batch):
            self.calls += 1
            if self.calls >= 5:
                raise RuntimeError("CUDA error: an illegal memory access\nmore details")
            return self.det.run(batch)

    src = Source("file", str(videos / "car-detection.mp4"), "car", "car")
    opts = VideoOptions(codec="h264")
    with open_detector(model) as det:
        res = VideoProcessor(Flaky(det), opts).process(src, output_paths([src], tmp_path, opts)[0])
        assert res.status == "failed"
        assert res.message == "RuntimeError: CUDA error: an illegal memory access"
        assert res.frames == 4
        assert count_frames(tmp_path / "car.mp4")[0] == 4
        assert len(read_log(tmp_path / "car.jsonl")) == 4
        # the same processor goes on with the next input
        good = VideoProcessor(det, VideoOptions(codec="h264", end=1)).process(
            src, output_paths([src], tmp_path / "2", opts)[0]
        )
        assert good.status == "ok"


def test_seeking_lands_on_the_exact_frame(videos):
    src = videos / "car-detection.mp4"
    reader = FileReader(src)
    frames = [reader.read() for _ in range(40)]
    reader.release()
    reader = FileReader(src, start_frame=33)
    np.testing.assert_array_equal(reader.read(), frames[33])
    reader.release()


# -- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs_are_reported_and_the_good_ones_processed(model, videos, tmp_path, capsys):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "garbage.mp4").write_text("not a video at all\n" * 100)
    (bad / "empty.avi").write_bytes(b"")
    data = (videos / "vtest.avi").read_bytes()
    (bad / "truncated.avi").write_bytes(data[: len(data) // 2])
    shutil.copy(videos / "car-detection.mp4", bad / "good.mp4")
    out = tmp_path / "out"
    rc = run(bad, tmp_path / "missing.mp4", str(tmp_path / "none*.mkv"), "-m", model, "-o", out,
             "--every", 5, "--end", 60)  # fmt: skip
    assert rc == 1
    text = capsys.readouterr()
    both = text.out + text.err
    assert "missing.mp4: not found" in both
    assert "none*.mkv: no files match this pattern" in both
    assert "garbage.mp4: FAILED: cannot be opened as a video" in text.out
    assert "empty.avi: FAILED: empty file" in text.out
    assert "truncated.avi: INCOMPLETE: decoding stopped at frame" in text.out
    assert "of the 795 the file announces" in text.out
    # the good file is complete; the truncated one has what decoded, video and log alike
    assert count_frames(out / "good.mp4")[0] == 377
    n_trunc = count_frames(out / "truncated.mp4")[0]
    assert 300 < n_trunc < 795
    assert len(read_log(out / "truncated.jsonl")) == len(range(0, n_trunc, 5))
    summary = {e["source"]: e for e in json.loads((out / "summary.json").read_text())["inputs"]}
    assert summary[str(bad / "good.mp4")]["status"] == "ok"
    assert summary[str(bad / "truncated.avi")]["status"] == "incomplete"
    assert summary[str(bad / "truncated.avi")]["frames"] == n_trunc


def test_output_folder_problems(model, videos, tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    shutil.copy(videos / "car-detection.mp4", src)
    assert run(src, "-m", model, "-o", tmp_path, "--end", 1) == 1
    assert "would overwrite an input" in capsys.readouterr().out
    assert src.read_bytes() == (videos / "car-detection.mp4").read_bytes()

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert run(src, "-m", model, "-o", a_file) == 1
    assert "error: output folder" in capsys.readouterr().err
    assert run(src, "-m", model, "-o", a_file / "sub") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write in the output folder")
    assert err.count("\n") == 1


def test_bad_options_are_one_line_errors(model, videos, tmp_path, capsys):
    src = videos / "car-detection.mp4"
    assert run(src, "-m", tmp_path / "nope.onnx", "-o", tmp_path) == 1
    assert "model not found" in capsys.readouterr().err
    assert run(src, "-m", model, "-o", tmp_path, "--classes", "unicorn") == 1
    assert "unknown class 'unicorn'" in capsys.readouterr().err
    assert run(src, "-m", model, "-o", tmp_path, "--iou", 0.6) == 1
    assert "does NMS with IoU 0.45 inside the graph" in capsys.readouterr().err
    assert run(src, "-m", model, "-o", tmp_path, "--start", 5, "--end", 2) == 1
    assert "--end" in capsys.readouterr().err
    assert run(src, "-m", model, "-o", tmp_path, "--start", 100) == 1
    assert "nothing between --start and --end" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        run(src, "-m", model, "--start", "soon")
    assert e.value.code == 2


# -- processes: signals and a full disk ----------------------------------------------------


def start_cli(*args, **kw) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "main.py"), "video", *map(str, args), "--no-progress"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_a_playable_video_and_a_log_up_to_the_same_frame(
    model, videos, tmp_path, sig, code
):
    proc = start_cli(videos / "one-by-one-person-detection.mp4", "-m", model, "-o", tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        log_part = next(tmp_path.glob(".one-by-one-person-detection.*.partial.jsonl"), None)
        if log_part is not None and len(log_part.read_text().splitlines()) >= 30:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "INTERRUPTED" in out
    n_video, w, h, _ = count_frames(tmp_path / "one-by-one-person-detection.mp4")
    log = read_log(tmp_path / "one-by-one-person-detection.jsonl")
    assert 30 <= n_video < 1394
    assert (w, h) == (768, 432)
    assert [e["frame"] for e in log] == list(range(n_video))
    (entry,) = json.loads((tmp_path / "summary.json").read_text())["inputs"]
    assert entry["status"] == "interrupted"
    assert entry["frames"] == n_video
    assert not list(tmp_path.glob(".*partial*"))


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_running_out_of_space_is_reported_and_the_next_input_still_runs(model, videos, tmp_path):
    # A per-process file size limit makes every write past 300 kB fail, as a full disk does.
    second = tmp_path / "in" / "second.mp4"
    second.parent.mkdir()
    shutil.copy(videos / "car-detection.mp4", second)
    out_dir = tmp_path / "out"
    proc = start_cli(videos / "car-detection.mp4", second, "-m", model, "-o", out_dir,
                     preexec_fn=_limit_file_size)  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert out.count("FAILED: writing stopped at frame") == 2, out
    summary = json.loads((out_dir / "summary.json").read_text())
    for entry, stem in zip(summary["inputs"], ["car-detection", "second"]):
        assert entry["status"] == "failed"
        assert "File too large" in entry["message"]
        assert "the video could not be finalized" in entry["message"]
        # no unplayable video is left, and the log has every frame written before the failure
        assert not (out_dir / f"{stem}.mp4").exists()
        assert len(read_log(out_dir / f"{stem}.jsonl")) == entry["frames"] > 0
    assert not list(out_dir.glob(".*partial*"))


# -- live sources and credentials ----------------------------------------------------------


@pytest.fixture
def http_server(videos):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(videos))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_stream_url_credentials_never_appear_and_drops_are_counted(model, http_server, tmp_path):
    url = f"http://viewer:s3cret-pw@127.0.0.1:{http_server}/car-detection.mp4"
    proc = start_cli(url, "-m", model, "-o", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    everything = out + err + "".join(p.read_text() for p in tmp_path.glob("*.json*"))
    assert "s3cret-pw" not in everything
    assert "viewer:***@127.0.0.1" in out
    (entry,) = json.loads((tmp_path / "summary.json").read_text())["inputs"]
    video = tmp_path / "http-127.0.0.1-car-detection.mp4"
    n, w, h, _ = count_frames(video)
    assert (w, h) == (768, 432)
    # the stream is read faster than the model runs: the newest frame wins, the rest drop
    assert entry["frames"] == n == len(read_log(tmp_path / "http-127.0.0.1-car-detection.jsonl"))
    assert entry["frames"] + entry["dropped"] == 377


@pytest.mark.parametrize("stall", [True, False])
def test_a_stream_that_stalls_midway_ends_incomplete_and_says_so(
    model, videos, tmp_path, capsys, monkeypatch, stall
):
    """An IP camera's MJPEG stream (multipart/x-mixed-replace) sends 40 frames of a real
    clip, then nothing with the connection left open: the run ends INCOMPLETE with exit 1
    and says the stream stalled, outputs finalized. A stream that closes ends as before."""
    import engine.video.live as live

    monkeypatch.setattr(live, "READ_TIMEOUT_MS", 2000)  # (10 s in use) keeps the test short
    cap = cv2.VideoCapture(str(videos / "vtest.avi"))
    jpegs = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(40)]
    cap.release()
    release = threading.Event()

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in jpegs:
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                self.wfile.write(head % len(jpeg) + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(0.05)
            if stall:
                release.wait(30)  # silence, the connection left open

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg"
        rc = run(url, "-m", model, "-o", tmp_path, "--no-video")
    finally:
        release.set()
        server.shutdown()
    out = capsys.readouterr().out
    (entry,) = json.loads((tmp_path / "summary.json").read_text())["inputs"]
    assert 0 < entry["frames"] <= 40
    assert len(read_log(tmp_path / "http-127.0.0.1-cam.jsonl")) == entry["frames"]
    if stall:
        assert rc == 1
        stalled = "the stream stalled: no frame within its 2 s read timeout after 40 frames"
        assert f"INCOMPLETE: {stalled}" in out
        assert entry["status"] == "incomplete"
    else:
        assert rc == 0
        assert "note: the source ended after 40 frames" in out
        assert entry["status"] == "ok"


def test_an_unreachable_stream_is_a_clear_error_without_the_password(model, tmp_path, capsys):
    rc = run("rtsp://admin:hunter2@127.0.0.1:9/cam", "-m", model, "-o", tmp_path)
    assert rc == 1
    text = capsys.readouterr()
    assert "hunter2" not in text.out + text.err
    assert "rtsp://admin:***@127.0.0.1:9/cam: FAILED: cannot open the stream" in text.out


# -- small pieces ---------------------------------------------------------------------------


def test_mask_credentials():
    assert mask_credentials("rtsp://u:p@h/x and http://a:b@c:80/") == (
        "rtsp://u:***@h/x and http://a:***@c:80/"
    )
    assert mask_credentials("rtsp://host/x") == "rtsp://host/x"
    assert mask_credentials("/a:b@c/file.mp4") == "/a:b@c/file.mp4"
    assert mask_credentials("rtsp://admin:p@ss@10.0.0.5/live") == "rtsp://admin:***@10.0.0.5/live"
    assert mask_credentials("rtsp://TOKEN@cam/x") == "rtsp://***@cam/x"
    assert (
        mask_credentials("http://h/v.cgi?user=a&pwd=x1&s=2") == "http://h/v.cgi?user=a&pwd=***&s=2"
    )


def test_status_overlay_draws_fps_and_frame_number():
    from engine.video.overlay import draw_status

    frame = np.zeros((432, 768, 3), np.uint8)
    draw_status(frame, fps=12.3, frame_index=456)
    assert frame[:30, :200].any()
    assert not frame[100:].any()
    assert not draw_status(np.zeros((10, 10, 3), np.uint8)).any()


def test_parse_time():
    assert parse_time("90") == 90
    assert parse_time("1:30") == 90
    assert parse_time("1:02:03.5") == 3723.5
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("1h")


def test_inputs_expand_and_output_names_are_unique(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for p in ["a/x.mp4", "a/sub/x.mp4", "a/x.avi", "a/notes.txt", "b.mkv"]:
        (tmp_path / p).write_bytes(b"\0")
    specs = [str(tmp_path / "a"), str(tmp_path / "*.mkv"), str(tmp_path / "a" / "x.mp4"), "0"]
    sources, problems = resolve_inputs(specs)
    assert not problems
    names = [Path(str(s.target)).relative_to(tmp_path).as_posix() for s in sources[:4]]
    assert names == ["a/sub/x.mp4", "a/x.avi", "a/x.mp4", "b.mkv"]  # the last is a duplicate
    out = tmp_path / "out"
    plans = output_paths(sources, out, VideoOptions(codec="h264"))
    videos = [p["video"].relative_to(out).as_posix() for p in plans]
    assert videos == ["sub/x.mp4", "x.mp4", "x-2.mp4", "b.mp4", "camera0.mp4"]
    camera = sources[-1]
    assert camera == Source("camera", 0, "camera 0", "camera0", device="index")
    # a folder search leaves out hidden files (.x.partial.mp4 of a killed run) and the
    # output folder (outputs of an earlier run)
    (tmp_path / "a" / ".x.partial.mp4").write_bytes(b"\0")
    (tmp_path / "a" / "out").mkdir()
    (tmp_path / "a" / "out" / "x.mp4").write_bytes(b"\0")
    again, _ = resolve_inputs([str(tmp_path / "a")], exclude=tmp_path / "a" / "out")
    assert len(again) == 3
    # writing next to the inputs would replace a/sub/x.mp4 itself: refused for that input only
    clash = output_paths(sources[:2], tmp_path / "a", VideoOptions(codec="h264"))
    assert "would overwrite an input" in clash[0]
    assert clash[1]["video"] == tmp_path / "a" / "x.mp4"


@pytest.mark.skipif(not h264_available(), reason="PyAV with libx264 is not installed")
def test_odd_frame_sizes_keep_their_size(model, tmp_path):
    import av

    src = tmp_path / "odd.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 321, 241, "yuv444p"
        rng = np.random.default_rng(0)
        for _ in range(12):
            img = rng.integers(0, 255, (241, 321, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert run(src, "-m", model, "-o", tmp_path / "out") == 0
    assert count_frames(tmp_path / "out" / "odd.mp4")[:3] == (12, 321, 241)


def test_the_video_command_runs_without_torch(model, videos, tmp_path):
    from tests.test_architecture import BLOCK_TORCH

    code = BLOCK_TORCH + (
        "import main\n"
        f"rc = main.main(['video', {str(videos / 'car-detection.mp4')!r}, '-m', {str(model)!r},"
        f" '-o', {str(tmp_path)!r}, '--end', '1', '--no-progress'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert count_frames(tmp_path / "car-detection.mp4")[0] == 13


def test_an_existing_file_is_a_file_even_with_a_pipeline_like_name(model, videos, tmp_path):
    """ " ! " marks a GStreamer pipeline, unless a file of that name exists."""
    odd = tmp_path / "in" / "cam ! night.avi"
    odd.parent.mkdir()
    odd.symlink_to(videos / "vtest.avi")
    assert run(odd, "-m", model, "-o", tmp_path / "out", "--end", 1, "--no-video") == 0
    (entry,) = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]
    assert entry["status"] == "ok"
    assert entry["frames"] == 10


def test_two_runs_into_one_folder_at_once_both_finish_with_playable_outputs(
    model, videos, tmp_path
):
    """Each run writes under temporary names of its own (they used to share one, and the
    second run's video could not be finalized)."""
    args = (videos / "vtest.avi", "-m", model, "-o", tmp_path, "--end", 2, "--codec", "mp4v")
    procs = [start_cli(*args) for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err
    n, _, _, _ = count_frames(tmp_path / "vtest.mp4")
    assert n == 20
    assert len(read_log(tmp_path / "vtest.jsonl")) == 20
    assert json.loads((tmp_path / "summary.json").read_text())["inputs"][0]["status"] == "ok"
    assert not list(tmp_path.glob(".*partial*"))

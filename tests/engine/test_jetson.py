"""Jetson deployment without a Jetson: platform detection from fake device trees, source
URIs, the GStreamer pipeline for each source kind and machine, the fallbacks when this
OpenCV has no GStreamer (pip's wheels have none), the recording encoder choice, engines
built elsewhere, and the workspace for small devices."""

import json
import sys
import types
from pathlib import Path

import cv2
import pytest

from engine.runtime.detector import EngineError
from engine.runtime.platform import (
    Platform,
    default_workspace_mb,
    detect_platform,
    jetpack_for_l4t,
    opencv_has_gstreamer,
    parse_tegra_release,
)
from engine.video import gstreamer as gst
from engine.video import sources, writers
from engine.video.files import FileReader, fourcc_codec
from engine.video.live import CapturePlan, capture_plan, open_live
from engine.video.sources import Source, file_uri_path, parse_source, resolve_inputs

ORIN_NANO = Platform(True, "NVIDIA Jetson Orin Nano Developer Kit", (36, 4, 3), True, False, 7620)
XAVIER_NX = Platform(True, "NVIDIA Jetson Xavier NX Developer Kit", (35, 4, 1), True, True, 7600)
JETSON_PIP_CV2 = Platform(True, "NVIDIA Jetson AGX Orin", (36, 3, 0), False, True, 62000)
DESKTOP_GST = Platform(gstreamer=True)
DESKTOP = Platform()

HW_BGR = "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
SW_BGR = "videoconvert ! video/x-raw,format=BGR"
LIVE_SINK = "appsink drop=true max-buffers=1 sync=false"


def fake_root(tmp_path: Path, release: str = "", model: str = "", dev=(), mem_kb=0) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "dev").mkdir()
    if release:
        (root / "etc" / "nv_tegra_release").write_text(release)
    if model:
        (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    for d in dev:
        (root / "dev" / d).write_text("")
    if mem_kb:
        (root / "proc" / "meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree: 1 kB\n")
    return root


# ------------------------------------------------------------------------------ platform


def test_jetson_models_and_jetpack_versions_are_read_from_the_device(tmp_path):
    rel = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    root = fake_root(tmp_path, rel, "NVIDIA Jetson Orin Nano Developer Kit", ["nvhost-msenc"],
                     7_800_000)  # fmt: skip
    p = detect_platform(str(root), gstreamer=True)
    assert p.jetson
    assert p.l4t == (36, 4, 3)
    assert p.jetpack == "6.2"
    assert not p.nvenc  # Orin Nano has no NVENC even if a node exists
    assert p.hardware_decode
    assert p.memory_mb == 7617
    assert "Orin Nano" in p.describe()
    assert "JetPack 6.2" in p.describe()

    rel = "# R35 (release), REVISION: 4.1, GCID: 1"
    xavier = fake_root(tmp_path / "x", rel, "Jetson Xavier NX", ["nvhost-msenc"])
    p = detect_platform(str(xavier), gstreamer=False)
    assert (p.jetpack, p.nvenc, p.hardware_decode) == ("5.1.2", True, False)


def test_a_desktop_is_not_a_jetson(tmp_path):
    p = detect_platform(str(fake_root(tmp_path)), gstreamer=False)
    assert not p.jetson
    assert p.l4t is None
    assert not p.nvenc
    assert p.describe().startswith("not a Jetson; OpenCV without GStreamer")
    # This machine's pip OpenCV: no GStreamer, which is what the fallbacks are for.
    assert opencv_has_gstreamer() == (
        "GStreamer:                   YES" in cv2.getBuildInformation()
    )


def test_l4t_to_jetpack_table():
    assert parse_tegra_release("# R35 (release), REVISION: 5.0, GCID: 35") == (35, 5, 0)
    assert parse_tegra_release("garbage") is None
    assert jetpack_for_l4t((36, 4, 4)) == "6.2.1"
    assert jetpack_for_l4t((36, 4, 0)) == "6.1"
    assert jetpack_for_l4t((36, 3, 0)) == "6.0"
    assert jetpack_for_l4t((35, 1, 0)) == "5.0.2"
    assert jetpack_for_l4t((32, 7, 4)) == "4.6.x"
    assert jetpack_for_l4t((31, 0)) is None


def test_builder_workspace_fits_the_device():
    assert default_workspace_mb(DESKTOP) == 1024
    assert default_workspace_mb(Platform(True, memory_mb=3956)) == 256  # Nano 4 GB
    assert default_workspace_mb(ORIN_NANO) == 512  # 8 GB
    assert default_workspace_mb(JETSON_PIP_CV2) == 1024  # AGX Orin 64 GB


# ------------------------------------------------------------------------------ URIs


def test_source_uris():
    assert parse_source("0") == Source("camera", 0, "camera 0", "camera0", device="index")
    csi = parse_source("csi://1?width=1920&height=1080&fps=30&flip=2")
    assert (csi.kind, csi.target, csi.device, csi.name) == ("camera", 1, "csi", "csi1")
    assert dict(csi.params) == {"width": 1920, "height": 1080, "fps": 30, "flip": 2}
    for spec in ("v4l2:///dev/video2", "v4l2://2", "/dev/video2"):
        s = parse_source(spec)
        assert (s.kind, s.target, s.device, s.name) == ("camera", "/dev/video2", "v4l2", "video2")
    assert dict(parse_source("v4l2:///dev/video0?format=MJPG&width=1280&height=720").params) == {
        "format": "mjpg",
        "width": 1280,
        "height": 720,
    }
    rtsp = parse_source("rtsp://admin:pw@10.0.0.2:554/stream1")
    assert (rtsp.kind, rtsp.device, rtsp.display) == (
        "stream",
        "",
        "rtsp://admin:***@10.0.0.2:554/stream1",
    )
    pipe = parse_source("videotestsrc ! videoconvert ! appsink")
    assert (pipe.kind, pipe.device) == ("stream", "gstreamer")
    assert parse_source("clip.mp4") is None
    found, _ = resolve_inputs(["0", "csi://0", "0"])
    assert [s.display for s in found] == ["camera 0", "CSI camera 0"]
    assert file_uri_path("file:///data/in%20put.mp4") == "/data/in put.mp4"
    assert file_uri_path("file://localhost/a.mp4") == "/a.mp4"
    assert file_uri_path("/data/a.mp4") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("csi://front", "a CSI camera is csi://N"),
        ("csi://0?width=wide", "width must be a whole number"),
        ("csi://0?zoom=2", "unknown option 'zoom' (a csi camera takes width, height, fps, flip)"),
        ("v4l2:///dev/sda", "a V4L2 camera is v4l2:///dev/videoN"),
        ("v4l2:///dev/video0?format=h264", "format is mjpg or yuyv"),
        ("file://server/share/a.mp4", "only local files"),
    ],
)
def test_malformed_uris_are_one_line_errors(spec, message):
    with pytest.raises(EngineError) as err:
        parse_source(file_uri_path(spec) or spec)
    assert message in str(err.value)
    _, problems = resolve_inputs([spec])
    assert len(problems) == 1
    assert message in problems[0].message


def test_file_uris_resolve_like_paths(shared_data):
    clip = shared_data / "videos" / "vtest.avi"
    found, problems = resolve_inputs([clip.resolve().as_uri(), str(clip)])
    assert not problems
    assert len(found) == 1  # the same file twice
    assert found[0].kind == "file"


# ------------------------------------------------------------------------------ pipelines


def test_csi_pipeline_on_a_jetson():
    plan = capture_plan(parse_source("csi://0"), ORIN_NANO)
    assert plan == CapturePlan(
        "gstreamer",
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,"
        "framerate=30/1,format=NV12 ! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! "
        f"videoconvert ! video/x-raw,format=BGR ! {LIVE_SINK}",
        hardware=True,
    )
    wide = capture_plan(parse_source("csi://1?width=1920&height=1080&fps=60&flip=2"), ORIN_NANO)
    assert "sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=60/1" in (
        wide.target
    )
    assert "flip-method=2" in wide.target


def test_csi_cameras_need_a_jetson_with_gstreamer():
    with pytest.raises(EngineError, match="CSI cameras .* are a Jetson's"):
        capture_plan(parse_source("csi://0"), DESKTOP_GST)
    with pytest.raises(EngineError, match="needs GStreamer: the cv2 imported here was built "):
        capture_plan(parse_source("csi://0"), JETSON_PIP_CV2)


def test_usb_camera_pipelines_and_fallback():
    src = parse_source("v4l2:///dev/video1?format=mjpg&width=1280&height=720&fps=30")
    jetson = capture_plan(src, XAVIER_NX)
    assert jetson.target == (
        'v4l2src device="/dev/video1" ! image/jpeg,width=1280,height=720,framerate=30/1 ! '
        f"nvv4l2decoder mjpeg=1 ! {HW_BGR} ! {LIVE_SINK}"
    )
    assert jetson.hardware
    assert jetson.fallback == CapturePlan("v4l2", "/dev/video1")
    desktop = capture_plan(src, DESKTOP_GST)
    assert "image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! " + SW_BGR in desktop.target
    raw = capture_plan(parse_source("/dev/video0"), XAVIER_NX)
    assert raw.target == f'v4l2src device="/dev/video0" ! {SW_BGR} ! {LIVE_SINK}'
    assert not raw.hardware
    # Without GStreamer: OpenCV's V4L2 capture (the size and rate are set on it).
    assert capture_plan(src, DESKTOP) == CapturePlan("v4l2", "/dev/video1")
    assert capture_plan(parse_source("0"), XAVIER_NX) == CapturePlan("any", 0)


def test_rtsp_pipelines_by_codec_and_machine():
    url = "rtsp://user:pw@cam.local/live"
    src = parse_source(url)
    h264 = capture_plan(src, ORIN_NANO, codec="h264")
    assert h264.target == (
        'rtspsrc location="rtsp://user:pw@cam.local/live" latency=200 ! rtph264depay ! '
        f"h264parse ! nvv4l2decoder ! {HW_BGR} ! {LIVE_SINK}"
    )
    assert h264.fallback == CapturePlan("ffmpeg", url)
    h265 = capture_plan(src, XAVIER_NX, codec="h265")
    assert "rtph265depay ! h265parse ! nvv4l2decoder" in h265.target
    unknown = capture_plan(src, XAVIER_NX, codec=None)
    assert f"latency=200 ! decodebin ! {HW_BGR}" in unknown.target
    desktop = capture_plan(src, DESKTOP_GST, codec="h264")
    assert f"rtph264depay ! h264parse ! avdec_h264 ! {SW_BGR} ! {LIVE_SINK}" in desktop.target
    assert capture_plan(src, DESKTOP) == CapturePlan("ffmpeg", url)
    # HTTP and other streams stay with FFmpeg everywhere.
    assert capture_plan(parse_source("http://h/x.mjpg"), XAVIER_NX).api == "ffmpeg"


def test_file_pipelines():
    assert gst.file_pipeline("/v/a b.mp4", ".mp4", "h264", hardware=True) == (
        'filesrc location="/v/a b.mp4" ! qtdemux ! h264parse ! nvv4l2decoder ! '
        f"{HW_BGR} ! appsink max-buffers=4 sync=false"
    )
    assert "matroskademux ! h265parse ! avdec_h265 ! " + SW_BGR in gst.file_pipeline(
        "x.mkv", ".MKV", "h265", hardware=False
    )
    assert gst.file_pipeline("x.avi", ".avi", None, True) is None  # MPEG-4 etc.: FFmpeg
    assert gst.file_pipeline("x.flv", ".flv", "h264", True) is None
    assert gst.quote('a"b\\c') == '"a\\"b\\\\c"'


def test_user_pipelines_need_gstreamer():
    src = parse_source("videotestsrc ! videoconvert ! appsink")
    assert capture_plan(src, DESKTOP_GST) == CapturePlan("gstreamer", src.target)
    with pytest.raises(EngineError, match="GStreamer pipeline cannot be opened: the cv2"):
        capture_plan(src, DESKTOP)


def test_fourcc_codecs():
    for code, codec in (("avc1", "h264"), ("H264", "h264"), ("hev1", "h265"), ("XVID", None)):
        assert fourcc_codec(cv2.VideoWriter_fourcc(*code)) == codec


# ------------------------------------------------------------------------------ fallbacks


def test_a_jetson_file_falls_back_to_ffmpeg_when_the_pipeline_does_not_open(shared_data):
    """On a Jetson the H.264 file gets an NVDEC pipeline; with pip's OpenCV (no GStreamer)
    it does not open, and FFmpeg reads every frame instead."""
    clip = shared_data / "videos" / "car-detection.mp4"
    reader = FileReader(clip, platform=XAVIER_NX)
    try:
        assert reader.decoder == "FFmpeg"
        n = 0
        while reader.read() is not None:
            n += 1
        assert n == 377
        assert reader.stop_reason() is None
    finally:
        reader.release()
    tried = []
    real = cv2.VideoCapture

    def spy(target, *args):
        tried.append(target)
        return real(target, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources.cv2, "VideoCapture", spy)
        FileReader(clip, platform=XAVIER_NX).release()
        FileReader(clip, platform=XAVIER_NX, hardware=False).release()
    assert tried[1] == gst.file_pipeline(str(clip), ".mp4", "h264", True)
    assert len(tried) == 3  # the software reader never tried the pipeline


def test_a_pipeline_that_does_not_open_falls_back_or_says_why():
    src = parse_source("v4l2:///dev/video97")
    with pytest.raises(EngineError, match="/dev/video97: cannot open the camera"):
        open_live(src, XAVIER_NX)  # pipeline, then OpenCV's V4L2: neither opens
    with pytest.raises(EngineError, match="cannot open the GStreamer pipeline"):
        open_live(parse_source("nosuchsrc ! appsink"), DESKTOP_GST)


def test_an_http_stream_on_a_jetson_is_read_by_ffmpeg(shared_data):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = partial(SimpleHTTPRequestHandler, directory=str(shared_data / "videos"))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/car-detection.mp4"
        cap, plan = open_live(parse_source(url), XAVIER_NX)
        ok, frame = cap.read()
        cap.release()
        assert plan.api == "ffmpeg"
        assert plan.describe() == "OpenCV FFmpeg"
        assert ok
        assert frame.shape == (432, 768, 3)
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------ recording


def test_recording_encoder_per_machine(monkeypatch):
    monkeypatch.setattr(writers, "pyav_nvenc_available", lambda: False)
    assert writers.resolve_codec("auto", XAVIER_NX) == ("gst-nvenc", None)
    assert writers.resolve_codec("nvenc", XAVIER_NX) == ("gst-nvenc", None)
    # Orin Nano has no NVENC: software H.264 (x264 through PyAV).
    assert writers.resolve_codec("auto", ORIN_NANO)[0] == "h264"
    with pytest.raises(EngineError, match="this Jetson has no hardware encoder"):
        writers.resolve_codec("nvenc", ORIN_NANO)
    with pytest.raises(EngineError, match="recording on NVENC needs GStreamer"):
        writers.resolve_codec("nvenc", JETSON_PIP_CV2)
    assert writers.resolve_codec("auto", JETSON_PIP_CV2)[0] == "h264"
    assert writers.resolve_codec("auto", DESKTOP)[0] == "h264"
    with pytest.raises(EngineError, match="h264_nvenc does not open here"):
        writers.resolve_codec("nvenc", DESKTOP)
    monkeypatch.setattr(writers, "pyav_nvenc_available", lambda: True)
    assert writers.resolve_codec("nvenc", DESKTOP) == ("h264_nvenc", None)
    assert writers.resolve_codec("auto", DESKTOP)[0] == "h264"  # x264 stays the default


def test_nvenc_pipeline_and_its_failure_without_gstreamer(tmp_path):
    assert gst.encoder_pipeline("/o/a.mp4", 1280, 720, 30) == (
        "appsrc ! videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
        "video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc bitrate=2764800 "
        'insert-sps-pps=true ! h264parse ! qtmux faststart=true ! filesink location="/o/a.mp4"'
    )
    assert gst.h264_bitrate(320, 240, 10) == 1_000_000  # the floor
    with pytest.raises(EngineError, match="NVENC recording pipeline does not open"):
        writers.open_sink(tmp_path / "a.mp4", 64, 48, 10.0, "gst-nvenc")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_pyav_nvenc_is_not_claimed_without_a_gpu():
    writers._nvenc_checked = None
    assert writers.pyav_nvenc_available() is False  # no NVIDIA driver on CI machines


# ------------------------------------------------------------------------------ engines


def test_an_engine_built_on_another_device_is_refused_with_the_reason(tmp_path, monkeypatch):
    from engine.runtime import tensorrt_backend as T

    meta = {"tensorrt": "10.3.0", "gpu": "Orin", "sm": "87"}
    assert T.engine_mismatch(meta, "10.3.0", "Orin", "87") is None
    assert T.engine_mismatch({}, "10.3.0", "Orin", "87") is None  # nothing to compare
    why = T.engine_mismatch(meta, "10.8.0", "NVIDIA H100 80GB HBM3", "90")
    assert why.startswith("this engine was built with TensorRT 10.3.0 on Orin (sm87); this ")
    assert "NVIDIA H100 80GB HBM3 (sm90)" in why
    assert T.engine_mismatch(meta, "8.5.2", "Orin", "87")  # JetPack 5's TensorRT

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.8.0"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(T, "_import_cudart", lambda: None)
    monkeypatch.setattr(T, "gpu_identity", lambda device=0: ("NVIDIA H100 80GB HBM3", "90"))
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    engine.with_suffix(".engine.meta.json").write_text(json.dumps({"class_names": ["a"]}))
    engine.with_suffix(".engine.json").write_text(json.dumps(meta))
    with pytest.raises(EngineError, match=r"m.engine: this engine was built with .*main.py build"):
        T.TensorRTDetector(engine)


def test_build_command_uses_the_device_workspace(monkeypatch, tmp_path):
    import engine.runtime.platform as P
    import engine.runtime.tensorrt_backend as T
    from main import main

    seen = {}
    monkeypatch.setattr(P, "_current", ORIN_NANO)
    monkeypatch.setattr(
        T,
        "build_engine",
        lambda onnx, out, prec, ws, dla, cache, calibration=None: seen.update(ws=ws) or out,
    )
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    assert main(["build", str(onnx), "-o", str(tmp_path / "m.engine")]) == 0
    assert seen["ws"] == 512
    assert main(["build", str(onnx), "-o", str(tmp_path / "m.engine"), "--workspace", "300"]) == 0
    assert seen["ws"] == 300


def test_gui_lists_csi_sensors_as_csi_uris(tmp_path):
    pytest.importorskip("PyQt5")
    from app.window import list_cameras

    root = tmp_path / "r"
    (root / "dev").mkdir(parents=True)
    for n, name in ((0, "vi-output, imx219 9-0010"), (1, "vi-output, imx219 10-0010"),
                    (2, "HD USB Camera")):  # fmt: skip
        (root / "dev" / f"video{n}").write_text("")
        d = root / "sys" / "class" / "video4linux" / f"video{n}"
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
    assert list_cameras(str(root)) == [
        ("csi://0", "CSI imx219 9-0010"),
        ("csi://1", "CSI imx219 10-0010"),
        ("2", "HD USB Camera"),
    ]

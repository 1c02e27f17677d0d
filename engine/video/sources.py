"""Where frames come from: video files (one by one, whole folders, globs), cameras and streams.

Source specifications, the same in the video command and the GUI:

    PATH, file:///PATH                 a video file (a folder or glob: every video in it)
    0, 1, ...                          a camera by index (OpenCV's default backend)
    /dev/videoN, v4l2:///dev/videoN    a V4L2 (USB) camera; v4l2://N is /dev/videoN
    csi://N                            a Jetson CSI camera (sensor N, through Argus)
    rtsp://..., http(s)://..., ...     a network stream
    "SRC ! ... ! appsink"              a GStreamer pipeline of your own

Camera URIs take ?width=&height=&fps= (csi also &flip=, v4l2 also &format=mjpg). On a
machine whose OpenCV has GStreamer, cameras and RTSP streams open through GStreamer
pipelines (engine/video/gstreamer.py; on a Jetson with NVDEC/VIC/Argus, and Jetson files in
H.264/H.265 are decoded by NVDEC too); elsewhere OpenCV's own V4L2 and FFmpeg capture.

numpy and OpenCV only (the deploy path; Python 3.8 syntax). A file is read frame by frame,
every frame in order; a live source (camera or stream) is read by its own thread into a
one-frame slot, so the consumer always gets the newest frame and the frames it never saw
are counted as drops. Stream addresses may carry credentials: everything shown to the user
goes through `mask_credentials` (Source.display is already masked).
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import cv2
import numpy as np

from engine.runtime.detector import EngineError
from engine.runtime.platform import Platform, current_platform
from engine.video import gstreamer as gst

# FFmpeg inside OpenCV prints decoder complaints ("error while decoding block") for damaged
# files straight to stderr; the pipeline reports where a file stopped in one line instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# ... and OpenCV warns "backend is generally available but can't be used" for a non-video.
if os.environ.get("OPENCV_LOG_LEVEL") is None:
    _cv_log = getattr(getattr(cv2, "utils", None), "logging", None)  # absent in OpenCV 4.5
    if _cv_log is not None:
        _cv_log.setLogLevel(_cv_log.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)  # LOG_LEVEL_ERROR

VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".wmv",
        ".flv",
        ".3gp",
        ".ogv",
    ]
)
IMAGE_EXTENSIONS = frozenset([".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"])
STREAM_SCHEMES = frozenset(["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"])
OPEN_TIMEOUT_MS = 10_000  # a stream that does not answer within this is reported as such
READ_TIMEOUT_MS = 10_000

# scheme://USERINFO@ where USERINFO runs to the last "@" before the path (FFmpeg's rule,
# so a password containing "@" is masked whole); query values of secret-looking keys.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/\s?#]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:pass|passwd|password|pwd|token|access_token|key|apikey|api_key|auth|"
    r"secret|sig|signature)=)[^&;#\s]*",
    re.IGNORECASE,
)


def _mask_userinfo(m: re.Match) -> str:
    user, sep, _ = m.group("info").partition(":")
    # user:password keeps the user; a lone token (rtsp://TOKEN@host) is masked whole.
    return f"{m.group('head')}{user}:***@" if sep else f"{m.group('head')}***@"


def mask_credentials(text: str) -> str:
    """Replaces the credentials in every URL in `text` with ***: the password (or a bare
    token) before the host, and the values of query keys such as password, pwd or token.

    >>> mask_credentials("rtsp://admin:secret@10.0.0.5:554/live")
    'rtsp://admin:***@10.0.0.5:554/live'
    """
    return _SECRET_QUERY.sub(r"\g<key>***", _USERINFO.sub(_mask_userinfo, text))


@dataclass(frozen=True)
class Source:
    """One input. kind: 'file', 'camera' or 'stream'; target: the path, the camera index,
    the device path (/dev/videoN), the CSI sensor id, the URL (credentials included: never
    print it, print `display`) or the GStreamer pipeline; name: the stem of its output
    files; subdir: where under the output folder they go (mirrors a searched folder);
    device: for cameras 'index', 'v4l2' or 'csi', 'gstreamer' for a pipeline, else '';
    params: the URI's (name, value) options such as ('width', 1280)."""

    kind: str
    target: str | int
    display: str
    name: str
    subdir: Path = field(default=Path())
    device: str = ""
    params: tuple[tuple[str, int | str], ...] = ()

    @property
    def live(self) -> bool:
        return self.kind != "file"


@dataclass(frozen=True)
class InputProblem:
    """An input that named nothing usable (missing, an empty folder, a glob matching nothing)."""

    display: str
    message: str


def _stream_name(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "stream"
    except ValueError:  # e.g. an unclosed IPv6 bracket: opening it will say more
        return "stream"
    tail = Path(parts.path).stem
    raw = f"{parts.scheme}-{host}" + (f"-{tail}" if tail else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


# Options each camera URI accepts, with their type.
CAMERA_PARAMS: dict[str, dict[str, type]] = {
    "csi": {"width": int, "height": int, "fps": int, "flip": int},
    "v4l2": {"width": int, "height": int, "fps": int, "format": str},
}
_V4L2_DEVICE = re.compile(r"^/dev/video(\d+)$")


def _camera_params(spec: str, kind: str, query: str) -> tuple[tuple[str, int | str], ...]:
    allowed = CAMERA_PARAMS[kind]
    out = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise EngineError(
                f"{spec}: unknown option {key!r} (a {kind} camera takes {', '.join(allowed)})"
            )
        if allowed[key] is int:
            if not value.isdigit():
                raise EngineError(f"{spec}: {key} must be a whole number, got {value!r}")
            out.append((key, int(value)))
        else:
            if value.lower() not in ("mjpg", "mjpeg", "yuyv", "raw"):
                raise EngineError(f"{spec}: format is mjpg or yuyv, got {value!r}")
            out.append((key, value.lower()))
    return tuple(out)


def file_uri_path(spec: str) -> str | None:
    """The path of a file:// URI ('file:///data/in%20put.mp4' -> '/data/in put.mp4'), None
    for anything else."""
    if not spec.lower().startswith("file://"):
        return None
    parts = urlsplit(spec)
    if parts.netloc not in ("", "localhost"):
        raise EngineError(f"{spec}: only local files (file:///PATH) can be read")
    return unquote(parts.path)


def parse_source(spec: str) -> Source | None:
    """A camera (index, /dev/videoN, v4l2://, csi://), a stream URL or a GStreamer pipeline
    as a Source; None for anything else (a path). A malformed camera URI is an EngineError."""
    if spec.isdigit():
        return Source("camera", int(spec), f"camera {spec}", f"camera{spec}", device="index")
    m = _V4L2_DEVICE.match(spec)
    if m:
        return Source("camera", spec, spec, f"video{m.group(1)}", device="v4l2")
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme == "csi":
        parts = urlsplit(spec)
        sensor = parts.netloc or parts.path.strip("/")
        if not sensor.isdigit():
            raise EngineError(f"{spec}: a CSI camera is csi://N, N the sensor id (csi://0)")
        params = _camera_params(spec, "csi", parts.query)
        return Source(
            "camera",
            int(sensor),
            f"CSI camera {sensor}",
            f"csi{sensor}",
            device="csi",
            params=params,
        )
    if scheme == "v4l2":
        parts = urlsplit(spec)
        node = parts.netloc + parts.path
        if node.isdigit():
            node = f"/dev/video{node}"
        m = _V4L2_DEVICE.match(node)
        if not m:
            raise EngineError(f"{spec}: a V4L2 camera is v4l2:///dev/videoN (or v4l2://N)")
        params = _camera_params(spec, "v4l2", parts.query)
        return Source("camera", node, node, f"video{m.group(1)}", device="v4l2", params=params)
    if scheme in STREAM_SCHEMES:
        return Source("stream", spec, mask_credentials(spec), _stream_name(spec))
    if " ! " in spec:  # a GStreamer pipeline ("v4l2src ! ... ! appsink")
        return Source("stream", spec, "GStreamer pipeline", "gstreamer", device="gstreamer")
    return None


def resolve_inputs(
    specs: list[str], exclude: Path | None = None
) -> tuple[list[Source], list[InputProblem]]:
    """Expands the command line's inputs, in order, without duplicates.

    A folder gives every video file below it (by extension, sorted; hidden files and the
    folder `exclude`, the output folder, are left out), a glob (`*`, `?`, `[`, `**`) the
    files it matches; a file is taken whatever its extension (opening it tells whether it
    is a video).
    """
    skip = exclude.resolve() if exclude is not None else None

    def searchable(p: Path) -> bool:
        if p.name.startswith(".") or p.suffix.lower() not in VIDEO_EXTENSIONS:
            return False
        return skip is None or skip not in (p.resolve(), *p.resolve().parents)

    sources: list[Source] = []
    problems: list[InputProblem] = []
    seen: set[str] = set()

    def add(src: Source) -> None:
        if src.kind == "file":
            key = str(Path(src.target).resolve())
        else:  # camera 0 and csi://0 are different cameras
            key = f"{src.kind}:{src.device}:{src.target}"
        if key not in seen:
            seen.add(key)
            sources.append(src)

    def add_file(path: Path, subdir: Path = Path()) -> None:
        add(Source("file", str(path), str(path), path.stem, subdir))

    for spec in specs:
        try:
            spec = file_uri_path(spec) or spec
            live = parse_source(spec)
        except EngineError as e:
            problems.append(InputProblem(mask_credentials(spec), str(e).split(": ", 1)[-1]))
            continue
        if live is not None:
            add(live)
            continue
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if searchable(p) and p.is_file())
            if not found:
                problems.append(InputProblem(spec, "no video files in this folder"))
            for p in found:
                add_file(p, p.parent.relative_to(path))
        elif path.exists():
            add_file(path)
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                problems.append(InputProblem(spec, "no files match this pattern"))
            for p in found:
                add_file(p)
        else:
            problems.append(InputProblem(spec, "not found"))
    return sources, problems


@dataclass
class VideoProps:
    width: int
    height: int
    fps: float
    frame_count: int  # 0 when the container does not say
    fps_known: bool = True


MAX_FPS = 240.0  # above this a stated rate is a time base, not a frame rate (OpenCV
# reports 1000 for many WebM/MKV files without one)
# Containers whose headers count the frames; elsewhere OpenCV estimates the count from the
# duration (which may include a longer audio track).
EXACT_COUNT = frozenset([".mp4", ".m4v", ".mov", ".avi", ".3gp"])


def _props(cap: cv2.VideoCapture, live: bool) -> VideoProps:
    fps = cap.get(cv2.CAP_PROP_FPS)
    known = math.isfinite(fps) and 0.5 <= fps <= MAX_FPS
    count = 0 if live or not known else int(max(0.0, cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    return VideoProps(
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        float(fps) if known else 30.0,
        count,
        known,
    )


class FileReader:
    """Every frame of a video file, in order, from an optional start frame.

    Raises EngineError when the file is not there or does not open as a video. `read()`
    returns None at the end; `stop_reason()` then says whether the file ended early.

    On a Jetson whose OpenCV has GStreamer, H.264/H.265 files in MP4/MOV/MKV/AVI/TS are
    decoded by NVDEC (`decoder` says which decoder runs); `hardware=False` keeps FFmpeg.
    The size, rate and frame count always come from FFmpeg's reading of the container.
    """

    def __init__(
        self,
        path: str | Path,
        start_frame: int = 0,
        platform: Platform | None = None,
        hardware: bool | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: not found")
        if self.path.suffix.lower() in IMAGE_EXTENSIONS:
            raise EngineError(f"{self.path}: an image, not a video")
        if self.path.stat().st_size == 0:
            raise EngineError(f"{self.path}: empty file")
        self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            raise EngineError(
                f"{self.path}: cannot be opened as a video (not a video, damaged, or a codec "
                "this OpenCV build lacks)"
            )
        self.props = _props(self.cap, live=False)
        self.decoder = "FFmpeg"
        self._pipeline: str | None = None
        if hardware is not False and start_frame == 0:
            platform = platform or current_platform()
            # The GStreamer path ignores a rotation tag, which FFmpeg applies: keep FFmpeg.
            rotated = self.cap.get(getattr(cv2, "CAP_PROP_ORIENTATION_META", -1)) not in (0, -1)
            if platform.hardware_decode and not rotated:
                self._use_hardware(fourcc_codec(self.cap.get(cv2.CAP_PROP_FOURCC)))
        self.next_index = 0
        if start_frame > 0:
            if self.props.frame_count and start_frame >= self.props.frame_count:
                self.release()
                raise EngineError(
                    f"{self.path}: starts after its end ({self.props.frame_count} frames)"
                )
            self.seek(start_frame)

    def _use_hardware(self, codec: str | None) -> None:
        pipe = gst.file_pipeline(str(self.path), self.path.suffix, codec, hardware=True)
        if pipe is None:
            return
        cap = cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER)
        if not cap.isOpened():  # a missing plugin: FFmpeg still reads it
            cap.release()
            return
        self.cap.release()
        self.cap, self._pipeline, self.decoder = cap, pipe, "NVDEC (GStreamer)"

    def seek(self, frame: int) -> None:
        """Positions the reader so that the next read() returns frame `frame`."""
        if self._pipeline is not None:  # appsink cannot seek exactly: FFmpeg from here on
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap.release()
                raise EngineError(f"{self.path}: cannot be reopened to seek")
            self.cap.release()
            self.cap, self._pipeline, self.decoder = cap, None, "FFmpeg"
        # OpenCV's FFmpeg seek lands exactly on the frame (it decodes from the key frame);
        # where the container cannot seek, skip frames one by one.
        if not (self.cap.set(cv2.CAP_PROP_POS_FRAMES, frame) and self._position() == frame):
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for _ in range(frame):
                if not self.cap.grab():
                    break
        self.next_index = frame

    def skip(self, n: int) -> int:
        """Passes over up to `n` frames without converting them (a player catching up);
        returns how many were skipped (fewer at the end of the file)."""
        done = 0
        while done < n and self.cap.grab():
            done += 1
        self.next_index += done
        return done

    def _position(self) -> int:
        return int(round(self.cap.get(cv2.CAP_PROP_POS_FRAMES)))

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        self.next_index += 1
        return frame

    def timestamp(self, index: int) -> float:
        """Seconds from the start of the file of frame `index` (constant frame rate)."""
        return index / self.props.fps

    def stop_reason(self) -> str | None:
        """None if the last read reached the end the container announced, else a sentence
        saying where decoding stopped (a truncated or damaged file)."""
        expected = self.props.frame_count
        got = self.next_index
        if self.path.suffix.lower() in EXACT_COUNT:
            slack = max(2, expected // 200)  # a frame or two of rounding
        else:  # an estimate from the duration: only a clear shortfall counts
            slack = max(int(2 * self.props.fps), expected // 10)
        if expected and expected - got > slack:
            return (
                f"decoding stopped at frame {got} of the {expected} the file announces "
                "(truncated or damaged); the frames before it were processed"
            )
        return None

    def release(self) -> None:
        self.cap.release()


# FOURCC (as OpenCV's FFmpeg reports it) -> the codec names of engine.video.gstreamer.
_FOURCC_CODECS = {
    "avc1": "h264",
    "h264": "h264",
    "x264": "h264",
    "hev1": "h265",
    "hvc1": "h265",
    "hevc": "h265",
    "h265": "h265",
}


def fourcc_codec(fourcc: float) -> str | None:
    """'h264' / 'h265' for OpenCV's CAP_PROP_FOURCC value of such a stream, else None."""
    code = int(fourcc) & 0xFFFFFFFF
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ").lower()
    return _FOURCC_CODECS.get(text)


def probe_codec(target: str) -> str | None:
    """The video codec of a file or stream, asked of OpenCV's FFmpeg (None if unknown)."""
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    try:
        return fourcc_codec(cap.get(cv2.CAP_PROP_FOURCC)) if cap.isOpened() else None
    finally:
        cap.release()


@dataclass(frozen=True)
class CapturePlan:
    """How to open a live source: api 'gstreamer' (target: a pipeline), 'v4l2' (a device
    path), 'ffmpeg' (a URL) or 'any' (a camera index, OpenCV's default backend); hardware:
    decoding/conversion on the Jetson's NVDEC/VIC; fallback: the plan to try if this one
    does not open (a GStreamer pipeline whose elements are missing)."""

    api: str
    target: str | int
    hardware: bool = False
    fallback: CapturePlan | None = None

    def describe(self) -> str:
        if self.api == "gstreamer":
            return "GStreamer" + (" (hardware decoding)" if self.hardware else "")
        return {"v4l2": "OpenCV V4L2", "ffmpeg": "OpenCV FFmpeg"}.get(self.api, "OpenCV")


NO_GSTREAMER = (
    "the cv2 imported here was built without GStreamer (pip's opencv packages are; on a "
    "Jetson use JetPack's OpenCV (apt: nvidia-opencv) and uninstall pip's, see docs/jetson.md)"
)


def _is_rtsp(source: Source) -> bool:
    """An RTSP stream URL (not a user's GStreamer pipeline)."""
    url = str(source.target).lower()
    return (
        source.kind == "stream" and source.device == "" and url.startswith(("rtsp://", "rtsps://"))
    )


def capture_plan(source: Source, platform: Platform, codec: str | None = None) -> CapturePlan:
    """The capture for a camera or stream on `platform` (a pure function; `codec` is the
    stream's, when known, for RTSP on GStreamer). Raises EngineError for a source this
    machine cannot open at all (a CSI camera off a Jetson, a pipeline without GStreamer)."""
    params = dict(source.params)
    size = {k: int(params[k]) for k in ("width", "height", "fps") if k in params}
    if source.device == "gstreamer":
        if not platform.gstreamer:
            raise EngineError(f"a GStreamer pipeline cannot be opened: {NO_GSTREAMER}")
        return CapturePlan("gstreamer", str(source.target))
    if source.device == "csi":
        if not platform.jetson:
            raise EngineError(
                f"{source.display}: CSI cameras (csi://N) are a Jetson's; here use a camera "
                "index or v4l2:///dev/videoN"
            )
        if not platform.gstreamer:
            raise EngineError(f"{source.display} needs GStreamer: {NO_GSTREAMER}")
        pipe = gst.csi_pipeline(
            int(source.target),
            size.get("width", 1280),
            size.get("height", 720),
            size.get("fps", 30),
            int(params.get("flip", 0)),
        )
        return CapturePlan("gstreamer", pipe, hardware=True)
    if source.device == "v4l2":
        direct = CapturePlan("v4l2", str(source.target))
        if not platform.gstreamer:
            return direct
        pipe = gst.v4l2_pipeline(
            str(source.target),
            size.get("width", 0),
            size.get("height", 0),
            size.get("fps", 0),
            str(params.get("format", "")),
            hardware=platform.hardware_decode,
        )
        mjpg = str(params.get("format", "")).startswith("mj")
        return CapturePlan("gstreamer", pipe, platform.hardware_decode and mjpg, direct)
    if source.kind == "camera":
        return CapturePlan("any", int(source.target))
    url = str(source.target)
    direct = CapturePlan("ffmpeg", url)
    if platform.gstreamer and _is_rtsp(source):
        pipe = gst.rtsp_pipeline(url, codec, hardware=platform.hardware_decode)
        return CapturePlan("gstreamer", pipe, platform.hardware_decode, direct)
    return direct


def _open_plan(plan: CapturePlan, source: Source) -> cv2.VideoCapture:
    if plan.api == "gstreamer":
        return cv2.VideoCapture(str(plan.target), cv2.CAP_GSTREAMER)
    if plan.api == "ffmpeg":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        return cv2.VideoCapture(str(plan.target), cv2.CAP_FFMPEG, params)
    api = cv2.CAP_V4L2 if plan.api == "v4l2" else cv2.CAP_ANY
    cap = cv2.VideoCapture(plan.target, api)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the driver allows: no stale queue
        params = dict(source.params)
        if str(params.get("format", "")).startswith("mj"):
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        for key, prop in (
            ("width", cv2.CAP_PROP_FRAME_WIDTH),
            ("height", cv2.CAP_PROP_FRAME_HEIGHT),
            ("fps", cv2.CAP_PROP_FPS),
        ):
            if key in params:
                cap.set(prop, float(params[key]))
    return cap


def open_live(
    source: Source, platform: Platform | None = None
) -> tuple[cv2.VideoCapture, CapturePlan]:
    """An opened VideoCapture for a camera or stream and the plan that opened it, or
    EngineError saying why not. A GStreamer pipeline that does not open falls back to
    OpenCV's own capture where there is one."""
    platform = platform or current_platform()
    codec = None
    if platform.gstreamer and _is_rtsp(source):
        codec = probe_codec(str(source.target))
    plan: CapturePlan | None = capture_plan(source, platform, codec)
    while plan is not None:
        cap = _open_plan(plan, source)
        if cap.isOpened():
            return cap, plan
        cap.release()
        plan = plan.fallback
    what = {"camera": "camera", "stream": "stream"}.get(source.kind, "source")
    if source.device == "gstreamer":
        raise EngineError(
            "cannot open the GStreamer pipeline (a missing element, a wrong property, or no "
            "appsink at its end; try it with gst-launch-1.0)"
        )
    raise EngineError(f"{source.display}: cannot open the {what}")


class LiveReader:
    """Reads a camera or stream on its own thread and keeps only the newest frame.

    `get(timeout)` returns (index, seconds since start, frame) for a frame not returned
    before, or None once the source has ended (or `stop()` was called). `dropped` counts
    the frames that were replaced before anyone took them.
    """

    def __init__(self, source: Source, platform: Platform | None = None) -> None:
        self.source = source
        self.cap, self.plan = open_live(source, platform)
        self.props = _props(self.cap, live=True)
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray] | None = None
        self._ended = False
        self._release_on_exit = False
        self._stop = threading.Event()
        self.frames_read = 0
        self.dropped = 0
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    break
                t = time.monotonic() - self.t0
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = (self.frames_read, t, frame)
                    self.frames_read += 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
                if self._release_on_exit:
                    self.cap.release()

    def get(self, timeout: float = 0.5) -> tuple[int, float, np.ndarray] | None | bool:
        """The newest unseen frame; None when the source ended; False on a timeout."""
        with self._cond:
            if self._latest is None and not self._ended:
                self._cond.wait(timeout)
            if self._latest is not None:
                item, self._latest = self._latest, None
                return item
            return None if self._ended else False

    def stop(self, timeout: float = 1.0) -> None:
        """Stops capturing without waiting more than `timeout` seconds for a read in
        progress (a stalled stream); the capture is released by whichever thread is last
        with it."""
        self._stop.set()
        self._thread.join(timeout=timeout)
        with self._cond:
            if self._ended:  # the capture thread has left read(): release it here
                self.cap.release()
            else:  # still inside a read that outlived its timeout: it releases on exit
                self._release_on_exit = True

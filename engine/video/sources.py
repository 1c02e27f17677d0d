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

This module says what a source is (parsing, folders and globs, properties); files are read
by engine.video.files (every frame in order), cameras and streams by engine.video.live (a
thread into a one-frame slot, so the consumer always gets the newest frame and the frames
it never saw are counted as drops). numpy and OpenCV only (the deploy path; Python 3.8
syntax). Stream addresses may carry credentials: everything shown to the user goes through
`mask_credentials` (Source.display is already masked).
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import cv2

from engine.runtime.detector import EngineError
from training.fileio import IMAGE_EXTENSIONS, is_hidden, is_image

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
    """One input. kind: 'file' (a video file), 'image', 'camera' or 'stream'.
    target: the path, the camera index, the device path (/dev/videoN), the CSI sensor id,
    the URL (credentials included: never print it, print `display`) or the GStreamer
    pipeline. name: the stem of its output files; subdir: where under the output folder
    they go (mirrors a searched folder); device: for cameras 'index', 'v4l2' or 'csi',
    'gstreamer' for a pipeline, else ''.
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
        return self.kind not in ("file", "image")


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
    as a Source; None for anything else (a path). A malformed camera URI is an EngineError.
    A regular file that exists is a path whatever its name ("a ! b.mp4"), except a bare
    number, which is always a camera index."""
    if not spec.isdigit() and os.path.isfile(spec):
        return None
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
    specs: list[str], exclude: Path | None = None, images: bool = False
) -> tuple[list[Source], list[InputProblem]]:
    """Expands the command line's inputs, in order, without duplicates.

    A folder gives every video file below it (by extension, sorted; hidden files and the
    folder `exclude`, the output folder, are left out), a glob (`*`, `?`, `[`, `**`) the
    files it matches; a file is taken whatever its extension (opening it tells whether it
    is a video). With `images`, still images are inputs too (kind 'image'), and folders
    give their images and videos together.
    """
    skip = exclude.resolve() if exclude is not None else None
    wanted = VIDEO_EXTENSIONS | (frozenset(IMAGE_EXTENSIONS) if images else frozenset())

    def searchable(p: Path, root: Path) -> bool:
        if is_hidden(p, root) or p.suffix.lower() not in wanted:
            return False
        return skip is None or skip not in (p.resolve(), *p.resolve().parents)

    sources: list[Source] = []
    problems: list[InputProblem] = []
    seen: set[str] = set()

    def add(src: Source) -> None:
        if src.kind in ("file", "image"):
            key = str(Path(src.target).resolve())
        else:  # camera 0 and csi://0 are different cameras
            key = f"{src.kind}:{src.device}:{src.target}"
        if key not in seen:
            seen.add(key)
            sources.append(src)

    def add_file(path: Path, subdir: Path = Path()) -> None:
        kind = "image" if images and is_image(path) else "file"
        add(Source(kind, str(path), str(path), path.stem, subdir))

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
            found = sorted(p for p in path.rglob("*") if searchable(p, path) and p.is_file())
            if not found:
                what = "image or video" if images else "video"
                problems.append(InputProblem(spec, f"no {what} files in this folder"))
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

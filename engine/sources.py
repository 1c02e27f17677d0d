"""Where frames come from: video files (one by one, whole folders, globs), webcams and streams.

numpy and OpenCV only (the deploy path). A file is read frame by frame, every frame in
order; a live source (camera or stream) is read by its own thread into a one-frame slot, so
the consumer always gets the newest frame and the frames it never saw are counted as drops.
Stream addresses may carry credentials: everything shown to the user goes through
`mask_credentials` (Source.display is already masked).
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
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.runtime import EngineError

# FFmpeg inside OpenCV prints decoder complaints ("error while decoding block") for damaged
# files straight to stderr; the pipeline reports where a file stopped in one line instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# ... and OpenCV warns "backend is generally available but can't be used" for a non-video.
if os.environ.get("OPENCV_LOG_LEVEL") is None:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

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
    """One input. kind: 'file', 'camera' or 'stream'; target: the path, the camera index or
    the URL (credentials included: never print it, print `display`); name: the stem of its
    output files; subdir: where under the output folder they go (mirrors a searched folder)."""

    kind: str
    target: str | int
    display: str
    name: str
    subdir: Path = field(default=Path())

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


def parse_source(spec: str) -> Source | None:
    """A camera index ('0') or a stream URL as a Source; None for anything else (a path)."""
    if spec.isdigit():
        return Source("camera", int(spec), f"camera {spec}", f"camera{spec}")
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in STREAM_SCHEMES:
        return Source("stream", spec, mask_credentials(spec), _stream_name(spec))
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
        return skip is None or not p.resolve().is_relative_to(skip)

    sources: list[Source] = []
    problems: list[InputProblem] = []
    seen: set[str] = set()

    def add(src: Source) -> None:
        key = str(Path(src.target).resolve()) if src.kind == "file" else str(src.target)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    def add_file(path: Path, subdir: Path = Path()) -> None:
        add(Source("file", str(path), str(path), path.stem, subdir))

    for spec in specs:
        live = parse_source(spec)
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
    """

    def __init__(self, path: str | Path, start_frame: int = 0) -> None:
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
        self.next_index = 0
        if start_frame > 0:
            if self.props.frame_count and start_frame >= self.props.frame_count:
                self.release()
                raise EngineError(
                    f"{self.path}: starts after its end ({self.props.frame_count} frames)"
                )
            self.seek(start_frame)

    def seek(self, frame: int) -> None:
        """Positions the reader so that the next read() returns frame `frame`."""
        # OpenCV's FFmpeg seek lands exactly on the frame (it decodes from the key frame);
        # where the container cannot seek, skip frames one by one.
        if not (self.cap.set(cv2.CAP_PROP_POS_FRAMES, frame) and self._position() == frame):
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for _ in range(frame):
                if not self.cap.grab():
                    break
        self.next_index = frame

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


def open_capture(source: Source) -> cv2.VideoCapture:
    """An opened VideoCapture for a camera or stream, or EngineError saying why not."""
    if source.kind == "camera":
        cap = cv2.VideoCapture(int(source.target))
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the driver allows: no stale queue
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        cap = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        what = "camera" if source.kind == "camera" else "stream"
        raise EngineError(f"{source.display}: cannot open the {what}")
    return cap


class LiveReader:
    """Reads a camera or stream on its own thread and keeps only the newest frame.

    `get(timeout)` returns (index, seconds since start, frame) for a frame not returned
    before, or None once the source has ended (or `stop()` was called). `dropped` counts
    the frames that were replaced before anyone took them.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.cap = open_capture(source)
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

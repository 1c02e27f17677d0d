"""Cameras and streams: how to open them (GStreamer where it is there, OpenCV's V4L2 or
FFmpeg elsewhere) and a reader thread that keeps only the newest frame.

numpy and OpenCV only (the deploy path; Python 3.8 syntax).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from engine.runtime.detector import EngineError
from engine.runtime.platform import Platform, current_platform
from engine.video import gstreamer as gst
from engine.video.files import probe_codec
from engine.video.sources import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, Source, _props


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
    the frames that were replaced before anyone took them. `stalled` says that the source
    ended because a read waited out the read timeout (a stream that stopped sending)
    rather than because it closed.
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
        self.stalled = False
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t_read = time.monotonic()
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    waited = time.monotonic() - t_read
                    self.stalled = not self._stop.is_set() and waited >= READ_TIMEOUT_MS / 2000
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

"""Video files: every frame in order, with seeking and skipping (NVDEC on a Jetson).

numpy and OpenCV only (the deploy path; Python 3.8 syntax).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.runtime.detector import EngineError
from engine.runtime.platform import Platform, current_platform
from engine.video import gstreamer as gst
from engine.video.sources import EXACT_COUNT, OPEN_TIMEOUT_MS, _props
from training.fileio import is_image


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
        if is_image(self.path):
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
            self.skip(frame)
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

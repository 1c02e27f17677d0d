"""Where annotated frames and detections go: video files and detection logs.

Every output is written under a temporary name of its own beside its final one
(`.NAME.RANDOM.partial.EXT`, so runs that share a folder never share one) and renamed when
finalized, so a finished name always holds a complete, playable file (a run stopped by
Ctrl-C finalizes what it has written; only a killed process leaves a .partial).

Video: H.264 through PyAV (libx264, browser-playable MP4) when PyAV is installed, else
OpenCV's MPEG-4 Part 2 (`mp4v`) or Motion JPEG. On a Jetson with a hardware encoder (all but
Orin Nano) and OpenCV with GStreamer, `auto` records H.264 on NVENC through GStreamer
(`nvv4l2h264enc`); `--codec nvenc` asks for NVENC explicitly (on a desktop GPU: PyAV's
h264_nvenc). numpy, OpenCV and optionally PyAV only; Python 3.8 syntax.

Over 400 lines on purpose: the video sinks (PyAV, OpenCV, GStreamer) and the detection
log share the finalize-under-a-temporary-name rule.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from engine.runtime.detector import Detections, EngineError
from engine.runtime.platform import Platform, current_platform
from engine.video import gstreamer as gst
from training.fileio import finalize, unique_partial_path

CODECS = ("auto", "h264", "nvenc", "mp4v", "mjpg")
# What resolve_codec returns: "h264" (PyAV libx264), "h264_nvenc" (PyAV on NVENC),
# "gst-nvenc" (GStreamer nvv4l2h264enc on a Jetson), "mp4v", "mjpg".
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
MIN_FREE_BYTES = 64 << 20  # OpenCV's writer fails silently on a full disk: stop before it


def video_extension(codec: str) -> str:
    return ".avi" if codec == "mjpg" else ".mp4"


def h264_available() -> bool:
    """True when PyAV with an H.264 encoder (libx264) is importable."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # ImportError, or a PyAV build without libx264
        return False


_nvenc_checked: bool | None = None


def pyav_nvenc_available() -> bool:
    """True when PyAV's h264_nvenc opens and encodes a frame here (an NVIDIA GPU with its
    driver's encoder library); checked once per process."""
    global _nvenc_checked
    if _nvenc_checked is None:
        try:
            import av

            ctx = av.CodecContext.create("h264_nvenc", "w")
            ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
            ctx.time_base = Fraction(1, 30)
            ctx.open()
            frame = av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), "bgr24")
            frame = frame.reformat(format="yuv420p")
            ctx.encode(frame)
            ctx.encode(None)
            del ctx  # closes the NVENC session now rather than at garbage collection
            _nvenc_checked = True
        except Exception:  # no PyAV, no NVENC in its FFmpeg, no GPU or driver
            _nvenc_checked = False
    return _nvenc_checked


def resolve_codec(codec: str, platform: Platform | None = None) -> tuple[str, str | None]:
    """(codec to use, a note for the user or None); see CODECS."""
    if codec not in CODECS:
        raise EngineError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if codec in ("auto", "nvenc"):
        platform = platform or current_platform()
        if platform.jetson and platform.nvenc and platform.gstreamer:
            return "gst-nvenc", None
        if codec == "nvenc":
            if not platform.jetson and pyav_nvenc_available():
                return "h264_nvenc", None
            if platform.jetson and not platform.nvenc:
                why = "this Jetson has no hardware encoder (Orin Nano)"
            elif platform.jetson:
                why = f"recording on NVENC needs GStreamer: {NO_GSTREAMER_WRITER}"
            else:
                why = "PyAV's h264_nvenc does not open here (no NVIDIA GPU, driver or PyAV)"
            raise EngineError(f"--codec nvenc: {why}; use --codec auto")
    if codec in ("auto", "h264"):
        if h264_available():
            return "h264", None
        if codec == "h264":
            raise EngineError("H.264 needs PyAV with libx264 (pip install av); or --codec mp4v")
        return "mp4v", (
            "PyAV is not installed, so videos are MPEG-4 Part 2 (mp4v), which most browsers "
            "do not play; `pip install av` gives H.264"
        )
    return codec, None


class VideoSink:
    """Writes BGR frames to a video file; close() finalizes it under its final name.
    variable_rate: frames keep their own timestamps (live sources play in real time)."""

    codec = ""
    variable_rate = False

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path = Path(path)
        self.tmp = unique_partial_path(self.path)  # its own: runs may share a folder
        self.width, self.height = width, height
        self.frames = 0
        self.note: str | None = None
        self._closed = False

    def write(self, frame: np.ndarray, seconds: float | None = None) -> None:
        """Appends a frame; `seconds` is its time for variable-rate (live) output."""
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self) -> Path | None:
        """Finalizes the file and renames it to its final name; returns that name, or None
        when no frame was written (nothing is left behind then)."""
        if self._closed:
            return self.path if self.path.exists() else None
        self._closed = True
        try:
            self._finish()
        finally:
            if self.frames == 0:
                self.tmp.unlink(missing_ok=True)
        if self.frames == 0:
            return None
        return finalize(self.tmp, self.path)


class PyAVSink(VideoSink):
    """H.264 (libx264, CRF 23, yuv420p) in MP4 with the index at the front (+faststart), so
    browsers start playing before the download ends. Odd frame sizes use 4:4:4 chroma (4:2:0
    needs even sizes) and keep the exact size.

    preset: x264's speed/size trade-off. The default, ultrafast, costs about 1.8 ms of CPU
    per 768x432 frame (veryfast 6 ms) for files about twice as large at the same quality:
    on a small CPU the encoder otherwise competes with inference (docs/benchmarks.md).
    """

    codec = "h264"
    variable_rate = True

    def __init__(
        self,
        path,
        width,
        height,
        fps: float,
        live: bool = False,
        preset: str = "ultrafast",
        encoder: str = "libx264",
    ) -> None:
        import av

        super().__init__(path, width, height)
        self.live = live
        try:
            self.container = av.open(str(self.tmp), "w", options={"movflags": "+faststart"})
        except BaseException:
            self.tmp.unlink(missing_ok=True)  # made by mkstemp before the open
            raise
        try:
            if live:  # timestamps from the wall clock, in milliseconds
                self.time_base = Fraction(1, 1000)
                stream = self.container.add_stream(encoder, rate=round(fps) or 30)
            else:
                rate = Fraction(fps).limit_denominator(1001)
                self.time_base = 1 / rate
                stream = self.container.add_stream(encoder, rate=rate)
            stream.width, stream.height = width, height
            odd = width % 2 or height % 2
            stream.pix_fmt = "yuv444p" if odd else "yuv420p"
            if odd:
                self.note = (
                    f"odd frame size {width}x{height}: H.264 with 4:4:4 chroma, which some "
                    "browsers do not play"
                )
            stream.codec_context.time_base = self.time_base
            if encoder == "libx264":
                stream.options = {"preset": preset, "crf": "23"}
            else:  # NVENC: constant quality near x264's CRF 23 at its middle preset
                stream.options = {"preset": "p4", "rc": "vbr", "cq": "23"}
                stream.bit_rate = 0  # no cap: the quality target decides the size
            self.stream = stream
        except Exception:
            self.container.close()
            self.tmp.unlink(missing_ok=True)
            raise
        self._last_pts = -1
        self._t0: float | None = None

    def write(self, frame, seconds=None):
        import av

        vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
        if self.live and seconds is not None:
            if self._t0 is None:
                self._t0 = seconds  # the video starts at its first frame
            pts = max(self._last_pts + 1, int(round((seconds - self._t0) * 1000)))
        else:
            pts = self.frames
        vf.pts, vf.time_base = pts, self.time_base
        self._last_pts = pts
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def _finish(self):
        try:
            for packet in self.stream.encode():  # flush the encoder's delayed frames
                self.container.mux(packet)
        finally:
            self.container.close()


NO_GSTREAMER_WRITER = "this OpenCV has no GStreamer (use JetPack's OpenCV: apt nvidia-opencv)"


class GStreamerSink(VideoSink):
    """H.264 in MP4 encoded by a Jetson's NVENC (nvv4l2h264enc) through OpenCV's GStreamer
    VideoWriter (engine.video.gstreamer.encoder_pipeline). Constant frame rate; the bitrate
    follows the frame size (gstreamer.h264_bitrate)."""

    codec = "h264-nvenc"

    def __init__(self, path, width, height, fps: float) -> None:
        super().__init__(path, width, height)
        pipe = gst.encoder_pipeline(str(self.tmp), width, height, fps)
        self.writer = cv2.VideoWriter(pipe, cv2.CAP_GSTREAMER, 0, fps, (width, height), True)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise EngineError(
                f"{self.path}: the NVENC recording pipeline does not open (nvv4l2h264enc "
                "missing?); use --codec h264"
            )
        self.note = "H.264 on the hardware encoder (NVENC)"

    def write(self, frame, seconds=None):
        _check_free_space(self.tmp, self.path, frame)
        self.writer.write(frame)
        self.frames += 1

    def _finish(self):
        self.writer.release()  # sends end-of-stream: qtmux writes the MP4 index
        _check_playable(self.tmp, self.path, self.frames)


def _check_free_space(tmp: Path, final: Path, frame: np.ndarray) -> None:
    # VideoWriter ignores write errors; check the free space (a statvfs call) instead.
    free = shutil.disk_usage(tmp.parent).free
    if free < max(MIN_FREE_BYTES, 4 * frame.nbytes):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))


def _check_playable(tmp: Path, final: Path, frames: int) -> None:
    if not frames:
        return
    check = cv2.VideoCapture(str(tmp))
    ok = check.isOpened() and check.grab()
    check.release()
    if not ok:  # VideoWriter reports no errors: check that the result plays
        raise OSError(errno.EIO, "the written video does not play", str(final))


class OpenCVSink(VideoSink):
    """OpenCV's VideoWriter: mp4v (MPEG-4 Part 2) in MP4, or MJPG in AVI. Constant frame
    rate only; its encoders need even sizes (an odd size is written one pixel smaller)."""

    FOURCC = {"mp4v": "mp4v", "mjpg": "MJPG"}

    def __init__(self, path, width, height, fps: float, codec: str = "mp4v") -> None:
        super().__init__(path, width, height)
        self.codec = codec
        fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[codec])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, (width, height))
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise EngineError(f"{self.path}: OpenCV cannot write {codec} video here")
        if width % 2 or height % 2:
            self.note = f"odd frame size {width}x{height}: OpenCV writes it {width // 2 * 2}x"
            self.note += f"{height // 2 * 2} (install PyAV for the exact size)"

    def write(self, frame, seconds=None):
        _check_free_space(self.tmp, self.path, frame)
        self.writer.write(frame)
        self.frames += 1

    def _finish(self):
        self.writer.release()
        _check_playable(self.tmp, self.path, self.frames)


def open_sink(
    path: Path,
    width: int,
    height: int,
    fps: float,
    codec: str,
    live: bool = False,
    preset: str = "ultrafast",
) -> VideoSink:
    """A sink for a resolved codec (see resolve_codec); preset applies to libx264."""
    if codec == "gst-nvenc":
        if live and h264_available():  # x264 keeps each frame's real time, NVENC here cannot
            return PyAVSink(path, width, height, fps, live=live, preset=preset)
        return GStreamerSink(path, width, height, fps)
    if codec == "h264_nvenc" and not (width % 2 or height % 2):
        return PyAVSink(path, width, height, fps, live=live, encoder="h264_nvenc")
    if codec in ("h264", "h264_nvenc"):  # NVENC needs even sizes: libx264 keeps odd ones
        return PyAVSink(path, width, height, fps, live=live, preset=preset)
    return OpenCVSink(path, width, height, fps, codec)


class DetectionLog:
    """One JSON line per processed frame, optionally a CSV row per detection.

    JSONL: {"frame": 12, "time": 1.2, "detections": [{"class_id": 15, "class": "person",
    "score": 0.91, "box": [x1, y1, x2, y2]}, ...]} with boxes in pixels of the frame.
    CSV: frame,time,class_id,class,score,x1,y1,x2,y2 (a frame without detections has no row).
    Lines are written as they come (line-buffered), so an interrupted run's log is complete
    up to the last frame written to the video.
    """

    CSV_HEADER = ("frame", "time", "class_id", "class", "score", "x1", "y1", "x2", "y2")

    def __init__(self, jsonl: Path, csv_path: Path | None = None) -> None:
        self.paths = [Path(jsonl)] + ([Path(csv_path)] if csv_path else [])
        self.partials: list[Path] = []  # where each path is written until close()
        self.entries = 0
        self._files: list[io.TextIOBase] = []
        try:
            self._jsonl = self._open(self.paths[0])
            self._csv = None
            if csv_path:
                f = self._open(Path(csv_path))
                self._csv = csv.writer(f)
                self._csv.writerow(self.CSV_HEADER)
        except OSError:
            self.discard()
            raise

    def _open(self, path: Path):
        # Closed in close() / discard(): it lives as long as the log.
        tmp = unique_partial_path(path)
        self.partials.append(tmp)
        f = open(tmp, "w", encoding="utf-8", buffering=1, newline="")  # noqa: SIM115
        self._files.append(f)
        return f

    @staticmethod
    def records(dets: Detections) -> list[dict]:
        return [
            {
                "class_id": int(c),
                "class": name,
                "score": round(float(s), 4),
                "box": [round(float(v), 2) for v in b],
            }
            for b, s, c, name in zip(dets.boxes, dets.scores, dets.class_ids, dets.names)
        ]

    def write(self, index: int, seconds: float, dets: Detections) -> None:
        recs = self.records(dets)
        t = round(seconds, 4)
        self._jsonl.write(json.dumps({"frame": index, "time": t, "detections": recs}) + "\n")
        if self._csv is not None:
            for r in recs:
                self._csv.writerow([index, t, r["class_id"], r["class"], r["score"], *r["box"]])
        self.entries += 1

    def close(self) -> list[Path]:
        """Flushes and renames the files to their final names (every file, even when one
        fails to flush; the first error is raised afterwards)."""
        error: OSError | None = None
        for f in self._files:
            try:
                f.close()
            except OSError as e:
                error = error or e
        self._files = []
        for tmp, p in zip(self.partials, self.paths):
            finalize(tmp, p)
        if error is not None:
            raise error
        return list(self.paths)

    def discard(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        for tmp in self.partials:
            tmp.unlink(missing_ok=True)

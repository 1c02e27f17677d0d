"""The GUI's worker: capture, inference and recording off the GUI thread.

A DetectionWorker lives in its own QThread and creates the detector there (a CUDA context
belongs to the thread that made it). Files play every frame, at their own frame rate or
as fast as possible, with pause, single steps and seeking; cameras and streams are read by
engine.video.live.LiveReader, whose newest-frame slot drops stale frames instead of building
latency. Results go to the GUI through a one-packet slot: the worker replaces the packet
and signals only when the GUI has taken the previous one, so a slow display never queues
frames (memory stays flat). The GUI thread only paints. Controls (stop, pause, seek,
filters, recording) are plain thread-safe calls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QObject, pyqtSignal, pyqtSlot

from engine.runtime.detector import Detections, EngineError, open_detector
from engine.video.files import FileReader
from engine.video.filters import DetectionFilter
from engine.video.live import LiveReader
from engine.video.overlay import draw_detections
from engine.video.sources import Source, file_uri_path, mask_credentials, parse_source


def describe_error(e: BaseException) -> str:
    """One line for the window: EngineError/OSError text as is, others with their type."""
    text = str(e).strip().splitlines()
    if isinstance(e, (EngineError, OSError)) and text:
        return mask_credentials(text[0])
    return mask_credentials(f"{type(e).__name__}: {text[0]}" if text else type(e).__name__)


def source_from_text(text: str) -> Source:
    """A Source for what the user typed or chose: a camera (index, /dev/videoN, v4l2://,
    csi://), a URL, a GStreamer pipeline, or a file path / file:// URI (engine.video.sources).
    A malformed camera URI raises EngineError."""
    text = text.strip()
    path = file_uri_path(text)
    if path is None:
        src = parse_source(text)
        if src is not None:
            return src
        path = text
    return Source("file", path, path, Path(path).stem)


@dataclass
class SourceInfo:
    """What the window shows about a running source and model."""

    live: bool
    fps: float
    frame_count: int
    width: int
    height: int
    backend: str
    class_names: list[str]
    score_floor: float
    model_iou: float
    capture: str = ""  # how frames are read (FFmpeg, GStreamer, NVDEC ...)


@dataclass
class Packet:
    """One processed frame: the BGR frame (full resolution, not drawn on), its detections
    (all the model gave; the GUI filters), its index and time, and the live figures."""

    frame: np.ndarray
    dets: Detections
    index: int
    seconds: float
    stats: dict = field(default_factory=dict)


class _Rate:
    """Events per second, smoothed (EMA over about 10 events)."""

    def __init__(self) -> None:
        self.value = 0.0
        self._last: float | None = None

    def tick(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self.value = inst if self.value == 0 else 0.9 * self.value + 0.1 * inst
        self._last = now
        return self.value


class DetectionWorker(QObject):
    """Runs `model` on `source` until stop(). Move it to a QThread and connect the
    thread's started signal to run()."""

    opened = pyqtSignal(object)  # SourceInfo
    frameAvailable = pyqtSignal()  # a new packet waits in take()
    message = pyqtSignal(str)  # information (end of file, recording saved)
    failed = pyqtSignal(str)  # an error that stopped the worker
    recording = pyqtSignal(str)  # the file being recorded, or "" when recording stopped
    finished = pyqtSignal()

    def __init__(
        self,
        model: str | Path,
        source: Source,
        backend: str = "auto",
        device: str = "auto",
        realtime: bool = True,
    ) -> None:
        super().__init__()
        self.model, self.source = Path(model), source
        self.backend, self.device = backend, device
        self.realtime = realtime
        self.filters = DetectionFilter()  # what the recorder keeps (set by the window)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: Packet | None = None
        self._signalled = False
        self._paused = False
        self._step = False
        self._seek: int | None = None
        self._record_to: Path | None = None
        self._record_stop = False
        self._sink = None
        self.display_skipped = 0
        self.file_dropped = 0  # file frames passed over to keep real time

    # -- controls (any thread) -------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def set_paused(self, paused: bool) -> None:
        self._paused = paused

    @property
    def paused(self) -> bool:
        return self._paused

    def step(self) -> None:
        """Shows the next frame of a paused file."""
        self._step = True

    def seek(self, frame: int) -> None:
        with self._lock:
            self._seek = max(0, int(frame))

    def start_recording(self, path: Path) -> None:
        with self._lock:
            self._record_to = Path(path)
            self._record_stop = False

    def stop_recording(self) -> None:
        with self._lock:
            self._record_stop = True

    def _take_seek(self) -> int | None:
        with self._lock:
            target, self._seek = self._seek, None
            return target

    def _take_record_request(self) -> tuple[Path | None, bool]:
        with self._lock:
            start, self._record_to = self._record_to, None
            stop, self._record_stop = self._record_stop, False
            return start, stop

    def take(self) -> Packet | None:
        """The newest packet (GUI thread), or None if there is none since the last call."""
        with self._lock:
            packet, self._latest = self._latest, None
            self._signalled = False
            return packet

    # -- the thread ------------------------------------------------------------------------

    def _publish(self, packet: Packet) -> None:
        with self._lock:
            if self._latest is not None:
                self.display_skipped += 1  # the GUI did not take the previous one in time
            self._latest = packet
            emit = not self._signalled
            self._signalled = True
        if emit:
            self.frameAvailable.emit()

    @pyqtSlot()
    def run(self) -> None:
        det = None
        try:
            det = open_detector(self.model, self.backend, self.device)
            if self.source.live:
                self._run_live(det)
            else:
                self._run_file(det)
        except Exception as e:  # every failure reaches the window as one line
            self.failed.emit(describe_error(e))
        finally:
            try:
                self._close_recording()
                if det is not None:
                    det.close()
            except Exception as e:
                self.message.emit(f"closing the model failed: {describe_error(e)}")
            finally:
                self.finished.emit()

    def _info(self, det, props, live: bool, capture: str = "") -> SourceInfo:
        return SourceInfo(
            live,
            props.fps,
            props.frame_count,
            props.width,
            props.height,
            det.describe(),
            list(det.class_names),
            float(det.info.score_threshold),
            float(det.info.iou_threshold),
            capture,
        )

    def _detect(self, det, frame: np.ndarray) -> tuple[Detections, float]:
        t0 = time.perf_counter()
        dets = det.detect(frame)
        return dets, (time.perf_counter() - t0) * 1000

    def _run_file(self, det) -> None:
        reader = FileReader(self.source.target)
        try:
            props = reader.props
            self.opened.emit(self._info(det, props, False, reader.decoder))
            fps = props.fps
            capture, latency_ms = _Rate(), 0.0
            index = 0
            clock: tuple[float, int] | None = None  # (wall time, index) playback started at
            at_end = False
            while not self._stop.is_set():
                target = self._take_seek()
                if target is not None:
                    if props.frame_count:
                        target = min(target, props.frame_count - 1)
                    reader.seek(target)
                    index, clock, at_end = target, None, False
                    capture = _Rate()
                    self._step = True  # show the frame sought to, even when paused
                if at_end or (self._paused and not self._step):
                    clock, capture = None, _Rate()
                    self._service_recording()
                    time.sleep(0.02)
                    continue
                stepping, self._step = self._step, False
                frame = reader.read()
                if frame is None:
                    at_end = True
                    reason = reader.stop_reason()
                    self.message.emit(reason or f"end of the file ({index} frames)")
                    continue
                capture.tick()
                dets, latency = self._detect(det, frame)
                latency_ms = latency if latency_ms == 0 else 0.9 * latency_ms + 0.1 * latency
                # in real time, frames may be passed over: a PyAV (x264) recording keeps
                # their times; constant-rate sinks (OpenCV, GStreamer NVENC) play it faster
                self._record(frame, dets, index / fps, fps, live=self.realtime)
                if self.realtime and not stepping:
                    if clock is None:
                        clock = (time.perf_counter(), index)
                    due = clock[0] + (index - clock[1]) / fps
                    while not self._stop.is_set() and time.perf_counter() < due:
                        time.sleep(min(0.01, max(0.0, due - time.perf_counter())))
                else:
                    clock = None  # pacing restarts from here when it is turned back on
                stats = {
                    "capture_fps": capture.value,  # frames read per second (the playback)
                    "inference_fps": 1000 / latency_ms if latency_ms else 0.0,  # detector
                    "latency_ms": latency,
                    "dropped": self.display_skipped + self.file_dropped,
                    "position": index,
                    "total": props.frame_count,
                }
                self._publish(Packet(frame, dets, index, index / fps, stats))
                index += 1
                if clock is not None and not self._paused:
                    # Real time: when the detector is slower than the file, pass over the
                    # frames whose time has gone, so the video plays at its own speed. At
                    # most a second of frames at a time (a long stall re-anchors the clock
                    # instead), so Stop and seeks stay prompt.
                    behind = int((time.perf_counter() - clock[0]) * fps) - (index - clock[1])
                    if behind > 0:
                        skipped = reader.skip(min(behind, max(1, int(fps))))
                        index += skipped
                        self.file_dropped += skipped
                        if behind > skipped:
                            clock = (time.perf_counter(), index)
        finally:
            reader.release()

    def _run_live(self, det) -> None:
        live = LiveReader(self.source)
        try:
            self.opened.emit(self._info(det, live.props, True, live.plan.describe()))
            latency_ms = 0.0
            last_count, last_t, capture_fps = live.frames_read, time.perf_counter(), 0.0
            while not self._stop.is_set():
                item = live.get(timeout=0.2)
                if item is False or self._paused:
                    self._service_recording()
                if item is False:
                    continue
                if item is None:
                    raise EngineError(
                        f"{self.source.display}: no more frames (unplugged, stalled for "
                        "10 s, or the stream ended)"
                    )
                index, seconds, frame = item
                if self._paused:
                    continue  # keep draining the camera; the view stays frozen
                dets, latency = self._detect(det, frame)
                latency_ms = latency if latency_ms == 0 else 0.9 * latency_ms + 0.1 * latency
                self._record(frame, dets, seconds, live.props.fps, live=True)
                now = time.perf_counter()
                if now - last_t >= 0.5:  # frames the source delivered per second, recently
                    rate = (live.frames_read - last_count) / (now - last_t)
                    capture_fps = rate if capture_fps == 0 else 0.5 * capture_fps + 0.5 * rate
                    last_count, last_t = live.frames_read, now
                stats = {
                    "capture_fps": capture_fps,
                    "inference_fps": 1000 / latency_ms if latency_ms else 0.0,
                    "latency_ms": latency,
                    "dropped": live.dropped + self.display_skipped,
                }
                self._publish(Packet(frame, dets, index, seconds, stats))
        finally:
            live.stop()

    # -- recording ---------------------------------------------------------------------------

    def _service_recording(self) -> None:
        """Starts nothing, but honours a stop request while no frame comes (paused)."""
        with self._lock:
            stop, self._record_stop = self._record_stop, False
        if stop:
            self._close_recording()

    def _record(self, frame, dets, seconds: float, fps: float, live: bool) -> None:
        from engine.video.writers import open_sink, resolve_codec

        start, stop = self._take_record_request()
        try:
            if start is not None and self._sink is None:
                codec, _ = resolve_codec("auto")
                path = start.with_suffix(".mp4")
                path.parent.mkdir(parents=True, exist_ok=True)
                h, w = frame.shape[:2]
                self._sink = open_sink(path, w, h, fps, codec, live=live)
                self.recording.emit(str(path))
            if self._sink is not None:
                shown = self.filters.apply(dets)
                self._sink.write(draw_detections(frame.copy(), shown), seconds)
            if stop:
                self._close_recording()
        except Exception as e:  # recording fails, playback goes on
            sink, self._sink = self._sink, None
            if sink is not None:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - the first error is the one reported
                    sink.tmp.unlink(missing_ok=True)
            self.recording.emit("")
            self.message.emit(f"recording failed: {describe_error(e)}")

    def _close_recording(self) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            path = sink.close()
            self.recording.emit("")
            self.message.emit(f"recording saved: {path} ({sink.frames} frames)")
        except Exception as e:
            self.recording.emit("")
            self.message.emit(f"recording could not be finalized: {describe_error(e)}")

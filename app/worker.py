"""The GUI's worker: the frame pipeline off the GUI thread.

A DetectionWorker lives in its own QThread, creates the detector there (a CUDA context
belongs to the thread that made it) and runs engine.video.pipeline's VideoProcessor on the
source, the same pipeline as `main.py video`: read -> infer -> filter -> overlay -> record.
Files play at their own frame rate, passing over what a slower model cannot keep up with
(real time, the default), or every frame as fast as possible; pause, single steps and seeks
go through engine.video.playback.Controls. Cameras and streams keep only their newest frame.
Results go to the GUI through a one-packet slot: the worker replaces the packet and signals
only when the GUI has taken the previous one, so a slow display never queues frames (memory
stays flat). The GUI thread only paints. Controls (stop, pause, seek, filters, recording)
are plain thread-safe calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from PyQt5.QtCore import QObject, pyqtSignal, pyqtSlot

from engine.runtime.detector import EngineError, open_detector
from engine.video.filters import DetectionFilter
from engine.video.pipeline import FramePacket, VideoOptions, VideoProcessor
from engine.video.playback import Controls
from engine.video.recorder import Recorder
from engine.video.sources import Source, file_uri_path, mask_credentials, parse_source

Packet = FramePacket  # what the window paints: a frame, all its detections, its figures


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
        self.controls = Controls(realtime)
        self.recorder = Recorder(self._recording_report)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: Packet | None = None
        self._signalled = False
        self._info: tuple | None = None  # (backend, class names, score, IoU) for SourceInfo
        self.display_skipped = 0

    # -- controls (any thread) -------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def realtime(self) -> bool:
        return self.controls.realtime

    @realtime.setter
    def realtime(self, on: bool) -> None:
        self.controls.realtime = bool(on)

    @property
    def filters(self) -> DetectionFilter:
        """What the recording keeps (the window sets it with every slider change)."""
        return self.recorder.filter

    @filters.setter
    def filters(self, value: DetectionFilter) -> None:
        self.recorder.filter = value

    def set_paused(self, paused: bool) -> None:
        self.controls.set_paused(paused)

    @property
    def paused(self) -> bool:
        return self.controls.paused

    def step(self) -> None:
        """Shows the next frame of a paused file."""
        self.controls.step()

    def seek(self, frame: int) -> None:
        self.controls.seek(frame)

    def start_recording(self, path: Path) -> None:
        self.recorder.start(path)

    def stop_recording(self) -> None:
        self.recorder.stop()

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

    def _on_frame(self, packet: Packet) -> None:
        packet.stats["dropped"] = packet.stats.get("dropped", 0) + self.display_skipped
        self._publish(packet)

    def _recording_report(self, path: str, message: str) -> None:
        self.recording.emit(path)
        if message:
            self.message.emit(message)

    def _on_open(self, source: Source, props, decoder: str) -> None:
        backend, names, score, iou = self._info
        info = SourceInfo(
            source.live,
            props.fps,
            props.frame_count,
            props.width,
            props.height,
            backend,
            names,
            score,
            iou,
            decoder,
        )
        self.opened.emit(info)

    def processor(self, det) -> VideoProcessor:
        """The pipeline this worker runs `det` in (no output files: the view and the
        recorder are its outputs)."""
        self._info = (
            det.describe(),
            list(det.class_names),
            float(det.info.score_threshold),
            float(det.info.iou_threshold),
        )
        return VideoProcessor(
            det,
            VideoOptions(write_video=False),
            self._stop,
            controls=self.controls,
            on_open=self._on_open,
            on_frame=self._on_frame,
            on_message=self.message.emit,
            recorder=self.recorder,
        )

    @pyqtSlot()
    def run(self) -> None:
        det = None
        try:
            det = open_detector(self.model, self.backend, self.device)
            res = self.processor(det).process(self.source, {})
            for note in res.notes:
                self.message.emit(note)
            if res.status in ("failed", "incomplete"):  # its message leaves out the source
                self.failed.emit(mask_credentials(f"{self.source.display}: {res.message}"))
            elif self.source.live and not self._stop.is_set():
                self.failed.emit(
                    f"{self.source.display}: no more frames (unplugged, stalled for 10 s, or "
                    "the stream ended)"
                )
        except Exception as e:  # every failure reaches the window as one line
            self.failed.emit(describe_error(e))
        finally:
            try:
                self.recorder.stop(wait=True)
                if det is not None:
                    det.close()
            except Exception as e:
                self.message.emit(f"closing the model failed: {describe_error(e)}")
            finally:
                self.finished.emit()

"""A recording that starts and stops while frames flow (the GUI's Record button).

Frames are written as shown: drawn with the detections the current DetectionFilter keeps,
into an MP4 (H.264 through PyAV when it is installed, else OpenCV's MPEG-4). start() and
stop() may be called from any thread; write() is called by the pipeline's writer stage.
Failures never stop playback: they end the recording and are reported through `report`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.runtime.detector import Detections
from engine.video.filters import DetectionFilter
from engine.video.options import error_reason
from engine.video.overlay import draw_detections, draw_lines
from engine.video.writers import open_sink, resolve_codec


class Recorder:
    """report(path, message): called when a recording starts (path, "") or ends ("",
    what happened: saved, could not be finalized, failed)."""

    def __init__(self, report: Callable[[str, str], None] = lambda path, message: None) -> None:
        self.report = report
        self.filter = DetectionFilter()  # what the recording keeps (the GUI sets it)
        self.caption: list[str] | None = None  # lines drawn top left (the GUI's figures)
        self.fps = 30.0
        self.keep_times: Callable[[], bool] = lambda: False
        self._lock = threading.Lock()
        self._requested: Path | None = None
        self._sink = None

    def configure(self, fps: float, live: bool, keep_times: Callable[[], bool] | None = None):
        """The source's frame rate, and whether a recording keeps each frame's own time
        (asked when a recording starts: live sources, files played in real time, where
        frames may be passed over). The pipeline calls it when the source opens."""
        self.fps = fps
        self.keep_times = keep_times or (lambda: live)

    @property
    def active(self) -> bool:
        return self._sink is not None or self._requested is not None

    def start(self, path: str | Path) -> None:
        """Records from the next frame on into PATH (its suffix becomes .mp4)."""
        with self._lock:
            if self._sink is None:
                self._requested = Path(path).with_suffix(".mp4")

    def stop(self, wait: bool = False) -> threading.Thread:
        """Finalizes the recording (also while paused, when no frame comes), on a thread of
        its own so the caller (the GUI thread) never waits for the encoder to flush; `wait`
        joins it. Frames that come meanwhile are not recorded."""
        with self._lock:
            self._requested = None
            sink, self._sink = self._sink, None
        thread = threading.Thread(target=self._close, args=(sink,), name="recorder-close")
        thread.start()
        if wait:
            thread.join()
        return thread

    def write(self, frame: np.ndarray, dets: Detections, seconds: float) -> None:
        with self._lock:
            if self._requested is None and self._sink is None:
                return
            try:
                if self._sink is None:
                    path, self._requested = self._requested, None
                    h, w = frame.shape[:2]
                    codec, _ = resolve_codec("auto")
                    live = self.keep_times()
                    self._sink = open_sink(path, w, h, self.fps, codec, live=live)
                    self.report(str(path), "")
                shown = draw_detections(frame.copy(), self.filter.apply(dets))
                caption = self.caption
                if caption:
                    draw_lines(shown, caption)
                self._sink.write(shown, seconds)
            except Exception as e:  # the recording ends, playback goes on
                sink, self._sink = self._sink, None
                if sink is not None:
                    try:
                        sink.close()
                    except Exception:  # noqa: BLE001 - the first error is the one reported
                        sink.tmp.unlink(missing_ok=True)
                self.report("", f"recording failed: {error_reason(e)}")

    def _close(self, sink) -> None:
        if sink is None:
            return
        try:
            path = sink.close()
            self.report("", f"recording saved: {path} ({sink.frames} frames)")
        except Exception as e:  # noqa: BLE001 - the reason goes to the user
            sink.tmp.unlink(missing_ok=True)
            self.report("", f"recording could not be finalized: {error_reason(e)}")

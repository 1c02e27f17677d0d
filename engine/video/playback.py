"""Interactive playback of a file in the frame pipeline: pause, single steps, seeks and
real-time pacing. The GUI holds a Controls object and calls it from its own thread; the
video command runs without one (every frame, as fast as it goes, no pauses)."""

from __future__ import annotations

import threading
import time


class Controls:
    """What the viewer asks of a running input; every method is thread-safe.

    realtime: files play at their own frame rate, passing over the frames a slower
    detector cannot keep up with (Pacer); False processes every frame as fast as it goes.
    generation: counts seeks, so frames read before the latest seek can be told apart.
    """

    def __init__(self, realtime: bool = True) -> None:
        self.realtime = realtime
        self.generation = 0
        self._lock = threading.Lock()
        self._paused = False
        self._step = False
        self._seek: int | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        self._paused = bool(paused)

    def step(self) -> None:
        """Lets one more frame through while paused."""
        self._step = True

    def seek(self, frame: int) -> None:
        """Continues from this frame of a file, and shows it even when paused."""
        with self._lock:
            self._seek = max(0, int(frame))
            self.generation += 1
            self._step = True

    def take_seek(self) -> tuple[int | None, int]:
        """(the frame asked for, or None; the generation it starts), for the reader."""
        with self._lock:
            target, self._seek = self._seek, None
            return target, self.generation

    def may_run(self) -> bool:
        """Whether a frame may go through now: playing, or a step is pending."""
        return not self._paused or self._step

    def take_frame(self, generation: int) -> bool | None:
        """For a frame read in `generation`: None when a seek came after it (drop it), else
        whether it uses up a pending step (shown without pacing). One locked call, so a
        seek arriving meanwhile never lends its step to a frame from before it."""
        with self._lock:
            if generation != self.generation:
                return None
            step, self._step = self._step, False
            return step

    def is_current(self, generation: int) -> bool:
        """Whether no seek came after a frame read in `generation`."""
        return generation == self.generation


class Pacer:
    """Real-time pacing of a file's frames on the wall clock.

    Frame i is due `(i - i0) / fps` seconds after the clock started at frame i0. A frame
    whose successor is already due, and already decoded, is passed over, so the video keeps
    its own speed when the detector is slower than the file; a frame more than a second
    late (a stall, a paused debugger) restarts the clock at it instead, so playback never
    races to catch up.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._anchor: tuple[float, int] | None = None

    def reset(self) -> None:
        """The next frame restarts the clock (after a pause, a seek or a step)."""
        self._anchor = None

    def admit(self, index: int, newer_waiting: bool = True, now: float | None = None) -> bool:
        """Whether frame `index` is still worth showing (False: pass it over). A late frame
        is passed over only when a newer one is already waiting: when decoding is what is
        slow, every frame is shown and the video plays slower instead of freezing."""
        now = time.perf_counter() if now is None else now
        if self._anchor is None:
            self._anchor = (now, index)
            return True
        late = now - self._due(index)
        if late >= 1.0:
            self._anchor = (now, index)
            return True
        return late <= 1.0 / self.fps or not newer_waiting

    def wait(self, index: int, stop: threading.Event) -> None:
        """Sleeps until frame `index` is due (or `stop` is set)."""
        if self._anchor is None:
            return
        due = self._due(index)
        while not stop.is_set() and (left := due - time.perf_counter()) > 0:
            time.sleep(min(0.01, left))

    def _due(self, index: int) -> float:
        t0, i0 = self._anchor
        return t0 + (index - i0) / self.fps

"""The frame pipeline: read -> infer -> filter -> overlay -> record/log, for the `video`
command and the GUI alike.

One input runs as three stages with bounded queues, so decoding, inference and encoding
overlap and memory stays bounded:

    reader thread      decode, resize to the network input      -> frames queue
    calling thread     inference, mapping boxes back, filtering -> results queue
    writer thread      overlay, encode, log, hand the frame to a viewer (in frame order)

Files, by default (the video command): every frame is read, and every frame reaches the
output in order (none dropped); with `every` > 1 the detector sees every Nth frame and the
frames between carry its last detections. Live sources (cameras, streams): a capture thread
keeps only the newest frame, so latency does not build up; the frames that were replaced
are counted as dropped.

A viewer (the GUI) passes Controls (engine.video.playback): pause, steps and seeks, and a
real-time mode in which a file plays at its own frame rate and the frames a slower detector
cannot keep up with are passed over and counted as dropped. It gets each frame through
`on_frame` and records through a Recorder (engine.video.recorder).

A stop request (`stop` event, set by Ctrl-C / SIGTERM in the command, Stop in the GUI) ends
the reading, lets the writer finish the frames already inferred, and finalizes the video
and the log at the same frame. numpy and OpenCV only (the deploy path).

Over 400 lines on purpose: the three stages of one input share its queues, its abort
event and its result, and read best side by side. What a run asks for and reports
(VideoOptions, InputResult, FramePacket, output names) is in engine.video.options.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.runtime.detector import Detections, Detector, EngineError
from engine.video import live as live_module
from engine.video.files import FileReader
from engine.video.live import LiveReader
from engine.video.options import (
    FramePacket,
    InputResult,
    VideoOptions,
    error_reason,
    failure_message,
    frame_range,
    output_paths,
)
from engine.video.overlay import draw_detections, draw_status
from engine.video.playback import Controls, Pacer
from engine.video.recorder import Recorder
from engine.video.sources import Source, mask_credentials
from engine.video.writers import DetectionLog, VideoSink, open_sink

__all__ = ["FramePacket", "InputResult", "VideoOptions", "VideoProcessor", "output_paths"]

STAGES = ("decode", "resize", "infer", "post", "draw", "encode", "log")


def _put(q: queue.Queue, item, abort: threading.Event) -> bool:
    """Blocking put that gives up when `abort` is set."""
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Stage:
    """Per-stage time sums (each stage is timed by one thread only)."""

    def __init__(self) -> None:
        self.total = dict.fromkeys(STAGES, 0.0)
        self.count = dict.fromkeys(STAGES, 0)

    def add(self, name: str, seconds: float) -> None:
        self.total[name] += seconds
        self.count[name] += 1

    def ms(self) -> dict[str, float]:
        return {
            k: round(1000 * v / self.count[k], 3) for k, v in self.total.items() if self.count[k]
        }


class _Ema:
    """An exponential moving average; the first value starts it."""

    def __init__(self, weight: float = 0.1) -> None:
        self.weight, self.value = weight, 0.0

    def add(self, x: float) -> float:
        self.value = x if self.value == 0 else (1 - self.weight) * self.value + self.weight * x
        return self.value


class VideoProcessor:
    """Runs one detector over inputs. `stop` (a threading.Event) ends the current input
    cleanly; `progress(result, total)` returns an object with update(n) and close(), or
    None for no progress display.

    A viewer (the GUI) also passes `controls` (pause, steps, seeks, real-time pacing),
    `on_open(source, props, decoder)` called when the input opens, `on_frame(FramePacket)`
    for every frame in order, `on_message(text)` for what it should tell the user (the end
    of a file), and a `recorder`; it processes with no output paths.
    """

    def __init__(
        self,
        detector: Detector,
        opts: VideoOptions,
        stop: threading.Event | None = None,
        progress=None,
        controls: Controls | None = None,
        on_open: Callable | None = None,
        on_frame: Callable[[FramePacket], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.det = detector
        self.opts = opts
        self.stop = stop or threading.Event()
        self.progress = progress
        self.controls = controls
        self.on_open = on_open
        self.on_frame = on_frame
        self.on_message = on_message or (lambda text: None)
        self.recorder = recorder

    # -- one input -------------------------------------------------------------------------

    def process(self, src: Source, paths: dict[str, Path]) -> InputResult:
        """Processes one input into its outputs (`paths`: video, jsonl, csv; any may be
        absent); never raises for a bad input, a failed write or a backend error (the
        result says what happened), only KeyboardInterrupt."""
        res = InputResult(src.display)
        try:
            if src.live:
                self._run_live(src, paths, res)
            else:
                self._run_file(src, paths, res)
        except EngineError as e:
            msg = mask_credentials(str(e))
            for prefix in (f"{src.display}: ", f"{src.target}: "):
                masked = mask_credentials(prefix)
                if msg.startswith(masked):  # (str.removeprefix is Python 3.9+)
                    msg = msg[len(masked) :]
            res.status, res.message = "failed", msg
        except Exception as e:  # an OSError, a backend or codec error: go on with the rest
            res.status, res.message = "failed", failure_message(e)
        if res.status == "ok" and self.stop.is_set():
            res.status = "interrupted"
            res.message = f"stopped by the user after {res.frames} frames; outputs finalized"
        return res

    def _open_outputs(self, paths, props, live, res):
        if self.recorder is not None:
            controls = self.controls
            # Live sources, and files in real time (frames may be passed over), keep each
            # frame's own time in a recording where the codec can (PyAV).
            self.recorder.configure(
                props.fps, live, keep_times=lambda: live or bool(controls and controls.realtime)
            )
        sink = None
        if "video" in paths:
            paths["video"].parent.mkdir(parents=True, exist_ok=True)
            sink = open_sink(
                paths["video"],
                props.width,
                props.height,
                props.fps,
                self.opts.codec,
                live,
                self.opts.preset,
            )
            res.codec = sink.codec
            if sink.note:
                res.notes.append(sink.note)
            if live and not sink.variable_rate:
                res.notes.append(
                    f"{sink.codec} has a constant frame rate: the video is written at the "
                    f"source's {props.fps:g} FPS and plays faster than real time when frames "
                    "were dropped (H.264 keeps the real timing)"
                )
        log = None
        if "jsonl" in paths:
            paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
            try:
                log = DetectionLog(paths["jsonl"], paths.get("csv"))
            except OSError:
                if sink is not None:
                    sink.close()
                raise
        return sink, log

    def _run_file(self, src: Source, paths, res: InputResult) -> None:
        reader = FileReader(src.target, hardware=None if self.opts.hw_decode else False)
        res.decoder = reader.decoder
        controls = self.controls
        try:
            props = reader.props
            start, end = frame_range(props, self.opts.start, self.opts.end)
            if end is not None and start >= end:
                raise EngineError(
                    f"{src.display}: nothing between --start and --end (the file has "
                    f"{props.frame_count} frames at {props.fps:g} FPS)"
                )
            if start:
                reader.seek(start)
            res.expected = (end - start) if end is not None else 0
            if not props.fps_known:
                res.notes.append("the file does not state a usable frame rate: assumed 30 FPS")
            if self.on_open is not None:
                self.on_open(src, props, reader.decoder)
            sink, log = self._open_outputs(paths, props, False, res)
            stage = _Stage()
            frames_q: queue.Queue = queue.Queue(maxsize=self.opts.queue_size)
            abort = threading.Event()
            stopped_early: list[str] = []
            errors: list[BaseException] = []

            def read() -> None:
                # Seeks are done here: the reader is used by this thread only. At the end
                # of a file a viewer's reader waits for a seek instead of finishing.
                index, generation, at_end = start, 0, False
                try:
                    while not (abort.is_set() or self.stop.is_set()):
                        if controls is not None:
                            target, gen = controls.take_seek()
                            if target is not None:
                                if props.frame_count:
                                    target = min(target, props.frame_count - 1)
                                reader.seek(target)
                                index, generation, at_end = target, gen, False
                            if at_end:
                                time.sleep(0.02)
                                continue
                        t0 = time.perf_counter()
                        frame = reason = None
                        if end is None or index < end:
                            frame = reader.read()
                            reason = None if frame is not None else reader.stop_reason()
                        t1 = time.perf_counter()
                        if frame is None:
                            if reason:
                                stopped_early.append(reason)
                            if controls is None:
                                break
                            at_end = True
                            marker = ("end", index, reason, generation)
                            if not _put(frames_q, marker, abort):
                                return
                            continue
                        stage.add("decode", t1 - t0)
                        x = None
                        if (index - start) % self.opts.every == 0:
                            # A private copy: a backend's own preprocess may reuse one buffer.
                            x = Detector.preprocess(self.det, frame)
                            stage.add("resize", time.perf_counter() - t1)
                        item = (index, reader.timestamp(index), frame, x, generation)
                        if not _put(frames_q, item, abort):
                            return
                        index += 1
                except Exception as e:  # reported as this input's failure below
                    errors.append(e)
                finally:
                    _put(frames_q, None, abort)

            pacer = Pacer(props.fps)
            rate = _Rate()

            def next_item():
                # In the calling thread: pauses, frames from before a seek, real-time pacing.
                while not (abort.is_set() or self.stop.is_set()):
                    if controls is not None and not controls.may_run():
                        pacer.reset()
                        rate.reset()
                        time.sleep(0.02)
                        continue
                    try:
                        item = frames_q.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if item is None:
                        return None
                    if item[0] == "end":
                        _, count, reason, generation = item
                        if controls.is_current(generation):  # not from before a seek
                            self.on_message(reason or f"end of the file ({count} frames)")
                        continue  # a viewer's reader waits for a seek
                    index, t, frame, x, generation = item
                    if controls is None:
                        return item
                    stepping = controls.take_frame(generation)
                    if stepping is None:
                        continue  # read before the latest seek
                    if controls.realtime and not stepping:
                        if not pacer.admit(index, newer_waiting=not frames_q.empty()):
                            res.dropped += 1  # its time has gone: pass it over
                            continue
                        pacer.wait(index, self.stop)
                    else:
                        pacer.reset()  # pacing restarts from here when it is turned back on
                    rate.tick()
                    return item
                return None

            def figures(index: int) -> dict:
                return {"capture_fps": rate.value, "position": index, "total": props.frame_count}

            thread = threading.Thread(target=read, name="video-reader", daemon=True)
            thread.start()
            try:
                self._pipeline(next_item, abort, sink, log, stage, res, figures)
            finally:
                abort.set()
                thread.join()  # never blocks long: the reader checks `abort` between frames
            if errors and res.status == "ok":
                res.status = "failed"
                res.message = f"reading stopped at frame {res.frames}: {failure_message(errors[0])}"
            if stopped_early and res.status == "ok" and controls is None:
                res.status, res.message = "incomplete", stopped_early[0]
        finally:
            reader.release()

    def _run_live(self, src: Source, paths, res: InputResult) -> None:
        if self.opts.start:
            raise EngineError(f"{src.display}: --start applies to files only")
        live = LiveReader(src)
        res.decoder = live.plan.describe()
        try:
            if self.on_open is not None:
                self.on_open(src, live.props, res.decoder)
            sink, log = self._open_outputs(paths, live.props, True, res)
            stage = _Stage()
            abort = threading.Event()
            ended: list[bool] = []
            count = [0]
            delivered = {"count": live.frames_read, "t": time.perf_counter(), "fps": _Ema(0.5)}

            def next_item():
                # Taken straight from the capture slot when the detector is ready, so it
                # always runs on the newest frame; the frames replaced meanwhile are drops.
                while not (abort.is_set() or self.stop.is_set()):
                    item = live.get(timeout=0.2)
                    if item is False:
                        continue
                    if item is None:
                        ended.append(True)
                        return None
                    index, t, frame = item
                    if self.opts.end is not None and t > self.opts.end:
                        return None
                    if self.controls is not None and self.controls.paused:
                        continue  # keep draining the source; the view stays frozen
                    t1 = time.perf_counter()
                    x = None
                    if count[0] % self.opts.every == 0:
                        x = Detector.preprocess(self.det, frame)
                        stage.add("resize", time.perf_counter() - t1)
                    count[0] += 1
                    return index, t, frame, x, 0
                return None

            def figures(index: int) -> dict:
                now = time.perf_counter()
                if now - delivered["t"] >= 0.5:  # frames the source delivered per second
                    rate = (live.frames_read - delivered["count"]) / (now - delivered["t"])
                    delivered["fps"].add(rate)
                    delivered["count"], delivered["t"] = live.frames_read, now
                res.dropped = live.dropped
                return {"capture_fps": delivered["fps"].value}

            self._pipeline(next_item, abort, sink, log, stage, res, figures)
            res.dropped = live.dropped
            if ended and res.status == "ok":
                if live.stalled:  # outputs are finalized; the run did not get what it wanted
                    res.status = "incomplete"
                    waited = live_module.READ_TIMEOUT_MS / 1000
                    what = "camera" if src.kind == "camera" else "stream"
                    res.message = (
                        f"the {what} stalled: no frame within its {waited:g} s read timeout "
                        f"after {live.frames_read} frames; what came is processed"
                    )
                else:
                    res.notes.append(f"the source ended after {live.frames_read} frames")
        finally:
            live.stop()

    def _pipeline(self, next_item, abort, sink, log, stage, res, figures) -> None:
        """Inference in this thread on the items `next_item()` returns ((index, seconds,
        frame, resized or None, seek generation) or None at the end), a writer thread for
        overlay, encoding, the log and the viewer; then finalizes the outputs at the last
        frame written. `figures(index)` gives the source's live figures for a viewer."""
        det, opts = self.det, self.opts
        results_q: queue.Queue = queue.Queue(maxsize=opts.queue_size)
        counts: Counter = Counter()
        failure: list[BaseException] = []
        bar = self.progress(res, res.expected) if self.progress else None
        t_start = time.perf_counter()
        on_frame, recorder, controls = self.on_frame, self.recorder, self.controls

        def write() -> None:
            fps_ema = _Ema()
            t_prev = time.perf_counter()
            while True:
                item = results_q.get()
                if item is None:
                    return
                if failure:
                    continue  # drain after a failed write; nothing more is written
                index, t, frame, raw, dets, inferred, stats, generation = item
                try:
                    # A viewer sees nothing read before its latest seek (in flight meanwhile).
                    current = controls is None or controls.is_current(generation)
                    if on_frame is not None and current:
                        on_frame(FramePacket(frame, raw, index, t, stats))
                    if recorder is not None and current:
                        recorder.write(frame, raw, t)
                    t0 = time.perf_counter()
                    if sink is not None:
                        image = frame if on_frame is None else frame.copy()
                        draw_detections(image, dets)
                        if opts.show_fps or opts.show_frame:
                            now = time.perf_counter()
                            fps = fps_ema.add(1 / max(now - t_prev, 1e-6))
                            t_prev = now
                            draw_status(
                                image,
                                fps=fps if opts.show_fps else None,
                                frame_index=index if opts.show_frame else None,
                            )
                        t1 = time.perf_counter()
                        stage.add("draw", t1 - t0)
                        sink.write(image, t)
                        stage.add("encode", time.perf_counter() - t1)
                    if inferred:
                        if log is not None:
                            t2 = time.perf_counter()
                            log.write(index, t, dets)
                            stage.add("log", time.perf_counter() - t2)
                        counts.update(dets.names)
                        res.inferred += 1
                    res.frames += 1
                    if bar is not None:
                        bar.update(1)
                except Exception as e:  # a full disk, a broken encoder: stop this input
                    failure.append(e)
                    abort.set()

        writer = threading.Thread(target=write, name="video-writer", daemon=True)
        writer.start()
        raw = shown = Detections.empty()
        latency = _Ema()
        try:
            while True:
                item = next_item()
                if item is None or self.stop.is_set():
                    break
                index, t, frame, x, generation = item
                inferred = x is not None
                stats = {}
                if inferred:
                    t0 = time.perf_counter()
                    num, boxes, scores, classes = det.run(x[None])
                    t1 = time.perf_counter()
                    raw = det.to_detections(num[0], boxes[0], scores[0], classes[0], frame.shape)
                    shown = opts.filter.apply(raw)
                    stage.add("infer", t1 - t0)
                    stage.add("post", time.perf_counter() - t1)
                    ms = latency.add((t1 - t0) * 1000)
                    stats = {"latency_ms": (t1 - t0) * 1000, "inference_fps": 1000 / ms}
                if on_frame is not None:
                    stats.update(figures(index), dropped=res.dropped)
                item = (index, t, frame, raw, shown, inferred, stats, generation)
                if not _put(results_q, item, abort):
                    break
        finally:
            # Reached on the end, a stop, a failure or a KeyboardInterrupt: let the writer
            # finish what was inferred, then finalize both outputs at that same frame.
            abort.set()
            results_q.put(None)  # the writer drains the queue, so this cannot block for long
            writer.join()
            res.seconds = time.perf_counter() - t_start
            if bar is not None:
                bar.close()
            self._finalize(sink, log, res, failure)
            res.stage_ms = stage.ms()
            res.detections = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @staticmethod
    def _finalize(sink: VideoSink | None, log: DetectionLog | None, res, failure) -> None:
        errors: list[str] = []
        if failure:
            e = failure[0]
            errors.append(f"writing stopped at frame {res.frames}: {error_reason(e)}")
        if sink is not None:
            try:
                path = sink.close()
                if path is not None:
                    res.outputs["video"] = str(path)
            except Exception as e:  # noqa: BLE001 - the reason goes to the user
                # An MP4 whose index was never written does not play: free its space.
                sink.tmp.unlink(missing_ok=True)
                errors.append(
                    f"the video could not be finalized ({error_reason(e)}) and was removed"
                )
        if log is not None:
            try:
                for p in log.close():
                    res.outputs[p.suffix.lstrip(".")] = str(p)
            except OSError as e:
                errors.append(f"the log could not be finalized ({error_reason(e)})")
        if errors:
            res.status, res.message = "failed", "; ".join(errors)


class _Rate:
    """Events per second, smoothed over about ten events (an _Ema of 1 / interval)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._ema, self._last = _Ema(0.1), None

    @property
    def value(self) -> float:
        return self._ema.value

    def tick(self) -> float:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            self._ema.add(1.0 / (now - self._last))
        self._last = now
        return self.value

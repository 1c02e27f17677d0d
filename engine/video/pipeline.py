"""`main.py video`: video files, cameras and streams to annotated videos and detection logs.

One input runs as a three-stage pipeline with bounded queues, so decoding, inference and
encoding overlap and memory stays bounded:

    reader thread      decode, resize to the network input      -> frames queue
    calling thread     inference, mapping boxes back            -> results queue
    writer thread      overlay, encode, log (in frame order)

Files: every frame is read, and every frame reaches the output in order (none dropped);
with `every` > 1 the detector sees every Nth frame and the frames between carry its last
detections. Live sources (cameras, streams): a capture thread keeps only the newest frame,
so latency does not build up; the frames that were replaced are counted as dropped.

A stop request (`stop` event, set by Ctrl-C / SIGTERM in the command) ends the reading, lets
the writer finish the frames already inferred, and finalizes the video and the log at the
same frame. numpy and OpenCV only (the deploy path).
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.runtime.detector import Detections, Detector, EngineError
from engine.video.files import FileReader
from engine.video.live import LiveReader
from engine.video.overlay import draw_detections, draw_status
from engine.video.sources import Source, mask_credentials
from engine.video.writers import DetectionLog, VideoSink, open_sink, video_extension
from training.fileio import atomic_write_text

STAGES = ("decode", "resize", "infer", "post", "draw", "encode", "log")


@dataclass
class VideoOptions:
    """What to do with each input (the command's options).

    score_threshold: keep detections at least this confident (None: the model's own).
    classes: class ids to keep (None: all). every: run the detector on every Nth frame.
    start / end: seconds into a file (for live sources, end is the capture duration).
    write_video / csv: which outputs besides the JSONL log. codec: a resolved codec
    (writers.resolve_codec); preset: x264's speed preset for H.264.
    show_fps / show_frame: draw the pipeline FPS / frame number. hw_decode: let a Jetson
    decode H.264/H.265 files on NVDEC (engine.video.files.FileReader).
    """

    output_dir: Path = Path("runs/video")
    score_threshold: float | None = None
    classes: list[int] | None = None
    every: int = 1
    start: float = 0.0
    end: float | None = None
    write_video: bool = True
    csv: bool = False
    codec: str = "mp4v"
    preset: str = "ultrafast"
    show_fps: bool = False
    show_frame: bool = False
    queue_size: int = 8
    hw_decode: bool = True


@dataclass
class InputResult:
    """What happened to one input. status: ok; incomplete (the file stopped decoding before
    its announced end: what decoded is processed); failed (see message; outputs written up
    to the failure are kept); interrupted (stopped by the user, outputs finalized); skipped
    (not started because of a stop)."""

    source: str
    status: str = "ok"
    message: str = ""
    frames: int = 0  # frames written (video frames; log entries when every == 1)
    inferred: int = 0  # frames the detector ran on (= log entries)
    dropped: int = 0  # live sources: frames replaced by newer ones before inference
    expected: int = 0  # frames the file announces in the processed range (0: unknown)
    seconds: float = 0.0
    detections: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    codec: str = ""
    decoder: str = ""  # how frames were read: FFmpeg, NVDEC (GStreamer), GStreamer, ...
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def output_paths(
    sources: list[Source], out_dir: Path, opts: VideoOptions
) -> list[dict[str, Path] | str]:
    """Per source, its output files {video, jsonl, csv} (or an error message when one of them
    would overwrite an input). Names: OUT/[subfolder/]STEM.EXT, with -2, -3 ... appended in
    input order when two inputs share a stem."""
    inputs = {Path(s.target).resolve() for s in sources if s.kind == "file"}
    used: set[Path] = set()
    plans: list[dict[str, Path] | str] = []
    for src in sources:
        base = out_dir / src.subdir / src.name
        n = 1
        while (key := base.with_name(base.name + (f"-{n}" if n > 1 else ""))) in used:
            n += 1
        used.add(key)
        plan = {"jsonl": key.with_name(key.name + ".jsonl")}
        if opts.write_video:
            plan["video"] = key.with_name(key.name + video_extension(opts.codec))
        if opts.csv:
            plan["csv"] = key.with_name(key.name + ".csv")
        clash = [p for p in plan.values() if p.resolve() in inputs]
        if clash:
            plans.append(
                f"its output {clash[0]} would overwrite an input; choose another --output folder"
            )
        else:
            plans.append(plan)
    return plans


def frame_range(props, start_s: float, end_s: float | None) -> tuple[int, int | None]:
    """(first frame at or after start_s, frame index to stop before) of a file with these
    VideoProps; the stop is None when neither end_s nor the frame count is known."""
    start = int(math.ceil(start_s * props.fps - 1e-6))
    end = props.frame_count or None
    if end_s is not None:
        stop_at = int(math.ceil(end_s * props.fps - 1e-6))
        end = stop_at if end is None else min(end, stop_at)
    return start, end


def _one_line(e: BaseException) -> str:
    """'TypeName: first line of the message', credentials masked."""
    text = str(e).strip().splitlines()
    return mask_credentials(f"{type(e).__name__}: {text[0]}" if text else type(e).__name__)


def _put(q: queue.Queue, item, abort: threading.Event) -> bool:
    """Blocking put that gives up when `abort` is set."""
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, abort: threading.Event):
    """Blocking get that returns None when `abort` is set."""
    while not abort.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


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


class VideoProcessor:
    """Runs one detector over inputs. `stop` (a threading.Event) ends the current input
    cleanly; `progress(result, total)` returns an object with update(n) and close(), or
    None for no progress display."""

    def __init__(
        self,
        detector: Detector,
        opts: VideoOptions,
        stop: threading.Event | None = None,
        progress=None,
    ) -> None:
        self.det = detector
        self.opts = opts
        self.stop = stop or threading.Event()
        self.progress = progress

    # -- one input -------------------------------------------------------------------------

    def process(self, src: Source, paths: dict[str, Path]) -> InputResult:
        """Processes one input into its outputs; never raises for a bad input, a failed
        write or a backend error (the result says what happened), only KeyboardInterrupt."""
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
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            res.status, res.message = "failed", f"{e.strerror or e}{where}"
        except Exception as e:  # a backend or codec error: report it, go on with the rest
            res.status, res.message = "failed", _one_line(e)
        if res.status == "ok" and self.stop.is_set():
            res.status = "interrupted"
            res.message = f"stopped by the user after {res.frames} frames; outputs finalized"
        return res

    def _open_outputs(self, paths, props, live, res):
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
            sink, log = self._open_outputs(paths, props, False, res)
            stage = _Stage()
            frames_q: queue.Queue = queue.Queue(maxsize=self.opts.queue_size)
            abort = threading.Event()
            stopped_early: list[str] = []
            errors: list[BaseException] = []

            def read() -> None:
                index = start
                try:
                    while not (abort.is_set() or self.stop.is_set()):
                        if end is not None and index >= end:
                            break
                        t0 = time.perf_counter()
                        frame = reader.read()
                        t1 = time.perf_counter()
                        if frame is None:
                            reason = reader.stop_reason()
                            if reason and (end is None or index < end):
                                stopped_early.append(reason)
                            break
                        stage.add("decode", t1 - t0)
                        x = None
                        if (index - start) % self.opts.every == 0:
                            # A private copy: a backend's own preprocess may reuse one buffer.
                            x = Detector.preprocess(self.det, frame)
                            stage.add("resize", time.perf_counter() - t1)
                        if not _put(frames_q, (index, reader.timestamp(index), frame, x), abort):
                            return
                        index += 1
                except Exception as e:  # reported as this input's failure below
                    errors.append(e)
                finally:
                    _put(frames_q, None, abort)

            thread = threading.Thread(target=read, name="video-reader", daemon=True)
            thread.start()
            try:
                self._pipeline(lambda: _get(frames_q, abort), abort, sink, log, stage, res)
            finally:
                abort.set()
                thread.join()  # never blocks long: the reader checks `abort` between frames
            if errors and res.status == "ok":
                res.status = "failed"
                res.message = f"reading stopped at frame {res.frames}: {_one_line(errors[0])}"
            if stopped_early and res.status == "ok":
                res.status, res.message = "incomplete", stopped_early[0]
        finally:
            reader.release()

    def _run_live(self, src: Source, paths, res: InputResult) -> None:
        if self.opts.start:
            raise EngineError(f"{src.display}: --start applies to files only")
        live = LiveReader(src)
        res.decoder = live.plan.describe()
        try:
            sink, log = self._open_outputs(paths, live.props, True, res)
            stage = _Stage()
            abort = threading.Event()
            ended: list[bool] = []
            count = [0]

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
                    t1 = time.perf_counter()
                    x = None
                    if count[0] % self.opts.every == 0:
                        x = Detector.preprocess(self.det, frame)
                        stage.add("resize", time.perf_counter() - t1)
                    count[0] += 1
                    return index, t, frame, x
                return None

            self._pipeline(next_item, abort, sink, log, stage, res)
            res.dropped = live.dropped
            if ended and res.status == "ok":
                res.notes.append(f"the source ended after {live.frames_read} frames")
        finally:
            live.stop()

    def _pipeline(self, next_item, abort, sink, log, stage, res) -> None:
        """Inference in this thread on the items `next_item()` returns ((index, seconds,
        frame, resized or None) or None at the end), a writer thread for overlay, encoding
        and log; then finalizes the outputs at the last frame written."""
        det, opts = self.det, self.opts
        results_q: queue.Queue = queue.Queue(maxsize=opts.queue_size)
        counts: Counter = Counter()
        failure: list[BaseException] = []
        bar = self.progress(res, res.expected) if self.progress else None
        t_start = time.perf_counter()

        def write() -> None:
            fps_ema = 0.0
            t_prev = time.perf_counter()
            while True:
                item = results_q.get()
                if item is None:
                    return
                if failure:
                    continue  # drain after a failed write; nothing more is written
                index, t, frame, dets, inferred = item
                try:
                    t0 = time.perf_counter()
                    draw_detections(frame, dets)
                    if opts.show_fps or opts.show_frame:
                        now = time.perf_counter()
                        dt, t_prev = max(now - t_prev, 1e-6), now
                        fps_ema = 1 / dt if fps_ema == 0 else 0.9 * fps_ema + 0.1 / dt
                        draw_status(
                            frame,
                            fps=fps_ema if opts.show_fps else None,
                            frame_index=index if opts.show_frame else None,
                        )
                    t1 = time.perf_counter()
                    stage.add("draw", t1 - t0)
                    if sink is not None:
                        sink.write(frame, t)
                        t2 = time.perf_counter()
                        stage.add("encode", t2 - t1)
                    else:
                        t2 = t1
                    if inferred:
                        log.write(index, t, dets)
                        counts.update(dets.names)
                        res.inferred += 1
                        stage.add("log", time.perf_counter() - t2)
                    res.frames += 1
                    if bar is not None:
                        bar.update(1)
                except Exception as e:  # a full disk, a broken encoder: stop this input
                    failure.append(e)
                    abort.set()

        writer = threading.Thread(target=write, name="video-writer", daemon=True)
        writer.start()
        last = Detections.empty()
        try:
            while True:
                item = next_item()
                if item is None or self.stop.is_set():
                    break
                index, t, frame, x = item
                inferred = x is not None
                if inferred:
                    t0 = time.perf_counter()
                    num, boxes, scores, classes = det.run(x[None])
                    t1 = time.perf_counter()
                    last = det.to_detections(
                        num[0],
                        boxes[0],
                        scores[0],
                        classes[0],
                        frame.shape,
                        opts.score_threshold,
                        opts.classes,
                    )
                    stage.add("infer", t1 - t0)
                    stage.add("post", time.perf_counter() - t1)
                if not _put(results_q, (index, t, frame, last, inferred), abort):
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
    def _finalize(sink: VideoSink | None, log: DetectionLog, res, failure) -> None:
        errors: list[str] = []
        if failure:
            e = failure[0]
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            errors.append(f"writing stopped at frame {res.frames}: {reason}")
        if sink is not None:
            try:
                path = sink.close()
                if path is not None:
                    res.outputs["video"] = str(path)
            except Exception as e:  # noqa: BLE001 - the reason goes to the user
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                # An MP4 whose index was never written does not play: free its space.
                sink.tmp.unlink(missing_ok=True)
                errors.append(f"the video could not be finalized ({reason}) and was removed")
        try:
            for p in log.close():
                res.outputs[p.suffix.lstrip(".")] = str(p)
        except OSError as e:
            errors.append(f"the log could not be finalized ({e.strerror or e})")
        if errors:
            res.status, res.message = "failed", "; ".join(errors)


class GracefulStop:
    """Within `with`: the first Ctrl-C or SIGTERM sets `event` (the pipeline then finalizes
    its outputs and stops); a second Ctrl-C raises KeyboardInterrupt. `signum` is the first
    signal received. Only installs handlers in the main thread."""

    def __init__(self, message: str = "stopping: finalizing the outputs (Ctrl-C again to abort)"):
        self.event = threading.Event()
        self.signum: int | None = None
        self.message = message
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.event.is_set():
            self.signum = signum
            print(f"\n{self.message}", file=sys.stderr, flush=True)
        self.event.set()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def write_summary(results: list[InputResult], path: Path, extra: dict) -> None:
    """summary.json: every input's result plus run-wide figures, written atomically."""
    data = dict(extra)
    data["inputs"] = [{**asdict(r), "fps": round(r.fps, 2)} for r in results]
    atomic_write_text(path, json.dumps(data, indent=2))


def check_output_dir(out: Path) -> None:
    """EngineError unless `out` is (or can be made) a folder we can write in."""
    if out.exists() and not out.is_dir():
        raise EngineError(f"output folder {out} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EngineError(f"cannot write in the output folder {out}: {e.strerror or e}") from None

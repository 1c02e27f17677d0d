"""The `video` command of main.py: inputs in, annotated videos and detection logs out.

Over 400 lines on purpose: the command's parser, input probing, progress bars, summary
and signal handling are one command's wiring; the pipeline itself is engine.video.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from engine.commands.args import positive_int, seconds, unit_interval
from engine.runtime.detector import BACKENDS
from engine.video.writers import CODECS, X264_PRESETS

DEFAULT_OUTPUT = Path("runs/video")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="detect in video files, folders, webcams or streams; write annotated videos "
        "and detection logs",
        description="Run a detector over videos and write, per input, an annotated video "
        "(same size, frame rate and frame count) and a JSON Lines log of every detection. "
        "Decoding, inference and encoding run in parallel; files lose no frame, live "
        "sources always process the newest frame. Ctrl-C or SIGTERM stops cleanly: what was "
        "processed is finalized (playable video, complete log).",
        epilog="Inputs: video files, folders (searched recursively for video files), globs "
        "('clips/**/*.mp4', quoted), a webcam index (0) or a stream URL (rtsp://, http://; "
        "credentials in it are never printed). Outputs: OUTPUT/NAME.mp4, NAME.jsonl (one "
        "line per processed frame: frame, time, detections with box in pixels, score, "
        "class_id, class), NAME.csv with --csv, and summary.json for the run. Exit code: 0 "
        "when every input was processed completely, 1 when any failed (the others are still "
        "processed), 130/143 after Ctrl-C/SIGTERM.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, globs, 0, URLs")
    add_options(p, DEFAULT_OUTPUT)
    p.set_defaults(func=cmd_video)


def add_options(p: argparse.ArgumentParser, default_output: Path) -> None:
    """The options `video` and `detect` share."""
    p.add_argument(
        "-m",
        "--model",
        default=None,
        help=".onnx (from `main.py export`), TensorRT engine, .safetensors weights, or the "
        "name of a checkpoint from `main.py weights get` (default: the shipped "
        "SSD300-MobileNetV2 for the 20 VOC classes, assets/models)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=default_output,
        help=f"output folder (default {default_output}); files of a searched folder keep "
        "their sub-folders; existing outputs are replaced, inputs never",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *BACKENDS],
        help="auto: TensorRT when installed with a GPU, else ONNX Runtime (weights files "
        "are exported to ONNX once and cached); torch runs weights files in PyTorch",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--score-threshold",
        "--conf",
        type=unit_interval,
        default=None,
        help="keep detections at least this confident (default: the model's, 0.3 for "
        "exports with the defaults)",
    )
    p.add_argument(
        "--iou-threshold",
        "--iou",
        type=unit_interval,
        default=None,
        help="NMS IoU (default: the model's, 0.45); fixed inside an ONNX or engine, so it "
        "applies to weights files",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names or ids to keep (e.g. person,car); default all",
    )
    p.add_argument(
        "--every",
        type=positive_int,
        default=1,
        metavar="N",
        help="run the detector on every Nth frame; the frames between show its last "
        "detections and are not logged (default 1: every frame)",
    )
    p.add_argument(
        "--start", type=seconds, default=0.0, help="start time in a file: seconds or MM:SS"
    )
    p.add_argument(
        "--end",
        type=seconds,
        default=None,
        help="end time in a file, or how long to record a live source (seconds or MM:SS)",
    )
    p.add_argument("--no-video", action="store_true", help="write the logs only")
    p.add_argument("--csv", action="store_true", help="also write NAME.csv, a row per detection")
    p.add_argument(
        "--codec",
        default="auto",
        choices=list(CODECS),
        help="auto: H.264 MP4 (browser-playable), on a Jetson's hardware encoder where it has "
        "one, else x264 through PyAV, else mp4v; h264: x264; nvenc: NVIDIA's hardware "
        "encoder (Jetson, or a desktop GPU through PyAV); mjpg writes AVI",
    )
    p.add_argument(
        "--preset",
        default="ultrafast",
        choices=list(X264_PRESETS),
        help="H.264 speed/size trade-off (default ultrafast: least CPU, files about twice "
        "the size of veryfast's at the same quality)",
    )
    p.add_argument(
        "--no-hw-decode",
        action="store_true",
        help="decode files with FFmpeg on the CPU even on a Jetson (default there: NVDEC for "
        "H.264/H.265 through GStreamer)",
    )
    p.add_argument("--show-fps", action="store_true", help="draw the processing FPS")
    p.add_argument("--show-frame", action="store_true", help="draw the frame number")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they need a terminal)"
    )


def open_model(args: argparse.Namespace):
    """A Detector for --model/--backend/--device honouring the thresholds: a weights file is
    exported (cached) with them for ONNX Runtime or TensorRT, or run by PyTorch with them."""
    from engine.runtime.detector import EngineError, available_backends, open_detector
    from engine.runtime.models import resolve_model

    model = args.model = resolve_model(args.model)
    score, iou = args.score_threshold, args.iou_threshold
    if model.suffix == ".safetensors":
        backend = args.backend
        if backend == "auto":
            found = available_backends()
            if "tensorrt" in found and args.device != "cpu":
                backend = "tensorrt"
            else:
                backend = "onnxruntime" if "onnxruntime" in found else "torch"
        options = {}
        if score is not None:
            options["score_threshold"] = score
        if iou is not None:
            options["iou_threshold"] = iou
        if backend == "torch":
            return open_detector(model, "torch", args.device, **options)
        try:
            from engine.export.onnx_export import export_cached
        except ImportError as e:
            raise EngineError(
                f"{model}: exporting a weights file needs PyTorch ({e}); export it on a "
                "machine with PyTorch (`main.py export`) and pass the .onnx"
            ) from None
        return open_detector(export_cached(model, **options), backend, args.device)
    det = open_detector(model, args.backend, args.device)
    fixed = det.info
    if iou is not None and abs(iou - fixed.iou_threshold) > 1e-6:
        det.close()
        raise EngineError(
            f"{model} does NMS with IoU {fixed.iou_threshold:g} inside the graph; re-export "
            f"with `main.py export WEIGHTS --iou-threshold {iou:g}` or pass the weights file"
        )
    if score is not None and score < fixed.score_threshold - 1e-6:
        det.close()
        raise EngineError(
            f"{model} keeps only scores >= {fixed.score_threshold:g}; re-export with "
            f"`main.py export WEIGHTS --score-threshold {score:g}` or pass the weights file"
        )
    return det


def parse_classes(text: str | None, class_names: list[str]) -> list[int] | None:
    """Class ids (1-based, 0 is background) from 'person,car' or '15,7'."""
    from engine.runtime.detector import EngineError

    if not text:
        return None
    lookup = {n.lower(): i + 1 for i, n in enumerate(class_names)}
    ids = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item.isdigit() and 1 <= int(item) <= len(class_names):
            ids.append(int(item))
        elif item.lower() in lookup:
            ids.append(lookup[item.lower()])
        else:
            shown = ", ".join(class_names[:30]) + (" ..." if len(class_names) > 30 else "")
            raise EngineError(f"unknown class {item!r}; the model's classes: {shown}")
    return sorted(set(ids))


def _probe_total(sources, opts) -> int:
    """Frames the file inputs will give (for the overall progress bar); 0 if unknown."""
    from engine.runtime.detector import EngineError
    from engine.video.files import FileReader
    from engine.video.pipeline import frame_range

    total = 0
    for s in sources:
        if s.live:
            return 0
        if s.kind == "image":
            total += 1
            continue
        try:
            reader = FileReader(s.target)
        except EngineError:
            continue  # reported when its turn comes
        start, end = frame_range(reader.props, opts.start, opts.end)
        reader.release()
        total += max(0, (end or 0) - start)
    return total


class _Bars:
    """tqdm bars: one per input (frames, FPS, ETA) and an overall one for several inputs."""

    def __init__(self, n_inputs: int, total: int) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.overall = None
        if n_inputs > 1:
            self.overall = tqdm(
                total=total or None, desc="all inputs", unit="frame", position=0, leave=True
            )

    def __call__(self, res, total: int):
        bar = self.tqdm(
            total=total or None,
            desc=Path(res.source).name[:40],
            unit="frame",
            position=1 if self.overall is not None else 0,
            leave=False,
        )
        overall = self.overall

        class Pair:
            def update(self, n: int) -> None:
                bar.update(n)
                if overall is not None:
                    overall.update(n)

            def close(self) -> None:
                bar.close()

        return Pair()

    def step(self) -> None:
        """One still image done (it has no bar of its own)."""
        if self.overall is not None:
            self.overall.update(1)

    def write(self, text: str) -> None:
        self.tqdm.write(text)

    def close(self) -> None:
        if self.overall is not None:
            self.overall.close()


def _found(res) -> str:
    """'7 detections (person 5, car 2)': the five most frequent classes."""
    dets = sum(res.detections.values())
    top = ", ".join(f"{k} {v}" for k, v in list(res.detections.items())[:5])
    more = " ..." if len(res.detections) > 5 else ""
    return f"{dets} detections" + (f" ({top}{more})" if dets else "")


def _describe(res) -> str:
    parts = [f"{res.frames} frames"]
    if res.inferred != res.frames:
        parts.append(f"{res.inferred} inferred")
    if res.dropped:
        parts.append(f"{res.dropped} dropped")
    parts += [_found(res), f"{res.fps:.1f} FPS"]
    return ", ".join(parts)


def _kind(src) -> str:
    return "image" if src.kind == "image" else "video"


def _describe_image(res) -> str:
    return f"{_found(res)} in {res.seconds * 1000:.0f} ms"


def format_summary(results, seconds: float, out_dir: Path) -> list[str]:
    from collections import Counter

    ok = sum(r.status == "ok" for r in results)
    frames = sum(r.frames for r in results)
    images = sum(r.frames for r in results if r.kind == "image")
    if not images:
        counted = f"{frames} frames"
    elif images == frames:
        counted = f"{images} images"
    else:
        counted = f"{images} images and {frames - images} video frames"
    lines = [
        f"summary: {len(results)} input{'s' * (len(results) != 1)}, {ok} complete; "
        f"{counted} in {seconds:.1f} s ({frames / seconds if seconds else 0:.1f} "
        f"{'per second' if images else 'FPS'} overall, model loading excluded)"
    ]
    counts: Counter = Counter()
    for r in results:
        counts.update(r.detections)
    if counts:
        lines.append("detections: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    weights = [(r.stage_ms, r.frames) for r in results if r.frames and r.stage_ms]
    if weights:
        total = sum(w for _, w in weights)
        from engine.video.pipeline import STAGES

        avg = {
            k: sum(s.get(k, 0.0) * w for s, w in weights) / total
            for k in STAGES
            if any(k in s for s, _ in weights)
        }
        lines.append(
            "ms per frame by stage (the stages overlap): "
            + "  ".join(f"{k} {v:.2f}" for k, v in avg.items())
        )
    bad = [r for r in results if r.status != "ok"]
    for r in bad:
        lines.append(f"  {r.status}: {r.source}: {r.message}")
    lines.append(f"outputs in {out_dir} (summary.json lists them)")
    return lines


def cmd_video(args: argparse.Namespace) -> int:
    return run_inputs(args, images=False)


def run_inputs(args: argparse.Namespace, images: bool) -> int:
    """`video` (images=False) and `detect` (images=True: still images are inputs too)."""
    from engine.runtime.detector import EngineError
    from engine.video.filters import DetectionFilter
    from engine.video.images import ImageRun
    from engine.video.pipeline import InputResult, VideoOptions, VideoProcessor, output_paths
    from engine.video.sources import resolve_inputs
    from engine.video.writers import resolve_codec

    if args.end is not None and args.end <= args.start:
        raise EngineError(f"--end ({args.end:g} s) must be after --start ({args.start:g} s)")
    sources, problems = resolve_inputs(args.inputs, exclude=args.output, images=images)
    for prob in problems:
        print(f"error: {prob.display}: {prob.message}", file=sys.stderr)
    if not sources:
        raise EngineError("no input to process")
    out_dir: Path = args.output
    check_output_dir(out_dir)
    videos = [s for s in sources if s.kind != "image"]
    codec, note = (None, None) if args.no_video or not videos else resolve_codec(args.codec)
    if note:
        print(f"note: {note}")
    det = open_model(args)
    with det:
        opts = VideoOptions(
            output_dir=out_dir,
            filter=DetectionFilter(
                score=args.score_threshold or 0.0,
                classes=_as_tuple(parse_classes(args.classes, det.class_names)),
            ),
            every=args.every,
            start=args.start,
            end=args.end,
            write_video=not args.no_video,
            csv=args.csv,
            codec=codec or "mp4v",
            preset=args.preset,
            show_fps=args.show_fps,
            show_frame=args.show_frame,
            hw_decode=not args.no_hw_decode,
        )
        print(f"model {args.model} on {det.describe()}; {len(sources)} input(s) -> {out_dir}")
        plans = output_paths(sources, out_dir, opts)
        pictures = ImageRun(
            det,
            out_dir,
            opts.filter,
            write_images=not args.no_video,
            save_txt=getattr(args, "save_txt", False),
            save_conf=getattr(args, "save_conf", False),
            coco_json=getattr(args, "coco_json", False),
        )
        bars = None
        if not args.no_progress and sys.stderr.isatty():
            bars = _Bars(len(sources), _probe_total(sources, opts))
        say = bars.write if bars else print
        results: list[InputResult] = []
        t0 = time.perf_counter()
        with GracefulStop() as stopper:
            proc = VideoProcessor(det, opts, stopper.event, bars)
            try:
                for i, (src, plan) in enumerate(zip(sources, plans), 1):
                    if stopper.event.is_set():
                        results.append(
                            InputResult(src.display, "skipped", "not started", kind=_kind(src))
                        )
                        continue
                    if isinstance(plan, str):
                        res = InputResult(src.display, "failed", plan, kind=_kind(src))
                    elif src.kind == "image":
                        res = pictures.process(src, plan)
                        if bars:
                            bars.step()
                    else:
                        res = proc.process(src, plan)
                    results.append(res)
                    head = f"[{i}/{len(sources)}] {src.display}:"
                    if res.frames:
                        outs = ", ".join(res.outputs.values())
                        what = _describe_image(res) if src.kind == "image" else _describe(res)
                        say(f"{head} {what}" + (f" -> {outs}" if outs else ""))
                    for n in res.notes:
                        say(f"{head} note: {n}")
                    if res.status != "ok":
                        say(f"{head} {res.status.upper()}: {res.message}")
            finally:
                if bars:
                    bars.close()
                run_outputs = pictures.close()
        seconds = time.perf_counter() - t0
        for prob in problems:
            results.append(InputResult(prob.display, "failed", prob.message))
        write_summary(
            results,
            out_dir / "summary.json",
            {
                "model": str(args.model),
                "backend": det.describe(),
                "seconds": round(seconds, 3),
                "outputs": run_outputs,
                "options": {
                    "score_threshold": args.score_threshold,
                    "classes": _as_list(opts.filter.classes),
                    "every": opts.every,
                    "start": opts.start,
                    "end": opts.end,
                    "codec": codec,
                    "preset": args.preset if codec == "h264" else None,
                },
            },
        )
    for line in format_summary(results, seconds, out_dir):
        print(line)
    if stopper.signum is not None:
        return stopper.exit_code
    return 0 if all(r.status == "ok" for r in results) else 1


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


def _as_tuple(ids: list[int] | None) -> tuple[int, ...] | None:
    return None if ids is None else tuple(ids)


def _as_list(ids: tuple[int, ...] | None) -> list[int] | None:
    return None if ids is None else list(ids)


def write_summary(results: list, path: Path, extra: dict) -> None:
    """summary.json: every input's result (InputResult) plus run-wide figures, written
    atomically."""
    from training.fileio import atomic_write_text

    data = dict(extra)
    data["inputs"] = [{**asdict(r), "fps": round(r.fps, 2)} for r in results]
    atomic_write_text(path, json.dumps(data, indent=2))


def check_output_dir(out: Path) -> None:
    """EngineError unless `out` is (or can be made) a folder we can write in."""
    from engine.runtime.detector import EngineError

    if out.exists() and not out.is_dir():
        raise EngineError(f"output folder {out} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EngineError(f"cannot write in the output folder {out}: {e.strerror or e}") from None

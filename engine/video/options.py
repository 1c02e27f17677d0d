"""What one run of the frame pipeline asks for and what it reports: the options, each
input's result, the packet a viewer gets per frame, and the output names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.runtime.detector import Detections
from engine.video.filters import DetectionFilter
from engine.video.sources import Source, mask_credentials
from engine.video.writers import video_extension


@dataclass
class VideoOptions:
    """What to do with each input (the command's options).

    filter: which detections are drawn and logged (score, classes; the GUI keeps all and
    filters at display). every: run the detector on every Nth frame.
    start / end: seconds into a file (for live sources, end is the capture duration).
    write_video / csv: which outputs besides the JSONL log (a viewer passes no output
    paths at all). codec: a resolved codec (writers.resolve_codec); preset: x264's speed
    preset for H.264. show_fps / show_frame: draw the pipeline FPS / frame number.
    hw_decode: let a Jetson decode H.264/H.265 files on NVDEC (engine.video.files).
    """

    output_dir: Path = Path("runs/video")
    filter: DetectionFilter = field(default_factory=DetectionFilter)
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


def error_reason(e: BaseException) -> str:
    """What went wrong, in one line: an OSError's reason ("No space left on device"), else
    the first line of the message, else the exception's type."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def failure_message(e: BaseException) -> str:
    """An input's failure message, credentials masked: an OSError's reason and file
    ("Permission denied (out/a.mp4)"), else "TypeName: first line of the message"."""
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        return mask_credentials(f"{e.strerror or e}{where}")
    text = str(e).strip().splitlines()
    return mask_credentials(f"{type(e).__name__}: {text[0]}" if text else type(e).__name__)


@dataclass
class FramePacket:
    """One processed frame, as a viewer gets it: the BGR frame (full resolution, not drawn
    on), all the detections the model gave (the viewer filters), its index and time, and
    the live figures (capture_fps, inference_fps, latency_ms, dropped, position, total)."""

    frame: np.ndarray
    dets: Detections
    index: int
    seconds: float
    stats: dict = field(default_factory=dict)


@dataclass
class InputResult:
    """What happened to one input. status: ok; incomplete (the file stopped decoding before
    its announced end: what decoded is processed); failed (see message; outputs written up
    to the failure are kept); interrupted (stopped by the user, outputs finalized); skipped
    (not started because of a stop)."""

    source: str
    status: str = "ok"
    message: str = ""
    kind: str = "video"  # or "image" (`detect`)
    frames: int = 0  # frames written (video frames; log entries when every == 1)
    inferred: int = 0  # frames the detector ran on (= log entries)
    dropped: int = 0  # live: frames replaced by newer ones; real-time files: passed over
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
    inputs = {Path(s.target).resolve() for s in sources if s.kind in ("file", "image")}
    used: set[Path] = set()
    if any(s.kind == "image" for s in sources):
        used.add(out_dir / "images")  # the run's images.jsonl: a video named images gets -2
    plans: list[dict[str, Path] | str] = []
    for src in sources:
        base = out_dir / src.subdir / src.name
        n = 1
        while (key := base.with_name(base.name + (f"-{n}" if n > 1 else ""))) in used:
            n += 1
        used.add(key)
        if src.kind == "image":  # its annotated copy; its line goes to the run's images.jsonl
            plan = {"image": key.with_name(key.name + Path(str(src.target)).suffix.lower())}
            clash = [p for p in plan.values() if p.resolve() in inputs]
            plans.append(_clash_message(clash[0]) if clash else plan)
            continue
        plan = {"jsonl": key.with_name(key.name + ".jsonl")}
        if opts.write_video:
            plan["video"] = key.with_name(key.name + video_extension(opts.codec))
        if opts.csv:
            plan["csv"] = key.with_name(key.name + ".csv")
        clash = [p for p in plan.values() if p.resolve() in inputs]
        plans.append(_clash_message(clash[0]) if clash else plan)
    return plans


def _clash_message(path: Path) -> str:
    return f"its output {path} would overwrite an input; choose another --output folder"


def frame_range(props, start_s: float, end_s: float | None) -> tuple[int, int | None]:
    """(first frame at or after start_s, frame index to stop before) of a file with these
    VideoProps; the stop is None when neither end_s nor the frame count is known."""
    start = int(math.ceil(start_s * props.fps - 1e-6))
    end = props.frame_count or None
    if end_s is not None:
        stop_at = int(math.ceil(end_s * props.fps - 1e-6))
        end = stop_at if end is None else min(end, stop_at)
    return start, end

"""`main.py bench`: backend-only latency and throughput, then the end-to-end path on a video
with a per-stage breakdown.

The end-to-end part is the video command's pipeline itself (engine/video/pipeline.py): decoding and
resizing, inference and mapping back, overlay, encoding and logging overlap on three threads,
and the ratio of its FPS to the backend-only FPS says what the pipeline costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.commands.args import int_in_range
from engine.runtime.detector import BACKENDS, EngineError

if TYPE_CHECKING:
    import numpy as np

# The clip `bench` times end to end when --video is not given (the repository's shared data).
SHARED_VIDEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos" / "vtest.avi"


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def backend_only(det, frame: np.ndarray, runs: int, warmup: int, batch: int) -> dict:
    import numpy as np

    x = det.preprocess(frame)[None]
    for _ in range(warmup):
        det.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        det.run(x)
        times.append((time.perf_counter() - t) * 1000)
    out = {
        "p50_ms": round(_percentile(times, 50), 3),
        "p90_ms": round(_percentile(times, 90), 3),
        "p99_ms": round(_percentile(times, 99), 3),
        "fps": round(1000 / statistics.fmean(times), 2),
    }
    if batch > 1 and det.max_batch >= batch:
        xb = np.repeat(x, batch, axis=0)
        det.run(xb)
        n = max(3, runs // batch)
        t = time.perf_counter()
        for _ in range(n):
            det.run(xb)
        out[f"batch{batch}_images_per_s"] = round(n * batch / (time.perf_counter() - t), 2)
    return out


def end_to_end(det, video: Path, frames: int, codec: str = "auto") -> dict:
    """The video command's own pipeline (decode and resize, inference, overlay, encoding and
    the JSONL log on three threads) over the first `frames` frames, outputs to a temporary
    folder."""
    from engine.video.files import FileReader
    from engine.video.pipeline import VideoOptions, VideoProcessor, output_paths
    from engine.video.sources import Source
    from engine.video.writers import resolve_codec

    reader = FileReader(video)
    fps = reader.props.fps
    reader.release()
    with tempfile.TemporaryDirectory() as tmp:
        opts = VideoOptions(output_dir=Path(tmp), end=frames / fps, codec=resolve_codec(codec)[0])
        src = Source("file", str(video), str(video), Path(video).stem)
        res = VideoProcessor(det, opts).process(src, output_paths([src], Path(tmp), opts)[0])
    if res.status != "ok" or res.frames == 0:
        raise EngineError(f"{video}: {res.message or 'no frame could be decoded'}")
    frame_ms = 1000 / res.fps
    return {
        "frames": res.frames,
        "fps": round(res.fps, 2),
        "codec": res.codec,
        "stage_ms": res.stage_ms,
        "post_share_of_frame": round(res.stage_ms["post"] / frame_ms, 4),
    }


def run_bench(
    model: str | Path,
    backends: list[str],
    video: Path | None,
    frames: int = 300,
    runs: int = 100,
    warmup: int = 10,
    batch: int = 8,
    device: str = "auto",
    onnx_for_weights: Path | None = None,
    say=lambda text: None,
) -> dict:
    """Runs each backend on `model` (a .safetensors file is exported to ONNX for the non-torch
    backends, or `onnx_for_weights` is used). `say(text)` reports each step as it starts."""
    import cv2
    import numpy as np

    from engine.runtime.detector import open_detector

    model = Path(model)
    first = None
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        ok, first = cap.read()
        cap.release()
        if not ok:
            raise EngineError(f"cannot read a frame from {video}")
    if first is None:
        first = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": str(model),
        "video": str(video) if video else None,
        "backends": {},
    }
    for i, name in enumerate(backends, 1):
        say(f"[{i}/{len(backends)}] {name}: opening the model")
        path = model
        backend, options = name, {}
        if name == "torch-nchw":  # plain eager PyTorch, default memory layout
            backend, options = "torch", {"channels_last": False}
        if model.suffix == ".safetensors" and backend != "torch":
            path = onnx_for_weights
            if path is None:
                from engine.export.onnx_export import export_cached

                path = export_cached(model)
        try:
            det = open_detector(path, backend=backend, device=device, **options)
        except EngineError as e:
            results["backends"][name] = {"error": str(e)}
            continue
        with det:
            say(f"[{i}/{len(backends)}] {name}: {runs} timed runs at batch 1 and {batch}")
            r = {"device": det.describe(), "backend": backend_only(det, first, runs, warmup, batch)}
            if video is not None:
                say(f"[{i}/{len(backends)}] {name}: end to end, {frames} frames of {video.name}")
                r["end_to_end"] = end_to_end(det, video, frames)
                r["end_to_end"]["ratio_to_backend"] = round(
                    r["end_to_end"]["fps"] / r["backend"]["fps"], 3
                )
            results["backends"][name] = r
    return results


def format_table(results: dict) -> str:
    lines = [
        f"{results['date']}, {results['machine']}, model {results['model']}"
        + (f", video {results['video']}" if results["video"] else ""),
        "| backend | device | p50 ms | p90 ms | p99 ms | FPS (batch 1) | batched img/s "
        "| end-to-end FPS | e2e / backend | decode | resize | infer | post | draw | encode "
        "(ms/frame) |",
        "|" + "---|" * 15,
    ]
    for name, r in results["backends"].items():
        if "error" in r:
            lines.append(f"| {name} | unavailable: {r['error']} |" + " |" * 13)
            continue
        b = r["backend"]
        batched = next((f"{v}" for k, v in b.items() if k.startswith("batch")), "-")
        e = r.get("end_to_end")
        if e:
            s = e["stage_ms"]
            e2e = (
                f"{e['fps']} | {e['ratio_to_backend']} | {s.get('decode', '-')} | "
                f"{s.get('resize', '-')} | {s.get('infer', '-')} | {s.get('post', '-')} | "
                f"{s.get('draw', '-')} | {s.get('encode', '-')}"
            )
        else:
            e2e = "- | - | - | - | - | - | - | -"
        lines.append(
            f"| {name} | {r['device']} | {b['p50_ms']} | {b['p90_ms']} | {b['p99_ms']} | "
            f"{b['fps']} | {batched} | {e2e} |"
        )
    return "\n".join(lines)


def save_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure backend latency and end-to-end FPS on a video",
        description="For each backend: latency p50/p90/p99 and FPS at batch 1 (and batched "
        "throughput where the backend takes batches), then the end-to-end path on a video "
        "(decode, resize, infer, post-process, draw) with per-stage times and the ratio of "
        "end-to-end to backend-only FPS.",
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help=".safetensors (exported as needed), .onnx or engine, or a `main.py weights` name "
        "(default: the shipped SSD300-MobileNetV2 VOC model)",
    )
    p.add_argument(
        "--backends",
        nargs="+",
        default=None,
        choices=[*BACKENDS, "torch-nchw"],
        help="default: every backend available for the model; torch-nchw is PyTorch eager in "
        "its default memory layout (torch runs channels-last)",
    )
    p.add_argument(
        "--video",
        type=Path,
        default=None,
        help=f"video for the end-to-end part (default: {SHARED_VIDEO} if present)",
    )
    p.add_argument(
        "--frames", type=int_in_range(1), default=300, help="end-to-end frames (default 300)"
    )
    p.add_argument(
        "--runs", type=int_in_range(1), default=100, help="timed backend runs (default 100)"
    )
    p.add_argument(
        "--batch", type=int_in_range(1), default=8, help="batched throughput size (default 8)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.runtime.detector import available_backends
    from engine.runtime.models import resolve_model

    args.model = resolve_model(args.model)

    video = (
        args.video if args.video is not None else (SHARED_VIDEO if SHARED_VIDEO.is_file() else None)
    )
    if video is not None and not video.is_file():
        from engine.runtime.detector import EngineError

        raise EngineError(f"video not found: {video}")
    backends = args.backends
    if backends is None:
        backends = [
            b for b in available_backends() if b != "torch" or args.model.suffix == ".safetensors"
        ]
    import sys

    def say(text: str) -> None:  # progress on stderr: the table is the output
        print(f"bench {text}", file=sys.stderr, flush=True)

    results = run_bench(
        args.model,
        backends,
        video,
        args.frames,
        args.runs,
        batch=args.batch,
        device=args.device,
        say=say,
    )
    print(format_table(results))
    if all("error" in r for r in results["backends"].values()):
        from engine.runtime.detector import EngineError

        raise EngineError("no backend could run the model (see the table)")
    if args.json:
        save_json(results, args.json)
        print(f"results: {args.json}")
    return 0

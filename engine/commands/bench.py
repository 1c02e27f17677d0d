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


def runs_on(model: Path, backend: str) -> bool:
    """Whether a backend runs this kind of model file (PyTorch runs weights; ONNX Runtime
    runs ONNX, and weights through an export; TensorRT runs ONNX, weights through an export,
    and engines)."""
    suffix = model.suffix.lower()
    if backend in ("torch", "torch-nchw"):
        return suffix == ".safetensors"
    if backend == "onnxruntime":
        return suffix in (".safetensors", ".onnx")
    return True


def merge_runs(runs: list[dict]) -> dict:
    """One result of several models' runs: rows named "MODEL backend", the first row the
    reference of the speed-up column."""
    merged = {**runs[0], "model": ", ".join(r["model"] for r in runs), "backends": {}}
    names = [Path(r["model"]).name for r in runs]
    for i, r in enumerate(runs):
        label = names[i] if names.count(names[i]) == 1 else r["model"]  # a/x.onnx, b/x.onnx
        for name, row in r["backends"].items():
            merged["backends"][f"{label} {name}"] = row
    return merged


def format_table(results: dict) -> str:
    lines = [
        f"{results['date']}, {results['machine']}, model {results['model']}"
        + (f", video {results['video']}" if results["video"] else ""),
        "| backend | device | p50 ms | p90 ms | p99 ms | FPS (batch 1) | vs first row "
        "| batched img/s | end-to-end FPS | e2e / backend | decode | resize | infer | post "
        "| draw | encode (ms/frame) |",
        "|" + "---|" * 16,
    ]
    first = next((r["backend"]["fps"] for r in results["backends"].values() if "backend" in r), 0)
    for name, r in results["backends"].items():
        if "error" in r:
            lines.append(f"| {name} | unavailable: {r['error']} |" + " |" * 14)
            continue
        b = r["backend"]
        speedup = f"{b['fps'] / first:.2f}x" if first else "-"
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
            f"{b['fps']} | {speedup} | {batched} | {e2e} |"
        )
    return "\n".join(lines)


def save_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure backend latency and end-to-end FPS on a video",
        description="For each model and backend: latency p50/p90/p99 and FPS at batch 1 (and "
        "batched throughput where the backend takes batches), then the end-to-end path on a "
        "video "
        "(decode, resize, infer, post-process, draw) with per-stage times and the ratio of "
        "end-to-end to backend-only FPS.",
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=".safetensors (exported as needed), .onnx (FP32, FP16 or INT8) or engine, or a "
        "`main.py weights` name (default: the shipped SSD300-MobileNetV2 VOC model); several "
        "are timed side by side, each on the backends that run it, with the speed-up over "
        "the first row",
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
        "--no-video", action="store_true", help="time the backends only, no end-to-end part"
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

    models = [resolve_model(m) for m in (args.models or [None])]
    video = (
        args.video if args.video is not None else (SHARED_VIDEO if SHARED_VIDEO.is_file() else None)
    )
    if args.no_video:
        video = None
    if video is not None and not video.is_file():
        raise EngineError(f"video not found: {video}")
    import sys

    def say(text: str) -> None:  # progress on stderr: the table is the output
        print(f"bench {text}", file=sys.stderr, flush=True)

    runs = []
    for model in models:
        backends = [b for b in (args.backends or available_backends()) if runs_on(model, b)]
        if not backends:
            wanted = ", ".join(args.backends or available_backends())
            say(f"{model.name}: none of the backends ({wanted}) runs it here; left out")
            continue
        if len(models) > 1:
            say(f"{model}")
        runs.append(
            run_bench(
                model,
                backends,
                video,
                args.frames,
                args.runs,
                batch=args.batch,
                device=args.device,
                say=say,
            )
        )
    if not runs:
        raise EngineError("no backend runs any of the models given")
    results = runs[0] if len(runs) == 1 else merge_runs(runs)
    print(format_table(results))
    if all("error" in r for r in results["backends"].values()):
        raise EngineError("no backend could run the model (see the table)")
    if args.json:
        save_json(results, args.json)
        print(f"results: {args.json}")
    return 0

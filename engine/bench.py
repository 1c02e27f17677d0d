"""`main.py bench`: backend-only latency and throughput, then the end-to-end path on a video
(decode, resize, infer, post-process, draw) with a per-stage breakdown.

The end-to-end loop overlaps decoding and resizing (a reader thread; OpenCV releases the
GIL) with inference, post-processing and drawing, as the video command will.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import statistics
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from engine.overlay import draw_detections
from engine.runtime import Detector, EngineError, open_detector


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def backend_only(det, frame: np.ndarray, runs: int, warmup: int, batch: int) -> dict:
    x = det.preprocess(frame)[None]
    for _ in range(warmup):
        det._infer(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        det._infer(x)
        times.append((time.perf_counter() - t) * 1000)
    out = {
        "p50_ms": round(_percentile(times, 50), 3),
        "p90_ms": round(_percentile(times, 90), 3),
        "p99_ms": round(_percentile(times, 99), 3),
        "fps": round(1000 / statistics.fmean(times), 2),
    }
    if batch > 1 and det.max_batch >= batch:
        xb = np.repeat(x, batch, axis=0)
        det._infer(xb)
        n = max(3, runs // batch)
        t = time.perf_counter()
        for _ in range(n):
            det._infer(xb)
        out[f"batch{batch}_images_per_s"] = round(n * batch / (time.perf_counter() - t), 2)
    return out


def end_to_end(det, video: Path, frames: int) -> dict:
    """Reader thread: decode + resize into a bounded queue; this thread: infer, post, draw."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise EngineError(f"cannot open video {video}")
    q: queue.Queue = queue.Queue(maxsize=4)
    stage = {"decode": [], "resize": [], "infer": [], "post": [], "draw": []}

    def reader():
        for _ in range(frames):
            t0 = time.perf_counter()
            ok, frame = cap.read()
            t1 = time.perf_counter()
            if not ok:
                break
            # A private resized copy: a backend's own preprocess() may write into its one
            # input buffer (TensorRT's pinned memory), which frames in the queue cannot share.
            x = Detector.preprocess(det, frame)
            t2 = time.perf_counter()
            stage["decode"].append((t1 - t0) * 1000)
            stage["resize"].append((t2 - t1) * 1000)
            q.put((frame, x))
        q.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    start = time.perf_counter()
    thread.start()
    n = 0
    while (item := q.get()) is not None:
        frame, x = item
        t0 = time.perf_counter()
        num, boxes, scores, classes = det._infer(x[None])
        t1 = time.perf_counter()
        d = det.to_detections(num[0], boxes[0], scores[0], classes[0], frame.shape)
        t2 = time.perf_counter()
        draw_detections(frame, d)
        t3 = time.perf_counter()
        stage["infer"].append((t1 - t0) * 1000)
        stage["post"].append((t2 - t1) * 1000)
        stage["draw"].append((t3 - t2) * 1000)
        n += 1
    wall = time.perf_counter() - start
    thread.join()
    cap.release()
    if n == 0:
        raise EngineError(f"{video}: no frame could be decoded")
    means = {k: round(statistics.fmean(v), 3) for k, v in stage.items() if v}
    frame_ms = 1000 * wall / n
    return {
        "frames": n,
        "fps": round(n / wall, 2),
        "stage_ms": means,
        "post_share_of_frame": round(means["post"] / frame_ms, 4),
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
) -> dict:
    """Runs each backend on `model` (a .safetensors file is exported to ONNX for the non-torch
    backends, or `onnx_for_weights` is used)."""
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
    for name in backends:
        path = model
        backend, options = name, {}
        if name == "torch-nchw":  # plain eager PyTorch, default memory layout
            backend, options = "torch", {"channels_last": False}
        if model.suffix == ".safetensors" and backend != "torch":
            path = onnx_for_weights or _export_cached(model)
        try:
            det = open_detector(path, backend=backend, device=device, **options)
        except EngineError as e:
            results["backends"][name] = {"error": str(e)}
            continue
        with det:
            r = {"device": det.describe(), "backend": backend_only(det, first, runs, warmup, batch)}
            if video is not None:
                r["end_to_end"] = end_to_end(det, video, frames)
                r["end_to_end"]["ratio_to_backend"] = round(
                    r["end_to_end"]["fps"] / r["backend"]["fps"], 3
                )
            results["backends"][name] = r
    return results


def _export_cached(weights: Path) -> Path:
    from engine.export import export_weights
    from engine.tensorrt_backend import file_sha256

    cache = Path.home() / ".cache" / "ssd300" / "onnx"
    out = cache / f"{weights.stem}_{file_sha256(weights)[:12]}.onnx"
    if not out.is_file():
        print(f"exporting {weights} to {out}")
        export_weights(weights, out)
    return out


def format_table(results: dict) -> str:
    lines = [
        f"{results['date']}, {results['machine']}, model {results['model']}"
        + (f", video {results['video']}" if results["video"] else ""),
        "| backend | device | p50 ms | p90 ms | p99 ms | FPS (batch 1) | batched img/s "
        "| end-to-end FPS | e2e / backend | decode | resize | infer | post | draw (ms/frame) |",
        "|" + "---|" * 14,
    ]
    for name, r in results["backends"].items():
        if "error" in r:
            lines.append(f"| {name} | unavailable: {r['error']} |" + " |" * 12)
            continue
        b = r["backend"]
        batched = next((f"{v}" for k, v in b.items() if k.startswith("batch")), "-")
        e = r.get("end_to_end")
        if e:
            s = e["stage_ms"]
            e2e = (
                f"{e['fps']} | {e['ratio_to_backend']} | {s.get('decode', '-')} | "
                f"{s.get('resize', '-')} | {s.get('infer', '-')} | {s.get('post', '-')} | "
                f"{s.get('draw', '-')}"
            )
        else:
            e2e = "- | - | - | - | - | - | -"
        lines.append(
            f"| {name} | {r['device']} | {b['p50_ms']} | {b['p90_ms']} | {b['p99_ms']} | "
            f"{b['fps']} | {batched} | {e2e} |"
        )
    return "\n".join(lines)


def save_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))

"""FP32 ONNX vs INT8 ONNX vs PyTorch eager, interleaved: a few runs of each model in turn,
for several rounds, so a noisy neighbour on a shared machine slows all of them alike and the
ratios hold.
`main.py bench A B C` times the models one after another, which on a shared 2-core machine
moved the FP32/INT8 ratio from 1.21x to 0.97x between two runs (docs/benchmarks.md).

    .venv/bin/python scripts/bench_int8.py WEIGHTS.safetensors INT8.onnx [--rounds 8]

The weights are timed with PyTorch (NCHW and channels-last) and, exported, with ONNX Runtime;
the INT8 ONNX with ONNX Runtime. Batch 1, a real frame (vtest.avi's first) when present.
Prints a Markdown table: p50 ms and the speed-up of each over FP32 ONNX Runtime and over
PyTorch eager (NCHW).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import cv2
    import numpy as np

    from engine.commands.bench import SHARED_VIDEO
    from engine.export.onnx_export import export_cached
    from engine.runtime.detector import open_detector

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help=".safetensors weights (the FP32 model)")
    p.add_argument("int8", type=Path, nargs="+", help="INT8 ONNX exports of the same weights")
    p.add_argument("--rounds", type=int, default=8, help="rounds over the models (default 8)")
    p.add_argument("--block", type=int, default=5, help="timed runs per model and round (5)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    args = p.parse_args(argv)

    frame = None
    if SHARED_VIDEO.is_file():
        cap = cv2.VideoCapture(str(SHARED_VIDEO))
        ok, frame = cap.read()
        cap.release()
    if frame is None:
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    fp32 = export_cached(args.weights)
    ort = {"threads": args.threads} if args.threads else {}
    models = {
        "PyTorch eager (NCHW)": open_detector(args.weights, "torch", "cpu", channels_last=False),
        "PyTorch eager (channels-last)": open_detector(args.weights, "torch", "cpu"),
        "FP32 ONNX Runtime": open_detector(fp32, "onnxruntime", "cpu", **ort),
    }
    for path in args.int8:
        models[f"INT8 ONNX Runtime ({path.name})"] = open_detector(
            path, "onnxruntime", "cpu", **ort
        )
    batches = {name: det.preprocess(frame)[None] for name, det in models.items()}
    for name, det in models.items():  # warm-up
        for _ in range(3):
            det.run(batches[name])
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, det in models.items():
            # a short block per model, its first run untimed: the runtimes' thread pools
            # spin after a run (OpenMP, ONNX Runtime), which would slow the next one's start
            det.run(batches[name])
            for _ in range(args.block):
                t = time.perf_counter()
                det.run(batches[name])
                times[name].append((time.perf_counter() - t) * 1000)
    p50 = {name: statistics.median(t) for name, t in times.items()}
    base_ort, base_eager = p50["FP32 ONNX Runtime"], p50["PyTorch eager (NCHW)"]
    n = args.rounds * args.block
    print(f"{args.weights.name}, batch 1, {n} runs each in {args.rounds} interleaved rounds")
    print("| model | p50 ms | vs FP32 ONNX Runtime | vs PyTorch eager (NCHW) |")
    print("|---|---|---|---|")
    for name, ms in p50.items():
        print(f"| {name} | {ms:.1f} | {base_ort / ms:.2f}x | {base_eager / ms:.2f}x |")
    for det in models.values():
        det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side latency of two models on one image: `detect()` (pre-processing, inference,
post-processing) alternated between them, so that both see the same machine load.

    .venv/bin/python scripts/compare_detect_speed.py OLD.onnx NEW.onnx \
        [--image ../shared/data/images/darknet/dog.jpg] [--runs 100] [--backend onnxruntime]

Prints each model's median and the ratio. Report the ratio: on a shared machine the
absolute times move with the load, the ratio much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import cv2

    from engine.runtime.detector import open_detector

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="first model (.onnx, weights file, engine)")
    p.add_argument("b", help="second model")
    p.add_argument("--image", default=str(ROOT.parent / "shared/data/images/darknet/dog.jpg"))
    p.add_argument("--runs", type=int, default=100, help="timed runs per model (default 100)")
    p.add_argument("--backend", default="onnxruntime")
    args = p.parse_args()
    frame = cv2.imread(args.image)
    if frame is None:
        print(f"error: cannot read the image {args.image}", file=sys.stderr)
        return 1
    with open_detector(args.a, args.backend) as da, open_detector(args.b, args.backend) as db:
        for d in (da, db):
            for _ in range(5):
                d.detect(frame)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(args.runs):
            for d, t in zip((da, db), times):
                start = time.perf_counter()
                d.detect(frame)
                t.append(time.perf_counter() - start)
    ma, mb = (statistics.median(t) * 1e3 for t in times)
    print(
        f"detect() median over {args.runs} alternating runs: {args.a} {ma:.1f} ms, "
        f"{args.b} {mb:.1f} ms; ratio {ma / mb:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of drawing detections (boxes plus labels placed so that none covers another)
against the drawing of 8c938c8, which placed every label above its box.

    .venv/bin/python scripts/bench_overlay.py [--old PATH_TO_OLD_overlay.py]

Random boxes on a 768x576 frame (vtest.avi's size); 10, 30 and 100 detections.
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runtime.detector import Detections  # noqa: E402
from engine.video.overlay import draw_detections, place_labels  # noqa: E402


def ms(f, *args, k=20) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        f(*args)
    return (time.perf_counter() - t0) / k * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, help="an older engine/video/overlay.py to compare")
    args = ap.parse_args()
    old = None
    if args.old:
        spec = importlib.util.spec_from_file_location("old_overlay", args.old)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    rng = np.random.default_rng(0)
    frame = np.zeros((576, 768, 3), np.uint8)
    print("| detections | draw ms | place_labels ms |" + (" old draw ms |" if old else ""))
    for n in (10, 30, 100):
        xy, wh = rng.uniform(0, 600, (n, 2)), rng.uniform(20, 200, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = np.sort(rng.uniform(0.2, 1, n))[::-1].astype(np.float32)
        dets = Detections(boxes, scores, np.full(n, 15, np.int32), ["person"] * n)
        row = [
            ms(lambda d: draw_detections(frame.copy(), d), dets),
            ms(place_labels, boxes, [(80.0, 18.0)] * n, 768, 576),
        ]
        if old:
            row.append(ms(lambda d: old.draw_detections(frame.copy(), d), dets))
        print(f"| {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main()

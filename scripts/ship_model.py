"""Makes the shipped default model from a trained weights file:

    .venv/bin/python scripts/ship_model.py runs/default_voc/last.safetensors [--score 0.3]

writes assets/models/ssd300_mobilenet_v2_voc.safetensors (the same self-describing format,
tensors stored in FP16 to halve the file; they load into the FP32 model unchanged in
meaning) and its ONNX export (FP32 compute, pre-processing and NMS inside, the given score
threshold and IoU 0.45). tests/engine/test_default_model.py checks that both agree.
Evaluate the shipped file with `main.py eval` (assets/models/README.md has the command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.export.onnx_export import export_onnx
    from engine.runtime.models import DEFAULT_ONNX, DEFAULT_WEIGHTS
    from training.fileio import atomic_write
    from training.weights import load_detector

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--score", type=float, default=0.3, help="the ONNX's score threshold")
    args = p.parse_args()

    with safe_open(str(args.weights), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    DEFAULT_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(DEFAULT_WEIGHTS, lambda tmp: save_file(half, tmp, metadata=meta))
    model = load_detector(DEFAULT_WEIGHTS)
    export_onnx(model, DEFAULT_ONNX, score_threshold=args.score)
    size = {p: p.stat().st_size / 1e6 for p in (DEFAULT_WEIGHTS, DEFAULT_ONNX)}
    print(", ".join(f"{p} ({mb:.1f} MB)" for p, mb in size.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

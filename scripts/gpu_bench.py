"""The GPU figures of scripts/gpu_check.sh, as JSON and a Markdown table in OUT.

    python scripts/gpu_bench.py --out OUT [--quick]

On a machine where torch sees a CUDA device it measures, each part timed on its own and a
failure in one recorded without stopping the others:
  - PyTorch inference of SSD300-VGG16 and the shipped SSD300-MobileNetV2, FP32 and FP16,
    channels-last: p50 latency at batch 1 and images/s at batch 32, eager and with a CUDA
    graph (the faster is reported as "best");
  - the post-processing (decode, per-class NMS) on the GPU, per batch of 1 and of 32;
  - training images/s with AMP (batch 32, real raccoon images) for MobileNetV2 and VGG16;
  - the video pipeline end to end with the PyTorch CUDA backend against backend-only FPS.
Without a CUDA device it writes {"cuda": false, "reason": ...} and exits 0, so the script
can be checked anywhere. --quick runs fewer iterations (for trying the script itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def _sync(torch) -> None:
    torch.cuda.synchronize()


def time_inference(torch, model, batch: int, half: bool, runs: int, graph: bool) -> list[float]:
    """Seconds per forward pass of `batch` frames (uint8-range input, channels-last)."""
    dtype = torch.float16 if half else torch.float32
    x = torch.randint(0, 255, (batch, 3, 300, 300), device="cuda").to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(5):
            model(x)
        _sync(torch)
        call = lambda: model(x)  # noqa: E731
        if graph:
            g = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            with torch.cuda.graph(g):
                model(x)
            call = g.replay
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            _sync(torch)
            times.append(time.perf_counter() - t0)
    return times


def inference(torch, quick: bool) -> dict:
    from training.model import SSD
    from training.spec import make_spec
    from training.weights import load_detector

    shipped = ROOT / "assets" / "models" / "ssd300_mobilenet_v2_voc.safetensors"
    models = {
        "vgg16": lambda: SSD(make_spec("vgg16", "voc", "voc")),
        "shipped mobilenet_v2": lambda: load_detector(shipped),
    }
    runs = 20 if quick else 200
    out = {}
    for name, make in models.items():
        for precision in ("fp32", "fp16"):
            half = precision == "fp16"
            model = make().eval().cuda().to(memory_format=torch.channels_last)
            if half:
                model = model.half()
            row = {}
            for mode in ("eager", "cuda_graph"):
                try:
                    b1 = time_inference(torch, model, 1, half, runs, mode == "cuda_graph")
                    b32 = time_inference(torch, model, 32, half, runs // 4, mode == "cuda_graph")
                    row[mode] = {
                        "p50_ms_batch1": round(1000 * statistics.median(b1), 3),
                        "images_per_s_batch32": round(32 / statistics.median(b32), 1),
                    }
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    row[mode] = {"error": f"{type(e).__name__}: {e}"[:300]}
            ok = [m for m in row.values() if "error" not in m]
            if ok:
                row["best"] = {
                    "p50_ms_batch1": min(m["p50_ms_batch1"] for m in ok),
                    "images_per_s_batch32": max(m["images_per_s_batch32"] for m in ok),
                }
            out[f"{name} {precision}"] = row
            del model
            torch.cuda.empty_cache()
    return out


def postprocess(torch, quick: bool) -> dict:
    from training.model import SSD
    from training.spec import make_spec

    model = SSD(make_spec("mobilenet_v2", "voc", "voc"))
    post = model.detect_postprocessor()
    priors = model.priors.cuda()
    out = {}
    for batch in (1, 32):
        torch.manual_seed(0)
        loc = torch.randn(batch, priors.shape[0], 4, device="cuda") * 0.5
        conf = torch.randn(batch, priors.shape[0], 21, device="cuda") * 3
        for _ in range(3):
            post(loc, conf, priors)
        times = []
        for _ in range(5 if quick else 30):
            _sync(torch)
            t0 = time.perf_counter()
            post(loc, conf, priors)
            _sync(torch)
            times.append(time.perf_counter() - t0)
        out[f"batch {batch}"] = {"p50_ms": round(1000 * statistics.median(times), 3)}
    out["note"] = "random logits: every class has candidates (the worst case)"
    return out


def training(torch, quick: bool, tmp: Path) -> dict:
    from training.config import TrainConfig
    from training.train import Trainer

    raccoon = SHARED / "raccoon"
    if not raccoon.is_dir():
        return {"skipped": f"real data missing: {raccoon}"}
    images = sorted((raccoon / "images").glob("*.jpg"))[: 64 if quick else 160]
    split = tmp / "split.txt"
    split.write_text("".join(f"{p.stem}\n" for p in images))
    out = {}
    for backbone in ("mobilenet_v2", "vgg16"):
        cfg = TrainConfig(
            data=str(raccoon),
            split=str(split),
            output=str(tmp / f"train-{backbone}"),
            backbone=backbone,
            pretrained=False,
            batch_size=32,
            epochs=2,
            eval_every=0,
            lr=1e-4,  # random weights: a small step keeps the divergence guard quiet
            device="cuda",
            amp=True,
            workers=8,
        )
        try:
            summary = Trainer(cfg, quiet=True).run()
            out[backbone] = {
                "images_per_s": summary["images_per_s"],
                "data_wait_share": summary["data_wait_share"],
            }
        except Exception as e:  # noqa: BLE001
            out[backbone] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def pipeline(quick: bool) -> dict:
    from engine.commands.bench import run_bench

    shipped = ROOT / "assets" / "models" / "ssd300_mobilenet_v2_voc.safetensors"
    video = SHARED / "videos" / "vtest.avi"
    if not video.is_file():
        return {"skipped": f"real data missing: {video}"}
    res = run_bench(shipped, ["torch"], video, 100 if quick else 300, 20 if quick else 100,
                    device="cuda")  # fmt: skip
    r = res["backends"]["torch"]
    if "error" in r:
        return r
    return {
        "backend_fps": r["backend"]["fps"],
        "end_to_end_fps": r["end_to_end"]["fps"],
        "ratio": r["end_to_end"]["ratio_to_backend"],
        "stage_ms": r["end_to_end"]["stage_ms"],
    }


def markdown(data: dict) -> str:
    lines = [f"# GPU check, {data['date']}: {data.get('gpu', 'no GPU')}", ""]
    if not data["cuda"]:
        return "\n".join(lines + [f"Nothing measured: {data['reason']}", ""])
    lines += ["| model | mode | p50 ms (batch 1) | images/s (batch 32) |", "|---|---|---|---|"]
    for name, row in data["parts"].get("inference", {}).items():
        if not isinstance(row, dict):
            continue
        for mode, m in row.items():
            cells = [m.get("p50_ms_batch1", m.get("error", "")), m.get("images_per_s_batch32", "")]
            lines.append(f"| {name} | {mode} | {cells[0]} | {cells[1]} |")
    for part in ("postprocess", "training", "pipeline"):
        lines += ["", f"{part}: `{json.dumps(data['parts'].get(part))}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu.json and gpu.md")
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cuda": False, "parts": {}}
    try:
        import torch
    except ImportError as e:
        data["reason"] = f"torch cannot be imported ({e})"
    else:
        data["torch"] = torch.__version__
        if not torch.cuda.is_available():
            data["reason"] = "torch sees no CUDA device (torch.cuda.is_available() is False)"
        else:
            data["cuda"] = True
            data["gpu"] = torch.cuda.get_device_name(0)
            torch.backends.cudnn.benchmark = True
            tmp = args.out / "work"
            tmp.mkdir(exist_ok=True)
            parts = {
                "inference": lambda: inference(torch, args.quick),
                "postprocess": lambda: postprocess(torch, args.quick),
                "training": lambda: training(torch, args.quick, tmp),
                "pipeline": lambda: pipeline(args.quick),
            }
            for name, run in parts.items():
                t0 = time.perf_counter()
                print(f"gpu_bench: {name} ...", file=sys.stderr, flush=True)
                try:
                    data["parts"][name] = run()
                except Exception:  # noqa: BLE001 - one part's failure is recorded
                    data["parts"][name] = {"error": traceback.format_exc()[-1500:]}
                data["parts"][name + "_seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "gpu.json").write_text(json.dumps(data, indent=2))
    (args.out / "gpu.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

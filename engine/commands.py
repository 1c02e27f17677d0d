"""The export, build and bench commands of main.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.runtime.detector import BACKENDS
from training.commands import int_in_range

SHARED_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "vtest.avi"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a weights file to ONNX with pre-processing and NMS inside",
        description="Write one ONNX graph (opset 17) that takes uint8 BGR 300x300 frames "
        "(NHWC, as cv2.resize gives them) and outputs num_detections, boxes (normalized "
        "corners), scores and classes, K rows each. Class names go into its metadata.",
    )
    p.add_argument("weights", type=Path, help=".safetensors weights file")
    p.add_argument("-o", "--output", type=Path, help="ONNX file (default: beside the weights)")
    p.add_argument(
        "--nms",
        choices=["onnx", "efficientnms"],
        default="onnx",
        help="onnx: standard NonMaxSuppression (ONNX Runtime and TensorRT, default); "
        "efficientnms: TensorRT's EfficientNMS_TRT plugin (TensorRT only, fastest "
        "on Jetson)",
    )
    p.add_argument("--top-k", type=int, default=100, help="detections per frame (default 100)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="lowest score kept (default 0.3; 0.01 for mAP evaluation)",
    )
    p.add_argument("--iou-threshold", type=float, default=0.45, help="NMS IoU (default 0.45)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="FP16 weights (L2Norm and decoding stay FP32): for TensorRT 11, which "
        "takes precision from the ONNX",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "build",
        help="compile an exported ONNX into a TensorRT engine for this GPU",
        description="Build a TensorRT engine (FP16 by default) for this GPU and TensorRT "
        "version, cached under a name made of both and the ONNX's hash; an engine from "
        "another TensorRT, GPU or ONNX is rebuilt. Needs TensorRT and cuda-python.",
    )
    p.add_argument("onnx", type=Path, help="ONNX file from `main.py export`")
    p.add_argument("-o", "--output", type=Path, help="engine file (default: in the cache)")
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    p.add_argument(
        "--workspace",
        type=int_in_range(16),
        default=None,
        help="builder workspace in MiB (default: 1024, on Jetsons by their memory: 256 up "
        "to 4 GB, 512 up to 8 GB)",
    )
    p.add_argument(
        "--dla",
        type=int_in_range(0),
        default=None,
        metavar="CORE",
        help="build for this DLA core, with GPU fallback (Jetson Xavier/Orin)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="engine and timing cache folder (default: $SSD300_CACHE/engines, else "
        "~/.cache/ssd300/engines)",
    )
    p.add_argument(
        "--check",
        action="append",
        metavar="VERSION",
        default=None,
        help="only check, without TensorRT, that this TensorRT version's ONNX parser takes "
        "the file (e.g. 8.5 for JetPack 5.1, 8.6 for 6.0, 10.3 for 6.1/6.2; 'all' for 8.5, "
        "8.6, 10 and 11); repeatable",
    )
    p.set_defaults(func=cmd_build)

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


def cmd_export(args: argparse.Namespace) -> int:
    from engine.export.onnx_export import export_weights

    out = export_weights(
        args.weights,
        args.output,
        tail=args.nms,
        top_k=args.top_k,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        fp16=args.fp16,
    )
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, NMS tail {args.nms}"
        f"{', fp16' if args.fp16 else ''})"
    )
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from engine.runtime.platform import current_platform, default_workspace_mb
    from engine.runtime.tensorrt_backend import DLA_FP32, build_engine

    if args.check:
        return _check_versions(args.onnx, args.check)
    if args.dla is not None and args.precision == "fp32":
        from engine.runtime.detector import EngineError

        raise EngineError(DLA_FP32)

    workspace = args.workspace or default_workspace_mb(current_platform())
    out = build_engine(
        args.onnx,
        args.output,
        args.precision,
        workspace,
        args.dla,
        args.cache_dir,
    )
    print(f"engine: {out}")
    return 0


def _check_versions(onnx: Path, versions: list[str]) -> int:
    """`build --check`: one line per TensorRT version; exit 1 if any would refuse the file."""
    from engine.runtime.detector import EngineError
    from engine.runtime.trt_compat import RELEASES, check_graph

    if not onnx.is_file():
        raise EngineError(f"model not found: {onnx}")
    wanted = [r for v in versions for r in (RELEASES if v == "all" else (v,))]
    failed = 0
    for version in wanted:
        problems = check_graph(onnx, version)
        print(f"TensorRT {version}: " + ("ok" if not problems else "; ".join(problems)))
        failed += bool(problems)
    if failed:
        raise EngineError(f"{onnx}: {failed} of {len(wanted)} TensorRT versions would refuse it")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import format_table, run_bench, save_json
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
    results = run_bench(
        args.model, backends, video, args.frames, args.runs, batch=args.batch, device=args.device
    )
    print(format_table(results))
    if all("error" in r for r in results["backends"].values()):
        from engine.runtime.detector import EngineError

        raise EngineError("no backend could run the model (see the table)")
    if args.json:
        save_json(results, args.json)
        print(f"results: {args.json}")
    return 0

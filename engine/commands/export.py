"""The export, build and bench commands of main.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands.args import int_in_range, unit_interval


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a weights file to ONNX with pre-processing and NMS inside",
        description="Write one ONNX graph (opset 17) that takes uint8 BGR 300x300 frames "
        "(NHWC, as cv2.resize gives them) and outputs num_detections, boxes (normalized "
        "corners), scores and classes, K rows each. Class names go into its metadata.",
    )
    p.add_argument("weights", type=Path, help=".safetensors weights file")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="ONNX file (default: beside the weights; runs/export/ for the shipped model)",
    )
    p.add_argument(
        "--nms",
        choices=["onnx", "efficientnms"],
        default="onnx",
        help="onnx: standard NonMaxSuppression (ONNX Runtime and TensorRT, default); "
        "efficientnms: TensorRT's EfficientNMS_TRT plugin (TensorRT only, fastest "
        "on Jetson)",
    )
    p.add_argument(
        "--top-k", type=int_in_range(1), default=100, help="detections per frame (default 100)"
    )
    p.add_argument(
        "--score-threshold",
        type=unit_interval,
        default=0.3,
        help="lowest score kept (default 0.3; 0.01 for mAP evaluation)",
    )
    p.add_argument(
        "--iou-threshold", type=unit_interval, default=0.45, help="NMS IoU (default 0.45)"
    )
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


def export_output(weights: Path, output: Path | None, tail: str, fp16: bool) -> Path:
    """Where `export` writes: -o, else beside the weights as WEIGHTS[_efficientnms][_fp16]
    .onnx; a shipped model (assets/models) exports into runs/export/ instead, so its tracked
    ONNX is never replaced without an explicit -o."""
    from engine.runtime.models import MODELS_DIR

    if output is not None:
        return output
    name = weights.stem + ("" if tail == "onnx" else "_efficientnms") + ("_fp16" if fp16 else "")
    folder = weights.parent
    if folder.resolve() == MODELS_DIR.resolve():
        folder = Path("runs") / "export"
    return folder / f"{name}.onnx"


def cmd_export(args: argparse.Namespace) -> int:
    from engine.commands.video import check_output_dir
    from engine.export.onnx_export import export_weights
    from engine.runtime.detector import EngineError

    if not args.weights.is_file():
        raise EngineError(f"weights file not found: {args.weights}")
    out = export_output(args.weights, args.output, args.nms, args.fp16)
    if out.is_dir():
        raise EngineError(f"{out} is a folder; give the ONNX file's name with -o")
    check_output_dir(out.parent)  # before the export, not after it
    if args.output is None and out.parent != args.weights.parent:
        print(f"note: {args.weights.parent} holds the shipped model; exporting to {out}")
    out = export_weights(
        args.weights,
        out,
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
    if args.nms == "onnx":
        print(f"next: python main.py video VIDEO -m {out}   (or: python main.py build {out})")
    else:
        print(f"next: python main.py build {out}   (the EfficientNMS tail runs in TensorRT only)")
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

"""The export, build and bench commands of main.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands.args import int_in_range, unit_interval
from engine.export.quantize import DEFAULT_IMAGES, DEFAULT_METHOD, METHODS, TARGETS


def add_calibration_options(p, calibration_help: str, images_help: str) -> None:
    """--calibration DATA[:SPLIT] (repeatable) and --calibration-images N, for export and
    build alike (calibration_images reads them)."""
    p.add_argument("--calibration", action="append", metavar="DATA[:SPLIT]", help=calibration_help)
    p.add_argument(
        "--calibration-images",
        type=int_in_range(1),
        default=DEFAULT_IMAGES,
        metavar="N",
        help=f"{images_help} (default {DEFAULT_IMAGES})",
    )


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
    q = p.add_argument_group(
        "INT8",
        "Static INT8 quantization (ONNX Runtime, QDQ format): per-channel INT8 weights, "
        "INT8 activations calibrated on real images through the graph's own "
        "pre-processing; the decoding and NMS tail stays in float.",
    )
    q.add_argument(
        "--int8",
        action="store_true",
        help="write an INT8 model (needs --calibration; default name WEIGHTS_int8.onnx)",
    )
    add_calibration_options(
        q,
        "calibration images: any dataset --data accepts, or a folder of images (frames "
        "from the camera you deploy on are best); repeatable",
        "images used, a fixed sample spread over the data",
    )
    q.add_argument(
        "--int8-target",
        choices=TARGETS,
        default="onnxruntime",
        help="onnxruntime (default): unsigned activations, the fast form for CPUs; "
        "tensorrt: signed symmetric Q/DQ, what `build --int8` compiles (TensorRT 8.5+, "
        "11), named WEIGHTS_int8_trt.onnx",
    )
    q.add_argument(
        "--calibration-method",
        choices=METHODS,
        default=None,
        help="how activation ranges are chosen (default: minmax for onnxruntime, percentile "
        "for tensorrt, whose symmetric ranges suffer most from outliers)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "build",
        help="compile an exported ONNX into a TensorRT engine for this GPU",
        description="Build a TensorRT engine (FP16 by default, or INT8) for this GPU and "
        "TensorRT version, cached under a name made of both and the ONNX's hash; an engine "
        "from another TensorRT, GPU or ONNX is rebuilt. Needs TensorRT and cuda-python.",
    )
    p.add_argument("onnx", type=Path, help="ONNX file from `main.py export`")
    p.add_argument("-o", "--output", type=Path, help="engine file (default: in the cache)")
    p.add_argument(
        "--precision",
        choices=["fp16", "fp32", "int8"],
        default="fp16",
        help="fp16 (default), fp32, or int8 (as --int8); an INT8 ONNX always builds INT8",
    )
    p.add_argument(
        "--int8",
        dest="precision",
        action="store_const",
        const="int8",
        help="an INT8 engine: from an INT8 ONNX (`export --int8 --int8-target tensorrt`, "
        "explicit Q/DQ: TensorRT 8.5 to 11), or from an FP32 ONNX with --calibration "
        "(TensorRT's entropy calibrator: 8.x and 10.x only)",
    )
    add_calibration_options(
        p,
        "calibration images for --int8 of an FP32 ONNX: any dataset --data accepts, or a "
        "folder of images; the calibration cache is kept in the cache folder",
        "images used for calibration",
    )
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


def export_output(
    weights: Path, output: Path | None, tail: str, fp16: bool, int8: str | None = None
) -> Path:
    """Where `export` writes: -o, else beside the weights as WEIGHTS[_efficientnms][_fp16]
    [_int8[_trt]].onnx (int8: the --int8-target, or None); a shipped model (assets/models)
    exports into runs/export/ instead, so its tracked ONNX is never replaced without -o."""
    from engine.runtime.models import MODELS_DIR

    if output is not None:
        return output
    name = weights.stem + ("" if tail == "onnx" else "_efficientnms") + ("_fp16" if fp16 else "")
    if int8:
        name += "_int8" + ("_trt" if int8 == "tensorrt" else "")
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
    if args.int8:
        _check_int8_options(args)
    elif args.calibration or args.int8_target != "onnxruntime" or args.calibration_method:
        raise EngineError(
            "--calibration, --int8-target and --calibration-method are for --int8 exports"
        )
    out = export_output(
        args.weights, args.output, args.nms, args.fp16, args.int8_target if args.int8 else None
    )
    if out.is_dir():
        raise EngineError(f"{out} is a folder; give the ONNX file's name with -o")
    check_output_dir(out.parent)  # before the export, not after it
    if args.output is None and out.parent != args.weights.parent:
        print(f"note: {args.weights.parent} holds the shipped model; exporting to {out}")
    options = dict(
        tail=args.nms,
        top_k=args.top_k,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        fp16=args.fp16,
    )
    if args.int8:
        out = _export_int8(args, out, options)
    else:
        out = export_weights(args.weights, out, **options)
    precision = ", fp16" if args.fp16 else f", int8 for {args.int8_target}" if args.int8 else ""
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, NMS tail {args.nms}{precision})")
    if args.int8 and args.int8_target == "tensorrt":
        print(f"next: python main.py build {out} --int8")
    elif args.nms == "onnx":
        print(f"next: python main.py video VIDEO -m {out}   (or: python main.py build {out})")
    else:
        print(f"next: python main.py build {out}   (the EfficientNMS tail runs in TensorRT only)")
    return 0


def _check_int8_options(args: argparse.Namespace) -> None:
    from engine.runtime.detector import EngineError

    if not args.calibration:
        raise EngineError(
            "--int8 needs --calibration DATA: real images to measure activation ranges on "
            "(a dataset or a folder of images)"
        )
    if args.fp16:
        raise EngineError("--int8 and --fp16 exclude each other")
    if args.nms != "onnx":
        raise EngineError(
            "--int8 needs --nms onnx: calibration runs the graph in ONNX Runtime, which has "
            "no EfficientNMS_TRT"
        )


def calibration_images(specs: list[str], n: int) -> tuple[list[Path], str]:
    """Up to n image paths (a fixed sample) from datasets (PATH[:SPLIT], as --data takes
    them) or folders of images, and a description of where they came from."""
    from engine.export.quantize import pick_images
    from training.datasets import DataError, load_datasets, parse_data_spec
    from training.fileio import is_hidden, is_image

    paths: list[Path] = []
    for spec in specs:
        folder, split = parse_data_spec(spec, None)
        folder = Path(folder)
        try:
            paths += [s.image for s in load_datasets(spec).samples]
        except DataError:
            # a plain folder of images, but never for a dataset with a split: a mistyped
            # split must not calibrate on every image, the evaluation images included
            if split is not None or not folder.is_dir():
                raise
            found = sorted(p for p in folder.rglob("*") if is_image(p) and not is_hidden(p, folder))
            if not found:
                raise DataError(f"{spec}: no images found (nor a dataset)") from None
            paths += found
    picked = pick_images(paths, n)
    return picked, f"{len(picked)} of {len(set(paths))} images of {', '.join(specs)}"


def _export_int8(args: argparse.Namespace, out: Path, options: dict) -> Path:
    """Exports to a temporary FP32 ONNX, calibrates and quantizes it into `out`."""
    import tempfile

    from tqdm import tqdm

    from engine.export.onnx_export import export_weights
    from engine.export.quantize import quantize_onnx

    images, source = calibration_images(args.calibration, args.calibration_images)
    method = args.calibration_method or DEFAULT_METHOD[args.int8_target]
    print(f"calibration: {source}, {method}, for {args.int8_target}")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = export_weights(args.weights, Path(tmp) / "fp32.onnx", **options)
        return quantize_onnx(
            fp32,
            out,
            images,
            target=args.int8_target,
            source=source,
            method=method,
            progress=lambda it: tqdm(it, total=len(images), desc="calibrating", unit="image"),
        )


def cmd_build(args: argparse.Namespace) -> int:
    from engine.runtime.platform import current_platform, default_workspace_mb
    from engine.runtime.tensorrt_backend import DLA_FP32, build_engine

    if args.check:
        return _check_versions(args.onnx, args.check)
    from engine.runtime.detector import EngineError, read_onnx_info

    if args.dla is not None and args.precision == "fp32":
        raise EngineError(DLA_FP32)
    calibration = None
    if args.calibration:
        if args.precision != "int8":
            raise EngineError("--calibration is for --int8 builds")
        if read_onnx_info(args.onnx).precision == "int8":
            print(f"note: {args.onnx} is an INT8 (Q/DQ) ONNX: its scales are in it, so "
                  "--calibration is not used")  # fmt: skip
        else:
            calibration = _calibration(args.calibration, args.calibration_images, args.onnx)
    workspace = args.workspace or default_workspace_mb(current_platform())
    out = build_engine(
        args.onnx,
        args.output,
        args.precision,
        workspace,
        args.dla,
        args.cache_dir,
        calibration=calibration,
    )
    print(f"engine: {out}")
    return 0


def _calibration(specs: list[str], n: int, onnx: Path):
    """TensorRT calibration images (the same sample `export --int8` takes), keyed by their
    paths and sizes, fed at the ONNX's input size."""
    import hashlib

    from engine.export.quantize import calibration_frames
    from engine.runtime.detector import read_onnx_info
    from engine.runtime.tensorrt_backend import Calibration

    size = read_onnx_info(onnx).input_size
    images, source = calibration_images(specs, n)
    key = hashlib.sha256(
        "\n".join(f"{p.resolve()} {p.stat().st_size}" for p in images).encode()
    ).hexdigest()
    return Calibration(lambda: calibration_frames(images, size), key, source)


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

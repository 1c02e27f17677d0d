"""The model commands of main.py: create, import, info and weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.commands.args import positive_float, seed, sha256
from training.priors import PRESETS
from training.spec import BACKBONE_NAMES, CLASS_LISTS

# training.importers.KINDS, listed here so that `main.py --help` does not import torch.
CHECKPOINT_KINDS = [
    "torchvision-vgg16",
    "torchvision-mobilenet-v2",
    "ssd-pytorch",
    "torchvision-ssd300",
]
# training.download.KNOWN, listed here so that building the parser imports nothing more.
WEIGHTS_NAMES = ["ssd300_vgg16_coco", "ssd300_vgg16_voc", "vgg16_imagenet"]


def add_model_options(p: argparse.ArgumentParser, classes_default: str | None = "voc") -> None:
    p.add_argument(
        "--classes",
        default=classes_default,
        help=f"class list: {' or '.join(CLASS_LISTS)}, a text file with one name per line, "
        "or comma-separated names (background is implicit)"
        + (f"; default {classes_default}" if classes_default else ""),
    )
    p.add_argument(
        "--priors",
        choices=list(PRESETS),
        default=None,
        help="default-box preset: paper (s_min 0.2, s_max 0.9), voc / coco (the Caffe release "
        "and ssd.pytorch sizes), torchvision (COCO sizes, only sizes clipped)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "create",
        help="build a new SSD300 and save it as a weights file",
        description="Build a freshly initialized SSD300 (pretrained backbone where available) "
        "and save it in the self-describing weights format: a starting point for training.",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="weights file to write")
    p.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default="mobilenet_v2",
        help="vgg16 (the paper), vgg16_bn (batch norm, trains from scratch), mobilenet_v2 "
        "(light, for Jetson-class devices); default mobilenet_v2",
    )
    add_model_options(p)
    p.add_argument(
        "--backbone-weights",
        type=Path,
        help="ImageNet weights of the backbone: torchvision's vgg16-397923af.pth or "
        "mobilenet_v2-b0353104.pth (default for mobilenet_v2: the copy installed from "
        "requirements-nodeps.txt)",
    )
    p.add_argument(
        "--no-pretrained", action="store_true", help="random backbone (no ImageNet weights)"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the initialization (default 0)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser(
        "import",
        help="convert a checkpoint (.pth) from torchvision or ssd.pytorch",
        description="Convert torchvision's ssd300_vgg16, an ssd.pytorch SSD300 checkpoint, or "
        "torchvision's ImageNet VGG16/MobileNetV2 into this project's weights format. "
        "Checkpoints are read with torch.load(weights_only=True): nothing in them is executed.",
    )
    p.add_argument("checkpoint", type=Path, help=".pth file")
    p.add_argument("-o", "--output", required=True, type=Path, help="weights file to write")
    p.add_argument("--kind", choices=CHECKPOINT_KINDS, help="checkpoint type (default: detected)")
    add_model_options(p, classes_default=None)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "info",
        help="describe a weights file or an exported ONNX: architecture, classes, boxes, size",
        description="Print what a weights file holds: backbone, classes, default-box "
        "configuration, input normalization, parameter count and compute per image. For an "
        "exported ONNX: the same from its embedded description, plus how it was exported "
        "(NMS tail, thresholds, detections per image, precision, opset).",
    )
    p.add_argument("weights", type=Path, help=".safetensors weights file or exported .onnx")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    register_weights(sub)


def register_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="download the public SSD300 checkpoints, verify and convert them",
        description="List the public checkpoints the importers support, or download one "
        "(resumable, SHA-256 checked), convert it to a weights file beside it and say how to "
        "use it. Without an action: list.",
    )
    p.set_defaults(func=cmd_weights, action="list", dir=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    folder_help = "cache folder (default $SSD300_CACHE, else ~/.cache/ssd300/weights)"
    q = actions.add_parser("list", help="the known checkpoints and what is downloaded where")
    q.add_argument("--dir", type=Path, help=folder_help)
    q = actions.add_parser(
        "get",
        help="download, verify and convert one checkpoint",
        description="Download a known checkpoint into the cache folder (an interrupted "
        "download resumes when run again), check its SHA-256 and convert it to a "
        ".safetensors weights file beside it.",
    )
    q.add_argument(
        "name", choices=WEIGHTS_NAMES, metavar="NAME", help=f"one of: {', '.join(WEIGHTS_NAMES)}"
    )
    q.add_argument("--dir", type=Path, help=folder_help)
    q.add_argument("--url", help="download from this mirror instead (the same file)")
    q.add_argument(
        "--sha256",
        type=sha256,
        metavar="HEX",
        help="expected SHA-256 (or a prefix of at least 8 hex digits) instead of the known one",
    )
    q.add_argument(
        "--force", action="store_true", help="download and convert again even if present"
    )
    q.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        help="seconds to wait for the server (connection and each read; default 30)",
    )


def cmd_create(args: argparse.Namespace) -> int:
    import torch

    from training.importers import (
        import_torchvision_mobilenet_v2,
        import_torchvision_vgg16,
        mobilenet_v2_imagenet_path,
        read_checkpoint,
    )
    from training.model import SSD
    from training.spec import make_spec
    from training.weights import save_detector

    torch.manual_seed(args.seed)
    priors = args.priors or "voc"
    pretrained = not args.no_pretrained
    if pretrained and args.backbone == "mobilenet_v2":
        path = args.backbone_weights or mobilenet_v2_imagenet_path()
        model = import_torchvision_mobilenet_v2(
            read_checkpoint(path), args.classes, priors, source=str(path)
        )
    elif pretrained and args.backbone == "vgg16" and args.backbone_weights:
        path = args.backbone_weights
        model = import_torchvision_vgg16(
            read_checkpoint(path), args.classes, priors, source=str(path)
        )
    else:
        if pretrained and args.backbone == "vgg16":
            print(
                "note: no --backbone-weights given; VGG16 starts from random weights "
                "(torchvision's vgg16-397923af.pth gives the paper's ImageNet start)"
            )
        elif args.backbone_weights:
            print(f"note: --backbone-weights is ignored for {args.backbone}")
        model = SSD(make_spec(args.backbone, args.classes, priors))
    out = save_detector(model, args.output)
    print(f"wrote {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from training.importers import import_checkpoint
    from training.weights import save_detector

    model = import_checkpoint(args.checkpoint, args.kind, args.classes, args.priors)
    out = save_detector(model, args.output)
    print(f"wrote {out}: {describe_short(model)}")
    return 0


def describe_short(model) -> str:
    s = model.spec
    return (
        f"SSD300-{s.backbone}, {len(s.class_names)} classes, priors {s.priors.preset}, "
        f"{s.priors.num_boxes} default boxes"
    )


def _maps(s, channels) -> list[dict]:
    """The feature maps of a ModelSpec's default boxes; `channels` per map (None: unknown)."""
    g = s.priors
    maps = []
    for k, f in enumerate(g.feature_maps):
        n = g.num_boxes_per_location[k]
        maps.append(
            {
                "size": f,
                "boxes_per_cell": n,
                "boxes": f * f * n,
                "min_size_px": round(g.min_sizes[k] * g.image_size, 3),
                "max_size_px": round(g.max_sizes[k] * g.image_size, 3),
                "step_px": None if g.steps is None else g.steps[k],
                "aspect_ratios": list(g.aspect_ratios[k]),
                "channels": None if channels is None else channels[k],
            }
        )
    return maps


def _spec_info(path: Path, s) -> dict:
    g = s.priors
    return {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "architecture": "SSD300",
        "backbone": s.backbone,
        "input": {"size": s.input_size, "channels": "RGB 0..255", "mean": s.mean, "std": s.std},
        "num_classes": s.num_classes,
        "class_names": list(s.class_names),
        "priors": {"preset": g.preset, "clip": g.clip, "num_boxes": g.num_boxes, "maps": []},
        "variances": list(s.variances),
        "provenance": s.extra,
    }


def onnx_info(path: Path) -> dict:
    """A JSON-safe description of an ONNX exported by `main.py export` (no torch needed)."""
    import numpy as np
    import onnx

    from engine.runtime import contract as C
    from engine.runtime.detector import EngineError, read_onnx_info
    from training.spec import ModelSpec

    exported = read_onnx_info(path)  # one-line errors for foreign or unreadable files
    m = onnx.load(str(path), load_external_data=False)
    meta = {x.key: x.value for x in m.metadata_props}
    try:
        spec = ModelSpec.from_json(meta[C.META_SPEC])
    except Exception as e:  # noqa: BLE001 - a damaged description is the user's problem
        raise EngineError(f"{path}: its model description cannot be read ({e})") from None
    info = _spec_info(path, spec)
    info["priors"]["maps"] = _maps(spec, None)
    weights = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    info["parameters"] = {"total": weights}
    info["export"] = {
        "nms": exported.tail,
        "top_k": exported.top_k,
        "score_threshold": exported.score_threshold,
        "iou_threshold": exported.iou_threshold,
        "precision": exported.precision,
        "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0),
    }
    if C.META_CALIBRATION in meta:
        try:
            info["export"]["calibration"] = json.loads(meta[C.META_CALIBRATION])
        except ValueError:
            info["export"]["calibration"] = meta[C.META_CALIBRATION]
    return info


def model_info(path: Path) -> dict:
    """A JSON-safe description of a weights file (or, for .onnx, of an exported model)."""
    if path.suffix.lower() == ".onnx":
        return onnx_info(path)
    if path.suffix.lower() in (".engine", ".plan"):
        from engine.runtime.detector import EngineError

        raise EngineError(
            f"{path}: a TensorRT engine; `info` reads the .onnx it was built from or the "
            ".safetensors weights"
        )
    from training.model import count_macs, count_parameters
    from training.weights import load_detector

    model = load_detector(path)
    s = model.spec
    info = _spec_info(path, s)
    info["priors"]["maps"] = _maps(s, model.backbone.out_channels)
    info["parameters"] = {
        "total": count_parameters(model),
        "backbone": count_parameters(model.backbone),
        "head": count_parameters(model.head),
    }
    info["gmacs_per_image"] = round(count_macs(model) / 1e9, 3)
    return info


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.weights)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p = info["parameters"]
    names = info["class_names"]
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    inp = info["input"]
    pri = info["priors"]
    lines = [
        f"file          {info['file']} ({info['file_bytes'] / 1e6:.1f} MB)",
        f"architecture  SSD300, backbone {info['backbone']}, input {inp['size']}x{inp['size']} "
        f"{inp['channels']}",
        f"normalization mean {_fmt(inp['mean'])}, std {_fmt(inp['std'])}",
        f"classes       {len(names)} + background: {shown}",
        f"default boxes preset {pri['preset']}, {pri['num_boxes']} boxes, clip {pri['clip']}, "
        f"variances {_fmt(info['variances'])}",
        "  map      boxes/cell  min px  max px  step  ratios      channels  boxes",
    ]
    for m in pri["maps"]:
        ratios = "1," + ",".join(f"{a:g}" for a in m["aspect_ratios"])
        step = "-" if m["step_px"] is None else f"{m['step_px']:g}"
        channels = "-" if m["channels"] is None else m["channels"]
        lines.append(
            f"  {m['size']:>2}x{m['size']:<2}   {m['boxes_per_cell']:>10}  {m['min_size_px']:>6g}  "
            f"{m['max_size_px']:>6g}  {step:>4}  {ratios:<10}  {channels:>8}  {m['boxes']:>5}"
        )
    if "export" in info:  # an exported ONNX
        e = info["export"]
        lines += [
            f"weights       {p['total']:,} values in the graph",
            f"exported      NMS {e['nms']}, score >= {e['score_threshold']:g}, IoU "
            f"{e['iou_threshold']:g}, up to {e['top_k']} detections, {e['precision']}, "
            f"opset {e['opset']}",
        ]
        c = e.get("calibration")
        if isinstance(c, dict):
            lines.append(
                f"calibration   {c.get('source') or str(c.get('images')) + ' images'}, "
                f"{c.get('method')}, quantized for {c.get('target')}"
            )
    else:
        lines += [
            f"parameters    {p['total']:,} (backbone {p['backbone']:,}, head {p['head']:,})",
            f"compute       {info['gmacs_per_image']:.2f} GMAC per image",
        ]
    if info["provenance"]:
        lines.append(
            "provenance    " + ", ".join(f"{k}: {v}" for k, v in info["provenance"].items())
        )
    print("\n".join(lines))
    return 0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def cmd_weights(args: argparse.Namespace) -> int:
    from training import download

    if args.action != "get":
        print(download.list_text(args.dir))
        return 0
    fetched = download.get(args.name, args.dir, args.url, args.sha256, args.force, args.timeout)
    print("\n".join(download.describe_use(fetched)))
    return 0

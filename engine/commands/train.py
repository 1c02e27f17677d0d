"""The train and eval commands of main.py."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from engine.commands.args import int_in_range

# Command-line options of `train` that map onto TrainConfig fields (None: not given).
_TRAIN_OPTIONS = [
    (
        "--data",
        str,
        "training data: a VOC folder or devkit, a YOLO data.yaml or a COCO .json; PATH:SPLIT "
        "gives its own split. Repeat it to train on several datasets: their classes merge by "
        "name, and each labels only the classes it names (see README, Several datasets)",
    ),
    (
        "--split",
        str,
        "split of every --data without its own: VOC list file (.txt/.csv) or devkit split, "
        "YOLO split name, COCO image folder",
    ),
    (
        "--val-data",
        str,
        "validation data (same kinds as --data, may be repeated); validates every --eval-every "
        "epochs",
    ),
    ("--val-split", str, "split of every --val-data without its own"),
    ("--output", str, "run folder for checkpoints, weights and logs (default runs/train)"),
    ("--weights", str, "start from this weights file (its classes and default boxes)"),
    ("--backbone", str, "backbone of a new model: vgg16, vgg16_bn, mobilenet_v2 (default)"),
    ("--classes", str, "classes of a new model (default: those of the training data)"),
    ("--priors", str, "default-box preset of a new model (default voc)"),
    ("--backbone-weights", str, "ImageNet weights of the backbone (torchvision .pth)"),
    ("--epochs", int, "epochs (default 120)"),
    ("--batch-size", int, "images per step over all processes (default 32)"),
    ("--lr", float, "base learning rate (default 1e-3)"),
    ("--momentum", float, "SGD momentum (default 0.9)"),
    ("--weight-decay", float, "weight decay (default 5e-4)"),
    ("--warmup-steps", int, "linear warm-up steps from lr/3 (default 500)"),
    ("--schedule", str, "step (x0.1 at 2/3 and 5/6 of the epochs, default) or cosine"),
    ("--device", str, "auto (default: cuda if available), cpu, cuda, cuda:N"),
    ("--workers", int, "data-loading processes (default: CPUs - 1, at most 8)"),
    ("--seed", int, "seed of initialization, shuffling and augmentation (default 0)"),
    (
        "--repeat-threshold",
        float,
        "repeat-factor sampling: show images of classes found in fewer than this fraction of "
        "the images more often (LVIS; e.g. 0.1 to 0.3 for small, unbalanced data; default 0: off)",
    ),
    ("--eval-every", int, "validate every N epochs (default 1, 0: never)"),
    ("--checkpoint-minutes", float, "minutes between mid-epoch checkpoints (default 10)"),
]


# Options that may be given more than once (several datasets).
_REPEATABLE = ("--data", "--val-data")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an SSD300 on VOC, COCO or YOLO-format data",
        description="Train SSD300 with the paper's recipe (SGD, augmentation, hard negative "
        "mining). Options come from --config (YAML, the option names with _ for -) and then "
        "the command line. Ctrl-C or SIGTERM saves a checkpoint; --resume continues exactly "
        "where the run stopped. The run folder gets last.ckpt, best.safetensors (best "
        "validation AP50), last.safetensors, log.jsonl, summary.json and TensorBoard logs.",
    )
    p.add_argument("--config", type=Path, help="YAML file of options")
    for flag, typ, text in _TRAIN_OPTIONS:
        if flag in _REPEATABLE:
            p.add_argument(flag, action="append", default=None, metavar="PATH[:SPLIT]", help=text)
        else:
            p.add_argument(flag, type=typ, default=None, help=text)
    # --amp / --no-amp by hand: argparse.BooleanOptionalAction is Python 3.9+, and main.py
    # builds this parser on Jetsons with Python 3.8 too.
    amp = p.add_mutually_exclusive_group()
    amp.add_argument(
        "--amp",
        dest="amp",
        action="store_const",
        const=True,
        default=None,
        help="mixed precision (default: on with CUDA)",
    )
    amp.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="no AMP")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone")
    p.add_argument("--keep-difficult", action="store_true", help="train on VOC difficult boxes")
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="keep the backbone's ImageNet layers fixed (weights and batch-norm statistics) and "
        "train the extra layers and heads: for small data, less to overfit and faster steps",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="measure a model's mAP on a dataset (weights, ONNX or TensorRT engine)",
        description="Detect on every image of a dataset and print per-class AP (VOC2007 "
        "11-point and VOC2010+ all-point at IoU 0.5, difficult boxes ignored) and the COCO "
        "metrics (mAP@[.5:.95], AP50, AP75, small/medium/large). An exported model (FP32, "
        "FP16 or INT8 ONNX, or an engine) runs one image at a time through its runtime, as "
        "`detect` runs it; its export's score threshold and top-K apply.",
    )
    p.add_argument(
        "weights",
        type=Path,
        help=".safetensors weights file, or an exported .onnx / TensorRT engine",
    )
    p.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="PATH[:SPLIT]",
        help="dataset (same kinds as train --data); repeat it to score several together: "
        "each class only on the images of the datasets that label it",
    )
    p.add_argument("--split", help="split of every --data without its own")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument(
        "--batch-size",
        type=int_in_range(1),
        default=16,
        help="images per batch (default 16; weights only, exported models take one at a time)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "tensorrt"],
        default=None,
        help="for an exported model: onnxruntime (default for .onnx) or tensorrt (builds the "
        "ONNX's engine; default for engines)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.01,
        help="lowest score kept (default 0.01, as the paper's evaluation)",
    )
    p.add_argument(
        "--workers",
        type=int_in_range(0),
        default=2,
        help="data-loading processes (default 2; weights only)",
    )
    p.add_argument("--no-coco", action="store_true", help="skip the COCO metrics")
    p.set_defaults(func=cmd_eval)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of a `train` command line (YAML file first, then the options)."""
    from training.config import TrainConfig

    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    given = {}
    for flag, _, _ in _TRAIN_OPTIONS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value is not None:
            given[name] = value
    if args.amp is not None:
        given["amp"] = args.amp
    if args.no_pretrained:
        given["pretrained"] = False
    if args.keep_difficult:
        given["keep_difficult"] = True
    if args.freeze_backbone:
        given["freeze_backbone"] = True
    return cfg.updated(given)


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import Trainer

    cfg = config_from_args(args)
    summary = Trainer(cfg, resume=args.resume).run()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    print(
        f"done: {summary['epochs']} epochs, {summary['steps']} steps in "
        f"{summary['train_seconds'] / 60:.1f} min, {summary['images_per_s']} images/s, "
        f"data wait {summary['data_wait_share']:.0%} of step time"
    )
    if summary["best_ap50"] is not None:
        print(
            f"best validation AP50 (VOC all-point): {summary['best_ap50']:.4f} "
            f"-> {summary['best_weights']}"
        )
    print(f"last weights: {summary['weights']}")
    return 0


def evaluate_weights(
    weights: Path,
    data_path: str | list[str],
    split: str | None = None,
    batch_size=16,
    device="auto",
    score_threshold=0.01,
    workers=2,
    coco=True,
    backend: str | None = None,
) -> dict:
    """Runs a weights file (or an exported model: see evaluate_exported, which `backend`
    is for) over a dataset; returns {'voc': ..., 'coco': ..., ...}."""
    if Path(weights).suffix.lower() != ".safetensors":
        return evaluate_exported(
            weights, data_path, split, device, score_threshold, coco, backend or "auto"
        )
    import time

    import torch
    from tqdm import tqdm

    from training.data import check_images
    from training.datasets import load_datasets
    from training.evaluate import detect_dataset
    from training.postprocess import PostProcessor
    from training.train import pick_device
    from training.weights import load_detector

    dev = pick_device(device)
    model = load_detector(weights, device=dev).to(memory_format=torch.channels_last)
    data = check_images(load_datasets(data_path, split, list(model.spec.class_names)))
    print(data.report())
    t = time.perf_counter()
    dets = detect_dataset(
        model,
        data,
        batch_size,
        workers,
        PostProcessor(model.coder, score_threshold),
        progress=lambda it: tqdm(it, desc="detecting", unit="batch"),
    )
    return _scored(weights, dets, data, time.perf_counter() - t, coco)


def _scored(model_path, dets, data, seconds: float, coco: bool, **about) -> dict:
    """The evaluation result of one model's detections on `data`; `about` adds fields
    (the backend and precision of an exported model)."""
    from training.evaluate import coco_evaluate, voc_evaluate

    result = {
        "weights": str(model_path),
        **about,
        "data": data.source,
        "images": len(data.samples),
        "boxes": data.num_boxes,
        "seconds": round(seconds, 2),
        "voc": voc_evaluate(dets, data),
    }
    if coco:
        result["coco"] = coco_evaluate(dets, data)
    return result


def evaluate_exported(
    model_path: Path,
    data_path: str | list[str],
    split: str | None = None,
    device="auto",
    score_threshold=0.01,
    coco=True,
    backend: str = "auto",
) -> dict:
    """Runs an exported model (ONNX, or a TensorRT engine) over a dataset, one image at a
    time through the runtime's own pre-processing, and scores it as `evaluate_weights` does.
    `backend` auto runs an ONNX with ONNX Runtime (the file as it is; `tensorrt` builds and
    scores its engine) and an engine with TensorRT. The export's score threshold and top-K
    limit what it can find: export with `--score-threshold 0.01 --top-k 200` for figures
    comparable with the weights'."""
    import time

    import cv2
    import numpy as np
    from tqdm import tqdm

    from engine.runtime.detector import open_detector
    from training.data import check_images
    from training.datasets import load_datasets
    from training.evaluate import ImageDetections

    if backend == "auto":
        backend = "onnxruntime" if Path(model_path).suffix.lower() == ".onnx" else "tensorrt"
    with open_detector(model_path, backend=backend, device=device) as det:
        names = list(det.class_names)
        info = det.info
        if info.score_threshold > score_threshold or info.top_k < 200:
            print(
                f"note: {model_path} keeps scores >= {info.score_threshold:g}, at most "
                f"{info.top_k} per image: AP is measured on those only (export with "
                "--score-threshold 0.01 --top-k 200 for the paper's evaluation)"
            )
        data = check_images(load_datasets(data_path, split, names))
        print(data.report())
        t = time.perf_counter()
        dets = []
        for sample in tqdm(data.samples, desc=f"detecting ({det.describe()})", unit="image"):
            frame = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
            d = det.detect(frame, score_threshold=score_threshold)
            h, w = frame.shape[:2]
            dets.append(ImageDetections(d.boxes / np.float32([w, h, w, h]), d.scores, d.class_ids))
        seconds = time.perf_counter() - t
    return _scored(
        model_path, dets, data, seconds, coco, backend=det.backend, precision=info.precision
    )


def cmd_eval(args: argparse.Namespace) -> int:
    r = evaluate_weights(
        args.weights,
        args.data,
        args.split,
        args.batch_size,
        args.device,
        args.score_threshold,
        args.workers,
        coco=not args.no_coco,
        backend=args.backend,
    )
    voc = r["voc"]
    width = max(12, *(len(c["class"]) for c in voc["per_class"]))
    print(f"{'class':<{width}}  {'objects':>7}  {'dets':>6}  {'AP VOC07':>8}  {'AP all-pt':>9}")
    for c in voc["per_class"]:
        print(
            f"{c['class']:<{width}}  {c['ground_truths']:>7}  {c['detections']:>6}  "
            f"{c['ap_07']:>8.4f}  {c['ap']:>9.4f}"
        )
    print(f"{'mean':<{width}}  {'':>7}  {'':>6}  {voc['map_07']:>8.4f}  {voc['map']:>9.4f}")
    points = [p for p in voc["operating_points"] if p["score_threshold"] >= args.score_threshold]
    if points:
        print("at a score threshold, all classes pooled (IoU 0.5):")
        print("  score  boxes right (precision)  objects found (recall)  boxes per image")
        for p in points:
            print(
                f"  {p['score_threshold']:>5.1f}  {p['precision']:>23.3f}  {p['recall']:>21.3f}  "
                f"{p['boxes_per_image']:>15.2f}"
            )
    if "coco" in r:
        c = r["coco"]
        print(
            f"COCO: mAP@[.5:.95] {c['AP']:.4f}  AP50 {c['AP50']:.4f}  AP75 {c['AP75']:.4f}  "
            f"small {c['AP_small']:.4f}  medium {c['AP_medium']:.4f}  large {c['AP_large']:.4f}"
        )
    how = f" ({r['backend']}, {r['precision']} model)" if "backend" in r else ""
    print(f"{r['images']} images in {r['seconds']:.1f} s{how}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2, default=float))
        print(f"results: {args.json}")
    return 0

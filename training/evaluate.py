"""Detection metrics: Pascal VOC AP (VOC2007 11-point and VOC2010+ all-point) and COCO
mAP through pycocotools.

Detections and ground truths are per image, boxes in normalized xyxy (IoU does not change
under per-axis scaling, and the datasets keep VOC boxes as [xmin - 1, xmax], so these IoUs
are the devkit's).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.boxes import box_iou
from training.datasets import DetectionData


@dataclass
class ImageDetections:
    """boxes float [K, 4] normalized xyxy; scores [K]; labels int [K] (1..C-1)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a precision/recall curve, as the VOC devkit computes it.

    VOC2007: mean of the interpolated precision at recall 0, 0.1, ..., 1 (11 points).
    VOC2010+: area under the interpolated (monotonically decreasing) precision curve.
    """
    if use_07_metric:
        return float(
            np.mean(
                [
                    precision[recall >= t].max() if np.any(recall >= t) else 0.0
                    for t in np.linspace(0, 1, 11)
                ]
            )
        )
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_evaluate(
    detections: Sequence[ImageDetections],
    data: DetectionData,
    iou_threshold: float = 0.5,
) -> dict:
    """Per-class AP (both metrics) and their means over the classes that have objects.

    As the devkit: per class, detections of all images by descending score; each takes the
    ground truth it overlaps most; with IoU > threshold it is a true positive if that truth
    is not taken yet, a false positive if it is (a duplicate), and ignored if the truth is
    'difficult'. Below the threshold it is a false positive. Recall counts the
    non-difficult truths.

    Partial labels: a class is scored only on the images whose dataset labels it
    (Sample.labeled); detections of it elsewhere are neither right nor wrong.
    """
    if len(detections) != len(data.samples):
        raise ValueError("one ImageDetections per sample is needed")
    detections = only_labeled_classes(detections, data)
    per_class = []
    outcomes = []  # per class: (scores, tp, fp) of its detections in score order
    for c, name in enumerate(data.class_names, start=1):
        gts = [(s.boxes[s.labels == c], s.difficult[s.labels == c]) for s in data.samples]
        npos = int(sum((~d).sum() for _, d in gts))
        img_ids, scores, boxes = [], [], []
        for i, det in enumerate(detections):
            m = det.labels == c
            img_ids += [i] * int(m.sum())
            scores.append(det.scores[m])
            boxes.append(det.boxes[m])
        scores = np.concatenate(scores) if scores else np.zeros(0)
        boxes = np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4))
        order = np.argsort(-scores, kind="stable")
        img_ids = np.asarray(img_ids, dtype=np.int64)[order]
        boxes = boxes[order]
        taken = [np.zeros(len(g), dtype=bool) for g, _ in gts]
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for k, (i, box) in enumerate(zip(img_ids, boxes)):
            g, diff = gts[i]
            if len(g) == 0:
                fp[k] = 1
                continue
            ious = box_iou(box[None].astype(np.float64), g.astype(np.float64))[0]
            j = int(ious.argmax())
            if ious[j] > iou_threshold:
                if diff[j]:
                    continue
                if not taken[i][j]:
                    tp[k], taken[i][j] = 1, True
                else:
                    fp[k] = 1
            else:
                fp[k] = 1
        outcomes.append((scores[order], tp, fp))
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / max(npos, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class.append(
            {
                "class": name,
                "ground_truths": npos,
                "detections": len(order),
                "ap": voc_ap(recall, precision) if npos else float("nan"),
                "ap_07": voc_ap(recall, precision, use_07_metric=True) if npos else float("nan"),
            }
        )
    with_objects = [r for r in per_class if r["ground_truths"] > 0]
    return {
        "iou_threshold": iou_threshold,
        "per_class": per_class,
        "map": float(np.mean([r["ap"] for r in with_objects])) if with_objects else 0.0,
        "map_07": float(np.mean([r["ap_07"] for r in with_objects])) if with_objects else 0.0,
        "operating_points": operating_points(
            outcomes, sum(r["ground_truths"] for r in per_class), len(detections)
        ),
    }


SCORE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def operating_points(
    outcomes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_objects: int,
    num_images: int,
    thresholds: Sequence[float] = SCORE_THRESHOLDS,
) -> list[dict]:
    """What a user sees at each score threshold, all classes pooled: the share of the boxes
    shown that are right (precision), the share of the objects found (recall) and the boxes
    per image.

    Args:
        outcomes: per class, (scores [K], tp [K], fp [K]) of its detections, 0/1 flags (a
            detection of a 'difficult' object is neither).
        num_objects: the objects (non-difficult) of all classes.
        num_images: the images scored.
    """
    scores = np.concatenate([o[0] for o in outcomes]) if outcomes else np.zeros(0)
    tp = np.concatenate([o[1] for o in outcomes]) if outcomes else np.zeros(0)
    fp = np.concatenate([o[2] for o in outcomes]) if outcomes else np.zeros(0)
    points = []
    for t in thresholds:
        shown = scores >= t
        right, wrong = float(tp[shown].sum()), float(fp[shown].sum())
        points.append(
            {
                "score_threshold": t,
                "precision": right / (right + wrong) if right + wrong else float("nan"),
                "recall": right / num_objects if num_objects else float("nan"),
                "boxes_per_image": float(shown.sum()) / max(num_images, 1),
            }
        )
    return points


def only_labeled_classes(
    detections: Sequence[ImageDetections], data: DetectionData
) -> list[ImageDetections]:
    """Drops, per image, the detections of classes the image's dataset does not label.

    detections: one per sample of `data`. Returns the same list when every image labels
    every class."""
    if not data.partially_labeled:
        return list(detections)
    out = []
    for det, s in zip(detections, data.samples):
        if s.labeled is not None:
            keep = s.labeled[np.asarray(det.labels, dtype=np.int64)]
            det = ImageDetections(det.boxes[keep], det.scores[keep], det.labels[keep])
        out.append(det)
    return out


COCO_STATS = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def coco_evaluate(detections: Sequence[ImageDetections], data: DetectionData) -> dict:
    """COCO mAP@[.5:.95], AP50, AP75 and the size breakdowns, through pycocotools.

    A dataset read from COCO JSON is scored against that file (crowd regions included, as
    the official evaluation does); other datasets against their own boxes, in pixels.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # A class with no ground truth and no detection in an image is left out of that
    # image's evaluation: partial labels are scored as in voc_evaluate.
    detections = only_labeled_classes(detections, data)
    cat_ids = getattr(data, "category_ids", None) or list(range(1, len(data.class_names) + 1))
    ann_file = getattr(data, "annotation_file", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if ann_file:
            gt = COCO(str(ann_file))
            image_ids = [s.image_id for s in data.samples]
        else:
            gt = COCO()
            gt.dataset = _coco_ground_truth(data)
            gt.createIndex()
            image_ids = list(range(len(data.samples)))
    results = []
    for img_id, s, det in zip(image_ids, data.samples, detections):
        scale = np.array([s.width, s.height, s.width, s.height], dtype=np.float64)
        for box, score, label in zip(det.boxes * scale, det.scores, det.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": img_id,
                    "category_id": cat_ids[int(label) - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        # Only the model's categories: a model of 20 classes is not scored on the other 60.
        ev.params.catIds = sorted({c for c in cat_ids if c > 0})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}


def _coco_ground_truth(data: DetectionData) -> dict:
    images, anns = [], []
    for i, s in enumerate(data.samples):
        images.append({"id": i, "width": s.width, "height": s.height})
        scale = np.array([s.width, s.height, s.width, s.height], dtype=np.float64)
        for box, label, diff in zip(s.boxes * scale, s.labels, s.difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(diff),
                }
            )
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(data.class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def detect_dataset(
    model,
    data: DetectionData,
    batch_size: int = 16,
    workers: int = 0,
    postprocessor=None,
    progress=None,
) -> list[ImageDetections]:
    """Runs a detector (training.model.SSD) over every image of `data`, resized without
    augmentation, and returns one ImageDetections per sample (normalized boxes)."""
    import torch

    from training.data import DetectionDataset, EpochBatchSampler, make_loader

    device = model.priors.device
    ds = DetectionDataset(data, train=False, fill=model.spec.mean)
    loader = make_loader(ds, EpochBatchSampler(len(ds), batch_size, shuffle=False), workers)
    if progress is not None:
        loader = progress(loader)
    was_training = model.training
    model.eval()
    dets: list = [None] * len(ds)
    with torch.inference_mode():
        for images, _, _, _, idx in loader:
            loc, conf = model(images.to(device).float())
            out = (postprocessor or model.detect_postprocessor())(loc, conf, model.priors)
            for i, d in zip(idx.tolist(), out):
                dets[i] = ImageDetections(
                    d.boxes.cpu().numpy(), d.scores.cpu().numpy(), d.labels.cpu().numpy()
                )
    model.train(was_training)
    return dets

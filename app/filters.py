"""What the GUI's sliders and class filter do to a frame's detections (numpy only).

The model's graph already applies its score threshold and NMS at its IoU; the GUI keeps all
of those detections and filters them at display time, so a slider acts at once, even on a
paused frame. A stricter IoU than the model's is a second greedy NMS per class over the
(few) detections left; a looser one would need the suppressed boxes back, so the slider
stops at the model's IoU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.runtime.detector import Detections


def box_iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of box [4] with boxes [N, 4] (x1, y1, x2, y2) -> [N]."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float):
    """Indices kept by greedy NMS within each class, by descending score.

    boxes [N, 4], scores [N], classes [N] -> int64 [K].
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        same = [k for k in keep if classes[k] == classes[i]]
        if same and box_iou_one(boxes[i], boxes[same]).max() > iou:
            continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


def filter_detections(
    dets: Detections,
    score: float = 0.0,
    iou: float | None = None,
    classes: Iterable[int] | None = None,
    model_iou: float = 1.0,
) -> Detections:
    """Detections with score >= `score`, of the given class ids (None: all), and, when
    `iou` is below the model's own `model_iou`, after a per-class NMS at `iou`."""
    keep = dets.scores >= score
    if classes is not None:
        keep &= np.isin(dets.class_ids, np.asarray(list(classes), np.int32))
    idx = np.flatnonzero(keep)
    if iou is not None and iou < model_iou - 1e-6 and len(idx) > 1:
        idx = idx[nms_per_class(dets.boxes[idx], dets.scores[idx], dets.class_ids[idx], iou)]
        idx.sort()  # back to the detector's order (by descending score)
    return Detections(
        dets.boxes[idx], dets.scores[idx], dets.class_ids[idx], [dets.names[i] for i in idx]
    )


@dataclass(frozen=True)
class DetectionFilter:
    """What the sliders and the class list keep: score >= `score`, the class ids in
    `classes` (None: all), and a per-class NMS at `iou` when it is below the model's own
    `model_iou`. The window makes one per change; the worker's recorder uses the same."""

    score: float = 0.0
    iou: float | None = None
    classes: tuple[int, ...] | None = None
    model_iou: float = 1.0

    def apply(self, dets: Detections) -> Detections:
        return filter_detections(dets, self.score, self.iou, self.classes, self.model_iou)

"""Which of a frame's detections are kept: the filter stage of the frame pipeline (numpy only).

The model's graph already applies its score threshold and NMS at its IoU. The `video`
command filters by score and class before drawing and logging; the GUI keeps all of the
model's detections and filters them at display time, so a slider acts at once, even on a
paused frame, and its recorder keeps what is shown. A stricter IoU than the model's is a
second greedy NMS per class over the (few) detections left (training.boxes.batched_nms); a
looser one would need the suppressed boxes back, so the slider stops at the model's IoU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.runtime.detector import Detections
from training.boxes import batched_nms


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
        idx = idx[batched_nms(dets.boxes[idx], dets.scores[idx], dets.class_ids[idx], iou)]
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

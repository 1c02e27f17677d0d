"""From raw SSD outputs to detections: decode, softmax, threshold, per-class NMS, top-K."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from training.boxes import clip_boxes, cxcywh_to_xyxy, nms_sorted
from training.coder import BoxCoder


class TensorDetections(NamedTuple):
    """Detections of one image as tensors (normalized boxes), by descending score; the
    runtime's engine.runtime.Detections is the numpy one in pixels.

    boxes: [K, 4] xyxy, normalized to [0, 1]; scores: [K]; labels: [K] int64 in 1..C-1.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor


class PostProcessor:
    """Turns raw predictions into detections, in plain torch on the tensors' device.

    Per image: decode every default box, softmax the class logits, and for each foreground
    class take the `candidates_per_class` best boxes scoring above `score_threshold`, run
    greedy NMS at `nms_threshold` per class, and keep the `top_k` best overall. All classes
    are processed at once in a padded [classes, candidates] layout. Defaults follow the
    Caffe release and torchvision's SSD (0.01, 0.45, 400 candidates, 200 kept).
    """

    def __init__(
        self,
        coder: BoxCoder | None = None,
        score_threshold: float = 0.01,
        nms_threshold: float = 0.45,
        top_k: int = 200,
        candidates_per_class: int = 400,
    ) -> None:
        self.coder = coder or BoxCoder()
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.candidates_per_class = int(candidates_per_class)

    def __call__(self, loc: Tensor, conf: Tensor, priors: Tensor) -> list[TensorDetections]:
        """
        Args:
            loc: [B, N, 4] offsets; conf: [B, N, C] logits; priors: [N, 4] cxcywh.
        Returns:
            one TensorDetections per image.
        """
        boxes = clip_boxes(cxcywh_to_xyxy(self.coder.decode(loc, priors[None])))
        scores = torch.softmax(conf.float(), dim=-1)[..., 1:]  # drop background
        return [self.single(b, s) for b, s in zip(boxes.float(), scores)]

    def single(self, boxes: Tensor, scores: Tensor) -> TensorDetections:
        """boxes: [N, 4] decoded xyxy; scores: [N, C-1] foreground probabilities."""
        # A stable sort breaks ties by default-box index, as ONNX TopK does.
        top_scores, top_idx = scores.t().sort(dim=1, descending=True, stable=True)
        # Only as many candidates as the fullest class has above the threshold, and only
        # the classes that have any: the NMS cost is classes x candidates^2.
        valid = top_scores[:, : self.candidates_per_class] > self.score_threshold
        counts = valid.sum(dim=1)
        classes = counts.nonzero().flatten()
        k = int(counts.max()) if classes.numel() else 0
        top_scores, top_idx, valid = (t[classes, :k] for t in (top_scores, top_idx, valid))
        cand = boxes[top_idx]  # [classes, k, 4]
        keep = nms_sorted(cand, valid, self.nms_threshold)
        labels = (classes + 1)[:, None].expand_as(top_scores)[keep]
        kept_scores = top_scores[keep]
        order = kept_scores.argsort(descending=True, stable=True)[: self.top_k]
        return TensorDetections(cand[keep][order], kept_scores[order], labels[order])

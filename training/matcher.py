"""SSD's matching of ground-truth boxes to default boxes."""

from __future__ import annotations

import torch
from torch import Tensor

from training.boxes import box_area, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from training.coder import BoxCoder

BACKGROUND = -1


class SSDMatcher:
    """Assigns each default box a ground truth, or background.

    Two rules, as in the paper and ssd.pytorch:
      1. every ground truth takes its best-overlapping default box (forced, whatever the IoU,
         as long as it is above 0); when several ground truths pick the same default box it
         goes to the one it overlaps most, then to the lowest index (ssd.pytorch gives it
         to the last one, Caffe's bipartite matching gives the others their next best box);
      2. every other default box goes to the ground truth it overlaps most if that IoU is
         >= iou_threshold, otherwise it is background.
    Forced matches win over threshold matches. Ground truths of zero area cannot be
    localized and are ignored.

    Args:
        iou_threshold: the positive IoU threshold, 0.5 in the paper.
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = float(iou_threshold)

    def __call__(self, gt_boxes: Tensor, gt_valid: Tensor, priors: Tensor) -> Tensor:
        """Match a padded batch.

        Args:
            gt_boxes: [B, G, 4] xyxy ground truths, normalized like the priors.
            gt_valid: [B, G] bool, False for padding.
            priors: [N, 4] cxcywh default boxes.
        Returns:
            [B, N] int64: the matched ground-truth index per default box, or -1 (background).
        """
        b, g = gt_valid.shape
        n = priors.shape[0]
        valid = gt_valid & (box_area(gt_boxes) > 0)
        if g == 0:
            return torch.full((b, n), BACKGROUND, dtype=torch.int64, device=priors.device)
        iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors)[None])  # [B, G, N]
        iou = torch.where(valid[:, :, None], iou, -1.0)

        # Rule 2: best ground truth per default box, thresholded.
        best_iou, matches = iou.max(dim=1)  # [B, N]
        matches = torch.where(best_iou >= self.iou_threshold, matches, BACKGROUND)

        # Rule 1: best default box per ground truth, forced.
        best_iou_per_gt, best_prior = iou.max(dim=2)  # [B, G]
        chosen = torch.zeros_like(iou, dtype=torch.bool)
        chosen.scatter_(2, best_prior[:, :, None], True)
        chosen &= (valid & (best_iou_per_gt > 0))[:, :, None]
        forced_iou = torch.where(chosen, iou, -2.0)  # [B, G, N]
        forced_gt = forced_iou.argmax(dim=1)  # highest IoU, then lowest index
        is_forced = chosen.any(dim=1)
        return torch.where(is_forced, forced_gt, matches)


def encode_targets(
    matcher: SSDMatcher,
    coder: BoxCoder,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_valid: Tensor,
    priors: Tensor,
) -> tuple[Tensor, Tensor]:
    """Regression targets and class labels of every default box for a padded batch.

    Args:
        matcher: an SSDMatcher.
        coder: a BoxCoder.
        gt_boxes: [B, G, 4] xyxy normalized ground truths.
        gt_labels: [B, G] int64 class ids, 1..C-1 (0 is background).
        gt_valid: [B, G] bool, False for padding.
        priors: [N, 4] cxcywh default boxes.
    Returns:
        loc_targets: [B, N, 4] offsets (meaningful where labels > 0).
        labels: [B, N] int64, 0 for background.
    """
    b, n = gt_valid.shape[0], priors.shape[0]
    if gt_boxes.shape[1] == 0:  # a batch of images without objects
        return priors.new_zeros(b, n, 4), torch.zeros(b, n, dtype=torch.int64, device=priors.device)
    matches = matcher(gt_boxes, gt_valid, priors)  # [B, N]
    idx = matches.clamp(min=0)
    matched_boxes = torch.gather(gt_boxes, 1, idx[:, :, None].expand(-1, -1, 4))
    labels = torch.gather(gt_labels, 1, idx)
    labels = torch.where(matches >= 0, labels, 0)
    loc_targets = coder.encode(xyxy_to_cxcywh(matched_boxes), priors[None])
    return loc_targets, labels
